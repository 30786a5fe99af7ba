// bfloat16 kernels for CPUs with AVX512_BF16: the gather GEMMs (forward, input gradient) and the
// weight gradient.
//
// The float32 kernels compute bfloat16 layers on an upcast copy: one fused multiply-add of 16
// lanes per input channel. VDPBF16PS adds two bf16 products to each of 16 float32 lanes, so
// taking the reduction two channels at a time does twice the multiply-adds per instruction, on
// half the bytes: a broadcast of one 32-bit channel pair per pixel against weight vectors that
// hold the same pair of rows interleaved ([pair][column][2]). The register tile is the float32
// kernel's (P pixels x V vectors of columns, tap_kernels_impl.h), and so are the work items.
// The weight gradient reduces over pixels, so its pairs are two pixels: each chunk of pixels is
// first interleaved pairwise (grad_output per output block, the input per tap and slab of
// channels), then the same register tile runs over the pairs.
// Results are rounded to bfloat16 as c10::BFloat16 rounds float32 (to nearest even, NaN -> 0x7FC0).
// VDPBF16PS treats bf16 subnormals as zero and flushes subnormal results, as oneDNN's
// bf16 convolutions do.
#include "tap_kernels.h"

// AVX512_BF16 intrinsics: GCC 10 and Clang 11 on.
#if defined(__x86_64__) && defined(__GNUC__) && \
    ((defined(__clang__) && __clang_major__ >= 11) || (!defined(__clang__) && __GNUC__ >= 10))
#define SKELETON_HAS_AVX512_BF16 1
#endif

#if defined(SKELETON_HAS_AVX512_BF16)

#include <immintrin.h>  // intrinsics only: always-inline, nothing the linker could share

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma,f16c")
#endif

// The float32 kernels' register budget and tiles (P * V accumulators + V weights + 1 broadcast).
#define SKELETON_ISA avx512_bf16
#define SKELETON_F16C 1  // float16 conversions in one instruction (tap_kernels_impl.h)
#define SKELETON_ISA_NAME "avx512_bf16"
#define SKELETON_MAX_VECTORS 4
#define SKELETON_TILE_ROWS(V) ((V) == 4 ? 6 : (V) == 3 ? 8 : (V) == 2 ? 12 : 14)
#include "tap_kernels_impl.h"  // gather_gemm_driver, grid_pointers, store_elems, widen_u16, ...

namespace skeleton_cuda {
namespace cpu {
namespace SKELETON_ISA {

constexpr int kLanes = 16;  // float32 accumulators per vector

// Integer lanes as vector extensions: GCC's shift and narrowing intrinsics trip
// -Wmaybe-uninitialized inside its own headers. (Widening: widen_u16; rounding to bfloat16:
// store_elems; both tap_kernels_impl.h.)
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));

// Channels c and c + 1 of a pixel in every 32-bit lane (c the low half, as the weight pairs).
inline __m512bh pair_broadcast(const uint16_t* s) {
  uint32_t pair;
  __builtin_memcpy(&pair, s, 4);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
}

// The last channel of an odd k, partnered with zero: never read the channel after it (another
// group's, or past the tensor), whose NaN would survive a zero weight.
inline __m512bh single_broadcast(const uint16_t* s) {
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(*s)));
}

// A tile's sums rounded to bfloat16 and stored: VCVTNEPS2BF16 rounds to nearest even, as
// store_elems does, and every NaN becomes 0x7FC0 as there. It treats subnormal inputs as zero,
// where store_elems rounds them; a sum that has come out of a VDPBF16PS is never subnormal (it
// flushes subnormal results), so for those the bits are store_elems' (checked against its rounding
// on 32 million random floats: they differ on subnormal inputs only). A tile that sums nothing (no
// channels, or a residue class without taps) stores its bias with store_elems (store_bias_tile).
// store_elems' shifts and masks, and its narrowing store (VPMOVDW to memory), took about a third
// of the samples of a 3 -> 64 forward pass (perf, one thread).
inline void store_bf16(uint16_t* p, __m512 v) {
  const __m256i rounded = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_mask_mov_epi16(rounded, nan, _mm256_set1_epi16(0x7FC0)));
}

