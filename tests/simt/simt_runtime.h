// A CPU runtime for the CUDA kernel files (csrc/cuda/*_kernels.cu, partial_sums.cu), for machines
// without a GPU: include it before those files, compiled as C++ with SKELETON_SIMT_EMULATOR
// defined, and their kernels run here (the tensor-core file with tensor_core_arch.h as well).
//
// A launch runs the grid one block at a time; each CUDA thread of a block is a fiber (ucontext).
// threadIdx / blockIdx / blockDim / gridDim are globals that the scheduler sets before it resumes
// a fiber; __shared__ variables become function statics (one block runs at a time, so all its
// threads share them); __syncthreads() and __shfl_down_sync block their fiber until every thread
// of the block, or every lane of the warp, arrives. Fibers run in a shuffled order, each until it
// blocks, now and then one warp alone for a while (so that a missing barrier between warps changes
// the result); a barrier that some thread never reaches is reported as a deadlock (an error), as is
// a warp whose lanes ask for different shuffles.
//
// What it cannot see: timing, memory-model effects beyond the barriers, and out-of-bounds accesses
// (the tests put guard zones around the tensors they pass instead).
#pragma once

#if !defined(SKELETON_SIMT_EMULATOR)
#error "compile the kernels for the CPU runtime with -DSKELETON_SIMT_EMULATOR"
#endif

#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// CUDA's dim3 and uint3 where a CUDA toolkit's headers are on the include path (cuda_bf16.h brings
// them too), else the same two structs here.
#if __has_include(<vector_types.h>)
#include <vector_types.h>
#else
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
#endif

// CUDA's keywords, as far as the kernels use them (replacing what CUDA's host headers define).
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

// The built-in variables of the thread running now.
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace simt {

// Block barrier and warp shuffle of the running fiber (simt_runtime.cpp).
void sync_threads();
double shuffle_down(double value, unsigned offset, unsigned mask);

// A warp-collective instruction: every lane of the calling thread's warp deposits in_bytes of `in`;
// the last to arrive runs compute(ins, outs) once (32 slots each, in lane order), and every lane
// receives its out_bytes slot in `out`. Lanes that issue different `op`s are reported.
void warp_collective(int op, const void* in, size_t in_bytes, void* out, size_t out_bytes,
                     const std::function<void(const unsigned char* ins, unsigned char* outs)>& compute);

// Runs body() once per thread of every block of the grid.
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace simt

inline void __syncthreads() { simt::sync_threads(); }

// Exact for float and double (the kernels shuffle their accumulation type).
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned offset) {
  static_assert(std::is_floating_point<T>::value, "the emulated shuffle carries float or double");
  return static_cast<T>(simt::shuffle_down(static_cast<double>(value), offset, mask));
}

namespace skeleton_cuda {
namespace gpu {

// csrc/cuda/launch.cuh's launch(), on the CPU: the arguments convert to the kernel's parameter
// types once, as a CUDA launch does, and every thread receives a copy.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  simt::run_grid(grid, block, [&] { std::apply(kernel, params); });
}

}  // namespace gpu
}  // namespace skeleton_cuda
