// The CPU kernels for any processor, built with the compiler's baseline flags (SSE2 on x86-64,
// NEON on arm64); also the float64 kernels, which only gradcheck and the tests need.
#include "tap_kernels.h"

// Register budget of the baseline: 16 registers of 16 bytes.
#define SKELETON_ISA generic
#define SKELETON_ISA_NAME "generic"
#define SKELETON_MAX_VECTORS 2
#define SKELETON_TILE_ROWS(V) ((V) == 2 ? 6 : 12)
#include "tap_kernels_impl.h"

namespace skeleton_cuda {
namespace cpu {
const KernelTable<float>* generic_float_kernels() { return generic::Kernels<float, 4>::table(); }
const KernelTable<double>* generic_double_kernels() { return generic::Kernels<double, 2>::table(); }
}  // namespace cpu
}  // namespace skeleton_cuda
