// A CPU runtime for the direct and depthwise CUDA kernels (csrc/cuda/dense_kernels.cu,
// depthwise_kernels.cu, partial_sums.cu), for machines without a GPU: include it before those
// files, compiled as C++ with SKELETON_SIMT_EMULATOR defined, and their kernels run here.
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

#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// CUDA's keywords, as far as the kernels use them.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

// The built-in variables of the thread running now.
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace simt {

// Block barrier and warp shuffle of the running fiber (simt_runtime.cpp).
void sync_threads();
double shuffle_down(double value, unsigned offset, unsigned mask);

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
