// CUDA kernels for depthwise layers on contiguous NCHW tensors, read and written in place. NCHW is
// PyTorch's default layout, and a depthwise layer is memory-bound: converting x to channels_last
// for the channels_last kernels and the result back would triple its memory traffic.
//
// In NCHW a channel of an image is one contiguous H x W plane, so consecutive threads take
// consecutive pixels of a plane (coalesced loads and stores; the five taps of neighbouring threads
// overlap and come from L1), and every thread of a warp reads the same five weights (one
// broadcast each) from the caller's (C, 1, 5) weight.
//   Forward and input gradient: one thread per result element, in memory order.
//   Weight gradient: one block per (channel, pixel chunk); each thread sums its strided share of
//   the chunk's pixels for the five taps and, when asked, the bias; block_sum adds the threads in
//   a fixed order, and finish_weight_grad (partial_sums.cu) adds the chunks in a fixed order, so
//   the result has the same bits every run. Partials are in the weight's order (C, 1, 5), then C
//   bias sums, as the channels_last kernels write them.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "depthwise_indexing.cuh"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

// y[n, c, oh, ow] = bias[c] + sum_t w[c][t] * x[n, c, oh * stride - pad + row_t * dil, ...].
template <typename T, class Div>
__global__ void depthwise_nchw_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                              const T* __restrict__ bias, T* __restrict__ y, ConvShape s,
                                              DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  const int64_t C = s.in_channels;
  const int64_t total = s.batch * C * s.out_h * s.out_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    int64_t plane, oh, ow;  // element i of the (N * C) x H_out x W_out grid of planes; plane = n * C + c
    split_grid_pixel(i, d.out_w, d.out_h, s.out_w, s.out_h, plane, oh, ow);
    const int64_t c = plane - d.packs.div(plane) * C;
    acc_t acc = bias != nullptr ? static_cast<acc_t>(bias[c]) : acc_t(0);
    const T* xp = x + plane * s.in_h * s.in_w;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      int64_t ih, iw;
      if (tap_source(s, oh, ow, t, ih, iw)) {
        acc += static_cast<acc_t>(w[c * kTaps + t]) * static_cast<acc_t>(xp[ih * s.in_w + iw]);
      }
    }
    y[i] = static_cast<T>(acc);
  }
}

// dx[n, c, ih, iw] = sum_t w[c][t] * dy[n, c, oh, ow] over the taps t whose output pixel
//   oh = (ih + pad - row_t * dil) / stride (exact, 0 <= oh < H_out; columns likewise)
// reads (ih, iw): the gather over the mirrored cross, as in the channels_last kernel.
template <typename T, class Div>
__global__ void depthwise_nchw_input_grad_kernel(const T* __restrict__ dy, const T* __restrict__ w,
                                                 T* __restrict__ dx, ConvShape s, DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  const int64_t C = s.in_channels;
  const int64_t total = s.batch * C * s.in_h * s.in_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    int64_t plane, ih, iw;  // element i of the (N * C) x H x W grid of planes
    split_grid_pixel(i, d.in_w, d.in_h, s.in_w, s.in_h, plane, ih, iw);
    const int64_t c = plane - d.packs.div(plane) * C;
    const T* dyp = dy + plane * s.out_h * s.out_w;
    acc_t acc = 0;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      const int64_t row = ih + s.pad_h - tap_row(t) * s.dil_h;  // = oh * stride_h if tap t hits
      const int64_t col = iw + s.pad_w - tap_col(t) * s.dil_w;
      if (row < 0 || col < 0) {
        continue;
      }
      const int64_t oh = d.stride_h.div(row), ow = d.stride_w.div(col);  // row, col < 2^31 when narrow
      if (oh * s.stride_h == row && ow * s.stride_w == col && oh < s.out_h && ow < s.out_w) {
        acc += static_cast<acc_t>(w[c * kTaps + t]) * static_cast<acc_t>(dyp[oh * s.out_w + ow]);
      }
    }
    dx[i] = static_cast<T>(acc);
  }
}

