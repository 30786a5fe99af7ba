// Division of kernel indices by a layer's sizes, for the memory-bound kernels whose per-element
// index math would otherwise cost more than their memory traffic: on a GPU a 64-bit division by a
// run-time divisor is a subroutine of dozens of instructions, and the depthwise kernels did up to
// twenty of them per 16-byte result (five taps x two strides x quotient and remainder).
//   WideDiv:   plain 64-bit division, for layers whose tensors reach 2^31 elements;
//   NarrowDiv: FastDivmod, a multiply-high and a shift (Granlund and Montgomery's method), for every
//              dividend below 2^31, i.e. every layer whose tensors stay below 2^31 elements.
// Both run on the host too (the CPU runtime of tests/simt compiles these kernels as C++).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "host_device.h"

namespace skeleton_cuda {
namespace gpu {

SKC_HOST_DEVICE uint32_t mulhi_u32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((uint64_t{a} * b) >> 32);
#endif
}

// n / d for 1 <= d < 2^31 and 0 <= n < 2^31: with s = ceil(log2 d) and
// m = floor(2^32 (2^s - d) / d) + 1, n / d = (mulhi(n, m) + n) >> s; the sum stays below 2^32
// because n < 2^31 and mulhi(n, m) <= n.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 1, shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) {
      ++shift;
    }
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  SKC_HOST_DEVICE uint32_t div(uint32_t n) const { return (mulhi_u32(n, multiplier) + n) >> shift; }
};

// Pixel p of N grids of h x w (image-major) as (image, row, column), by FastDivmod: every pixel
// index must stay below 2^31 (the gather and weight-gradient kernels' eligibility guarantees it).
struct PixelSplitter {
  FastDivmod w_div, hw_div;

  PixelSplitter() = default;
  PixelSplitter(int64_t h, int64_t w) {
    if (h > 0 && w > 0) {  // an empty grid is never split
      w_div = FastDivmod(static_cast<uint32_t>(w));
      hw_div = FastDivmod(static_cast<uint32_t>(h * w));
    }
  }
  SKC_HOST_DEVICE void split(int64_t pixel, int& n, int& row, int& col) const {
    const uint32_t p = static_cast<uint32_t>(pixel);
    const uint32_t img = hw_div.div(p);
    const uint32_t rem = p - img * hw_div.divisor;
    const uint32_t r = w_div.div(rem);
    n = static_cast<int>(img);
    row = static_cast<int>(r);
    col = static_cast<int>(rem - r * w_div.divisor);
  }
};

struct WideDiv {
  int64_t divisor = 1;

  WideDiv() = default;
  explicit WideDiv(int64_t d) : divisor(d) {}
  SKC_HOST_DEVICE int64_t div(int64_t n) const { return n / divisor; }
};

struct NarrowDiv {
  FastDivmod fast;

  NarrowDiv() = default;
  explicit NarrowDiv(int64_t d) : fast(static_cast<uint32_t>(d)) {}
  SKC_HOST_DEVICE int64_t div(int64_t n) const { return fast.div(static_cast<uint32_t>(n)); }
};

// Whether the 64-bit path must be taken even where NarrowDiv would be exact: the environment
// variable SKELETON_CUDA_WIDE_INDEX=1 (read at every call) lets tests run it on small layers.
inline bool wide_index_forced() {
  const char* flag = std::getenv("SKELETON_CUDA_WIDE_INDEX");
  return flag != nullptr && std::strcmp(flag, "1") == 0;
}

// Dividends and divisors of a layer all stay below 2^31, so NarrowDiv is exact for it (and the
// 64-bit path is not forced).
inline bool narrow_division_exact(int64_t largest_dividend, int64_t largest_divisor) {
  constexpr int64_t kLimit = int64_t{1} << 31;
  return largest_dividend < kLimit && largest_divisor < kLimit && !wide_index_forced();
}

}  // namespace gpu
}  // namespace skeleton_cuda
