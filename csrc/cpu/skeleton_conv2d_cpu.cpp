// CPU kernels of skeleton_conv2d: layouts, weight packing, threading and the choice of
// instruction set. The arithmetic lives in tap_kernels_impl.h.
//
// Everything runs on channels_last (pixel-major) buffers, where the five taps of a pixel are five
// contiguous channel vectors. NCHW tensors are read and written in their own layout, a piece at a
// time through per-thread channels_last buffers: depthwise layers in slabs of channels
// (depthwise_slabs), dense and grouped ones in bands of rows (gather_gemm_in_bands,
// weight_grad_in_bands; row_bands.h cuts both). Where bands do not pay (a weight far larger than the
// activations, too few items for the threads) the whole tensors are converted by the kernels'
// transpose instead. Either way the output keeps the input's memory format, as nn.Conv2d's does.
// bfloat16 and float16 depthwise layers, and bfloat16 dense and grouped ones on CPUs with
// AVX512_BF16, run on their own bits with float32 sums (native_16bit, below); other float16 and
// bfloat16 layers compute on a float32 copy; float64 (gradcheck) has its own kernels.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../skeleton_conv2d.h"
#include "../tap_map.h"
#include "../taps.h"
#include "row_bands.h"
#include "tap_kernels.h"

namespace skeleton_cuda {

namespace cpu {
namespace {

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  return cpu_has_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// The kernel families, each a superset of the one before: avx512_bf16 = the avx512 float32
// kernels + native bfloat16 gather GEMMs.
enum class Isa { kGeneric, kAvx2, kAvx512, kAvx512Bf16 };

// The best family for this CPU, unless SKELETON_CUDA_CPU_ISA asks for a lower one.
Isa selected_isa() {
  static const Isa best = cpu_has_avx512_bf16() && avx512_bf16_kernels() != nullptr ? Isa::kAvx512Bf16
      : cpu_has_avx512() && avx512_float_kernels() != nullptr                       ? Isa::kAvx512
      : cpu_has_avx2() && avx2_float_kernels() != nullptr                           ? Isa::kAvx2
                                                                                    : Isa::kGeneric;
  const char* requested = std::getenv("SKELETON_CUDA_CPU_ISA");
  if (requested == nullptr || requested[0] == '\0') {
    return best;
  }
  const std::string isa(requested);
  if (isa == "generic") {
    return Isa::kGeneric;
  }
  if (isa == "avx2") {
    TORCH_CHECK(cpu_has_avx2(), "SKELETON_CUDA_CPU_ISA=avx2, but this CPU lacks AVX2, FMA or F16C");
    return Isa::kAvx2;
  }
  if (isa == "avx512") {
    TORCH_CHECK(cpu_has_avx512(), "SKELETON_CUDA_CPU_ISA=avx512, but this CPU lacks AVX-512F, FMA or F16C");
    return Isa::kAvx512;
  }
  if (isa == "avx512_bf16") {
    TORCH_CHECK(cpu_has_avx512_bf16(), "SKELETON_CUDA_CPU_ISA=avx512_bf16, but this CPU has no AVX512_BF16");
    TORCH_CHECK(avx512_bf16_kernels() != nullptr,
                "SKELETON_CUDA_CPU_ISA=avx512_bf16, but this build has no AVX512_BF16 kernels (compiler too old)");
    return Isa::kAvx512Bf16;
  }
  TORCH_CHECK(
      false, "SKELETON_CUDA_CPU_ISA must be one of avx512_bf16, avx512, avx2, generic (or unset), got '",
      isa, "'");
}

const KernelTable<float>* float_kernels() {
  switch (selected_isa()) {
    case Isa::kAvx512Bf16:
    case Isa::kAvx512: return avx512_float_kernels();
    case Isa::kAvx2: return avx2_float_kernels();
    case Isa::kGeneric: break;
  }
  return generic_float_kernels();
}

// The native bfloat16 kernels, or nullptr: bfloat16 then computes in float32.
const Bf16KernelTable* bf16_kernels() {
  return selected_isa() == Isa::kAvx512Bf16 ? avx512_bf16_kernels() : nullptr;
}

template <typename T>
const KernelTable<T>* kernels();
template <>
const KernelTable<float>* kernels<float>() { return float_kernels(); }
template <>
const KernelTable<double>* kernels<double>() { return generic_double_kernels(); }


// Runs items [0, count) of a kernel on the intra-op thread pool.
template <typename Args, typename Kernel>
void run_items(int64_t count, const Args& args, Kernel kernel) {
  if (count <= 0) {
    return;
  }
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
}

// `t` (N, C, H, W), contiguous in NCHW (to_channels_last) or in channels_last (else), copied into
// the other layout by the kernels' transpose (TransposeArgs says why not Tensor.contiguous).
at::Tensor transposed_layout(const at::Tensor& t, bool to_channels_last) {
  const int64_t n = t.size(0), c = t.size(1), hw = t.size(2) * t.size(3);
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(to_channels_last ? at::MemoryFormat::ChannelsLast
                                                                                    : at::MemoryFormat::Contiguous));
  TransposeArgs args;
  args.src = t.const_data_ptr();
  args.dst = out.mutable_data_ptr();
  args.matrices = n;
  args.rows = to_channels_last ? c : hw;
  args.cols = to_channels_last ? hw : c;
  args.src_ld = args.cols;
  args.dst_ld = args.rows;
  args.src_matrix_stride = args.dst_matrix_stride = c * hw;
  args.elem_size = static_cast<int>(t.element_size());
  run_items(float_kernels()->transpose_items(args), args, float_kernels()->transpose);
  return out;
}

// b = a transposed for one rows x cols matrix, on the calling thread, by `table`'s transpose (looked
// up once by the caller: the lookup reads SKELETON_CUDA_CPU_ISA, and may throw, outside any thread).
void transpose_here(const KernelTable<float>& table, const void* a, int64_t lda, void* b, int64_t ldb, int64_t rows,
                    int64_t cols, int elem_size) {
  TransposeArgs args;
  args.src = a;
  args.dst = b;
  args.matrices = 1;
  args.rows = rows;
  args.cols = cols;
  args.src_ld = lda;
  args.dst_ld = ldb;
  args.elem_size = elem_size;
  table.transpose(args, 0, table.transpose_items(args));
}

bool transposable(const at::Tensor& t) {
  const auto size = t.element_size();
  return t.dim() == 4 && (size == 2 || size == 4 || size == 8);
}

// t as a channels_last tensor (itself if it is one).
at::Tensor as_channels_last(const at::Tensor& t) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return t;
  }
  return transposable(t) && t.is_contiguous() ? transposed_layout(t, true) : t.contiguous(at::MemoryFormat::ChannelsLast);
}

// A channels_last t in `format` (itself if it is in it).
at::Tensor in_memory_format(const at::Tensor& t, at::MemoryFormat format) {
  if (format == at::MemoryFormat::Contiguous && !t.is_contiguous() && transposable(t) &&
      t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return transposed_layout(t, false);
  }
  return t.contiguous(format);
}

// Runs the items of a gather GEMM, (g * blocks + b) * chunks + chunk with `outer` = groups * blocks
// column blocks. Where the packed weight is smaller than the source activations, the threads split
// the pixel chunks rather than the items: the split is of the items counted chunk-major
// (chunk * outer + o), so each thread gets a range of chunks in every block and still runs them
// block by block (one block of weights at a time). A range of items would give one thread block 0
// and the other block 1 of the same pixels, so the two cores would write neighbouring cache lines
// of every output pixel (the weight gradient's accumulators did that until they went block-major;
// see WgradArgs::dw), and each would read every pixel. But then each thread reads the whole
// weight instead of its share, which costs more where the weight is the larger operand (512@7:
// 5.2 MB of float32 weight, 0.8 MB of input at batch 8; 7% slower split by pixels), so those keep
// the split by items. Every output is computed by one item, in one order: the same bits either way.
template <typename Args, typename Kernel>
void run_gather_items(int64_t count, int64_t outer, const at::Tensor& packed_weight, const at::Tensor& src,
                      const Args& args, Kernel kernel) {
  if (count <= 0) {
    return;
  }
  if (packed_weight.nbytes() >= src.nbytes()) {
    outer = 1;  // chunk-major with one "block" is the plain split by items
  }
  TORCH_INTERNAL_ASSERT(count % outer == 0, "gather GEMM: ", count, " items are not ", outer, " blocks of chunks");
  const int64_t chunks = count / outer;
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = 0; o < outer; ++o) {
      // the chunks c of block o with begin <= c * outer + o < end
      const int64_t c0 = begin <= o ? 0 : ceil_div(begin - o, outer);
      const int64_t c1 = end <= o ? 0 : ceil_div(end - o, outer);
      if (c0 < c1) {
        kernel(args, o * chunks + c0, o * chunks + c1);
      }
    }
  });
}

// The output block width (in vectors) that wastes the fewest padded channels; ties go to the
// wider block, whose register tile needs fewer loads per multiply-add.
int choose_vectors(int64_t channels, int lanes, int max_vectors) {
  int best = max_vectors;
  int64_t best_width = ceil_div(channels, int64_t{max_vectors} * lanes) * max_vectors * lanes;
  for (int v = max_vectors - 1; v >= 1; --v) {
    const int64_t width = ceil_div(channels, int64_t{v} * lanes) * v * lanes;
    if (width < best_width) {
      best = v;
      best_width = width;
    }
  }
  return best;
}

// The output block width, in channels, of the T kernels' GEMMs for n produced channels.
template <typename T>
int64_t gemm_block(int64_t n) {
  const KernelTable<T>* table = kernels<T>();
  return int64_t{choose_vectors(n, table->lanes, table->max_vectors)} * table->lanes;
}

