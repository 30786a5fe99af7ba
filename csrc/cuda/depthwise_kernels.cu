// CUDA kernels for depthwise layers (groups == C_in == C_out): memory-bound, so they work on
// channels_last-contiguous tensors, where each thread handles a pack of V consecutive channels of
// one pixel (16 bytes: 8 halves, 4 floats, 2 doubles) and a warp reads contiguous memory.
//
// Forward and input gradient: one thread per (pixel, pack) of the result. The up to five taps it
// reads are neighbours of pixels that neighbouring warps read too, so each activation comes from
// DRAM about once and is re-read from L1/L2. Both read the weight as [5][C] (a small copy), so
// that one tap of a channel pack is one 16-byte load when the thread needs it. (Reading the
// (C, 1, 5) weight in place, as five packs holding all taps of the pack, saves that launch but
// keeps 20 more registers live: 64 instead of 46-48 on sm_90, 4 resident blocks per SM instead of
// 5, fewer bytes in flight for a kernel that lives on them; and capping it at 48 spills.)
// Weight gradient: blocks of (channel packs x pixel lanes) accumulate per-chunk partial sums, with
// the bias sums as a sixth row when asked, that a second pass adds in a fixed order and writes as
// the (C, 1, 5) weight gradient (partial_sums.cu).
//
// Pack loads need the channel count to be a multiple of V and 16-byte aligned pointers; anything
// else runs the same kernels with V = 1. Index division goes through a Div (index_division.cuh):
// multiply-high and shift for layers below 2^31 elements, 64-bit division beyond.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "common.cuh"
#include "depthwise_indexing.cuh"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

// y[n, oh, ow, c] = bias[c] + sum_t w5[t][c] * x[n, oh * stride - pad + row_t * dil, ..., c].
template <typename T, int V, class Div>
__global__ void depthwise_forward_kernel(const T* __restrict__ x, const T* __restrict__ w5,
                                         const T* __restrict__ bias, T* __restrict__ y, ConvShape s,
                                         DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  const int64_t C = s.in_channels, packs = C / V;
  const int64_t total = s.batch * s.out_h * s.out_w * packs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t pixel = d.packs.div(i);  // (n * H_out + oh) * W_out + ow
    const int64_t c = (i - pixel * packs) * V;
    int64_t n, oh, ow;
    split_grid_pixel(pixel, d.out_w, d.out_h, s.out_w, s.out_h, n, oh, ow);

    acc_t acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      acc[j] = bias != nullptr ? static_cast<acc_t>(bias[c + j]) : acc_t(0);
    }
    const T* xn = x + n * s.in_h * s.in_w * C + c;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      int64_t ih, iw;
      if (tap_source(s, oh, ow, t, ih, iw)) {
        const Pack<T, V> xv = load_pack<V>(xn + (ih * s.in_w + iw) * C);
        const Pack<T, V> wv = load_pack<V>(w5 + t * C + c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          acc[j] += static_cast<acc_t>(wv.v[j]) * static_cast<acc_t>(xv.v[j]);
        }
      }
    }
    Pack<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out.v[j] = static_cast<T>(acc[j]);
    }
    store_pack<V>(y + pixel * C + c, out);
  }
}

// dx[n, ih, iw, c] = sum_t w5[t][c] * dy[n, oh, ow, c] over the taps t whose output pixel
//   oh = (ih + pad - row_t * dil) / stride (exact, 0 <= oh < H_out; columns likewise)
// reads (ih, iw): the gather over the mirrored cross.
template <typename T, int V, class Div>
__global__ void depthwise_input_grad_kernel(const T* __restrict__ dy, const T* __restrict__ w5,
                                            T* __restrict__ dx, ConvShape s, DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  const int64_t C = s.in_channels, packs = C / V;
  const int64_t total = s.batch * s.in_h * s.in_w * packs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t pixel = d.packs.div(i);  // (n * H + ih) * W + iw
    const int64_t c = (i - pixel * packs) * V;
    int64_t n, ih, iw;
    split_grid_pixel(pixel, d.in_w, d.in_h, s.in_w, s.in_h, n, ih, iw);

    acc_t acc[V] = {};
    const T* dyn = dy + n * s.out_h * s.out_w * C + c;
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      const int64_t row = ih + s.pad_h - tap_row(t) * s.dil_h;  // = oh * stride_h if tap t hits
      const int64_t col = iw + s.pad_w - tap_col(t) * s.dil_w;
      if (row < 0 || col < 0) {
        continue;
      }
      const int64_t oh = d.stride_h.div(row), ow = d.stride_w.div(col);  // row, col < 2^31 when narrow
      if (oh * s.stride_h == row && ow * s.stride_w == col && oh < s.out_h && ow < s.out_w) {
        const Pack<T, V> gv = load_pack<V>(dyn + (oh * s.out_w + ow) * C);
        const Pack<T, V> wv = load_pack<V>(w5 + t * C + c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          acc[j] += static_cast<acc_t>(wv.v[j]) * static_cast<acc_t>(gv.v[j]);
        }
      }
    }
    Pack<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out.v[j] = static_cast<T>(acc[j]);
    }
    store_pack<V>(dx + pixel * C + c, out);
  }
}

