// Direct CUDA kernels for dense and grouped layers (every layer that is not depthwise).
//
// Correct first: one thread per output element for the forward and the input gradient, and one
// block per (output channel, input channel) pair and pixel chunk for the weight gradient, reduced
// in a fixed order. Activations are read through their strides, so NCHW, channels_last and
// non-contiguous tensors all work without a copy; threads walk the result in its memory order.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "common.cuh"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

// y[n, co, oh, ow] = bias[co] + sum over ci in co's group and taps t of
//   w[co, ci, t] * x[n, ci, oh * stride - pad + row_t * dil, ow * stride - pad + col_t * dil].
// wt is the weight as [G][C_in/G][5][C_out/G], so that threads of neighbouring output channels
// (channels_last) read neighbouring weights.
template <typename T>
__global__ void dense_forward_kernel(const T* __restrict__ x, Strides xs, const T* __restrict__ wt,
                                     const T* __restrict__ bias, T* __restrict__ y, Strides ys,
                                     ConvShape s, bool channels_last) {
  using acc_t = at::opmath_type<T>;
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t total = s.batch * s.out_channels * s.out_h * s.out_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const Coord o = unravel(i, s.out_channels, s.out_h, s.out_w, channels_last);
    const int64_t g = o.c / cout_g;

    // Where the five taps of this output pixel land; taps in the zero padding are skipped.
    int64_t offset[kTaps];
    bool inside[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      int64_t ih, iw;
      inside[t] = tap_source(s, o.h, o.w, t, ih, iw);
      offset[t] = inside[t] ? ih * xs.h + iw * xs.w : 0;
    }

    acc_t acc = bias != nullptr ? static_cast<acc_t>(bias[o.c]) : acc_t(0);
    const T* xg = x + o.n * xs.n + g * cin_g * xs.c;
    const T* wg = wt + g * cin_g * kTaps * cout_g + (o.c - g * cout_g);
    for (int64_t ci = 0; ci < cin_g; ++ci) {
      const T* xc = xg + ci * xs.c;
      const T* wc = wg + ci * kTaps * cout_g;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        if (inside[t]) {
          acc += static_cast<acc_t>(wc[t * cout_g]) * static_cast<acc_t>(xc[offset[t]]);
        }
      }
    }
    y[o.n * ys.n + o.c * ys.c + o.h * ys.h + o.w * ys.w] = static_cast<T>(acc);
  }
}

// dx[n, ci, ih, iw] = sum over co in ci's group and taps t of w[co, ci, t] * dy[n, co, oh, ow],
// where (oh, ow) is the output pixel whose tap t reads (ih, iw):
//   oh = (ih + pad - row_t * dil) / stride when that division is exact and 0 <= oh < H_out
// (columns likewise): a gather over the mirrored cross. wt is the weight as [G][C_out/G][5][C_in/G].
template <typename T>
__global__ void dense_input_grad_kernel(const T* __restrict__ dy, Strides dys, const T* __restrict__ wt,
                                        T* __restrict__ dx, Strides dxs, ConvShape s, bool channels_last) {
  using acc_t = at::opmath_type<T>;
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t total = s.batch * s.in_channels * s.in_h * s.in_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const Coord p = unravel(i, s.in_channels, s.in_h, s.in_w, channels_last);
    const int64_t g = p.c / cin_g;

    int64_t offset[kTaps];
    bool hit[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      const int64_t row = p.h + s.pad_h - tap_row(t) * s.dil_h;  // = oh * stride_h if tap t hits
      const int64_t col = p.w + s.pad_w - tap_col(t) * s.dil_w;
      hit[t] = row >= 0 && col >= 0 && row % s.stride_h == 0 && col % s.stride_w == 0 &&
               row / s.stride_h < s.out_h && col / s.stride_w < s.out_w;
      offset[t] = hit[t] ? (row / s.stride_h) * dys.h + (col / s.stride_w) * dys.w : 0;
    }

    acc_t acc = 0;
    const T* dyg = dy + p.n * dys.n + g * cout_g * dys.c;
    const T* wg = wt + g * cout_g * kTaps * cin_g + (p.c - g * cin_g);
    for (int64_t co = 0; co < cout_g; ++co) {
      const T* dyc = dyg + co * dys.c;
      const T* wc = wg + co * kTaps * cin_g;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        if (hit[t]) {
          acc += static_cast<acc_t>(wc[t * cin_g]) * static_cast<acc_t>(dyc[offset[t]]);
        }
      }
    }
    dx[p.n * dxs.n + p.c * dxs.c + p.h * dxs.h + p.w * dxs.w] = static_cast<T>(acc);
  }
}