// The weight gradient's block width in vectors, for k input and n output channels per group: one
// for the layers of few input channels, whose tiles span all five taps (few_channel_wgrad_impl).
int wgrad_vectors(int64_t k, int64_t n, int lanes, int max_vectors) {
  return k <= kFewChannelWgrad ? 1 : choose_vectors(n, lanes, max_vectors);
}

template <typename T>
int64_t wgrad_block(int64_t k, int64_t n) {
  const KernelTable<T>* table = kernels<T>();
  return int64_t{wgrad_vectors(k, n, table->lanes, table->max_vectors)} * table->lanes;
}

TapGeometry geometry(int64_t batch, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                     const ConvParams& p) {
  return TapGeometry{batch, in_h, in_w, out_h, out_w, p.stride[0], p.stride[1],
                     p.padding[0], p.padding[1], p.dilation[0], p.dilation[1]};
}

constexpr int64_t kTile = 16;

// Copies a tile row, converting T to R; a full one has a compile-time length, so it becomes a few
// vector moves (and roundings) instead of a library memmove call per 64 bytes. Same types: a
// fixed-size memcpy, which the compiler emits as vector moves (its loop, which it could not prove
// free of overlap, stayed one scalar move per element).
template <typename T, typename R>
inline void copy_run(const T* src, R* dst, int64_t count) {
  if (count == kTile) {
    if constexpr (std::is_same_v<T, R>) {
      std::memcpy(dst, src, kTile * sizeof(T));
    } else {
      for (int64_t j = 0; j < kTile; ++j) dst[j] = static_cast<R>(src[j]);
    }
  } else {
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<R>(src[j]);
  }
}

// Moves a (G*n, k, 5) weight to or from [G][blocks][5][k][block] (to_taps: from the first), block
// by block: output channel j of block b is row b * block + j of its group; the rows past n of a
// last, partial block are left as they are. One parallel loop over 16 x 16 tiles of (rows,
// channels) of every block, through a small buffer, so both sides are read and written along
// their contiguous dimension. R and T may differ (a float32 weight gradient unpacked into
// bfloat16: rounded as c10::BFloat16 rounds, as Tensor.to would). With `pairs` (to_taps only) the
// destination is [G][blocks][5][ceil(k / 2)][block][2], channels 2q and 2q + 1 side by side in
// each lane (what VDPBF16PS multiplies); the partner of an odd k's last channel is left as is.
template <typename R, typename T>
void transpose_blocks(R* by_row, T* by_tap, int64_t groups, int64_t n, int64_t k, int64_t block, bool to_taps,
                      bool pairs = false) {
  TORCH_INTERNAL_ASSERT(to_taps || !pairs);
  const int64_t blocks = ceil_div(n, block);
  const int64_t k_padded = pairs ? 2 * ceil_div(k, 2) : k;  // channel rows per tap in by_tap
  const int64_t row_tiles = ceil_div(block, kTile), channel_tiles = ceil_div(k, kTile);
  const int64_t tiles_per_block = row_tiles * channel_tiles;
  const KernelTable<float>& table = *float_kernels();
  at::parallel_for(0, groups * blocks * tiles_per_block, 1, [&](int64_t begin, int64_t end) {
    // A tile's (row j, channel c, tap t) as [c][t][j]: the rows j of by_row transposed (each row's
    // nc * 5 elements are contiguous) by the kernels' transpose. Gathered element by element (1,280
    // scalar moves a tile), packing took 16% of a float32 512@7 forward's kernel time, now 8%.
    R staging[kTile * kTaps][kTile];
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t gb = tile / tiles_per_block, g = gb / blocks, b = gb % blocks;
      const int64_t rows = std::min(block, n - b * block);
      const int64_t j0 = (tile % tiles_per_block / channel_tiles) * kTile;
      const int64_t c0 = (tile % channel_tiles) * kTile;
      if (j0 >= rows) {
        continue;  // past the last row of a partial block
      }
      const int64_t nj = std::min(kTile, rows - j0), nc = std::min(kTile, k - c0);
      R* row_base = by_row + (g * n + b * block + j0) * k * kTaps + c0 * kTaps;  // row j0, channel c0
      T* tap_base = by_tap + gb * kTaps * k_padded * block;
      if (to_taps) {
        transpose_here(table, row_base, k * kTaps, staging, kTile, nj, nc * kTaps, sizeof(R));
        for (int t = 0; t < kTaps; ++t) {
          for (int64_t c = 0; c < nc; ++c) {
            const R* run = staging[c * kTaps + t];
            const int64_t channel = c0 + c;
            if (pairs) {
              T* dst = tap_base + ((t * k_padded + channel - channel % 2) * block + 2 * j0) + channel % 2;
              for (int64_t j = 0; j < nj; ++j) dst[2 * j] = static_cast<T>(run[j]);
            } else {
              copy_run(run, tap_base + (t * k + channel) * block + j0, nj);
            }
          }
        }
      } else {
        // Converted while reading contiguous runs (a float32 -> bfloat16 rounding vectorizes
        // there), then transposed back into the rows as R.
        for (int t = 0; t < kTaps; ++t)
          for (int64_t c = 0; c < nc; ++c) copy_run(tap_base + (t * k + c0 + c) * block + j0, staging[c * kTaps + t], nj);
        transpose_here(table, staging, kTile, row_base, k * kTaps, nc * kTaps, nj, sizeof(R));
      }
    }
  });
}

// Packs the (G*n, k, 5) weight into [G][blocks][5][k][block]: the weights of one output block
// are contiguous, one row of `block` output channels per (tap, input channel), zero-padded.
// Runs every call (the weight changes every training step), so it must be cheap. With `pairs`,
// [G][blocks][5][ceil(k / 2)][block][2] (the bfloat16 kernels' order, see transpose_blocks),
// written directly: interleaving a packed copy afterwards was another pass over the weight.
template <typename T>
at::Tensor pack_forward_weight(const at::Tensor& w, int64_t groups, int64_t block, bool pairs = false) {
  const int64_t n = w.size(0) / groups, k = w.size(1);
  const int64_t blocks = ceil_div(n, block);
  at::Tensor packed = pairs ? at::empty({groups, blocks, kTaps, ceil_div(k, 2), block, 2}, w.options())
                            : at::empty({groups, blocks, kTaps, k, block}, w.options());
  if (n % block != 0 || (pairs && k % 2 != 0)) {
    packed.zero_();  // the lanes past n, and the partner of an odd k's last channel
  }
  T* src = const_cast<T*>(w.const_data_ptr<T>());  // read only: to_taps = true
  transpose_blocks<T, T>(src, packed.mutable_data_ptr<T>(), groups, n, k, block, /*to_taps=*/true, pairs);
  return packed;
}

// The transposed weight for the input gradient: [G][blocks of input channels][5][n][block], or
// with `pairs` [G][blocks][5][ceil(n / 2)][block][2] (the reduction runs over n here).
template <typename T>
at::Tensor pack_input_grad_weight(const at::Tensor& w, int64_t groups, int64_t block, bool pairs = false) {
  const int64_t n = w.size(0) / groups, k = w.size(1);
  const int64_t blocks = ceil_div(k, block);
  const int64_t n_padded = pairs ? 2 * ceil_div(n, 2) : n;
  at::Tensor packed = pairs ? at::empty({groups, blocks, kTaps, n_padded / 2, block, 2}, w.options())
                            : at::empty({groups, blocks, kTaps, n, block}, w.options());
  if (n_padded != n) {
    packed.zero_();  // the partner of an odd n's last channel
  }
  const T* src = w.const_data_ptr<T>();
  T* dst = packed.mutable_data_ptr<T>();
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / blocks, b = gb % blocks;
      T* d = dst + gb * kTaps * n_padded * block;
      for (int64_t co = 0; co < n; ++co) {
        const T* s = src + (g * n + co) * k * kTaps;
        // Element (t, co, j) sits at (t * n + co) * block + j, or in pairs at
        // ((t * n_padded + co - co % 2) * block + 2 j) + co % 2.
        const int64_t row = pairs ? co - co % 2 : co, lane = pairs ? 2 : 1, offset = pairs ? co % 2 : 0;
        for (int64_t j = 0; j < block; ++j) {
          const int64_t c = b * block + j;
          for (int t = 0; t < kTaps; ++t) {
            d[(t * n_padded + row) * block + lane * j + offset] = c < k ? s[c * kTaps + t] : T(0);
          }
        }
      }
    }
  });
  return packed;
}

// The weight gradient's [G][blocks][5][k][block] back to the weight's (G*n, k, 5) in dtype R: the
// inverse of pack_forward_weight.
template <typename T, typename R = T>
at::Tensor unpack_weight_grad(const at::Tensor& packed, int64_t groups, int64_t k, int64_t n) {
  at::Tensor out = at::empty({groups * n, k, kTaps}, packed.options().dtype(c10::CppTypeToScalarType<R>::value));
  T* src = const_cast<T*>(packed.const_data_ptr<T>());  // read only: to_taps = false
  transpose_blocks<R, T>(out.mutable_data_ptr<R>(), src, groups, n, k, packed.size(4), /*to_taps=*/false);
  return out;
}

at::Tensor pack_bias(const at::Tensor& bias, int64_t groups, int64_t block) {
  const int64_t n = bias.size(0) / groups;
  const int64_t blocks = ceil_div(n, block);
  return at::constant_pad_nd(bias.view({groups, n}), {0, blocks * block - n}).contiguous();
}

bool is_depthwise(const at::Tensor& weight, int64_t groups) {
  return weight.size(1) == 1 && weight.size(0) == groups;
}