// The tile of a GEMM that sums nothing: its bias (or zeros), rounded by store_elems. The tiles call
// it before their loops: with the choice of rounding in their last loop instead, GCC kept all
// their accumulators in memory.
template <int P, int V>
inline void store_bias_tile(const float* bias, uint16_t* const* out) {
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v)
      store_elems(out[p] + v * kLanes, bias != nullptr ? _mm512_loadu_ps(bias + v * kLanes) : _mm512_setzero_ps());
}

// One register tile: P grid points x (V * 16) columns, summed in float32 and stored rounded to
// out[p] (the shape of the float32 gemm_tile, whose stores from registers keep the tile there).
template <int P, int V>
inline __attribute__((always_inline)) void bf16_tile(
    const uint16_t* const* src, int64_t src_stride, int64_t chan, int num_taps, const int* tap,
    const uint16_t* weight, int64_t k, const float* bias, uint16_t* const* out) {
  constexpr int B = V * kLanes;
  if (num_taps == 0 || k == 0) return store_bias_tile<P, V>(bias, out);
  const int64_t pairs = k / 2, kp = (k + 1) / 2;
  __m512 acc[P][V];
  for (int v = 0; v < V; ++v) {
    const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + v * kLanes) : _mm512_setzero_ps();
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int a = 0; a < num_taps; ++a) {
    const uint16_t* s[P];
    for (int p = 0; p < P; ++p) s[p] = src[a * src_stride + p] + chan;
    const uint16_t* w = weight + static_cast<int64_t>(tap[a]) * kp * B * 2;
    for (int64_t q = 0; q < pairs; ++q) {
      __m512bh wv[V];
      for (int v = 0; v < V; ++v)
        wv[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + (q * B + v * kLanes) * 2));
      for (int p = 0; p < P; ++p) {
        const __m512bh x = pair_broadcast(s[p] + 2 * q);
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], x, wv[v]);
      }
    }
    if (k % 2 != 0) {
      __m512bh wv[V];
      for (int v = 0; v < V; ++v)
        wv[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + (pairs * B + v * kLanes) * 2));
      for (int p = 0; p < P; ++p) {
        const __m512bh x = single_broadcast(s[p] + 2 * pairs);
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], x, wv[v]);
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) store_bf16(out[p] + v * kLanes, acc[p][v]);
}

template <int P, int B>
int64_t bf16_gather_gemm_items_impl(const Bf16GatherGemmArgs& a) {
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  return a.groups * ceil_div(a.n, B) * ceil_div(points, kGemmChunkTiles * P);
}

// few_channel_gemm_items' tile: point p's flat rows at xs[p * LD + r], in pairs (rows even).
template <int P, int V, int LD>
inline __attribute__((always_inline)) void bf16_flat_tile(const uint16_t* xs, const uint16_t* weight, int64_t rows,
                                                          const float* bias, uint16_t* const* out) {
  constexpr int B = V * kLanes;
  if (rows == 0) return store_bias_tile<P, V>(bias, out);
  __m512 acc[P][V];
  for (int v = 0; v < V; ++v) {
    const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + v * kLanes) : _mm512_setzero_ps();
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int64_t q = 0; q < rows / 2; ++q) {
    __m512bh wv[V];
    for (int v = 0; v < V; ++v)
      wv[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(weight + (q * B + v * kLanes) * 2));
    for (int p = 0; p < P; ++p) {
      const __m512bh x = pair_broadcast(xs + p * LD + 2 * q);
      for (int v = 0; v < V; ++v) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], x, wv[v]);
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) store_bf16(out[p] + v * kLanes, acc[p][v]);
}