// First pass of the weight gradient: partials[chunk][c * 5 + t] = sum over the pixels of the chunk
// of dy[n, oh, ow, c] * x[n, tap t of (oh, ow), c] (the weight's (C, 1, 5) order), and with
// `with_bias` C more columns partials[chunk][5 C + c] = sum of dy[n, oh, ow, c] (the bias
// gradient's share: dy is in registers anyway). Block (blockDim.x channel packs) x (blockDim.y
// pixel lanes), blockDim.x * blockDim.y == kBlock; blockIdx.x picks the packs, blockIdx.y the
// chunk [chunk * chunk_len, (chunk + 1) * chunk_len) of the N * H_out * W_out pixels. Lane ty sums
// pixels begin + ty, begin + ty + blockDim.y, ...; the lanes are then added in order 0, 1, ...
// through shared memory. No atomics: the same bits every run.
template <typename T, int V, class Div>
__global__ void depthwise_weight_grad_partials_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                      at::opmath_type<T>* __restrict__ partials,
                                                      ConvShape s, int64_t chunk_len, bool with_bias,
                                                      DepthwiseDivisors<Div> d) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t staging[kBlock * V];
  const int64_t C = s.in_channels, packs = C / V;
  const int64_t pack = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const bool active = pack < packs;  // inactive threads still take part in the barriers
  const int64_t c = pack * V;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  const int64_t begin = blockIdx.y * chunk_len;
  const int64_t end = std::min(begin + chunk_len, pixels);

  acc_t acc[kTaps + 1][V] = {};  // the five taps, then the bias sum
  if (active) {
    for (int64_t q = begin + threadIdx.y; q < end; q += blockDim.y) {
      int64_t n, oh, ow;
      split_grid_pixel(q, d.out_w, d.out_h, s.out_w, s.out_h, n, oh, ow);
      const Pack<T, V> gv = load_pack<V>(dy + q * C + c);
      acc_t g[V];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        g[j] = static_cast<acc_t>(gv.v[j]);
        acc[kTaps][j] += g[j];
      }
      const T* xn = x + n * s.in_h * s.in_w * C + c;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        int64_t ih, iw;
        if (tap_source(s, oh, ow, t, ih, iw)) {
          const Pack<T, V> xv = load_pack<V>(xn + (ih * s.in_w + iw) * C);
#pragma unroll
          for (int j = 0; j < V; ++j) {
            acc[t][j] += g[j] * static_cast<acc_t>(xv.v[j]);
          }
        }
      }
    }
  }

  const int slot = (threadIdx.y * blockDim.x + threadIdx.x) * V;
  const int rows = with_bias ? kTaps + 1 : kTaps;  // uniform over the block: every thread meets the barriers
#pragma unroll
  for (int t = 0; t < kTaps + 1; ++t) {
    if (t == rows) {
      break;
    }
    __syncthreads();  // the previous row's staging values have been read
#pragma unroll
    for (int j = 0; j < V; ++j) {
      staging[slot + j] = acc[t][j];
    }
    __syncthreads();
    if (threadIdx.y == 0 && active) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc_t total = 0;
        for (unsigned lane = 0; lane < blockDim.y; ++lane) {
          total += staging[(lane * blockDim.x + threadIdx.x) * V + j];
        }
        // The weight's own (C, 1, 5) order, then the C bias sums.
        const int64_t column = t < kTaps ? (c + j) * kTaps + t : kTaps * C + c + j;
        partials[blockIdx.y * (rows * C) + column] = total;
      }
    }
  }
}

// V when `channels` splits into packs of V and every pointer is 16-byte aligned, else 1.
template <typename T>
int pack_width(int64_t channels, std::initializer_list<const void*> pointers) {
  constexpr int V = kPackBytes / sizeof(T);
  if (channels % V != 0) {
    return 1;
  }
  for (const void* p : pointers) {
    if (reinterpret_cast<std::uintptr_t>(p) % kPackBytes != 0) {
      return 1;
    }
  }
  return V;
}

// The (C, 1, 5) weight as [5][C], so that a pack of channels of one tap is contiguous.
at::Tensor taps_by_channel(const at::Tensor& w, int64_t channels) {
  return w.reshape({channels, kTaps}).t().contiguous();
}