// A channels_last buffer for an (N, C, H, W) result.
at::Tensor empty_channels_last(int64_t n, int64_t c, int64_t h, int64_t w, const at::TensorOptions& o) {
  return at::empty({n, c, h, w}, o.memory_format(at::MemoryFormat::ChannelsLast));
}

// Zeros that taps outside the image read: as long as a pixel's channel vector.
template <typename T>
at::Tensor zero_pixel(int64_t channels, const at::TensorOptions& o) {
  return at::zeros({channels + 64}, o);
}

// Applies the gather GEMM for one tap map (forward, or one input-gradient class) over channels_last
// tensors, or through the calling thread's buffers of NCHW bands (src and dst then point at them).
template <typename T>
GatherGemmArgs<T> gather_gemm_args(const TapMap& map, const T* src, int64_t src_ld, T* dst, int64_t dst_ld,
                                   const at::Tensor& packed, const T* bias, const at::Tensor& zeros, int64_t groups,
                                   int64_t k, int64_t n, int vectors) {
  GatherGemmArgs<T> args;
  args.map = map;
  args.src = src;
  args.src_ld = src_ld;
  args.dst = dst;
  args.dst_ld = dst_ld;
  args.weight = packed.const_data_ptr<T>();
  args.bias = bias;
  args.zeros = zeros.const_data_ptr<T>();
  args.groups = groups;
  args.k = k;
  args.n = n;
  args.vectors = vectors;
  return args;
}

// The depthwise weight (C, 1, 5) as the kernels take it: [5][C] in `dtype`.
at::Tensor pack_depthwise_weight(const at::Tensor& w, at::ScalarType dtype) {
  return w.to(dtype).view({w.size(0), kTaps}).t().contiguous();
}

// Activations as the kernels see them: T itself, or bfloat16 or float16 bit patterns.
template <typename S>
const S* elements(const at::Tensor& t) {
  return t.const_data_ptr<S>();
}
template <>
const uint16_t* elements<uint16_t>(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}
template <>
const Float16Bits* elements<Float16Bits>(const at::Tensor& t) {
  return reinterpret_cast<const Float16Bits*>(t.const_data_ptr<at::Half>());
}
template <typename S>
S* mutable_elements(at::Tensor& t) {
  return const_cast<S*>(elements<S>(t));
}

// The depthwise kernels of `table` for activations stored as S: T, or (T = float) bfloat16 bits
// (uint16_t) or float16 bits (Float16Bits); the forward / input gradient, and the weight gradient.
template <typename T, typename S>
auto depthwise_kernels(const KernelTable<T>* table) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    return std::make_pair(table->depthwise_bf16_items, table->depthwise_bf16);
  } else if constexpr (std::is_same_v<S, Float16Bits>) {
    return std::make_pair(table->depthwise_fp16_items, table->depthwise_fp16);
  } else {
    return std::make_pair(table->depthwise_items, table->depthwise);
  }
}
template <typename T, typename S>
auto depthwise_wgrad_kernels(const KernelTable<T>* table) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    return std::make_pair(table->depthwise_wgrad_bf16_items, table->depthwise_wgrad_bf16);
  } else if constexpr (std::is_same_v<S, Float16Bits>) {
    return std::make_pair(table->depthwise_wgrad_fp16_items, table->depthwise_wgrad_fp16);
  } else {
    return std::make_pair(table->depthwise_wgrad_items, table->depthwise_wgrad);
  }
}

// Depthwise over the pixels of all `maps` (which share dst_row_step), one destination row per item.
// Activations stored as S; weights and bias in T.
template <typename T, typename S = T>
void depthwise(const std::vector<TapMap>& maps, const at::Tensor& src, at::Tensor& dst,
               const at::Tensor& packed, const T* bias) {
  DepthwiseArgs<T, S> args;
  args.maps = maps.data();
  args.num_maps = static_cast<int>(maps.size());
  args.src = elements<S>(src);
  args.dst = mutable_elements<S>(dst);
  args.weight = packed.const_data_ptr<T>();
  args.bias = bias;
  args.channels = dst.size(1);
  at::Tensor pair_weight;
  if constexpr (std::is_same_v<S, uint16_t>) {  // bfloat16 storage: the interior reads channel pairs
    const int64_t group = 2 * kernels<T>()->lanes, C = args.channels;
    const int64_t pairs = C / group * group;
    if (pairs > 0) {
      // [5][pairs] weights, then [pairs] bias: within each group, the even channels, then the odd
      const int64_t rows = bias != nullptr ? kTaps + 1 : kTaps;
      pair_weight = at::empty({rows, pairs}, packed.options());
      T* dst = pair_weight.mutable_data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = r < kTaps ? args.weight + r * C : bias;
        for (int64_t g = 0; g < pairs; g += group) {
          T* d = dst + r * pairs + g;
          for (int64_t i = 0; i < group / 2; ++i) d[i] = src[g + 2 * i], d[group / 2 + i] = src[g + 2 * i + 1];
        }
      }
      args.pair_weight = dst;
      args.pair_bias = bias != nullptr ? dst + kTaps * pairs : nullptr;
      args.pair_channels = pairs;
    }
  }
  const auto kernel = depthwise_kernels<T, S>(kernels<T>());
  run_items(kernel.first(args), args, kernel.second);
}

// The sum over the rows of a contiguous (rows, cols) tensor of partial sums, added in row order for
// every column (the same bits whatever the threads). One pass: a Tensor.add_ per row cost ~3 us
// each, 15% of a small depthwise layer's backward at batch 32.
template <typename T>
at::Tensor sum_rows(const at::Tensor& partial) {
  const int64_t rows = partial.size(0), cols = partial.size(1);
  at::Tensor sum = at::empty({cols}, partial.options());
  const T* p = partial.const_data_ptr<T>();
  T* out = sum.mutable_data_ptr<T>();
  at::parallel_for(0, cols, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) out[c] = p[c];
    for (int64_t r = 1; r < rows; ++r) {
      const T* row = p + r * cols;
      for (int64_t c = begin; c < end; ++c) out[c] += row[c];
    }
  });
  return sum;
}

// The depthwise weight gradient (C, 1, 5) in T, from activations stored as S. Partial sums per
// (image, band of rows), enough of them to keep every core busy even at batch 1, added up in a
// fixed order.
template <typename T, typename S = T>
at::Tensor depthwise_weight_grad(const TapMap& map, const at::Tensor& dy, const at::Tensor& x, int64_t channels) {
  const int64_t bands = std::min<int64_t>(map.grid_h, ceil_div(16, map.batch));
  at::Tensor partial = at::empty({map.batch * bands, kTaps, channels}, x.options().dtype(c10::CppTypeToScalarType<T>::value));
  DepthwiseWgradArgs<T, S> args;
  args.map = map;
  args.src = elements<S>(x);
  args.dy = elements<S>(dy);
  args.dw = partial.mutable_data_ptr<T>();
  args.channels = channels;
  args.bands = bands;
  const auto kernel = depthwise_wgrad_kernels<T, S>(kernels<T>());
  run_items(kernel.first(args), args, kernel.second);
  return sum_rows<T>(partial.view({partial.size(0), kTaps * channels})).view({kTaps, channels}).t().contiguous().view({channels, 1, kTaps});
}

// ---------------------------------------------------------------------------------------------
// NCHW depthwise layers in slabs. NCHW is PyTorch's default layout, and a depthwise layer does so
// little arithmetic per byte that converting the whole tensor to channels_last and back costs more
// than the layer: dw144@56 (N=8, float32) took 3.4 ms forward that way, even with the fast
// transpose, and 1.3 ms in slabs. An item is (image, slab of slab_channels channels): it transposes
// those channels' planes into a channels_last buffer of its thread, runs the channels_last kernel
// there and transposes the result into place, so the tensors are read and written once, in their
// own layout, and the buffers stay in the core's cache. Per pixel the same sums as the channels_last
// path: the same bits for the output and the input gradient.

// Whether a depthwise layer runs in slabs: activations NCHW (and not also channels_last, as with
// one channel or one pixel), something to compute, and one slab of its larger plane (input or
// output) within kMaxSlabBytes.
bool runs_in_slabs(const at::Tensor& input, const at::Tensor& weight, int64_t groups, int64_t out_h, int64_t out_w) {
  if (!is_depthwise(weight, groups) || input.dim() != 4 || !input.is_contiguous() ||
      input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return false;
  }
  const int64_t in_plane = input.size(2) * input.size(3), out_plane = out_h * out_w;
  return input.size(0) > 0 && in_plane > 0 && out_plane > 0 &&
         kSlabUnit * std::max(in_plane, out_plane) * int64_t{sizeof(double)} <= kMaxSlabBytes;
}


// Pixels [p0, p0 + pixels) of channels [c0, c0 + count) of image n: from their planes (NCHW, `plane`
// pixels each) to and from a channels_last buffer (pixels x count).
template <typename S>
void slab_to_channels_last(const KernelTable<float>& table, const S* tensor, int64_t channels, int64_t plane, int64_t n,
                           int64_t c0, int64_t count, int64_t p0, int64_t pixels, S* buffer) {
  transpose_here(table, tensor + (n * channels + c0) * plane + p0, plane, buffer, count, count, pixels, sizeof(S));
}
template <typename S>
void slab_from_channels_last(const KernelTable<float>& table, const S* buffer, int64_t channels, int64_t plane,
                             int64_t n, int64_t c0, int64_t count, int64_t p0, int64_t pixels, S* tensor) {
  transpose_here(table, buffer, count, tensor + (n * channels + c0) * plane + p0, plane, pixels, count, sizeof(S));
}