// First pass of the weight gradient. Block (blockIdx.x = co * C_in/G + ci, blockIdx.y = chunk)
// sums dy[n, co, oh, ow] * x[n, g * C_in/G + ci, tap t of (oh, ow)] over the pixels
// [chunk * chunk_len, (chunk + 1) * chunk_len) of the N * H_out * W_out, for all five taps, and
// writes partials[chunk][co][ci][t]. Threads stride over the chunk and their sums are combined by
// block_sum in a fixed order: no atomics, the same bits every run. x and dy are NCHW-contiguous
// so that neighbouring threads read neighbouring pixels.
template <typename T>
__global__ void dense_weight_grad_partials_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                  at::opmath_type<T>* __restrict__ partials, ConvShape s,
                                                  int64_t chunk_len) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t scratch[kWarp];
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t pair = blockIdx.x;
  const int64_t co = pair / cin_g, ci = (co / cout_g) * cin_g + pair % cin_g;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  const int64_t begin = blockIdx.y * chunk_len;
  const int64_t end = std::min(begin + chunk_len, pixels);

  acc_t acc[kTaps] = {};
  for (int64_t q = begin + threadIdx.x; q < end; q += blockDim.x) {
    const int64_t ow = q % s.out_w, oh = (q / s.out_w) % s.out_h, n = q / (s.out_w * s.out_h);
    const acc_t g = static_cast<acc_t>(dy[((n * s.out_channels + co) * s.out_h + oh) * s.out_w + ow]);
    const T* xc = x + (n * s.in_channels + ci) * s.in_h * s.in_w;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      int64_t ih, iw;
      if (tap_source(s, oh, ow, t, ih, iw)) {
        acc[t] += g * static_cast<acc_t>(xc[ih * s.in_w + iw]);
      }
    }
  }

  const int64_t num_pairs = gridDim.x;
#pragma unroll
  for (int t = 0; t < kTaps; ++t) {
    const acc_t total = block_sum(acc[t], scratch);
    if (threadIdx.x == 0) {
      partials[(blockIdx.y * num_pairs + pair) * kTaps + t] = total;
    }
  }
}

bool walks_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

}  // namespace

void dense_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s) {
  if (y.numel() == 0) {
    return;  // a launch of no blocks is an error
  }
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][C_in/G][5][C_out/G]
  const at::Tensor wt = w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 2, 3, 1}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_dense_forward", [&] {
    launch(dense_forward_kernel<scalar_t>, grid_size(y.numel()), kBlock, x.const_data_ptr<scalar_t>(), strides_of(x),
           wt.const_data_ptr<scalar_t>(), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
           y.mutable_data_ptr<scalar_t>(), strides_of(y), s, walks_channels_last(y));
  });
}

void dense_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  if (dx.numel() == 0) {
    return;
  }
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][C_out/G][5][C_in/G]
  const at::Tensor wt = w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 1, 3, 2}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "skeleton_conv2d_dense_input_grad", [&] {
    launch(dense_input_grad_kernel<scalar_t>, grid_size(dx.numel()), kBlock, dy.const_data_ptr<scalar_t>(),
           strides_of(dy), wt.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), strides_of(dx), s,
           walks_channels_last(dx));
  });
}

at::Tensor dense_weight_grad(const at::Tensor& dy_any, const at::Tensor& x_any, const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t pairs = s.out_channels * cin_g;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  const at::TensorOptions acc_options = x_any.options().dtype(partials_dtype(x_any.scalar_type()));
  if (pairs == 0 || pixels == 0) {
    return at::zeros({s.out_channels, cin_g, kTaps}, x_any.options());
  }
  TORCH_CHECK(pairs <= INT32_MAX, "skeleton_conv2d: weight too large for the CUDA weight-gradient kernel (",
              pairs, " channel pairs)");
  const at::Tensor x = x_any.contiguous();
  const at::Tensor dy = dy_any.contiguous();
  int64_t chunks = reduction_chunks(pixels, pairs, 4 * kBlock);
  const int64_t chunk_len = ceil_div(pixels, chunks);
  chunks = ceil_div(pixels, chunk_len);  // no empty chunk
  at::Tensor partials = at::empty({chunks, pairs * kTaps}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_dense_weight_grad", [&] {
    const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(chunks));
    launch(dense_weight_grad_partials_kernel<scalar_t>, grid, kBlock, x.const_data_ptr<scalar_t>(),
           dy.const_data_ptr<scalar_t>(), partials.mutable_data_ptr<at::opmath_type<scalar_t>>(), s, chunk_len);
  });
  return finish_weight_grad(partials, s, PartialsOrder::kWeight, /*with_bias=*/false, x.scalar_type()).weight;
}

}  // namespace gpu
}  // namespace skeleton_cuda