template <typename T, int V>
WeightGrads launch_weight_grad(const at::Tensor& dy, const at::Tensor& x, const at::TensorOptions& acc_options,
                               const ConvShape& s, bool with_bias) {
  const int64_t C = s.in_channels, packs = C / V;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  int tx = 1;  // channel packs per block: a power of two, so that few threads idle for small C
  while (tx < packs && tx < kBlock) {
    tx *= 2;
  }
  const int ty = kBlock / tx;
  const int64_t columns = ceil_div(packs, tx);
  int64_t chunks = reduction_chunks(pixels, columns, 8 * int64_t{ty});
  const int64_t chunk_len = ceil_div(pixels, chunks);
  chunks = ceil_div(pixels, chunk_len);  // no empty chunk
  at::Tensor partials = at::empty({chunks, (with_bias ? kTaps + 1 : kTaps) * C}, acc_options);
  const dim3 grid(static_cast<unsigned>(columns), static_cast<unsigned>(chunks));
  with_divisors(s, packs, [&](auto d) {
    launch(depthwise_weight_grad_partials_kernel<T, V, decltype(d.packs)>, grid, dim3(tx, ty), x.const_data_ptr<T>(),
           dy.const_data_ptr<T>(), partials.mutable_data_ptr<at::opmath_type<T>>(), s, chunk_len, with_bias, d);
  });
  return finish_weight_grad(partials, s, PartialsOrder::kWeight, with_bias, x.scalar_type());
}

WeightGrads weight_grads(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s, bool with_bias) {
  const int64_t C = s.in_channels;
  const at::TensorOptions acc_options = x.options().dtype(partials_dtype(x.scalar_type()));
  if (s.batch * s.out_h * s.out_w == 0) {  // sums over no pixels
    return {at::zeros({C, 1, kTaps}, x.options()), with_bias ? at::zeros({C}, x.options()) : at::Tensor()};
  }
  WeightGrads result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_depthwise_weight_grad", [&] {
    using T = scalar_t;
    constexpr int V = kPackBytes / sizeof(T);
    result = pack_width<T>(C, {x.const_data_ptr(), dy.const_data_ptr()}) == V
                 ? launch_weight_grad<T, V>(dy, x, acc_options, s, with_bias)
                 : launch_weight_grad<T, 1>(dy, x, acc_options, s, with_bias);
  });
  return result;
}

}  // namespace

void depthwise_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                       const ConvShape& s) {
  if (y.numel() == 0) {
    return;  // a launch of 0 blocks is an error
  }
  const at::Tensor w5 = taps_by_channel(w, s.in_channels);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_depthwise_forward", [&] {
    using T = scalar_t;
    const T* b = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
    constexpr int V = kPackBytes / sizeof(T);
    const bool packed = pack_width<T>(s.in_channels, {x.const_data_ptr(), w5.const_data_ptr(), y.const_data_ptr()}) == V;
    with_divisors(s, packed ? s.in_channels / V : s.in_channels, [&](auto d) {
      using Div = decltype(d.packs);
      if (packed) {
        launch(depthwise_forward_kernel<T, V, Div>, grid_size(y.numel() / V), kBlock, x.const_data_ptr<T>(),
               w5.const_data_ptr<T>(), b, y.mutable_data_ptr<T>(), s, d);
      } else {
        launch(depthwise_forward_kernel<T, 1, Div>, grid_size(y.numel()), kBlock, x.const_data_ptr<T>(),
               w5.const_data_ptr<T>(), b, y.mutable_data_ptr<T>(), s, d);
      }
    });
  });
}

void depthwise_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  if (dx.numel() == 0) {
    return;
  }
  const at::Tensor w5 = taps_by_channel(w, s.in_channels);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "skeleton_conv2d_depthwise_input_grad", [&] {
    using T = scalar_t;
    constexpr int V = kPackBytes / sizeof(T);
    const bool packed =
        pack_width<T>(s.in_channels, {dy.const_data_ptr(), w5.const_data_ptr(), dx.const_data_ptr()}) == V;
    with_divisors(s, packed ? s.in_channels / V : s.in_channels, [&](auto d) {
      using Div = decltype(d.packs);
      if (packed) {
        launch(depthwise_input_grad_kernel<T, V, Div>, grid_size(dx.numel() / V), kBlock, dy.const_data_ptr<T>(),
               w5.const_data_ptr<T>(), dx.mutable_data_ptr<T>(), s, d);
      } else {
        launch(depthwise_input_grad_kernel<T, 1, Div>, grid_size(dx.numel()), kBlock, dy.const_data_ptr<T>(),
               w5.const_data_ptr<T>(), dx.mutable_data_ptr<T>(), s, d);
      }
    });
  });
}

at::Tensor depthwise_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return weight_grads(dy, x, s, /*with_bias=*/false).weight;
}

WeightGrads depthwise_weight_and_bias_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return weight_grads(dy, x, s, /*with_bias=*/true);
}

}  // namespace gpu
}  // namespace skeleton_cuda