// Depthwise over NCHW src and dst for `maps` of one image (the forward map, or the input
// gradient's classes). packed: [5][C] in T; bias: [C] or nullptr.
template <typename T, typename S = T>
void depthwise_slabs(const std::vector<TapMap>& maps, const at::Tensor& src, at::Tensor& dst, const at::Tensor& packed,
                     const T* bias) {
  const int64_t batch = src.size(0), C = src.size(1), src_w = src.size(3), dst_w = dst.size(3);
  const int64_t src_plane = src.size(2) * src_w, dst_plane = dst.size(2) * dst_w;
  const SlabPlan plan = slab_plan(maps, batch, C, src_plane, dst.size(2), dst_w);
  const int64_t slab = plan.slab;
  // Each block's weights as the kernel takes them, [5][its channels], kTaps * slab apart.
  std::vector<T> slab_weight(plan.blocks * kTaps * slab);
  const T* w = packed.const_data_ptr<T>();
  for (int64_t b = 0; b < plan.blocks; ++b) {
    const int64_t c0 = b * slab, count = std::min(slab, C - c0);
    for (int t = 0; t < kTaps; ++t)
      for (int64_t j = 0; j < count; ++j) slab_weight[b * kTaps * slab + t * count + j] = w[t * C + c0 + j];
  }
  const auto kernel = depthwise_kernels<T, S>(kernels<T>());
  const KernelTable<float>& table = *float_kernels();
  const S* src_data = elements<S>(src);
  S* dst_data = mutable_elements<S>(dst);
  at::parallel_for(0, plan.items(batch), 1, [&](int64_t begin, int64_t end) {
    // Uninitialized (every element is written before it is read): zeroing them cost a pass each.
    const std::unique_ptr<S[]> in(new S[slab * src_plane]), out(new S[slab * dst_plane]);
    for (int64_t i = begin; i < end; ++i) {
      const SlabPlan::Item it = plan.item(i);
      slab_to_channels_last(table, src_data, C, src_plane, it.n, it.c0, it.count, it.band->src_first * src_w,
                            it.band->src_rows * src_w, in.get());
      DepthwiseArgs<T, S> args;
      args.maps = it.band->maps.data();
      args.num_maps = static_cast<int>(it.band->maps.size());
      args.src = in.get();
      args.dst = out.get();
      args.weight = slab_weight.data() + it.block * kTaps * slab;
      args.bias = bias != nullptr ? bias + it.c0 : nullptr;
      args.channels = it.count;
      kernel.second(args, 0, kernel.first(args));
      slab_from_channels_last(table, out.get(), C, dst_plane, it.n, it.c0, it.count, it.r0 * dst_w, it.rows * dst_w,
                              dst_data);
    }
  });
}

// The depthwise weight gradient (C, 1, 5) in T from NCHW dy and x; `map`: the forward map of one
// image. One partial sum per item, added up over the images and bands in a fixed order: the row of
// (image n, band k), n * bands + k, holds each slab's [5][its channels] from column 5 * (its first
// channel), so every column is written.
template <typename T, typename S = T>
at::Tensor depthwise_weight_grad_slabs(const TapMap& map, const at::Tensor& dy, const at::Tensor& x) {
  const int64_t batch = x.size(0), C = x.size(1), src_w = x.size(3), dst_w = dy.size(3);
  const int64_t src_plane = x.size(2) * src_w, dst_plane = dy.size(2) * dst_w;
  const SlabPlan plan = slab_plan({map}, batch, C, src_plane, dy.size(2), dst_w);
  const int64_t slab = plan.slab, num_bands = static_cast<int64_t>(plan.bands.size());
  const auto options = x.options().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor partial = at::empty({batch * num_bands, kTaps * C}, options);
  T* partial_data = partial.mutable_data_ptr<T>();
  const auto kernel = depthwise_wgrad_kernels<T, S>(kernels<T>());
  const KernelTable<float>& table = *float_kernels();
  at::parallel_for(0, plan.items(batch), 1, [&](int64_t begin, int64_t end) {
    const std::unique_ptr<S[]> xs(new S[slab * src_plane]), dys(new S[slab * dst_plane]);
    for (int64_t i = begin; i < end; ++i) {
      const SlabPlan::Item it = plan.item(i);
      slab_to_channels_last(table, elements<S>(x), C, src_plane, it.n, it.c0, it.count, it.band->src_first * src_w,
                            it.band->src_rows * src_w, xs.get());
      slab_to_channels_last(table, elements<S>(dy), C, dst_plane, it.n, it.c0, it.count, it.r0 * dst_w, it.rows * dst_w,
                            dys.get());
      DepthwiseWgradArgs<T, S> args;
      args.map = it.band->maps[0];
      args.src = xs.get();
      args.dy = dys.get();
      args.dw = partial_data + (it.n * num_bands + it.band_index) * kTaps * C + kTaps * it.c0;  // [5][count]
      args.channels = it.count;
      args.bands = 1;
      kernel.second(args, 0, kernel.first(args));
    }
  });
  const at::Tensor sum = sum_rows<T>(partial);
  at::Tensor dw = at::empty({C, 1, kTaps}, options);
  const T* s = sum.const_data_ptr<T>();
  T* d = dw.mutable_data_ptr<T>();
  for (int64_t b = 0; b < plan.blocks; ++b) {
    const int64_t c0 = b * slab, count = std::min(slab, C - c0);
    for (int t = 0; t < kTaps; ++t)
      for (int64_t j = 0; j < count; ++j) d[(c0 + j) * kTaps + t] = s[kTaps * c0 + t * count + j];
  }
  return dw;
}

// ---------------------------------------------------------------------------------------------
// NCHW dense and grouped layers in row bands (the gather GEMMs of the forward pass and the input
// gradient). Converting the whole tensors, the way in and the way out, costs two extra passes over
// memory per tensor, and on large planes those passes miss the caches: at 8 x 64 x 56 x 56 float32
// the NCHW forward took 7.2-8.1 ms against 5.2 ms from channels_last, while each transpose alone
// ran in 0.23 ms when its buffers were hot. An item is (image, band of destination rows): it
// transposes the source rows that band reads into a channels_last buffer of its thread, runs the
// channels_last GEMM there for all output channels, and transposes the band's result into place.
// Each destination pixel gets the same sums in the same order as from a channels_last input: the
// same bits.

// Bytes a band's buffers take per destination row of (N, C, H, W) `dst`: its own, and the rows of
// `src` it reads, as many as the stride takes per row (a band's 2 x dilation halo rows come on
// top: an estimate for sizing the bands, while the buffers are sized by the rows each band reads).
int64_t band_row_bytes(c10::IntArrayRef src, c10::IntArrayRef dst, int64_t element) {
  return (dst[1] * dst[3] + ceil_div(src[2], dst[2]) * src[1] * src[3]) * element;
}

// Whether a dense or grouped pass from `src` to `dst` (both (N, C, H, W)) can run in bands: both NCHW
// (and not also channels_last, as with one channel or one pixel), something to compute, and three
// rows of either (a one-row band and its halo at dilation 1) within kMaxSlabBytes.
bool nchw_bands_apply(const at::Tensor& src, const at::Tensor& weight, int64_t groups, c10::IntArrayRef dst_sizes) {
  if (is_depthwise(weight, groups) || src.dim() != 4 || !src.is_contiguous() ||
      src.is_contiguous(at::MemoryFormat::ChannelsLast) || dst_sizes[1] == 1 || dst_sizes[2] * dst_sizes[3] == 1) {
    return false;
  }
  const int64_t element = src.element_size();
  const int64_t src_row = src.size(1) * src.size(3) * element, dst_row = dst_sizes[1] * dst_sizes[3] * element;
  return src.size(0) > 0 && src.numel() > 0 && dst_sizes[2] * dst_sizes[3] > 0 &&
         3 * std::max(src_row, dst_row) <= kMaxSlabBytes;
}

// The forward pass and the input gradient run in bands where they can, unless
//  - the weight is over kBandWeightRatio times one source image: each item reads all of it, and
//    where it dwarfs the activations, converting them once costs less than reading the weight once
//    per image (measured on the 2-core VM, bands against whole-tensor conversion, float32 /
//    bfloat16: 256 @ 8 at batch 32, a weight 20 images large, 1.14x / 0.98x forward; 512 @ 7, 52
//    images, 0.97x / 1.01x; 512 @ 4, 160 images, 1.00x / 0.87x; 64 @ 16 and 128 @ 16, 1.3 and 5
//    images, 1.32x / 1.12x and 1.20x / 1.20x);
//  - the items would leave threads idle: more than 10% above an even split (one image of 64 @ 56
//    is 7 bands: 4 and 3 on two threads, 0.87x forward). Whole tensors split finer;
//  - the pass has more than kMaxBandClasses tap maps (the input gradient's residue classes): each
//    band holds a map of each class it meets, and at a stride far beyond the image (a legal 1 x 1
//    output) there are up to a million classes, whose bands took twice as long as the whole-tensor
//    path even once they held only those.
// Both ways give the same bits, so this choice may depend on the threads (the weight gradient's,
// whose sums follow the bands, may not).
constexpr int64_t kBandWeightRatio = 16;
constexpr int64_t kMaxBandClasses = 64;

bool pass_runs_in_bands(const at::Tensor& src, const at::Tensor& weight, int64_t groups, c10::IntArrayRef dst_sizes,
                        int64_t maps) {
  if (!nchw_bands_apply(src, weight, groups, dst_sizes) || maps > kMaxBandClasses ||
      weight.numel() > kBandWeightRatio * (src.numel() / src.size(0))) {
    return false;
  }
  const int64_t rows = band_rows_for(src.size(0), dst_sizes[2], band_row_bytes(src.sizes(), dst_sizes, src.element_size()));
  const int64_t items = src.size(0) * ceil_div(dst_sizes[2], rows), threads = at::get_num_threads();
  return 10 * ceil_div(items, threads) * threads <= 11 * items;
}

