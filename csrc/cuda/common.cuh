// Small helpers shared by the CUDA kernels of skeleton_conv2d: the problem shape, tap geometry,
// index unravelling, vector packs and fixed-order reductions.
//
// All index arithmetic is int64_t: activations can exceed 2^31 elements.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>

#include "../taps.h"

namespace skeleton_cuda {
namespace gpu {

// Threads per block of every kernel here.
constexpr int kBlock = 256;
constexpr int kWarp = 32;

// Sizes and convolution parameters, passed by value to every kernel.
struct ConvShape {
  int64_t batch;
  int64_t in_channels, in_h, in_w;
  int64_t out_channels, out_h, out_w;
  int64_t groups;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dil_h, dil_w;
};

// Element strides of an (N, C, H, W) tensor in any memory layout.
struct Strides {
  int64_t n, c, h, w;
};

// Row and column of tap t in the 3x3 grid, as functions: taps.h's constexpr arrays cannot be
// indexed at run time in device code. The static_asserts keep both definitions in step.
C10_HOST_DEVICE constexpr int tap_row(int t) { return t == 0 ? 0 : (t == 4 ? 2 : 1); }
C10_HOST_DEVICE constexpr int tap_col(int t) { return t == 1 ? 0 : (t == 3 ? 2 : 1); }
static_assert(kTaps == 5, "the kernels unroll over five taps");
static_assert(tap_row(0) == kTapRow[0] && tap_row(1) == kTapRow[1] && tap_row(2) == kTapRow[2] &&
                  tap_row(3) == kTapRow[3] && tap_row(4) == kTapRow[4],
              "tap_row() disagrees with kTapRow (taps.h)");
static_assert(tap_col(0) == kTapCol[0] && tap_col(1) == kTapCol[1] && tap_col(2) == kTapCol[2] &&
                  tap_col(3) == kTapCol[3] && tap_col(4) == kTapCol[4],
              "tap_col() disagrees with kTapCol (taps.h)");

// The input pixel (ih, iw) that tap t of output pixel (oh, ow) reads; false where it falls in the
// padding (the tap then adds nothing).
C10_HOST_DEVICE inline bool tap_source(const ConvShape& s, int64_t oh, int64_t ow, int t, int64_t& ih, int64_t& iw) {
  ih = oh * s.stride_h - s.pad_h + tap_row(t) * s.dil_h;
  iw = ow * s.stride_w - s.pad_w + tap_col(t) * s.dil_w;
  return ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `count` items (count > 0). The cap keeps the grid legal;
// the loop covers the rest.
inline unsigned grid_size(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(count, kBlock), int64_t{1} << 20));
}

// Number of pixel chunks a deterministic reduction splits its N * H_out * W_out pixels into, for
// `columns` independent reductions (blocks along grid x). A function of the shape only, never of
// the GPU (no SM count), so the order of the additions, and the bits of the result, are the same
// run to run and do not depend on occupancy. At most 65535 chunks (they go on grid y), each at
// least `min_chunk` pixels.
inline int64_t reduction_chunks(int64_t pixels, int64_t columns, int64_t min_chunk) {
  constexpr int64_t kTargetBlocks = 2048;
  int64_t chunks = ceil_div(kTargetBlocks, std::max<int64_t>(columns, 1));  // no columns: a layer of 0 channels
  chunks = std::min(chunks, ceil_div(pixels, min_chunk));
  return std::max<int64_t>(1, std::min<int64_t>(chunks, 65535));
}

// Item i of a tensor walked in memory order, as (n, c, h, w): NCHW order, or NHWC when
// channels_last, so that neighbouring threads touch neighbouring addresses.
struct Coord {
  int64_t n, c, h, w;
};
__device__ __forceinline__ Coord unravel(int64_t i, int64_t C, int64_t H, int64_t W, bool channels_last) {
  Coord p;
  if (channels_last) {
    p.c = i % C;
    i /= C;
    p.w = i % W;
    i /= W;
    p.h = i % H;
    p.n = i / H;
  } else {
    p.w = i % W;
    i /= W;
    p.h = i % H;
    i /= H;
    p.c = i % C;
    p.n = i / C;
  }
  return p;
}

// V consecutive elements, loaded and stored as one 16-byte (or narrower) transaction. Only used
// where the address is a multiple of the pack size (the host checks).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
constexpr int kPackBytes = 16;

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <int V, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& value) {
  *reinterpret_cast<Pack<T, V>*>(p) = value;
}

// Sum over a 1-D block (blockDim.x a multiple of 32, at most 1024) in a fixed order: a shuffle
// tree within each warp, then warp totals added in warp order. The result is valid in thread 0.
// `scratch` holds 32 values; the leading barrier lets the caller reuse it call after call.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* scratch) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  __syncthreads();
  if (lane == 0) {
    scratch[warp] = value;
  }
  __syncthreads();
  acc_t total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) {
      total += scratch[w];
    }
  }
  return total;
}

}  // namespace gpu
}  // namespace skeleton_cuda