template <int P, int V>
struct Bf16Tile {
  static inline __attribute__((always_inline)) void run(
      const uint16_t* const* src, int64_t src_stride, int64_t chan, int num_taps, const int* tap,
      const uint16_t* weight, int64_t k, const float* bias, uint16_t* const* out) {
    bf16_tile<P, V>(src, src_stride, chan, num_taps, tap, weight, k, bias, out);
  }
  template <int LD>
  static inline __attribute__((always_inline)) void run_flat(const uint16_t* xs, const uint16_t* weight, int64_t rows,
                                                             const float* bias, uint16_t* const* out) {
    bf16_flat_tile<P, V, LD>(xs, weight, rows, bias, out);
  }
  // Pairs of flat rows: an odd count's last row is partnered with zeros.
  static constexpr int flat_rows(int64_t rows) { return static_cast<int>((rows + 1) / 2 * 2); }
  // The packed block [5][ceil(k / 2)][block][2] as pairs of the rows (a, c) of the active taps,
  // a * k + c: [flat_rows / 2][block][2]. With k = 3, a pair can span two taps.
  static void flatten(const uint16_t* w, const TapMap& map, int64_t k, int64_t block, uint16_t* flat) {
    const int64_t kp = (k + 1) / 2, rows = map.num_taps * k;
    for (int64_t r = 0; r < flat_rows(rows); ++r) {
      const int64_t a = r / k, c = r % k;
      for (int64_t j = 0; j < block; ++j)
        flat[((r / 2) * block + j) * 2 + r % 2] = r < rows ? w[((map.tap[a] * kp + c / 2) * block + j) * 2 + c % 2] : 0;
    }
  }
};

// The float32 gather GEMM's items and driver, with the bf16 tile and its pair-packed weight.
template <int P, int V>
void bf16_gather_gemm_impl(const Bf16GatherGemmArgs& a, int64_t begin, int64_t end) {
  constexpr int B = V * kLanes;
  gather_gemm_driver<Bf16Tile<P, V>, uint16_t, P, B>(a, kTaps * ((a.k + 1) / 2) * B * 2, begin, end);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient.

// 16 pairs (a[i], b[i]) as 32 bfloat16, a[i] the low half: a pair of pixels' values side by side.
inline void store_pairs(uint32_t* out, const uint16_t* a, const uint16_t* b, __mmask16 valid) {
  const u16x16 lo = reinterpret_cast<u16x16>(_mm256_maskz_loadu_epi16(valid, a));
  const u16x16 hi = reinterpret_cast<u16x16>(_mm256_maskz_loadu_epi16(valid, b));
  const u32x16 pairs = widen_u16<kLanes>(lo) | (widen_u16<kLanes>(hi) << 16);
  __builtin_memcpy(out, &pairs, sizeof(pairs));
}

inline __mmask16 first_lanes(int64_t count) {  // lanes [0, count) of 16; none for count <= 0
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1u);
}

constexpr int64_t kWgradPairs = kWgradChunk / 2;

// Channels of the input interleaved at once: 8 register tiles of P rows (a multiple of 16, as P is
// even), so that a thread's consecutive items reuse one interleaving.
template <int P>
constexpr int64_t wgrad_slab() { return 8 * P; }

template <int P, int B>
int64_t bf16_wgrad_items_impl(const Bf16WgradArgs& a) {
  return a.groups * kTaps * ceil_div(a.k, P) * ceil_div(a.n, B);
}