// The source rows that band item `it` reads, of NCHW `src` (its elements `data`, of type S), into a
// channels_last buffer.
template <typename S>
void band_source_to_channels_last(const KernelTable<float>& table, const S* data, const at::Tensor& src,
                                  const BandPlan::Item& it, S* buffer) {
  if (it.band->src_rows > 0) {
    const int64_t channels = src.size(1), width = src.size(3);
    slab_to_channels_last(table, data, channels, src.size(2) * width, it.n, 0, channels, it.band->src_first * width,
                          it.band->src_rows * width, buffer);
  }
}

// Runs run_map(map, src_buffer, dst_buffer) for every map of every band of every image of NCHW src
// (N, src_c, H, W) and dst (N, dst_c, H', W'), elements of type S, buffers channels_last.
template <typename S, typename RunMap>
void gather_gemm_in_bands(const std::vector<TapMap>& maps, const at::Tensor& src, at::Tensor& dst,
                          const RunMap& run_map) {
  const int64_t batch = src.size(0), src_c = src.size(1), src_w = src.size(3);
  const int64_t dst_c = dst.size(1), dst_h = dst.size(2), dst_w = dst.size(3);
  const int64_t dst_plane = dst_h * dst_w;
  const BandPlan plan =
      band_plan(maps, dst_h, band_rows_for(batch, dst_h, band_row_bytes(src.sizes(), dst.sizes(), sizeof(S))));
  const int64_t most_src_rows = plan.most_src_rows();
  const KernelTable<float>& table = *float_kernels();
  const S* src_data = elements<S>(src);
  S* dst_data = mutable_elements<S>(dst);
  at::parallel_for(0, plan.items(batch), 1, [&](int64_t begin, int64_t end) {
    // Uninitialized: the kernels write every pixel of a band (a class that no tap reaches, zeros).
    const std::unique_ptr<S[]> in(new S[std::max<int64_t>(1, most_src_rows * src_w * src_c)]);
    const std::unique_ptr<S[]> out(new S[plan.band_rows * dst_w * dst_c]);
    for (int64_t i = begin; i < end; ++i) {
      const BandPlan::Item it = plan.item(i);
      band_source_to_channels_last(table, src_data, src, it, in.get());
      for (const TapMap& map : it.band->maps) {
        run_map(map, in.get(), out.get());
      }
      slab_from_channels_last(table, out.get(), dst_c, dst_plane, it.n, 0, dst_c, it.r0 * dst_w, it.rows * dst_w,
                              dst_data);
    }
  });
}

// The weight gradient of NCHW dense and grouped layers in bands: an item is (image, band of output
// rows), whose grad_output rows and the input rows they read are transposed into channels_last
// buffers of its thread. The items are split into kWgradSlots fixed runs, each summed (band after
// band, pixel by pixel) into a partial sum of its own, and the partial sums are added up in order:
// the bits depend on the shape only, not on the threads. Each slot is a whole weight gradient in
// the accumulator type, so the slots must stay small next to the activations.

// Whether it can run so for x: (N, C, H, W), dy: (N, C_out, H', W'): x and dy NCHW (and
// wgrad_slots_fit, below, once the kernels' blocks are known).
bool wgrad_can_run_in_bands(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& weight, int64_t groups) {
  return nchw_bands_apply(x, weight, groups, dy.sizes()) && dy.is_contiguous() &&
         !dy.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Runs run_band(map, x_buffer, dy_buffer, slot_sums, accumulate) over the bands of NCHW x and dy of
// elements S, `map` the forward map of one image; the dy buffer holds each group's n channels
// padded with zeros to `padded`. Returns the slots' sums added up: elements_per_sum values of Acc.
template <typename S, typename Acc, typename RunBand>
at::Tensor weight_grad_in_bands(const TapMap& map, const at::Tensor& dy, const at::Tensor& x, int64_t groups,
                                int64_t padded, int64_t elements_per_sum, const RunBand& run_band) {
  const int64_t batch = x.size(0), x_c = x.size(1), x_w = x.size(3);
  const int64_t dy_c = dy.size(1), dy_h = dy.size(2), dy_w = dy.size(3), n = dy_c / groups;
  const int64_t dy_plane = dy_h * dy_w, dy_ld = groups * padded;
  const int64_t buffered_dy[] = {batch, dy_ld, dy_h, dy_w};
  const BandPlan plan = band_plan({map}, dy_h, band_rows_for(batch, dy_h, band_row_bytes(x.sizes(), buffered_dy, sizeof(S))));
  const int64_t most_src_rows = plan.most_src_rows();
  const int64_t items = plan.items(batch), slots = wgrad_slots(items);
  at::Tensor partial = at::empty({slots, elements_per_sum}, x.options().dtype(c10::CppTypeToScalarType<Acc>::value));
  Acc* partial_data = partial.mutable_data_ptr<Acc>();
  const KernelTable<float>& table = *float_kernels();
  const S* x_data = elements<S>(x);
  const S* dy_data = elements<S>(dy);
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    const std::unique_ptr<S[]> xs(new S[std::max<int64_t>(1, most_src_rows * x_w * x_c)]);
    // Value-initialized: the padding columns, which no transpose writes, stay zero.
    const std::unique_ptr<S[]> dys(padded != n ? new S[plan.band_rows * dy_w * dy_ld]() : new S[plan.band_rows * dy_w * dy_ld]);
    for (int64_t slot = begin; slot < end; ++slot) {
      const int64_t first = slot * items / slots, last = (slot + 1) * items / slots;
      for (int64_t i = first; i < last; ++i) {
        const BandPlan::Item it = plan.item(i);
        band_source_to_channels_last(table, x_data, x, it, xs.get());
        for (int64_t g = 0; g < (padded != n ? groups : 1); ++g) {
          // padded == n: all groups at once, side by side as in dy
          const int64_t count = padded != n ? n : dy_c;
          transpose_here(table, dy_data + (it.n * dy_c + g * n) * dy_plane + it.r0 * dy_w, dy_plane,
                         dys.get() + g * padded, dy_ld, count, it.rows * dy_w, sizeof(S));
        }
        run_band(it.band->maps[0], xs.get(), dys.get(), partial_data + slot * elements_per_sum, /*accumulate=*/i != first);
      }
    }
  });
  return slots == 1 ? partial.view({elements_per_sum}) : sum_rows<Acc>(partial);
}

// The maps of a whole batch as maps of one image, which the bands take.
std::vector<TapMap> one_image(std::vector<TapMap> maps) {
  for (TapMap& map : maps) map.batch = 1;
  return maps;
}

// The weight gradient of `table`'s kernel over NCHW x and dy in bands, `args` holding all but the
// tensors (groups, k, n, vectors, zeros, src_ld): its sums, [groups][blocks][5][k][block] in Acc.
template <typename S, typename Acc, typename Table, typename Args>
at::Tensor wgrad_sums_in_bands(const Table* table, Args args, const TapMap& map, const at::Tensor& dy, const at::Tensor& x,
                               int64_t blocks, int64_t block) {
  args.dy_group_stride = blocks * block;
  args.dy_ld = args.groups * args.dy_group_stride;
  const at::Tensor sums = weight_grad_in_bands<S, Acc>(
      one_image({map})[0], dy, x, args.groups, blocks * block, args.groups * blocks * kTaps * args.k * block,
      [&](const TapMap& band_map, const S* xs, const S* dys, Acc* dw, bool accumulate) {
        Args a = args;
        a.map = band_map;
        a.src = xs;
        a.dy = dys;
        a.dw = dw;
        a.accumulate = accumulate;
        table->wgrad(a, 0, table->wgrad_items(a));
      });
  return sums.view({args.groups, blocks, kTaps, args.k, block});
}

// The gather GEMMs of one pass, `maps` (the forward map, or the input gradient's classes), from src
// to dst of elements S: channels_last tensors as they are, NCHW ones (pass_runs_in_bands) in bands.
// make_args(map, src, src_ld, dst, dst_ld) gives the arguments of `table`'s gather GEMM, whose
// weight `packed` has `outer` = groups x column blocks.
template <typename S, typename Table, typename MakeArgs>
void run_gather_pass(const Table* table, int64_t outer, const at::Tensor& packed, const std::vector<TapMap>& maps,
                     const at::Tensor& src, at::Tensor& dst, const MakeArgs& make_args) {
  if (!src.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    gather_gemm_in_bands<S>(one_image(maps), src, dst, [&](const TapMap& map, const S* in, S* out) {
      const auto args = make_args(map, in, src.size(1), out, dst.size(1));
      if (map.grid_h * map.grid_w > 0) {
        table->gather_gemm(args, 0, table->gather_gemm_items(args));
      }
    });
    return;
  }
  for (const TapMap& map : maps) {
    if (map.batch * map.grid_h * map.grid_w == 0) {
      continue;
    }
    const auto args = make_args(map, elements<S>(src), src.size(1), mutable_elements<S>(dst), dst.size(1));
    run_gather_items(table->gather_gemm_items(args), outer, packed, src, args, table->gather_gemm);
  }
}

template <typename T>
void gather_gemms(const std::vector<TapMap>& maps, const at::Tensor& src, at::Tensor& dst, const at::Tensor& packed,
                  const T* bias, int64_t groups, int64_t k, int64_t n, int vectors) {
  const KernelTable<T>* table = kernels<T>();
  const at::Tensor zeros = zero_pixel<T>(src.size(1), src.options());
  run_gather_pass<T>(table, groups * ceil_div(n, int64_t{vectors} * table->lanes), packed, maps, src, dst,
                     [&](const TapMap& map, const T* in, int64_t in_ld, T* out, int64_t out_ld) {
                       return gather_gemm_args<T>(map, in, in_ld, out, out_ld, packed, bias, zeros, groups, k, n, vectors);
                     });
}

