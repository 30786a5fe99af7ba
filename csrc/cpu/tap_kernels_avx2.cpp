// The CPU kernels compiled for AVX2 + FMA + F16C (8 floats per vector, 16 vector registers).
#include "tap_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

// Register budget: P * V accumulators + V weight vectors + 1 broadcast <= 16.
#define SKELETON_ISA avx2
#define SKELETON_F16C 1  // float16 conversions in one instruction (tap_kernels_impl.h)
#define SKELETON_ISA_NAME "avx2"
#define SKELETON_MAX_VECTORS 2
#define SKELETON_TILE_ROWS(V) ((V) == 2 ? 6 : 12)
#include "tap_kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace skeleton_cuda {
namespace cpu {
const KernelTable<float>* avx2_float_kernels() { return avx2::Kernels<float, 8>::table(); }
}  // namespace cpu
}  // namespace skeleton_cuda

#else

namespace skeleton_cuda {
namespace cpu {
const KernelTable<float>* avx2_float_kernels() { return nullptr; }
}  // namespace cpu
}  // namespace skeleton_cuda

#endif