// Items as the float32 weight gradient's: ((g * blocks + b) * 5 + t) * channel_tiles + ct, each a
// register tile of P input channels x (V * 16) output channels summed over all pixels, chunk by
// chunk in a fixed order (bitwise independent of the threads).
template <int P, int V>
void bf16_wgrad_impl(const Bf16WgradArgs& a, int64_t begin, int64_t end) {
  constexpr int B = V * kLanes;
  constexpr int64_t kSlab = wgrad_slab<P>();
  static_assert(kSlab % 16 == 0, "slabs are interleaved 16 channels at a time");
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t blocks = ceil_div(a.n, B);
  const int64_t channel_tiles = ceil_div(a.k, P);
  const uint16_t* src[kTaps * kWgradChunk];
  alignas(64) uint32_t dy_pairs[kWgradPairs][B];    // [pair][column]: grad_output of pixels 2q, 2q + 1
  alignas(64) uint32_t x_pairs[kWgradPairs][kSlab];  // [pair][channel of the slab]: the input, one tap
  // Channels past k are never interleaved (a layer of 16 channels would spend most of its time
  // interleaving zeros into a slab of 112): they stay the zeros written here, once.
  __builtin_memset(x_pairs, 0, sizeof(x_pairs));

  for (int64_t m0 = 0; m0 < points; m0 += kWgradChunk) {
    const int64_t count = min_i64(kWgradChunk, points - m0);
    const int64_t pairs = ceil_div(count, 2);  // an odd count's last partner reads zeros
    grid_pointers(a.map, a.src, a.src_ld, a.zeros, m0, count, src, kWgradChunk, nullptr);
    for (int t = 0; t < kTaps; ++t)
      for (int64_t m = count; m < kWgradChunk; ++m) src[t * kWgradChunk + m] = a.zeros;
    auto dy_row = [&](int64_t m) { return m < count ? a.dy + (m0 + m) * a.dy_ld : a.zeros; };

    int64_t dy_built = -1, x_built = -1;  // which (g, b) and (g, t, slab) the buffers hold
    for (int64_t item = begin; item < end; ++item) {
      const int64_t ct = item % channel_tiles;
      const int64_t t = (item / channel_tiles) % kTaps;
      const int64_t b = (item / channel_tiles / kTaps) % blocks;
      const int64_t g = item / channel_tiles / kTaps / blocks;
      if (g * blocks + b != dy_built) {
        dy_built = g * blocks + b;
        const int64_t off = g * a.dy_group_stride + b * B;
        for (int64_t q = 0; q < pairs; ++q)
          for (int v = 0; v < V; ++v)
            store_pairs(&dy_pairs[q][v * kLanes], dy_row(2 * q) + off + v * kLanes, dy_row(2 * q + 1) + off + v * kLanes,
                        0xFFFF);
      }
      const int64_t slab = ct * P / kSlab;
      const int64_t x_key = (g * kTaps + t) * ceil_div(a.k, kSlab) + slab;
      if (x_key != x_built) {
        x_built = x_key;
        const uint16_t* const* tap_src = src + t * kWgradChunk;
        const int64_t c0 = slab * kSlab;
        const int64_t width = min_i64(kSlab, a.k - c0);  // past it: the zeros written first
        for (int64_t q = 0; q < pairs; ++q)
          for (int64_t c = 0; c < width; c += 16) {  // channels past k interleave as zeros
            const int64_t off = g * a.k + c0 + c;
            store_pairs(&x_pairs[q][c], tap_src[2 * q] + off, tap_src[2 * q + 1] + off, first_lanes(width - c));
          }
      }
      const int64_t row0 = ct * P - slab * kSlab;
      const int64_t rows = min_i64(P, a.k - ct * P);
      float* dw = a.dw + (((g * blocks + b) * kTaps + t) * a.k + ct * P) * B;  // rows of B (Bf16WgradArgs::dw)
      __m512 acc[P][V];
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v)
          acc[p][v] = (m0 == 0 && !a.accumulate) || p >= rows ? _mm512_setzero_ps() : _mm512_loadu_ps(dw + p * B + v * kLanes);
      for (int64_t q = 0; q < pairs; ++q) {
        __m512bh g16[V];
        for (int v = 0; v < V; ++v)
          g16[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(&dy_pairs[q][v * kLanes]));
        for (int p = 0; p < P; ++p) {
          const __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(x_pairs[q][row0 + p])));
          for (int v = 0; v < V; ++v) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], x, g16[v]);
        }
      }
      for (int64_t p = 0; p < rows; ++p)
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(dw + p * B + v * kLanes, acc[p][v]);
    }
  }
}