// ---------------------------------------------------------------------------------------------

template <typename T>
void forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
             at::Tensor& y, const ConvParams& p) {
  const TapMap map = forward_tap_map(geometry(x.size(0), x.size(2), x.size(3), y.size(2), y.size(3), p));
  const bool has_bias = bias.has_value() && bias->defined();
  if (is_depthwise(w, p.groups)) {
    const at::Tensor packed = pack_depthwise_weight(w, w.scalar_type());
    depthwise<T>({map}, x, y, packed, has_bias ? bias->const_data_ptr<T>() : nullptr);
    return;
  }
  const KernelTable<T>* table = kernels<T>();
  const int64_t k = w.size(1), n = w.size(0) / p.groups;
  const int vectors = choose_vectors(n, table->lanes, table->max_vectors);
  const int64_t block = int64_t{vectors} * table->lanes;
  const at::Tensor packed = pack_forward_weight<T>(w, p.groups, block);
  const at::Tensor packed_bias = has_bias ? pack_bias(*bias, p.groups, block) : at::Tensor();
  gather_gemms<T>({map}, x, y, packed, has_bias ? packed_bias.const_data_ptr<T>() : nullptr, p.groups, k, n, vectors);
}

// The input gradient's tap maps: one per residue class of the input modulo the stride that holds
// pixels. A stride beyond the image's size is legal (a 1 x 1 output), and its other classes are
// empty: looping over all of them took 4 s at stride 4096, and would not end at 2^20.
std::vector<TapMap> input_grad_classes(const at::Tensor& dy, const at::Tensor& dx, const ConvParams& p) {
  std::vector<TapMap> classes;
  for (int64_t rh = 0; rh < std::min(p.stride[0], dx.size(2)); ++rh) {
    for (int64_t rw = 0; rw < std::min(p.stride[1], dx.size(3)); ++rw) {
      classes.push_back(input_grad_tap_map(geometry(dx.size(0), dx.size(2), dx.size(3), dy.size(2), dy.size(3), p), rh, rw));
    }
  }
  return classes;
}

template <typename T>
void input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvParams& p) {
  const bool dw_layer = is_depthwise(w, p.groups);
  const KernelTable<T>* table = kernels<T>();
  const int64_t k = w.size(0) / p.groups, n = w.size(1);  // reduce over output channels
  const int vectors = choose_vectors(n, table->lanes, table->max_vectors);
  const int64_t block = int64_t{vectors} * table->lanes;
  const at::Tensor packed = dw_layer ? pack_depthwise_weight(w, w.scalar_type())
                                     : pack_input_grad_weight<T>(w, p.groups, block);
  const std::vector<TapMap> classes = input_grad_classes(dy, dx, p);
  if (dw_layer) {
    depthwise<T>(classes, dy, dx, packed, nullptr);  // memory-bound: all classes in one sweep
    return;
  }
  gather_gemms<T>(classes, dy, dx, packed, nullptr, p.groups, k, n, vectors);
}

// grad_output (channels_last) with each group's n channels padded with zeros to whole blocks: the
// weight-gradient kernels load whole blocks of them. As it is when n fills its blocks.
at::Tensor pad_groups_to_blocks(const at::Tensor& dy, int64_t groups, int64_t n, int64_t block) {
  if (n % block == 0) {
    return dy;
  }
  const int64_t padded = ceil_div(n, block) * block;
  at::Tensor dy_blocked = at::zeros({dy.size(0), dy.size(2), dy.size(3), groups, padded}, dy.options());
  dy_blocked.narrow(4, 0, n).copy_(dy.permute({0, 2, 3, 1}).reshape({dy.size(0), dy.size(2), dy.size(3), groups, n}));
  return dy_blocked.view({dy.size(0), dy.size(2), dy.size(3), groups * padded})
      .permute({0, 3, 1, 2});  // (N, C_padded, H, W), channels_last in memory
}

// The weight-gradient sums of a channels_last dense or grouped layer, [groups][blocks][5][k][block]
// in Acc, `args` complete but for dw. The kernel's items each sum all pixels, so they need no
// reduction. Layers with few input channels per group (few_channel_wgrad_impl) have few items (3 ->
// 64 channels: four blocks of 16 output channels), so their images are split into up to
// wgrad_slots(batch) fixed runs as well, each summed into partial sums of its own, added up in
// order: the bits depend on the shape, not on the threads. As for the NCHW bands
// (wgrad_slots_fit), the slots' sums may hold no more elements than x: with many groups of small
// images they would outweigh the work (16 images of 1024 groups of 4 -> 4 channels at 1 x 1: 21 MB
// of sums for 65,536 inputs, 3.5-6x slower than without slots), and many groups are items enough.
template <typename Acc, typename Table, typename Args>
at::Tensor channels_last_wgrad_sums(const Table* table, const Args& args, const at::Tensor& x, const at::Tensor& dy_blocked,
                                    int64_t blocks, int64_t block) {
  const int64_t elements = args.groups * blocks * kTaps * args.k * block;
  const int64_t batch = args.map.batch, inner = table->wgrad_items(args);
  // (no sums at all without input or output channels)
  const int64_t slots = args.k <= kFewChannelWgrad && elements > 0
                            ? std::max<int64_t>(1, std::min(wgrad_slots(batch), x.numel() / elements))
                            : 1;
  const int64_t x_image = x.size(1) * x.size(2) * x.size(3), dy_image = dy_blocked.size(1) * dy_blocked.size(2) * dy_blocked.size(3);
  at::Tensor partial = at::empty({slots, elements}, x.options().dtype(c10::CppTypeToScalarType<Acc>::value));
  Acc* partial_data = partial.mutable_data_ptr<Acc>();
  at::parallel_for(0, slots * inner, 1, [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin / inner; slot * inner < end; ++slot) {
      const int64_t n0 = slot * batch / slots, n1 = (slot + 1) * batch / slots;  // the slot's images
      Args a = args;
      a.map.batch = n1 - n0;
      a.src += n0 * x_image;
      a.dy += n0 * dy_image;
      a.dw = partial_data + slot * elements;
      table->wgrad(a, std::max(begin, slot * inner) - slot * inner, std::min(end, (slot + 1) * inner) - slot * inner);
    }
  });
  return (slots == 1 ? partial.view({elements}) : sum_rows<Acc>(partial)).view({args.groups, blocks, kTaps, args.k, block});
}

template <typename T>
at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const ConvParams& p) {
  const TapMap map = forward_tap_map(geometry(x.size(0), x.size(2), x.size(3), dy.size(2), dy.size(3), p));
  const KernelTable<T>* table = kernels<T>();
  const int64_t groups = p.groups, k = w.size(1), n = w.size(0) / groups;
  if (map.batch * map.grid_h * map.grid_w == 0) {
    return at::zeros(w.sizes(), w.options());  // contiguous, as the fake kernel says, whatever w's strides
  }
  if (is_depthwise(w, groups)) {
    return depthwise_weight_grad<T>(map, dy, x, groups);
  }
  const int vectors = wgrad_vectors(k, n, table->lanes, table->max_vectors);
  const int64_t block = int64_t{vectors} * table->lanes;
  const int64_t blocks = ceil_div(n, block);
  WgradArgs<T> args;
  const at::Tensor zeros = zero_pixel<T>(x.size(1), x.options());
  args.zeros = zeros.const_data_ptr<T>();
  args.groups = groups;
  args.k = k;
  args.n = n;
  args.vectors = vectors;
  args.src_ld = x.size(1);
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast)) {  // NCHW: wgrad_can_run_in_bands, wgrad_slots_fit
    return unpack_weight_grad<T>(wgrad_sums_in_bands<T, T>(table, args, map, dy, x, blocks, block), groups, k, n);
  }
  const at::Tensor dy_blocked = pad_groups_to_blocks(dy, groups, n, block);
  args.map = map;
  args.src = x.const_data_ptr<T>();
  args.dy = dy_blocked.const_data_ptr<T>();
  args.dy_group_stride = dy_blocked.size(1) / groups;
  args.dy_ld = dy_blocked.size(1);
  return unpack_weight_grad<T>(channels_last_wgrad_sums<T>(table, args, x, dy_blocked, blocks, block), groups, k, n);
}

// ---------------------------------------------------------------------------------------------
// 16-bit layers that run on the 16-bit tensors themselves, float32 sums, results rounded once:
// bfloat16 and float16 depthwise layers everywhere (the float32 depthwise kernels, converting in
// registers: the same bits as computing on a float32 copy, for half the bytes), and dense and
// grouped bfloat16 ones on CPUs with AVX512_BF16 (the GEMMs of tap_kernels_avx512_bf16.cpp). Dense
// and grouped float16 layers compute on a float32 copy: without AVX512_FP16 a float16 GEMM would
// convert every broadcast input, and the copy is small next to their arithmetic.

bool native_16bit(const at::Tensor& input, const at::Tensor& weight, int64_t groups) {
  const at::ScalarType dtype = input.scalar_type();
  if (is_depthwise(weight, groups)) {
    return dtype == at::kBFloat16 || dtype == at::kHalf;
  }
  return dtype == at::kBFloat16 && bf16_kernels() != nullptr;
}

// Calls f(S{}) with S the kernels' storage type for 16-bit activations of `dtype`: uint16_t
// (bfloat16 bits) or Float16Bits.
template <typename F>
void with_16bit_storage(at::ScalarType dtype, F&& f) {
  TORCH_INTERNAL_ASSERT(dtype == at::kBFloat16 || dtype == at::kHalf);
  if (dtype == at::kBFloat16) {
    f(uint16_t{});
  } else {
    f(Float16Bits{});
  }
}

