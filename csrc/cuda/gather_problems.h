// The gather GEMMs of a layer, as both implicit-GEMM families launch them (tiled_kernels.cu on CUDA
// cores, tensor_core_kernels.cu): the forward is one GEMM over the output grid; the input gradient
// is one GEMM per residue class of the input modulo the stride, each with only the taps that reach
// it (gather_map.cuh). The families differ in their parameter structs, weight packing and kernels,
// not in these. Host-only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common.cuh"
#include "gather_map.cuh"

namespace skeleton_cuda {
namespace gpu {

// One gather GEMM: its map, the channels per pixel of source and destination, and per group the
// reduced (k) and produced (n) channel counts.
struct GatherProblem {
  GatherMap map;
  int64_t src_ld = 0, dst_ld = 0;
  int k = 0, n = 0, groups = 1;
};

// output[pixel][g * C_out/G + j] from input, weight tap by tap.
inline GatherProblem forward_problem(const ConvShape& s) {
  GatherProblem p;
  p.map = forward_gather_map(s.batch, s.in_h, s.in_w, s.out_h, s.out_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                             s.dil_h, s.dil_w);
  p.src_ld = s.in_channels;
  p.dst_ld = s.out_channels;
  p.k = static_cast<int>(s.in_channels / s.groups);
  p.n = static_cast<int>(s.out_channels / s.groups);
  p.groups = static_cast<int>(s.groups);
  return p;
}

// grad_input from grad_output and the transposed weight: one problem per residue class (rh, rw)
// that holds pixels; together they write every pixel of grad_input exactly once (a class no tap
// reaches gets zeros). A stride beyond the image's size leaves the other classes empty: building
// them all cost seconds and gigabytes of host memory at stride 4096.
inline std::vector<GatherProblem> input_grad_problems(const ConvShape& s) {
  std::vector<GatherProblem> problems;
  for (int64_t rh = 0; rh < std::min(s.stride_h, s.in_h); ++rh) {
    for (int64_t rw = 0; rw < std::min(s.stride_w, s.in_w); ++rw) {
      GatherProblem p;
      p.map = input_grad_gather_map(s.batch, s.in_h, s.in_w, s.out_h, s.out_w, s.stride_h, s.stride_w, s.pad_h,
                                    s.pad_w, s.dil_h, s.dil_w, rh, rw);
      p.src_ld = s.out_channels;
      p.dst_ld = s.in_channels;
      p.k = static_cast<int>(s.out_channels / s.groups);
      p.n = static_cast<int>(s.in_channels / s.groups);
      p.groups = static_cast<int>(s.groups);
      problems.push_back(p);
    }
  }
  return problems;
}

// What both families need of a layer's sizes: they keep coordinates, channel counts and tap offsets
// in 32-bit registers (addresses are 64-bit), so every one stays well below 2^31, and they split
// pixels by FastDivmod (gather_map.cuh), so the input and output pixel counts stay below
// kMaxGridPoints. Layers beyond go to the direct kernels. Each family adds its own grid limits.
inline bool gather_coordinates_fit(const ConvShape& s) {
  constexpr int64_t kSmall = int64_t{1} << 28;
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  for (const int64_t v : {s.batch, s.in_h, s.in_w, s.out_h, s.out_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                          s.dil_h, s.dil_w, cin_g, cout_g, s.groups}) {
    if (v >= kSmall) {
      return false;
    }
  }
  return s.batch * s.in_h * s.in_w < kMaxGridPoints && s.batch * s.out_h * s.out_w < kMaxGridPoints;
}

// Copies a problem into a family's parameter struct (each has these fields).
template <class Params>
void set_problem(Params& params, const GatherProblem& problem) {
  params.map = problem.map;
  params.src_ld = problem.src_ld;
  params.dst_ld = problem.dst_ld;
  params.k = problem.k;
  params.n = problem.n;
  params.groups = problem.groups;
}

}  // namespace gpu
}  // namespace skeleton_cuda