// The weight gradient of layers with few input channels per group (few_channel_wgrad_impl in
// tap_kernels_impl.h: tiles of up to kFewRows rows t * k + c, all five taps, of one vector of output
// channels) with pixel pairs: each chunk's input values are interleaved once per group
// (Bf16FewChannelChunk::xs2: pixels 2q and 2q + 1 side by side), and grad_output as it streams
// past, so a pair of pixels costs one VDPBF16PS per row where float32 tiles take two multiply-adds
// and two conversions.
template <int R>
inline __attribute__((always_inline)) void bf16_few_channel_tile(const uint32_t* xs2, int64_t xs_ld,
                                                                 const uint16_t* const* dy, int64_t pairs, int64_t dy_off,
                                                                 float* dw, bool first) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(dw + r * kLanes);
  for (int64_t q = 0; q < pairs; ++q) {
    if (q + 16 < pairs) {  // 32 pixels ahead, as few_channel_tile says why
      __builtin_prefetch(dy[2 * q + 32] + dy_off);
      __builtin_prefetch(dy[2 * q + 33] + dy_off);
    }
    const u16x16 lo = reinterpret_cast<u16x16>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dy[2 * q] + dy_off)));
    const u16x16 hi = reinterpret_cast<u16x16>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dy[2 * q + 1] + dy_off)));
    const __m512bh g = reinterpret_cast<__m512bh>(widen_u16<kLanes>(lo) | (widen_u16<kLanes>(hi) << 16));
    const uint32_t* x = xs2 + q * xs_ld;
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_dpbf16_ps(acc[r], reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(x[r]))), g);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(dw + r * kLanes, acc[r]);
}

// few_channel_items' buffers for bfloat16 storage: xs2[q][t * K + c] holds channel c of group g at tap
// t of pixels 2q (low half) and 2q + 1 (high half), interleaved from the rows grid_values copies to
// xs; past the chunk's pixels, zeros (an odd count's last partner).
struct Bf16FewChannelChunk {
  const uint16_t* dy[kWgradChunk];
  alignas(64) uint16_t xs[(kWgradChunk + 1) * kTaps * kFewChannelWgrad];
  alignas(64) uint32_t xs2[kWgradPairs * kTaps * kFewChannelWgrad];
  const Bf16WgradArgs* args = nullptr;
  int64_t m0 = 0, count = 0, pairs = 0;

  void start(const Bf16WgradArgs& a, int64_t first, int64_t n) {
    args = &a;
    m0 = first;
    count = n;
    pairs = ceil_div(count, 2);
    for (int64_t m = 0; m < kWgradChunk; ++m) dy[m] = m < count ? a.dy + (m0 + m) * a.dy_ld : a.zeros;
  }
  template <int K>
  void gather(int64_t g) {
    constexpr int R = kTaps * K;
    grid_values<K>(args->map, args->src, args->src_ld, g * K, m0, count, xs, R, nullptr);
    for (int r = 0; r < R; ++r) xs[count * R + r] = 0;  // the partner of an odd count's last pixel
    for (int64_t q = 0; q < pairs; ++q)
      for (int r = 0; r < R; ++r) xs2[q * R + r] = uint32_t{xs[2 * q * R + r]} | uint32_t{xs[(2 * q + 1) * R + r]} << 16;
  }
  template <int R>
  void tile(int64_t r0, int64_t rows, int64_t dy_off, float* dw, bool first) {
    bf16_few_channel_tile<R>(xs2 + r0, rows, dy, pairs, dy_off, dw, first);
  }
};

// Items as few_channel_wgrad_items<float, kLanes>; a.k <= kFewChannelWgrad, a.vectors == 1.
void bf16_few_channel_wgrad(const Bf16WgradArgs& a, int64_t begin, int64_t end) {
  Bf16FewChannelChunk chunk;
  few_channel_items<kLanes>(a, chunk, begin, end);
}

template <int V>
constexpr int bf16_rows() { return SKELETON_TILE_ROWS(V); }

int64_t bf16_gather_gemm_items(const Bf16GatherGemmArgs& a) {
  switch (a.vectors) {
    case 1: return bf16_gather_gemm_items_impl<bf16_rows<1>(), kLanes>(a);
    case 2: return bf16_gather_gemm_items_impl<bf16_rows<2>(), 2 * kLanes>(a);
    case 3: return bf16_gather_gemm_items_impl<bf16_rows<3>(), 3 * kLanes>(a);
    case 4: return bf16_gather_gemm_items_impl<bf16_rows<4>(), 4 * kLanes>(a);
  }
  return 0;
}

