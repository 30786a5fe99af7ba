// Which pixel each tap reads: the geometry of the forward pass and of the input gradient, shared
// by the CPU kernels and the CUDA tensor-core kernels. Plain C++ (no ATen): the CPU kernel files
// compiled for one instruction set include it, and so does the tensor-core emulator.
#pragma once

#include <cstdint>

#include "taps.h"

namespace skeleton_cuda {

// For every point (n, i, j) of an iteration grid: the destination pixel it writes and the source
// pixel each active tap reads. Both images are channels_last (pixel-major).
//   destination: (n, dst_row0 + dst_row_step * i, dst_col0 + dst_col_step * j)
//   tap a reads: (n, src_row_step * i + src_row_off[a], src_col_step * j + src_col_off[a]),
//                zero outside [0, src_h) x [0, src_w)
// The forward pass iterates the output image; the input gradient iterates one residue class of
// the input image modulo the stride, in which only some taps take part (tap[] says which).
struct TapMap {
  int64_t batch = 0, grid_h = 0, grid_w = 0;
  int64_t dst_h = 0, dst_w = 0, dst_row0 = 0, dst_col0 = 0, dst_row_step = 1, dst_col_step = 1;
  int64_t src_h = 0, src_w = 0, src_row_step = 1, src_col_step = 1;
  int num_taps = 0;            // active taps, 0..5
  int tap[kTaps] = {};         // the weight tap each active tap multiplies with
  int64_t src_row_off[kTaps] = {};
  int64_t src_col_off[kTaps] = {};
};

// Sizes and arguments of one layer, as plain integers.
struct TapGeometry {
  int64_t batch, in_h, in_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// Forward: iterate the output image; every tap is active.
inline TapMap forward_tap_map(const TapGeometry& g) {
  TapMap map;
  map.batch = g.batch;
  map.grid_h = map.dst_h = g.out_h;
  map.grid_w = map.dst_w = g.out_w;
  map.src_h = g.in_h;
  map.src_w = g.in_w;
  map.src_row_step = g.stride_h;
  map.src_col_step = g.stride_w;
  map.num_taps = kTaps;
  for (int t = 0; t < kTaps; ++t) {
    map.tap[t] = t;
    map.src_row_off[t] = kTapRow[t] * g.dil_h - g.pad_h;
    map.src_col_off[t] = kTapCol[t] * g.dil_w - g.pad_w;
  }
  return map;
}

// Input gradient, residue class (rh, rw) of the input modulo the stride: input pixel
// (rh + s*i, rw + s*j) receives tap t from output pixel (ih + pad - row_t*dil) / s when that
// division is exact, which depends only on the class. So each class is a gather over the
// grad_output with a fixed set of taps, and no tap work is wasted on strided layers.
inline TapMap input_grad_tap_map(const TapGeometry& g, int64_t rh, int64_t rw) {
  const auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  const auto positive_mod = [](int64_t a, int64_t b) { return ((a % b) + b) % b; };
  TapMap map;
  map.batch = g.batch;
  map.grid_h = rh < g.in_h ? ceil_div(g.in_h - rh, g.stride_h) : 0;
  map.grid_w = rw < g.in_w ? ceil_div(g.in_w - rw, g.stride_w) : 0;
  map.dst_h = g.in_h;
  map.dst_w = g.in_w;
  map.dst_row0 = rh;
  map.dst_col0 = rw;
  map.dst_row_step = g.stride_h;
  map.dst_col_step = g.stride_w;
  map.src_h = g.out_h;
  map.src_w = g.out_w;
  for (int t = 0; t < kTaps; ++t) {
    const int64_t row = rh + g.pad_h - kTapRow[t] * g.dil_h;
    const int64_t col = rw + g.pad_w - kTapCol[t] * g.dil_w;
    if (positive_mod(row, g.stride_h) != 0 || positive_mod(col, g.stride_w) != 0) {
      continue;
    }
    const int a = map.num_taps++;
    map.tap[a] = t;
    map.src_row_off[a] = row / g.stride_h;  // exact
    map.src_col_off[a] = col / g.stride_w;
  }
  return map;
}

}  // namespace skeleton_cuda
