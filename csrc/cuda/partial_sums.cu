// Second pass of the deterministic weight-gradient reductions: adds per-block partial sums in a
// fixed order and writes the result where the caller wants it. The first passes (dense_kernels.cu,
// tiled_kernels.cu, depthwise_kernels.cu, tensor_core_kernels.cu) write one partial per (pixel
// chunk, weight element) instead of accumulating with atomics, whose order varies run to run.
//
// One launch does the sum, the reordering into the weight's (C_out, C_in/G, 5) layout and the
// rounding to the weight's dtype: as separate ATen ops they were three launches per weight
// gradient, which on the small late layers of a network cost as much as the reduction itself.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "common.cuh"
#include "index_division.cuh"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

// Where column m of the partials goes. Columns [0, weight_width) are weight elements: tap-major
// ([G][5][C_in/G][C_out/G], m = ((g * 5 + t) * cin_g + c) * cout_g + j) or already in the weight's
// order; the columns after them are bias sums in channel order. Div is NarrowDiv (multiply-high)
// for weights below 2^31 elements, as good as all: three 64-bit divisions per column would cost
// as much as the sum of a few chunks.
template <class Div>
struct WeightColumns {
  bool tap_major;
  int64_t cin_g, cout_g, weight_width;
  Div by_cin, by_cout, by_taps;

  C10_HOST_DEVICE int64_t weight_index(int64_t m) const {
    if (!tap_major) {
      return m;
    }
    const int64_t rest = by_cout.div(m), j = m - rest * cout_g;
    const int64_t tap_and_group = by_cin.div(rest), c = rest - tap_and_group * cin_g;
    const int64_t g = by_taps.div(tap_and_group), t = tap_and_group - g * kTaps;
    return ((g * cout_g + j) * cin_g + c) * kTaps + t;
  }
};

template <class Div>
WeightColumns<Div> weight_columns(bool tap_major, int64_t cin_g, int64_t cout_g, int64_t weight_width) {
  // Divisors of 0 channels (a layer without weights: no column to place) become 1.
  return {tap_major, cin_g, cout_g, weight_width, Div(std::max<int64_t>(cin_g, 1)),
          Div(std::max<int64_t>(cout_g, 1)), Div(kTaps)};
}

// total[m] = partials[0][m] + partials[1][m] + ... + partials[count - 1][m], left to right, rounded
// once to out_t: into weight[] or bias[] as `columns` says.
template <typename acc_t, typename out_t, class Div>
__global__ void sum_partials_kernel(const acc_t* __restrict__ partials, int64_t count, int64_t width,
                                    WeightColumns<Div> columns, out_t* __restrict__ weight,
                                    out_t* __restrict__ bias) {
  for (int64_t m = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; m < width;
       m += int64_t{blockDim.x} * gridDim.x) {
    acc_t total = 0;
    for (int64_t s = 0; s < count; ++s) {
      total += partials[s * width + m];
    }
    if (m < columns.weight_width) {
      weight[columns.weight_index(m)] = static_cast<out_t>(total);
    } else {
      bias[m - columns.weight_width] = static_cast<out_t>(total);
    }
  }
}

}  // namespace

WeightGrads finish_weight_grad(const at::Tensor& partials, const ConvShape& s, PartialsOrder order, bool with_bias,
                               at::ScalarType dtype) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const bool tap_major = order == PartialsOrder::kTapMajor;
  const int64_t weight_width = s.out_channels * cin_g * kTaps;
  const int64_t width = weight_width + (with_bias ? s.out_channels : 0);
  const at::ScalarType acc_dtype = partials_dtype(dtype);
  TORCH_CHECK(partials.dim() == 2 && partials.is_contiguous() && partials.size(1) == width &&
                  partials.scalar_type() == acc_dtype,
              "finish_weight_grad: expected contiguous (S, ", width, ") partials of ", acc_dtype);
  const at::TensorOptions options = partials.options().dtype(dtype);
  WeightGrads result;
  result.weight = at::empty({s.out_channels, cin_g, kTaps}, options);
  if (with_bias) {
    result.bias = at::empty({s.out_channels}, options);
  }
  if (width == 0) {
    return result;  // a launch of 0 blocks is an error; a sum over 0 chunks is zeros from the kernel
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "skeleton_conv2d_sum_partials", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto run = [&](auto columns) {
      launch(sum_partials_kernel<acc_t, scalar_t, decltype(columns.by_cin)>, grid_size(width), kBlock,
             partials.const_data_ptr<acc_t>(), partials.size(0), width, columns,
             result.weight.mutable_data_ptr<scalar_t>(), with_bias ? result.bias.mutable_data_ptr<scalar_t>() : nullptr);
    };
    if (narrow_division_exact(weight_width, std::max(cin_g, cout_g))) {
      run(weight_columns<NarrowDiv>(tap_major, cin_g, cout_g, weight_width));
    } else {
      run(weight_columns<WideDiv>(tap_major, cin_g, cout_g, weight_width));
    }
  });
  return result;
}

}  // namespace gpu
}  // namespace skeleton_cuda
