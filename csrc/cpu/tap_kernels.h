// The CPU kernels' view of the work: plain data and function tables, no ATen.
//
// The kernels are compiled once per instruction set (tap_kernels_<isa>.cpp, each under its own
// target pragma) and must not include ATen or standard-library templates: an inline function
// compiled for AVX-512 in one file could be picked by the linker for a caller in another, and
// crash on a CPU without it. The dispatcher (skeleton_conv2d_cpu.cpp) owns layouts, threads and
// the choice of table.
#pragma once

#include <cstdint>

#include "../tap_map.h"

namespace skeleton_cuda {
namespace cpu {

using skeleton_cuda::TapMap;  // the tap geometry (../tap_map.h)

// dst[pixel][g*n + j] = bias[g][j] + sum over active taps a and c < k of
//                       src_a[pixel][g*k + c] * weight[g][tap[a]][c][j]
template <typename T>
struct GatherGemmArgs {
  TapMap map;
  const T* src = nullptr;
  int64_t src_ld = 0;      // channels per source pixel
  T* dst = nullptr;
  int64_t dst_ld = 0;      // channels per destination pixel
  const T* weight = nullptr;  // packed [groups][blocks][5][k][block], block = vectors * lanes
  const T* bias = nullptr;    // packed [groups][blocks * block], or nullptr
  const T* zeros = nullptr;   // src_ld zeros: what a tap reads outside the image
  int64_t groups = 1, k = 0, n = 0;  // per group: channels reduced, channels produced
  int vectors = 1;
};

// dw[g][t][c][j] = sum over output pixels of src_t[pixel][g*k + c] * dy[pixel][g*dy_group_stride + j]
template <typename T>
struct WgradArgs {
  TapMap map;              // the forward map, all five taps active
  const T* src = nullptr;  // the input
  int64_t src_ld = 0;
  const T* dy = nullptr;   // grad_output; every group's channels padded to blocks * block
  int64_t dy_ld = 0;
  int64_t dy_group_stride = 0;
  // [groups][blocks][5][k][block], overwritten (needs >= 1 pixel; added to with `accumulate`): block-major like the items, so
  // each thread's tiles are one contiguous range. With the blocks side by side in each row (a
  // [groups][5][k][blocks * block] layout), the two threads' tiles alternated every 256 bytes and
  // the weight gradient of 128@28 ran 1.8x slower for stretches of seconds on a 2-core EPYC VM
  // (its accumulator loads stalled: neighbouring lines of the other core, likely pulled in by the
  // adjacent-line prefetcher).
  T* dw = nullptr;
  bool accumulate = false;  // add to the sums dw holds (NCHW bands, one band after another)
  const T* zeros = nullptr;
  int64_t groups = 1, k = 0, n = 0;
  int vectors = 1;
};

// Weight gradients of layers with at most this many input channels per group (first layers of RGB
// images) run tiles of all five taps (few_channel_wgrad_impl), one vector of output channels wide:
// the dispatcher passes vectors == 1 for them.
constexpr int64_t kFewChannelWgrad = 4;

// IEEE float16 bit patterns: how float16 activations are stored for the depthwise kernels (a type of
// its own, so that overloads tell them from bfloat16's plain uint16_t bits).
struct Float16Bits {
  uint16_t bits;
};

// Depthwise (one input and one output channel per group):
// dst[pixel][c] = bias[c] + sum over active taps a of src_a[pixel][c] * weight[tap[a]][c]
// for the pixels of every map: the forward map, or all residue classes of the input gradient,
// which share dst_row_step. An item is one whole destination row, written in one go.
// S: how the activations are stored, T itself or (for T = float) bfloat16 (uint16_t) or float16
// (Float16Bits) bit patterns, converted in registers (sums in T, results rounded to nearest even as
// c10::BFloat16 and c10::Half round): memory-bound layers move half the bytes, for the same bits as
// computing on a float32 copy.
template <typename T, typename S = T>
struct DepthwiseArgs {
  const TapMap* maps = nullptr;
  int num_maps = 0;
  const S* src = nullptr;
  S* dst = nullptr;
  const T* weight = nullptr;  // [5][channels]
  const T* bias = nullptr;    // [channels] or nullptr
  int64_t channels = 0;
  // bfloat16 storage only (else nullptr): weight and bias of channels [0, pair_channels) again, each
  // group of 2 * lanes channels reordered evens then odds, for the interior points, which read
  // channels in pairs (depthwise_interior_pairs); pair_channels is a multiple of 2 * lanes.
  const T* pair_weight = nullptr;  // [5][pair_channels]
  const T* pair_bias = nullptr;    // [pair_channels] or nullptr
  int64_t pair_channels = 0;
};

// dw[n * bands + band][t][c] = sum over the output pixels of image n whose row falls in band of
//                               src_t[pixel][c] * dy[pixel][c]
// (partial sums; the caller adds them up).
template <typename T, typename S = T>
struct DepthwiseWgradArgs {
  TapMap map;                 // the forward map
  const S* src = nullptr;     // S as for DepthwiseArgs
  const S* dy = nullptr;
  T* dw = nullptr;            // [batch * bands][5][channels], overwritten
  int64_t channels = 0;
  int64_t bands = 1;          // row bands per image
};

// dst[m][j][i] = src[m][i][j] for `matrices` matrices of rows x cols elements of elem_size bytes
// (2, 4 or 8: the bits are moved, whatever the type), rows src_ld elements apart in src and dst_ld
// apart in dst. One image between NCHW and channels_last is one such matrix, (C x HW) <-> (HW x C):
// ATen's strided copy does that at 10-25 GB/s on this project's 2-core VM, 4-20x slower than
// a plain copy of the same bytes (NCHW depthwise layers spent three times as long converting as
// convolving). Items are (matrix, block of rows, block of columns), kTransposeBlock on a side.
struct TransposeArgs {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t matrices = 0, rows = 0, cols = 0;
  int64_t src_ld = 0, dst_ld = 0;                        // elements between rows
  int64_t src_matrix_stride = 0, dst_matrix_stride = 0;  // elements between matrices
  int elem_size = 4;
};
constexpr int64_t kTransposeBlock = 64;

// One instruction set's kernels. Each kernel splits its work into independent items so the
// dispatcher can hand contiguous ranges of them to threads; no item depends on another, and
// every sum is taken in a fixed order, so results do not depend on the number of threads.
template <typename T>
struct KernelTable {
  const char* isa;
  int lanes;        // elements per vector register
  int max_vectors;  // widest output block, in vectors
  int64_t (*gather_gemm_items)(const GatherGemmArgs<T>&);
  void (*gather_gemm)(const GatherGemmArgs<T>&, int64_t begin, int64_t end);
  int64_t (*wgrad_items)(const WgradArgs<T>&);
  void (*wgrad)(const WgradArgs<T>&, int64_t begin, int64_t end);
  int64_t (*depthwise_items)(const DepthwiseArgs<T>&);
  void (*depthwise)(const DepthwiseArgs<T>&, int64_t begin, int64_t end);
  int64_t (*depthwise_wgrad_items)(const DepthwiseWgradArgs<T>&);
  void (*depthwise_wgrad)(const DepthwiseWgradArgs<T>&, int64_t begin, int64_t end);
  // The same on bfloat16 activations (float32 tables only, nullptr in the others).
  int64_t (*depthwise_bf16_items)(const DepthwiseArgs<T, uint16_t>&);
  void (*depthwise_bf16)(const DepthwiseArgs<T, uint16_t>&, int64_t begin, int64_t end);
  int64_t (*depthwise_wgrad_bf16_items)(const DepthwiseWgradArgs<T, uint16_t>&);
  void (*depthwise_wgrad_bf16)(const DepthwiseWgradArgs<T, uint16_t>&, int64_t begin, int64_t end);
  // And on float16 activations (likewise).
  int64_t (*depthwise_fp16_items)(const DepthwiseArgs<T, Float16Bits>&);
  void (*depthwise_fp16)(const DepthwiseArgs<T, Float16Bits>&, int64_t begin, int64_t end);
  int64_t (*depthwise_wgrad_fp16_items)(const DepthwiseWgradArgs<T, Float16Bits>&);
  void (*depthwise_wgrad_fp16)(const DepthwiseWgradArgs<T, Float16Bits>&, int64_t begin, int64_t end);
  int64_t (*transpose_items)(const TransposeArgs&);
  void (*transpose)(const TransposeArgs&, int64_t begin, int64_t end);
};

// bfloat16 storage, float32 sums: the gather GEMM of GatherGemmArgs with the reduction taken two
// channels at a time (AVX512_BF16's dot product of bf16 pairs). Elements are bfloat16 bit patterns.
// dst[pixel][g*n + j] = round_bf16(bias[g][j] + sum over active taps a and c < k of
//                                  src_a[pixel][g*k + c] * weight[g][tap[a]][c][j])
struct Bf16GatherGemmArgs {
  TapMap map;
  const uint16_t* src = nullptr;
  int64_t src_ld = 0;
  uint16_t* dst = nullptr;
  int64_t dst_ld = 0;
  const uint16_t* weight = nullptr;  // [groups][blocks][5][ceil(k / 2)][block][2]: channels 2q, 2q + 1 side by side
  const float* bias = nullptr;       // packed [groups][blocks * block], or nullptr
  const uint16_t* zeros = nullptr;   // src_ld zeros
  int64_t groups = 1, k = 0, n = 0;
  int vectors = 1;
};

// The weight gradient of WgradArgs on bfloat16 storage, float32 sums (the reduction over pixels
// taken two pixels at a time): dw[g][t][c][j] = sum over output pixels of
// src_t[pixel][g*k + c] * dy[pixel][g*dy_group_stride + j].
struct Bf16WgradArgs {
  TapMap map;                    // the forward map, all five taps active
  const uint16_t* src = nullptr;
  int64_t src_ld = 0;
  const uint16_t* dy = nullptr;  // every group's channels padded to blocks * block
  int64_t dy_ld = 0;
  int64_t dy_group_stride = 0;
  float* dw = nullptr;           // [groups][blocks][5][k][block], as WgradArgs::dw
  bool accumulate = false;       // as WgradArgs::accumulate
  const uint16_t* zeros = nullptr;  // max(src_ld, dy_ld) zeros
  int64_t groups = 1, k = 0, n = 0;
  int vectors = 1;
};

struct Bf16KernelTable {
  const char* isa;
  int lanes;
  int max_vectors;
  int64_t (*gather_gemm_items)(const Bf16GatherGemmArgs&);
  void (*gather_gemm)(const Bf16GatherGemmArgs&, int64_t begin, int64_t end);
  int64_t (*wgrad_items)(const Bf16WgradArgs&);
  void (*wgrad)(const Bf16WgradArgs&, int64_t begin, int64_t end);
};

// nullptr where the instruction set was not compiled in (non-x86 builds).
const Bf16KernelTable* avx512_bf16_kernels();
const KernelTable<float>* avx512_float_kernels();
const KernelTable<float>* avx2_float_kernels();
const KernelTable<float>* generic_float_kernels();
const KernelTable<double>* generic_double_kernels();

}  // namespace cpu
}  // namespace skeleton_cuda