void bf16_gather_gemm(const Bf16GatherGemmArgs& a, int64_t begin, int64_t end) {
  switch (a.vectors) {
    case 1: return bf16_gather_gemm_impl<bf16_rows<1>(), 1>(a, begin, end);
    case 2: return bf16_gather_gemm_impl<bf16_rows<2>(), 2>(a, begin, end);
    case 3: return bf16_gather_gemm_impl<bf16_rows<3>(), 3>(a, begin, end);
    case 4: return bf16_gather_gemm_impl<bf16_rows<4>(), 4>(a, begin, end);
  }
}

// The float32 kernels' short tiles (short_wgrad_tiles) only where they save a quarter of the rows
// these tiles compute (which here include the empty rows of a tap's last tile): 16 channels at one
// vector, 28 rows against 16, came out 1.30x, 0.96x and 1.33x as fast in three A/B runs of
// alternating processes (32 @ 32, batch 32); 32 channels at two vectors, 36 rows against 32, 1.24x,
// 0.95x and 0.94x, so they keep their tiles of 12.
inline bool bf16_short_wgrad_tiles(int64_t k, int p) {
  if (!short_wgrad_tiles(k, p)) return false;
  const int64_t rows = ceil_div(k, int64_t{p}) * p, short_rows = ceil_div(k, int64_t{kShortTileRows}) * kShortTileRows;
  return 4 * (rows - short_rows) > rows;
}

int64_t bf16_wgrad_items(const Bf16WgradArgs& a) {
  if (uses_few_channel_tiles(a)) return few_channel_wgrad_items<float, kLanes>(a);
  switch (a.vectors) {
    case 1:
      if (bf16_short_wgrad_tiles(a.k, bf16_rows<1>())) return bf16_wgrad_items_impl<kShortTileRows, kLanes>(a);
      return bf16_wgrad_items_impl<bf16_rows<1>(), kLanes>(a);
    case 2:
      if (bf16_short_wgrad_tiles(a.k, bf16_rows<2>())) return bf16_wgrad_items_impl<kShortTileRows, 2 * kLanes>(a);
      return bf16_wgrad_items_impl<bf16_rows<2>(), 2 * kLanes>(a);
    case 3: return bf16_wgrad_items_impl<bf16_rows<3>(), 3 * kLanes>(a);
    case 4: return bf16_wgrad_items_impl<bf16_rows<4>(), 4 * kLanes>(a);
  }
  return 0;
}

void bf16_wgrad(const Bf16WgradArgs& a, int64_t begin, int64_t end) {
  if (uses_few_channel_tiles(a)) return bf16_few_channel_wgrad(a, begin, end);
  switch (a.vectors) {
    case 1:
      if (bf16_short_wgrad_tiles(a.k, bf16_rows<1>())) return bf16_wgrad_impl<kShortTileRows, 1>(a, begin, end);
      return bf16_wgrad_impl<bf16_rows<1>(), 1>(a, begin, end);
    case 2:
      if (bf16_short_wgrad_tiles(a.k, bf16_rows<2>())) return bf16_wgrad_impl<kShortTileRows, 2>(a, begin, end);
      return bf16_wgrad_impl<bf16_rows<2>(), 2>(a, begin, end);
    case 3: return bf16_wgrad_impl<bf16_rows<3>(), 3>(a, begin, end);
    case 4: return bf16_wgrad_impl<bf16_rows<4>(), 4>(a, begin, end);
  }
}

}  // namespace SKELETON_ISA
}  // namespace cpu
}  // namespace skeleton_cuda

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace skeleton_cuda {
namespace cpu {
const Bf16KernelTable* avx512_bf16_kernels() {
  static const Bf16KernelTable kTable = {
      "avx512_bf16", avx512_bf16::kLanes, SKELETON_MAX_VECTORS, &avx512_bf16::bf16_gather_gemm_items,
      &avx512_bf16::bf16_gather_gemm, &avx512_bf16::bf16_wgrad_items, &avx512_bf16::bf16_wgrad};
  return &kTable;
}
}  // namespace cpu
}  // namespace skeleton_cuda

#else

namespace skeleton_cuda {
namespace cpu {
const Bf16KernelTable* avx512_bf16_kernels() { return nullptr; }
}  // namespace cpu
}  // namespace skeleton_cuda

#endif
