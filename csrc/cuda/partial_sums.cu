// Second pass of the deterministic weight-gradient reductions: adds per-block partial sums in a
// fixed order. The first passes (dense_kernels.cu, depthwise_kernels.cu) write one partial per
// (pixel chunk, weight element) instead of accumulating with atomics, whose order varies run to run.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "common.cuh"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

// out[m] = partials[0][m] + partials[1][m] + ... + partials[count - 1][m], left to right.
template <typename acc_t>
__global__ void sum_partials_kernel(const acc_t* __restrict__ partials, int64_t count, int64_t width,
                                    acc_t* __restrict__ out) {
  for (int64_t m = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; m < width;
       m += int64_t{blockDim.x} * gridDim.x) {
    acc_t total = 0;
    for (int64_t s = 0; s < count; ++s) {
      total += partials[s * width + m];
    }
    out[m] = total;
  }
}

}  // namespace

at::Tensor sum_partials(const at::Tensor& partials) {
  TORCH_CHECK(partials.dim() == 2 && partials.is_contiguous(), "sum_partials: expected a contiguous (S, M) tensor");
  const int64_t count = partials.size(0), width = partials.size(1);
  at::Tensor out = at::empty({width}, partials.options());
  if (width == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(partials.scalar_type(), "skeleton_conv2d_sum_partials", [&] {
    launch(sum_partials_kernel<scalar_t>, grid_size(width), kBlock, partials.const_data_ptr<scalar_t>(), count, width,
           out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace gpu
}  // namespace skeleton_cuda