// The output block width of the bf16 kernels for n produced channels, in vectors, and in channels.
int bf16_vectors(int64_t n) {
  const Bf16KernelTable* table = bf16_kernels();
  return choose_vectors(n, table->lanes, table->max_vectors);
}

int64_t bf16_block(int64_t n) {
  return int64_t{bf16_vectors(n)} * bf16_kernels()->lanes;
}

int64_t bf16_wgrad_block(int64_t k, int64_t n) {
  const Bf16KernelTable* table = bf16_kernels();
  return int64_t{wgrad_vectors(k, n, table->lanes, table->max_vectors)} * table->lanes;
}

// The bf16 gather GEMMs of one pass (reduce over k channels, produce n), whose weight `pairs` is
// packed [G][blocks][5][ceil(k / 2)][block][2] with block = bf16_block(n) (pack_forward_weight or
// pack_input_grad_weight with pairs), run for each of the pass's tap maps.
class Bf16GatherGemm {
 public:
  Bf16GatherGemm(const at::Tensor& pairs, int64_t k, int64_t n, const std::optional<at::Tensor>& bias,
                 const at::Tensor& src)
      : table_(bf16_kernels()), groups_(pairs.size(0)), blocks_(pairs.size(1)), k_(k), n_(n),
        vectors_(bf16_vectors(n)) {
    const int64_t block = pairs.size(4);
    TORCH_INTERNAL_ASSERT(pairs.dim() == 6 && pairs.size(3) == ceil_div(k, 2) && pairs.size(5) == 2 &&
                          block == bf16_block(n) && blocks_ == ceil_div(n, block));
    packed_ = pairs;
    if (bias.has_value() && bias->defined()) {
      packed_bias_ = pack_bias(bias->to(at::kFloat), groups_, block);
    }
    zeros_ = zero_pixel<at::BFloat16>(src.size(1), src.options());
  }

  // The GEMMs of one pass, `maps`, from src to dst (run_gather_pass).
  void run(const std::vector<TapMap>& maps, const at::Tensor& src, at::Tensor& dst) const {
    run_gather_pass<uint16_t>(table_, groups_ * blocks_, packed_, maps, src, dst,
                              [&](const TapMap& map, const uint16_t* in, int64_t in_ld, uint16_t* out, int64_t out_ld) {
                                return args(map, in, in_ld, out, out_ld);
                              });
  }

 private:
  Bf16GatherGemmArgs args(const TapMap& map, const uint16_t* src, int64_t src_ld, uint16_t* dst, int64_t dst_ld) const {
    Bf16GatherGemmArgs a;
    a.map = map;
    a.src = src;
    a.src_ld = src_ld;
    a.dst = dst;
    a.dst_ld = dst_ld;
    a.weight = elements<uint16_t>(packed_);
    a.bias = packed_bias_.defined() ? packed_bias_.const_data_ptr<float>() : nullptr;
    a.zeros = elements<uint16_t>(zeros_);
    a.groups = groups_;
    a.k = k_;
    a.n = n_;
    a.vectors = vectors_;
    return a;
  }

  const Bf16KernelTable* table_;
  int64_t groups_, blocks_, k_, n_;
  int vectors_ = 1;
  at::Tensor packed_, packed_bias_, zeros_;
};

// x, y: 16-bit channels_last (native_16bit); w: (G*n, k, 5).
void forward_16bit(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias, at::Tensor& y,
                   const ConvParams& p) {
  const TapMap map = forward_tap_map(geometry(x.size(0), x.size(2), x.size(3), y.size(2), y.size(3), p));
  if (is_depthwise(w, p.groups)) {
    const at::Tensor b = bias.has_value() && bias->defined() ? bias->to(at::kFloat) : at::Tensor();
    const at::Tensor packed = pack_depthwise_weight(w, at::kFloat);
    with_16bit_storage(x.scalar_type(), [&](auto storage) {
      depthwise<float, decltype(storage)>({map}, x, y, packed, b.defined() ? b.const_data_ptr<float>() : nullptr);
    });
    return;
  }
  const int64_t n = w.size(0) / p.groups, k = w.size(1);
  const at::Tensor pairs = pack_forward_weight<at::BFloat16>(w, p.groups, bf16_block(n), /*pairs=*/true);
  Bf16GatherGemm(pairs, k, n, bias, x).run({map}, x, y);
}

// dy, x: 16-bit channels_last (native_16bit); returns the weight gradient (G*n, k, 5) in their dtype,
// summed in float32.
at::Tensor weight_grad_16bit(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const ConvParams& p) {
  const TapMap map = forward_tap_map(geometry(x.size(0), x.size(2), x.size(3), dy.size(2), dy.size(3), p));
  if (map.batch * map.grid_h * map.grid_w == 0) {
    return at::zeros(w.sizes(), w.options());  // contiguous, as the fake kernel says, whatever w's strides
  }
  if (is_depthwise(w, p.groups)) {
    at::Tensor dw;
    with_16bit_storage(x.scalar_type(), [&](auto storage) {
      dw = depthwise_weight_grad<float, decltype(storage)>(map, dy, x, p.groups);
    });
    return dw.to(x.scalar_type());
  }
  const Bf16KernelTable* table = bf16_kernels();
  const int64_t groups = p.groups, k = w.size(1), n = w.size(0) / groups;
  const int vectors = wgrad_vectors(k, n, table->lanes, table->max_vectors);
  const int64_t block = int64_t{vectors} * table->lanes;
  const int64_t blocks = ceil_div(n, block);
  const at::Tensor zeros = zero_pixel<at::BFloat16>(std::max(x.size(1), groups * blocks * block), x.options());
  Bf16WgradArgs args;
  args.src_ld = x.size(1);
  args.zeros = elements<uint16_t>(zeros);
  args.groups = groups;
  args.k = k;
  args.n = n;
  args.vectors = vectors;
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast)) {  // NCHW: wgrad_can_run_in_bands, wgrad_slots_fit
    return unpack_weight_grad<float, at::BFloat16>(wgrad_sums_in_bands<uint16_t, float>(table, args, map, dy, x, blocks, block),
                                                   groups, k, n);
  }
  const at::Tensor dy_blocked = pad_groups_to_blocks(dy, groups, n, block);
  args.map = map;
  args.src = elements<uint16_t>(x);
  args.dy = elements<uint16_t>(dy_blocked);
  args.dy_group_stride = dy_blocked.size(1) / groups;
  args.dy_ld = dy_blocked.size(1);
  return unpack_weight_grad<float, at::BFloat16>(channels_last_wgrad_sums<float>(table, args, x, dy_blocked, blocks, block),
                                                 groups, k, n);
}

// dy, dx: 16-bit channels_last (native_16bit); reduces over the output channels with the transposed
// weight.
void input_grad_16bit(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvParams& p) {
  if (is_depthwise(w, p.groups)) {
    const at::Tensor packed = pack_depthwise_weight(w, at::kFloat);
    with_16bit_storage(dy.scalar_type(), [&](auto storage) {
      depthwise<float, decltype(storage)>(input_grad_classes(dy, dx, p), dy, dx, packed, nullptr);
    });
    return;
  }
  const int64_t k = w.size(1), n = w.size(0) / p.groups;  // produces k, reduces over n
  const at::Tensor pairs = pack_input_grad_weight<at::BFloat16>(w, p.groups, bf16_block(k), /*pairs=*/true);
  Bf16GatherGemm(pairs, n, k, std::nullopt, dy).run(input_grad_classes(dy, dx, p), dy, dx);
}

// Elements of a dense or grouped weight gradient's sums as the kernels lay them out
// ([G][blocks][5][k][block], each group's n channels padded to whole blocks), for the kernels that
// run the layer: the bfloat16 ones (native_16bit) or those of `compute`.
int64_t wgrad_sum_elements(const at::Tensor& weight, int64_t groups, bool native, at::ScalarType compute) {
  const int64_t n = weight.size(0) / groups, k = weight.size(1);
  const int64_t block = native                  ? bf16_wgrad_block(k, n)
                        : compute == at::kDouble ? wgrad_block<double>(k, n)
                                                 : wgrad_block<float>(k, n);
  return groups * ceil_div(n, block) * block * kTaps * k;
}

// Whether the kWgradSlots sums of a weight gradient in bands hold no more elements than x: each is
// a whole weight gradient, and where they outweigh the activations, converting those once costs
// less (measured as above, bands against whole tensors, float32 / bfloat16, with the slots'
// elements over x's: 64 @ 16 at batch 32, 0.6, 1.35x / 1.27x; 64 @ 32, 0.16, 1.30x / 1.30x; 128 @ 16,
// 1.25, 1.08x / 1.03x; 128 @ 28 at batch 8, 1.6, 1.02x / 0.88x; 256 @ 8, 10, 0.91x / 0.67x; one
// image of 64 @ 56, 1.6, 0.95x / 0.81x). A rule of the shape only, as the sums' bits follow it.
bool wgrad_slots_fit(const at::Tensor& x, const at::Tensor& weight, int64_t groups, bool native, at::ScalarType compute) {
  return kWgradSlots * wgrad_sum_elements(weight, groups, native, compute) <= x.numel();
}

// float16 and bfloat16 compute in float32; float64 stays float64.
at::ScalarType compute_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Transposed before the conversion and converted before the transpose back: the compute dtype is
// never narrower than the caller's, so each transpose moves the fewer bytes.
at::Tensor to_channels_last(const at::Tensor& t, at::ScalarType dtype) {
  return as_channels_last(t).to(dtype);
}

// Converts a channels_last float result back to the caller's dtype and memory format.
at::Tensor finish(const at::Tensor& result, at::ScalarType dtype, at::MemoryFormat format) {
  return in_memory_format(result.to(dtype), format);
}

