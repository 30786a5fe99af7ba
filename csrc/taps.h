// The five taps of the skeleton kernel, shared by every backend (host and device code).
//
//   .  T  .      weight[..., 0..4] = T, L, C, R, B: raster order of the 3x3 grid,
//   L  C  R      i.e. flat 3x3 indices 1, 3, 4, 5, 7.
//   .  B  .
#pragma once

namespace skeleton_cuda {

constexpr int kTaps = 5;
// Row and column of each tap in the 3x3 grid; with dilation d a tap reads
// input row  oh * stride - padding + kTapRow[t] * d (columns likewise).
constexpr int kTapRow[kTaps] = {0, 1, 1, 1, 2};
constexpr int kTapCol[kTaps] = {1, 0, 1, 2, 1};

}  // namespace skeleton_cuda
