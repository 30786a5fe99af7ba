// The gather geometry of the implicit-GEMM kernels (tensor_core_gemm.cuh on tensor cores,
// tiled_kernels.cu on CUDA cores): for every row of the GEMM (a grid point), the destination
// pixel it writes and the source pixel each active tap reads, with 32-bit tap offsets the kernels
// keep in registers. Plain C++ shared with the host and the tensor-core emulator: no CUDA or ATen
// header.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "../tap_map.h"
#include "../taps.h"
#include "host_device.h"
#include "index_division.cuh"

namespace skeleton_cuda {
namespace gpu {

// Grid points (pixels) of a gather GEMM or weight gradient must stay below this: FastDivmod's range
// (2^31), less a margin for the rows a last block decodes past the end.
constexpr int64_t kMaxGridPoints = (int64_t{1} << 31) - (int64_t{1} << 20);

SKC_HOST_DEVICE int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The device twin of cpu::TapMap (cpu/tap_kernels.h): grid point (n, i, j) writes destination pixel
//   (n, dst_row0 + dst_row_step * i, dst_col0 + dst_col_step * j)
// and its active tap a reads source pixel
//   (n, src_row_step * i + src_row_off[a], src_col_step * j + src_col_off[a]), zero outside the image,
// multiplying weight tap tap[a]. Forward: the output grid, all five taps. Input gradient: one residue
// class of the input modulo the stride, with only the taps that reach it.
struct GatherMap {
  int64_t batch = 0, grid_h = 0, grid_w = 0;
  // Division of grid points by grid_w and grid_h * grid_w by multiply-high and shift: the kernels
  // that take a GatherMap (tiled, tensor cores) take layers of fewer than 2^31 grid points only
  // (their eligibility), the direct kernels the rest. A block decodes its rows once, but with 64-bit
  // division that prologue cost about as many instructions as the main loop of a 64-channel layer.
  FastDivmod grid_w_div, grid_hw_div;
  int64_t dst_h = 0, dst_w = 0, dst_row0 = 0, dst_col0 = 0, dst_row_step = 1, dst_col_step = 1;
  int64_t src_h = 0, src_w = 0, src_row_step = 1, src_col_step = 1;
  int num_taps = 0;
  int tap[kTaps] = {};
  int src_row_off[kTaps] = {};
  int src_col_off[kTaps] = {};
};

// The shared tap geometry (../tap_map.h) with 32-bit tap offsets, which the kernels keep in registers.
inline GatherMap to_gather_map(const TapMap& m) {
  GatherMap map;
  map.batch = m.batch;
  map.grid_h = m.grid_h;
  map.grid_w = m.grid_w;
  map.dst_h = m.dst_h;
  map.dst_w = m.dst_w;
  map.dst_row0 = m.dst_row0;
  map.dst_col0 = m.dst_col0;
  map.dst_row_step = m.dst_row_step;
  map.dst_col_step = m.dst_col_step;
  map.src_h = m.src_h;
  map.src_w = m.src_w;
  map.src_row_step = m.src_row_step;
  map.src_col_step = m.src_col_step;
  if (m.batch * m.grid_h * m.grid_w >= kMaxGridPoints) {
    throw std::length_error("skeleton_conv2d: a gather GEMM of 2^31 grid points or more (the direct kernels take it)");
  }
  if (m.grid_h > 0 && m.grid_w > 0) {  // an empty grid launches nothing: no divisor of zero
    map.grid_w_div = FastDivmod(static_cast<uint32_t>(m.grid_w));
    map.grid_hw_div = FastDivmod(static_cast<uint32_t>(m.grid_h * m.grid_w));
  }
  map.num_taps = m.num_taps;
  for (int a = 0; a < kTaps; ++a) {
    map.tap[a] = m.tap[a];
    map.src_row_off[a] = static_cast<int>(m.src_row_off[a]);
    map.src_col_off[a] = static_cast<int>(m.src_col_off[a]);
  }
  return map;
}

inline GatherMap forward_gather_map(int64_t batch, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                                    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                    int64_t dil_h, int64_t dil_w) {
  return to_gather_map(forward_tap_map(
      TapGeometry{batch, in_h, in_w, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w}));
}

inline GatherMap input_grad_gather_map(int64_t batch, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                       int64_t dil_h, int64_t dil_w, int64_t rh, int64_t rw) {
  return to_gather_map(input_grad_tap_map(
      TapGeometry{batch, in_h, in_w, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w}, rh, rw));
}

// values[i] for a run-time i in [0, 5): a chain of selects, so that a parameter array is never indexed
// at run time (which can copy the whole parameter struct to local memory).
template <typename V>
SKC_HOST_DEVICE V select5(const V (&values)[kTaps], int i) {
  V r = values[0];
#pragma unroll
  for (int t = 1; t < kTaps; ++t) {
    r = i == t ? values[t] : r;
  }
  return r;
}

// The output tile of gather-GEMM block `block` (a linear grid): block = (m_tile * groups + g) *
// n_tiles + n_tile, so that the blocks reading the same pixels (other column tiles, other groups)
// run side by side. Rows [m0, m0 + tile_m) of group g, columns [n0, n0 + tile_n).
struct GatherTile {
  int64_t m0 = 0;
  int g = 0, n0 = 0;
};

// Grids are launched with at most 2^31 - 1 blocks (the launchers check), so the decode divides in
// 32 bits.
SKC_HOST_DEVICE GatherTile gather_tile(int64_t block, int n_tiles, int groups, int tile_m, int tile_n) {
  GatherTile t;
  const uint32_t b = static_cast<uint32_t>(block);
  const uint32_t rest = b / static_cast<uint32_t>(n_tiles);
  t.n0 = static_cast<int>(b - rest * static_cast<uint32_t>(n_tiles)) * tile_n;
  const uint32_t m_tile = rest / static_cast<uint32_t>(groups);
  t.g = static_cast<int>(rest - m_tile * static_cast<uint32_t>(groups));
  t.m0 = int64_t{m_tile} * tile_m;
  return t;
}

// Grid point m as (image, row i, column j) of its grid.
struct GridPoint {
  int64_t img, i, j;
};

SKC_HOST_DEVICE GridPoint split_grid_point(const GatherMap& map, int64_t m) {
  const uint32_t mm = static_cast<uint32_t>(m);  // below 2^31 (kMaxGridPoints)
  const uint32_t img = map.grid_hw_div.div(mm);
  const uint32_t rem = mm - img * map.grid_hw_div.divisor;
  const uint32_t i = map.grid_w_div.div(rem);
  return GridPoint{img, i, rem - i * map.grid_w_div.divisor};
}

// Row m of a gather GEMM (a grid point), as a loader needs it: the base of its source image (in
// pixels) and its tap-less source position, to which a tap adds its offsets. A row past `rows`
// has ok == false and the position of row 0 (never loaded).
struct GatherRow {
  int64_t image = 0;
  int y = 0, x = 0;
  bool ok = false;
};

SKC_HOST_DEVICE GatherRow gather_row(const GatherMap& map, int64_t m, int64_t rows) {
  GatherRow r;
  r.ok = m < rows;
  const GridPoint p = split_grid_point(map, r.ok ? m : 0);
  r.image = p.img * map.src_h * map.src_w;
  r.y = static_cast<int>(p.i * map.src_row_step);
  r.x = static_cast<int>(p.j * map.src_col_step);
  return r;
}

// The destination pixel of grid point m: image, and position within the image (row * dst_w + col).
struct DestinationPixel {
  int64_t image, position;
};

SKC_HOST_DEVICE DestinationPixel destination_pixel(const GatherMap& map, int64_t m) {
  const GridPoint p = split_grid_point(map, m);
  const int64_t row = map.dst_row0 + map.dst_row_step * p.i, col = map.dst_col0 + map.dst_col_step * p.j;
  return {p.img, row * map.dst_w + col};
}

// Element offset of channel `channel` of row m's destination pixel (channels_last, ld channels
// per pixel), or -1 past `rows`.
SKC_HOST_DEVICE int64_t destination_offset(const GatherMap& map, int64_t m, int64_t rows, int64_t ld,
                                           int64_t channel) {
  if (m >= rows) {
    return -1;
  }
  const DestinationPixel d = destination_pixel(map, m);
  return (d.image * map.dst_h * map.dst_w + d.position) * ld + channel;
}

// The same for a contiguous NCHW destination with `channels` planes per image: element (row m,
// column j) then lies at the result + j * dst_h * dst_w.
SKC_HOST_DEVICE int64_t destination_offset_nchw(const GatherMap& map, int64_t m, int64_t rows, int64_t channels,
                                                int64_t channel) {
  if (m >= rows) {
    return -1;
  }
  const DestinationPixel d = destination_pixel(map, m);
  return (d.image * channels + channel) * map.dst_h * map.dst_w + d.position;
}

// A pixel of an output grid as (image n, row h, column w), advanced by a fixed step given as the
// same digits (step_n, step_h, step_w), each below its radix: two carries instead of divisions.
SKC_HOST_DEVICE void advance_pixel(int& n, int& h, int& w, int step_n, int step_h, int step_w, int out_h, int out_w) {
  w += step_w;
  int carry = w >= out_w;
  w -= carry ? out_w : 0;
  h += step_h + carry;
  carry = h >= out_h;
  h -= carry ? out_h : 0;
  n += step_n + carry;
}

}  // namespace gpu
}  // namespace skeleton_cuda