// First pass of the weight gradient. Block (c = blockIdx.x, chunk = blockIdx.y) sums, over the
// pixels q of [chunk * chunk_len, +chunk_len) of the N * H_out * W_out output pixels of channel c,
// dy[n, c, oh, ow] * x[n, c, tap t of (oh, ow)] into partials[chunk][c * 5 + t], and with
// `with_bias` dy[n, c, oh, ow] into partials[chunk][5 C + c]. Thread k takes pixels begin + k,
// begin + k + blockDim.x, ...; block_sum adds the threads in a fixed order.
template <typename T, class Div>
__global__ void depthwise_nchw_weight_grad_partials_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                           at::opmath_type<T>* __restrict__ partials, ConvShape s,
                                                           int64_t chunk_len, bool with_bias,
                                                           DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t scratch[kWarp];
  const int64_t C = s.in_channels, c = blockIdx.x;
  const int64_t out_plane = s.out_h * s.out_w, in_plane = s.in_h * s.in_w;
  const int64_t pixels = s.batch * out_plane;
  const int64_t begin = blockIdx.y * chunk_len;
  const int64_t end = std::min(begin + chunk_len, pixels);

  acc_t acc[kTaps + 1] = {};  // the five taps, then the bias sum
  for (int64_t q = begin + threadIdx.x; q < end; q += blockDim.x) {
    int64_t n, oh, ow;
    split_grid_pixel(q, d.out_w, d.out_h, s.out_w, s.out_h, n, oh, ow);
    const int64_t plane = n * C + c;
    const acc_t g = static_cast<acc_t>(dy[plane * out_plane + oh * s.out_w + ow]);
    acc[kTaps] += g;
    const T* xp = x + plane * in_plane;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      int64_t ih, iw;
      if (tap_source(s, oh, ow, t, ih, iw)) {
        acc[t] += g * static_cast<acc_t>(xp[ih * s.in_w + iw]);
      }
    }
  }

  const int rows = with_bias ? kTaps + 1 : kTaps;  // uniform over the block: every thread meets the barriers
  acc_t* const out = partials + blockIdx.y * (rows * C);
#pragma unroll
  for (int t = 0; t < kTaps + 1; ++t) {
    if (t == rows) {
      break;
    }
    const acc_t total = block_sum(acc[t], scratch);
    if (threadIdx.x == 0) {
      out[t < kTaps ? c * kTaps + t : kTaps * C + c] = total;
    }
  }
}

WeightGrads nchw_weight_grads(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s, bool with_bias) {
  const int64_t C = s.in_channels;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  if (pixels == 0) {  // sums over no pixels
    return {at::zeros({C, 1, kTaps}, x.options()), with_bias ? at::zeros({C}, x.options()) : at::Tensor()};
  }
  TORCH_CHECK(C <= INT32_MAX, "skeleton_conv2d: too many channels for the depthwise weight-gradient grid (", C, ")");
  int64_t chunks = reduction_chunks(pixels, C, 4 * int64_t{kBlock});
  const int64_t chunk_len = ceil_div(pixels, chunks);
  chunks = ceil_div(pixels, chunk_len);  // no empty chunk
  at::Tensor partials =
      at::empty({chunks, (with_bias ? kTaps + 1 : kTaps) * C}, x.options().dtype(partials_dtype(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_depthwise_nchw_weight_grad", [&] {
    with_divisors(s, C, [&](auto d) {
      launch(depthwise_nchw_weight_grad_partials_kernel<scalar_t, decltype(d.packs)>,
             dim3(static_cast<unsigned>(C), static_cast<unsigned>(chunks)), kBlock, x.const_data_ptr<scalar_t>(),
             dy.const_data_ptr<scalar_t>(), partials.mutable_data_ptr<at::opmath_type<scalar_t>>(), s, chunk_len,
             with_bias, d);
    });
  });
  return finish_weight_grad(partials, s, PartialsOrder::kWeight, with_bias, x.scalar_type());
}

}  // namespace

void depthwise_nchw_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                            const ConvShape& s) {
  if (y.numel() == 0) {
    return;  // a launch of 0 blocks is an error
  }
  const at::Tensor wc = w.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_depthwise_nchw_forward", [&] {
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    with_divisors(s, s.in_channels, [&](auto d) {
      launch(depthwise_nchw_forward_kernel<scalar_t, decltype(d.packs)>, grid_size(y.numel()), kBlock,
             x.const_data_ptr<scalar_t>(), wc.const_data_ptr<scalar_t>(), b, y.mutable_data_ptr<scalar_t>(), s, d);
    });
  });
}

void depthwise_nchw_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  if (dx.numel() == 0) {
    return;
  }
  const at::Tensor wc = w.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "skeleton_conv2d_depthwise_nchw_input_grad", [&] {
    with_divisors(s, s.in_channels, [&](auto d) {
      launch(depthwise_nchw_input_grad_kernel<scalar_t, decltype(d.packs)>, grid_size(dx.numel()), kBlock,
             dy.const_data_ptr<scalar_t>(), wc.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), s, d);
    });
  });
}

at::Tensor depthwise_nchw_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return nchw_weight_grads(dy, x, s, /*with_bias=*/false).weight;
}

WeightGrads depthwise_nchw_weight_and_bias_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return nchw_weight_grads(dy, x, s, /*with_bias=*/true);
}

}  // namespace gpu
}  // namespace skeleton_cuda
