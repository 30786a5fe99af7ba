// Index math shared by the depthwise kernels of both layouts (depthwise_kernels.cu for
// channels_last, depthwise_nchw_kernels.cu for NCHW): the layer's divisors as WideDiv or NarrowDiv
// (index_division.cuh), picked per layer on the host.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "index_division.cuh"

namespace skeleton_cuda {
namespace gpu {
// In an unnamed namespace, as the kernels that take these types are: nvcc's host stubs name a
// kernel's template arguments as if they lived in the kernel's own namespace.
namespace {

// The divisors of the depthwise kernels' index math, as Div (WideDiv or NarrowDiv).
template <class Div>
struct DepthwiseDivisors {
  Div packs,  // channel packs per pixel (channels_last), or channels (NCHW)
      out_w, out_h, in_w, in_h, stride_h, stride_w;
};

// A size of 0 becomes a divisor of 1: an input of 0 rows is legal where the padding makes an
// output (FastDivmod(0) would divide by zero on the host), and nothing is ever divided by it then:
// only the input gradient splits input pixels, and it has no elements to run.
template <class Div>
DepthwiseDivisors<Div> depthwise_divisors(const ConvShape& s, int64_t packs) {
  auto div = [](int64_t v) { return Div(std::max<int64_t>(v, 1)); };
  return {div(packs), div(s.out_w), div(s.out_h), div(s.in_w), div(s.in_h), div(s.stride_h), div(s.stride_w)};
}

// Pixel p of an (N, H, W) grid as (n, h, w).
template <class Div>
SKC_HOST_DEVICE void split_grid_pixel(int64_t p, const Div& w_div, const Div& h_div, int64_t W, int64_t H, int64_t& n,
                                      int64_t& h, int64_t& w) {
  const int64_t row = w_div.div(p);  // n * H + h
  w = p - row * W;
  n = h_div.div(row);
  h = row - n * H;
}

// Calls f(divisors) with NarrowDiv divisors where every dividend and divisor of the layer's index
// math stays below 2^31, else (or with SKELETON_CUDA_WIDE_INDEX=1) WideDiv ones.
template <typename F>
void with_divisors(const ConvShape& s, int64_t packs, F f) {
  const int64_t largest_dividend = std::max({s.batch * s.in_h * s.in_w * s.in_channels,
                                             s.batch * s.out_h * s.out_w * s.in_channels, s.in_h + s.pad_h,
                                             s.in_w + s.pad_w});
  const int64_t largest_divisor = std::max({packs, s.in_h, s.in_w, s.out_h, s.out_w, s.stride_h, s.stride_w});
  if (narrow_division_exact(largest_dividend, largest_divisor)) {
    f(depthwise_divisors<NarrowDiv>(s, packs));
  } else {
    f(depthwise_divisors<WideDiv>(s, packs));
  }
}

}  // namespace
}  // namespace gpu
}  // namespace skeleton_cuda