// The bias gradient: grad_output summed over images and pixels in the compute dtype (16-bit types in
// float32), in its own layout, rounded to the weight's dtype. Converting grad_output first, as the
// native bfloat16 layers did only for this, was a transpose and a copy to no purpose.
at::Tensor bias_grad(const at::Tensor& grad_output, at::ScalarType compute, at::ScalarType weight_dtype) {
  return at::sum(grad_output, {0, 2, 3}, false, compute).to(weight_dtype);
}

// The NCHW depthwise layers of runs_in_slabs. bfloat16 and float16 run on their own bits (float32
// sums), float32 and float64 as they are.
at::Tensor depthwise_forward_in_slabs(const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, int64_t out_h, int64_t out_w,
                                      const ConvParams& p) {
  const bool narrow = native_16bit(input, weight, p.groups);
  const auto dtype = compute_dtype(input.scalar_type());
  const at::Tensor x = narrow ? input : input.to(dtype);
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  const std::vector<TapMap> maps = {forward_tap_map(geometry(1, x.size(2), x.size(3), out_h, out_w, p))};
  const at::Tensor packed = pack_depthwise_weight(weight, dtype);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->to(dtype).contiguous() : at::Tensor();
  if (narrow) {
    with_16bit_storage(x.scalar_type(), [&](auto storage) {
      depthwise_slabs<float, decltype(storage)>(maps, x, y, packed, b.defined() ? b.const_data_ptr<float>() : nullptr);
    });
  } else {
    AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_cpu_nchw_depthwise", [&] {
      depthwise_slabs<scalar_t>(maps, x, y, packed, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr);
    });
  }
  return y.to(input.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward_in_slabs(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const ConvParams& p,
    std::array<bool, 3> output_mask) {
  const bool narrow = native_16bit(input, weight, p.groups);
  const auto dtype = compute_dtype(input.scalar_type());
  const at::Tensor dy = (narrow ? grad_output : grad_output.to(dtype)).contiguous();
  const at::Tensor x = narrow ? input : input.to(dtype);
  const auto none = [&] { return at::empty({0}, input.options()); };
  at::Tensor grad_input = none(), grad_weight = none(), grad_bias = none();
  if (output_mask[0]) {
    at::Tensor dx = at::empty(x.sizes(), x.options());
    const std::vector<TapMap> classes = input_grad_classes(dy.narrow(0, 0, 1), dx.narrow(0, 0, 1), p);
    const at::Tensor packed = pack_depthwise_weight(weight, dtype);
    if (narrow) {
      with_16bit_storage(x.scalar_type(), [&](auto storage) {
        depthwise_slabs<float, decltype(storage)>(classes, dy, dx, packed, nullptr);
      });
    } else {
      AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_input_grad_cpu_nchw_depthwise",
                                 [&] { depthwise_slabs<scalar_t>(classes, dy, dx, packed, nullptr); });
    }
    grad_input = dx.to(input.scalar_type());
  }
  if (output_mask[1]) {
    const TapMap map = forward_tap_map(geometry(1, x.size(2), x.size(3), dy.size(2), dy.size(3), p));
    at::Tensor dw;
    if (narrow) {
      with_16bit_storage(x.scalar_type(), [&](auto storage) {
        dw = depthwise_weight_grad_slabs<float, decltype(storage)>(map, dy, x);
      });
    } else {
      AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_weight_grad_cpu_nchw_depthwise",
                                 [&] { dw = depthwise_weight_grad_slabs<scalar_t>(map, dy, x); });
    }
    grad_weight = dw.to(weight.scalar_type());
  }
  if (output_mask[2]) {
    grad_bias = bias_grad(grad_output, dtype, weight.scalar_type());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

at::Tensor skeleton_conv2d_cpu(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  const ConvParams p = make_params(stride, padding, dilation, groups);
  const auto out_hw = check_forward_args(input, weight, bias, p);
  if (runs_in_slabs(input, weight, groups, out_hw[0], out_hw[1])) {
    return depthwise_forward_in_slabs(input, weight.contiguous(), bias, out_hw[0], out_hw[1], p);
  }
  const int64_t y_sizes[] = {input.size(0), weight.size(0), out_hw[0], out_hw[1]};
  // NCHW in bands where the kernels take the caller's dtype as it is (not float16's float32 copy).
  const bool native = native_16bit(input, weight, groups);
  const auto dtype = compute_dtype(input.scalar_type());
  const bool bands = (native || input.scalar_type() == dtype) && pass_runs_in_bands(input, weight, groups, y_sizes, 1);
  const auto result = [&](const at::TensorOptions& options) {
    return bands ? at::empty(y_sizes, options) : empty_channels_last(y_sizes[0], y_sizes[1], y_sizes[2], y_sizes[3], options);
  };
  if (native) {
    const at::Tensor x = bands ? input : as_channels_last(input);
    at::Tensor y = result(x.options());
    if (y.numel() > 0) {
      forward_16bit(x, weight.contiguous(), bias, y, p);
    }
    return in_memory_format(y, input.suggest_memory_format());
  }
  const at::Tensor x = bands ? input : to_channels_last(input, dtype);
  const at::Tensor w = weight.to(dtype).contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) {
    b = bias->to(dtype).contiguous();
  }
  at::Tensor y = result(x.options());
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_cpu", [&] { forward<scalar_t>(x, w, b, y, p); });
  }
  return finish(y, input.scalar_type(), input.suggest_memory_format());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> skeleton_conv2d_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups,
    std::array<bool, 3> output_mask) {
  const ConvParams p = make_params(stride, padding, dilation, groups);
  check_backward_args(grad_output, input, weight, p);
  if (runs_in_slabs(input, weight, groups, grad_output.size(2), grad_output.size(3))) {
    return depthwise_backward_in_slabs(grad_output, input, weight.contiguous(), p, output_mask);
  }
  const auto dtype = compute_dtype(input.scalar_type());
  const bool native = native_16bit(input, weight, groups);
  // NCHW layers in bands, as in the forward pass, where the kernels take the tensors' dtype as it is;
  // the input gradient when grad_output and input are NCHW, over its residue classes.
  const bool own_dtype = (native || input.scalar_type() == dtype) && grad_output.scalar_type() == input.scalar_type();
  const int64_t classes = std::min(p.stride[0], input.size(2)) * std::min(p.stride[1], input.size(3));
  const bool dx_in_bands = output_mask[0] && own_dtype && input.is_contiguous() &&
                           !input.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                           pass_runs_in_bands(grad_output, weight, groups, input.sizes(), classes);
  const bool dw_in_bands = output_mask[1] && own_dtype && wgrad_can_run_in_bands(input, grad_output, weight, groups) &&
                           wgrad_slots_fit(input, weight, groups, native, dtype);
  const bool whole_dy = (output_mask[0] && !dx_in_bands) || (output_mask[1] && !dw_in_bands);
  // grad_output channels_last in the compute dtype, for the gradients whose kernels compute in it
  // (the bias gradient sums grad_output as it is, below).
  at::Tensor dy;
  if (!native && whole_dy) {
    dy = to_channels_last(grad_output, dtype);
  }
  const at::Tensor dy16 = native && whole_dy ? as_channels_last(grad_output) : at::Tensor();
  const at::Tensor w = native ? at::Tensor() : weight.to(dtype).contiguous();
  // A masked-out gradient is an empty tensor of its own (outputs of an op must not alias).
  const auto none = [&] { return at::empty({0}, input.options()); };

  at::Tensor grad_input = none();
  if (output_mask[0]) {
    const at::Tensor& src = dx_in_bands ? grad_output : native ? dy16 : dy;
    at::Tensor dx = dx_in_bands ? at::empty(input.sizes(), src.options())
                                : empty_channels_last(input.size(0), input.size(1), input.size(2), input.size(3), src.options());
    if (dx.numel() > 0 && native) {
      input_grad_16bit(src, weight.contiguous(), dx, p);
    } else if (dx.numel() > 0) {
      AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_input_grad_cpu", [&] { input_grad<scalar_t>(src, w, dx, p); });
    }
    grad_input = finish(dx, input.scalar_type(), input.suggest_memory_format());
  }

  at::Tensor grad_weight = none();
  if (native && output_mask[1]) {
    grad_weight = dw_in_bands ? weight_grad_16bit(grad_output, input, weight, p)
                              : weight_grad_16bit(dy16, as_channels_last(input), weight, p);
  } else if (output_mask[1]) {
    const at::Tensor x = dw_in_bands ? input : to_channels_last(input, dtype);
    const at::Tensor& src = dw_in_bands ? grad_output : dy;
    at::Tensor dw;
    AT_DISPATCH_FLOATING_TYPES(dtype, "skeleton_conv2d_weight_grad_cpu", [&] { dw = weight_grad<scalar_t>(src, x, w, p); });
    grad_weight = dw.to(weight.scalar_type()).contiguous();
  }

  at::Tensor grad_bias = none();
  if (output_mask[2]) {
    grad_bias = bias_grad(grad_output, dtype, weight.scalar_type());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace cpu

// The family in use, as its tables name it: the bfloat16 table's where it runs ("avx512_bf16").
std::string cpu_kernel_isa() {
  const cpu::Bf16KernelTable* bf16 = cpu::bf16_kernels();
  return bf16 != nullptr ? bf16->isa : cpu::float_kernels()->isa;
}

TORCH_LIBRARY_IMPL(skeleton_cuda, CPU, m) {
  m.impl("skeleton_conv2d", &cpu::skeleton_conv2d_cpu);
  m.impl("skeleton_conv2d_backward", &cpu::skeleton_conv2d_backward_cpu);
}

}  // namespace skeleton_cuda
