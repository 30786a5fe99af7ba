// The CPU kernels compiled for AVX-512 (16 floats per vector, 32 vector registers).
#include "tap_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,fma,f16c")
#endif

// Register budget: P * V accumulators + V weight vectors + 1 broadcast <= 32.
#define SKELETON_ISA avx512
#define SKELETON_F16C 1  // float16 conversions in one instruction (tap_kernels_impl.h)
#define SKELETON_ISA_NAME "avx512"
#define SKELETON_MAX_VECTORS 4
#define SKELETON_TILE_ROWS(V) ((V) == 4 ? 6 : (V) == 3 ? 8 : (V) == 2 ? 12 : 14)
#include "tap_kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace skeleton_cuda {
namespace cpu {
const KernelTable<float>* avx512_float_kernels() { return avx512::Kernels<float, 16>::table(); }
}  // namespace cpu
}  // namespace skeleton_cuda

#else

namespace skeleton_cuda {
namespace cpu {
const KernelTable<float>* avx512_float_kernels() { return nullptr; }
}  // namespace cpu
}  // namespace skeleton_cuda

#endif
