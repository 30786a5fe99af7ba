// The CPU kernels, written once and compiled once per instruction set.
//
// Included by tap_kernels_<isa>.cpp inside that file's target pragma, after it defines
//   SKELETON_ISA               namespace and name of the instruction set
//   SKELETON_MAX_VECTORS       widest output block, in vector registers
//   SKELETON_TILE_ROWS(V)      pixels per register tile when the block is V vectors wide
// Vectors are GCC vector extensions, so the same source becomes AVX-512, AVX2 or SSE/NEON code.
// Nothing here may include a header (see tap_kernels.h for why).
//
// The main kernel is a register-blocked "gather GEMM": a tile of P pixels x (V * lanes) output
// channels stays in registers while the loop runs over the active taps and the reduction
// channels; each step loads V weight vectors and broadcasts one input value per pixel, so
// P * V fused multiply-adds need V + P loads. Only the five taps are computed.

namespace skeleton_cuda {
namespace cpu {
namespace SKELETON_ISA {

template <typename T, int L>
struct VecOf {
  typedef T type __attribute__((vector_size(L * sizeof(T))));
};

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename V, typename T>
inline V load_vec(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store_vec(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// Every lane = x. Written as x - 0 because that is exact for every x, so the compiler emits a
// single broadcast load; x + 0 is not (-0 + 0 = +0) and costs an extra add per element.
template <typename V, typename T>
inline V broadcast(T x) {
  return x - V{};
}

// Elements as stored (T itself, or bfloat16 or float16 bit patterns for T = float) to and from
// vectors and scalars of T. bfloat16 -> float is exact (the bits, shifted); float -> bfloat16 rounds as
// c10::BFloat16 does (round_to_nearest_even: to nearest even, every NaN to 0x7FC0).
template <typename V, typename T>
inline V load_elems(const T* p) {
  return load_vec<V>(p);
}

// 16-bit lanes zero-extended to 32 bits, and 32-bit lanes cut to their low 16 bits. GCC 12 compiles
// __builtin_convertvector between these piecewise (half-width conversions, extracts and inserts:
// five instructions for one), which made bfloat16 depthwise layers slower than float32 ones; its
// x86 builtins are one instruction each. Clang's conversions are fine.
template <int L>
inline typename VecOf<uint32_t, L>::type widen_u16(typename VecOf<uint16_t, L>::type h) {
  typedef typename VecOf<uint32_t, L>::type u32v;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  // Arguments of types that depend on L: each builtin is looked up only where its branch is kept.
  typedef typename VecOf<short, L>::type i16v;
  typedef typename VecOf<int, L>::type i32v;
  if constexpr (L == 16) {  // AVX-512F (only the AVX-512 files have 16 float lanes)
    return reinterpret_cast<u32v>(
        __builtin_ia32_pmovzxwd512_mask(reinterpret_cast<i16v>(h), i32v{}, static_cast<unsigned short>(0xFFFF)));
  } else if constexpr (L == 8) {  // AVX2 (only the AVX2 file has 8 float lanes)
    return reinterpret_cast<u32v>(__builtin_ia32_pmovzxwd256(reinterpret_cast<i16v>(h)));
  }
#endif
  return __builtin_convertvector(h, u32v);
}

template <int L>
inline typename VecOf<uint16_t, L>::type narrow_u32(typename VecOf<uint32_t, L>::type w) {
  typedef typename VecOf<uint16_t, L>::type u16v;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  typedef typename VecOf<short, L>::type i16v;
  typedef typename VecOf<int, L>::type i32v;
  if constexpr (L == 16) {
    return reinterpret_cast<u16v>(
        __builtin_ia32_pmovdw512_mask(reinterpret_cast<i32v>(w), i16v{}, static_cast<unsigned short>(0xFFFF)));
  }
#endif
  return __builtin_convertvector(w, u16v);
}

template <typename V>
inline V load_elems(const uint16_t* p) {
  constexpr int L = sizeof(V) / sizeof(float);
  typedef typename VecOf<uint16_t, L>::type u16v;
  typedef typename VecOf<uint32_t, L>::type u32v;
  const u32v bits = widen_u16<L>(load_vec<u16v>(p)) << 16;
  V v;
  __builtin_memcpy(&v, &bits, sizeof(v));
  return v;
}

// By value: a reference to an accumulator would make the compiler keep the whole register tile in
// memory (the bfloat16 GEMM's inner loop stored all 24 accumulators every step).
template <typename V, typename T>
inline void store_elems(T* p, V v) {
  store_vec(p, v);
}

// The bfloat16 bits of each lane of v, in the low half of a 32-bit lane.
template <typename V>
inline typename VecOf<uint32_t, sizeof(V) / sizeof(float)>::type bf16_bits(V v) {
  typedef typename VecOf<uint32_t, sizeof(V) / sizeof(float)>::type u32v;
  const u32v u = reinterpret_cast<u32v>(v);
  const u32v rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const u32v nan = reinterpret_cast<u32v>(v != v);  // all ones where NaN
  return (rounded & ~nan) | (0x7FC0u & nan);
}

template <typename V>
inline void store_elems(uint16_t* p, V v) {
  constexpr int L = sizeof(V) / sizeof(float);
  typedef typename VecOf<uint16_t, L>::type u16v;
  const u16v bits = narrow_u32<L>(bf16_bits(v));
  __builtin_memcpy(p, &bits, sizeof(bits));
}

// float16 <-> float32, both exact up to the rounding to nearest even that c10::Half does. With
// SKELETON_F16C (ISA files for x86 CPUs that have F16C: the AVX2 and AVX-512 ones) under GCC, one
// vcvtph2ps / vcvtps2ph per vector. Elsewhere the same results from integer and float operations on
// the bits, which touch no float subnormal, so DAZ / FTZ (torch.set_flush_denormal) cannot change
// them. NaN stays NaN (F16C keeps the payload's top bits, the portable code gives 0x7E00).
#if defined(SKELETON_F16C) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SKELETON_F16C_BUILTINS 1
#endif

template <int L>
inline typename VecOf<float, L>::type half_to_float(typename VecOf<uint16_t, L>::type h) {
  typedef typename VecOf<float, L>::type fv;
  typedef typename VecOf<uint32_t, L>::type u32v;
#if defined(SKELETON_F16C_BUILTINS)
  typedef typename VecOf<short, L>::type i16v;
  if constexpr (L == 16) {
    return __builtin_ia32_vcvtph2ps512_mask(reinterpret_cast<i16v>(h), fv{}, static_cast<unsigned short>(0xFFFF), 4);
  } else if constexpr (L == 8) {
    return __builtin_ia32_vcvtph2ps256(reinterpret_cast<i16v>(h));
  }
#endif
  const u32v w = widen_u16<L>(h);
  const u32v em = w & 0x7FFFu;  // exponent and mantissa
  const u32v normal = (em << 13) + ((127u - 15u) << 23);
  // A subnormal (or zero) half is m * 2^-24: (2^23 + m) - 2^23, exact, times 2^-24, a normal float.
  const u32v subnormal = reinterpret_cast<u32v>((reinterpret_cast<fv>(em | 0x4B000000u) - 8388608.0f) * 0x1p-24f);
  const u32v special = (em << 13) | 0x7F800000u;  // Inf and NaN (payload kept)
  const u32v is_sub = reinterpret_cast<u32v>(em < 0x0400u), is_special = reinterpret_cast<u32v>(em >= 0x7C00u);
  const u32v bits = (subnormal & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
  return reinterpret_cast<fv>(bits | ((w & 0x8000u) << 16));
}

template <int L>
inline typename VecOf<uint16_t, L>::type float_to_half(typename VecOf<float, L>::type v) {
  typedef typename VecOf<float, L>::type fv;
  typedef typename VecOf<uint32_t, L>::type u32v;
#if defined(SKELETON_F16C_BUILTINS)
  typedef typename VecOf<uint16_t, L>::type u16v;
  typedef typename VecOf<short, L>::type i16v;
  if constexpr (L == 16) {  // imm 0: to nearest even, whatever MXCSR says
    return reinterpret_cast<u16v>(__builtin_ia32_vcvtps2ph512_mask(v, 0, i16v{}, static_cast<unsigned short>(0xFFFF)));
  } else if constexpr (L == 8) {
    return reinterpret_cast<u16v>(__builtin_ia32_vcvtps2ph256(v, 0));
  }
#endif
  const u32v u = reinterpret_cast<u32v>(v);
  const u32v a = u & 0x7FFFFFFFu;  // |v|
  // |v| >= 2^-14: rebias the exponent, round the 13 dropped bits to nearest even (a carry moves into
  // the exponent, up to Inf at 65520).
  const u32v normal = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  // |v| < 2^-14: 0.5 + |v| rounds |v| to a multiple of 2^-24 (nearest even), the subnormal's mantissa.
  const u32v subnormal = reinterpret_cast<u32v>(reinterpret_cast<fv>(a) + 0.5f) - 0x3F000000u;
  const u32v is_sub = reinterpret_cast<u32v>(a < 0x38800000u);
  const u32v is_nan = reinterpret_cast<u32v>(a > 0x7F800000u);
  const u32v is_inf = reinterpret_cast<u32v>(a >= 0x47800000u) & ~is_nan;  // 2^16 and up, Inf
  const u32v in_range = ~(is_sub | is_nan | is_inf);
  const u32v bits = (subnormal & is_sub) | (normal & in_range) | (0x7C00u & is_inf) | (0x7E00u & is_nan);
  return narrow_u32<L>(bits | ((u >> 16) & 0x8000u));
}

template <typename V>
inline V load_elems(const Float16Bits* p) {
  constexpr int L = sizeof(V) / sizeof(float);
  return half_to_float<L>(load_vec<typename VecOf<uint16_t, L>::type>(p));
}

template <typename V>
inline void store_elems(Float16Bits* p, V v) {
  constexpr int L = sizeof(V) / sizeof(float);
  const typename VecOf<uint16_t, L>::type bits = float_to_half<L>(v);
  __builtin_memcpy(p, &bits, sizeof(bits));
}

template <typename T>
inline T load_elem(const T* p) {
  return *p;
}

inline float load_elem(const uint16_t* p) {
  const uint32_t bits = uint32_t{*p} << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
inline void store_elem(T* p, T v) {
  *p = v;
}

inline void store_elem(uint16_t* p, float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  *p = f != f ? uint16_t{0x7FC0} : static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// One float16 element: the vector conversions' results for it, so border pixels round as the
// interior does.
inline float load_elem(const Float16Bits* p) {
#if defined(SKELETON_F16C_BUILTINS)
  typedef short i16x8 __attribute__((vector_size(16)));
  const i16x8 h = {static_cast<short>(p->bits)};
  return __builtin_ia32_vcvtph2ps(h)[0];
#else
  typename VecOf<uint16_t, 4>::type h = {};
  h[0] = p->bits;
  return half_to_float<4>(h)[0];
#endif
}

inline void store_elem(Float16Bits* p, float f) {
  typedef typename VecOf<float, 4>::type f32x4;
  const f32x4 v = {f};
#if defined(SKELETON_F16C_BUILTINS)
  p->bits = static_cast<uint16_t>(__builtin_ia32_vcvtps2ph(v, 0)[0]);
#else
  p->bits = float_to_half<4>(v)[0];
#endif
}

// Source pointers of the active taps, and the destination pixel index, for `count` consecutive
// grid points starting at m0. A tap outside the image points at `zeros`. The first point is
// decoded by division, the others by stepping along the row: with few channels a chunk's pointers
// cost about as much as its arithmetic, and three 64-bit divisions per point were most of that.
template <typename T>
void grid_pointers(
    const TapMap& map, const T* src, int64_t src_ld, const T* zeros, int64_t m0, int64_t count,
    const T** tap_src /* [num_taps][stride] */, int64_t stride, int64_t* dst_pixel) {
  if (count <= 0) return;
  const int64_t per_image = map.grid_h * map.grid_w;
  int64_t n = m0 / per_image;
  int64_t i = (m0 % per_image) / map.grid_w;
  int64_t j = m0 % map.grid_w;
  const T* row[kTaps];     // each tap's source row for grid row (n, i), or nullptr outside
  int64_t dst_row = 0;     // destination pixel of (n, i, 0)
  auto start_row = [&] {
    for (int a = 0; a < map.num_taps; ++a) {
      const int64_t r = map.src_row_step * i + map.src_row_off[a];
      row[a] = r >= 0 && r < map.src_h ? src + (n * map.src_h + r) * map.src_w * src_ld : nullptr;
    }
    dst_row = (n * map.dst_h + map.dst_row0 + map.dst_row_step * i) * map.dst_w + map.dst_col0;
  };
  start_row();
  for (int64_t m = 0; m < count; ++m) {
    if (dst_pixel != nullptr) dst_pixel[m] = dst_row + map.dst_col_step * j;
    for (int a = 0; a < map.num_taps; ++a) {
      const int64_t c = map.src_col_step * j + map.src_col_off[a];
      tap_src[a * stride + m] = row[a] != nullptr && c >= 0 && c < map.src_w ? row[a] + c * src_ld : zeros;
    }
    if (++j == map.grid_w && m + 1 < count) {
      j = 0;
      if (++i == map.grid_h) {
        i = 0;
        ++n;
      }
      start_row();
    }
  }
}

// The values grid_pointers would point at, copied: xs[m * xs_ld + a * K + c] = channel chan + c of the pixel tap a reads for point m0 + m (zero
// outside the image), and the destination pixels if dst_pixel is not nullptr. For the layers of few
// channels, where a pointer per tap and point cost as much as the arithmetic it fed. Each grid
// row's points are one segment, and each tap's columns inside the image one range of it: no test
// per point.
template <int K, typename T>
void grid_values(const TapMap& map, const T* src, int64_t src_ld, int64_t chan, int64_t m0, int64_t count, T* xs,
                 int64_t xs_ld, int64_t* dst_pixel) {
  if (count <= 0) return;
  const int64_t per_image = map.grid_h * map.grid_w;
  int64_t n = m0 / per_image;
  int64_t i = (m0 % per_image) / map.grid_w;
  int64_t j0 = m0 % map.grid_w;
  auto zero = [&](T* out) {
    for (int c = 0; c < K; ++c) out[c] = T{};
  };
  for (int64_t m = 0; m < count;) {
    const int64_t len = min_i64(map.grid_w - j0, count - m);  // points of grid row (n, i) from column j0
    if (dst_pixel != nullptr) {
      const int64_t dst_row = (n * map.dst_h + map.dst_row0 + map.dst_row_step * i) * map.dst_w + map.dst_col0;
      for (int64_t j = 0; j < len; ++j) dst_pixel[m + j] = dst_row + map.dst_col_step * (j0 + j);
    }
    for (int a = 0; a < map.num_taps; ++a) {
      T* out = xs + m * xs_ld + a * K;
      const int64_t r = map.src_row_step * i + map.src_row_off[a];
      const int64_t step = map.src_col_step;
      const int64_t col = step * j0 + map.src_col_off[a];  // the source column of the segment's first point
      int64_t lo = len, hi = len;  // the points [lo, hi) of the segment read inside the image
      if (r >= 0 && r < map.src_h) {
        // No division for stride 1: with two per tap and segment, the divisions took 11% of this
        // function's samples in a 3 -> 64 forward pass at 112 x 112 (perf, one thread), 1% without.
        const int64_t before = col >= 0 ? 0 : step == 1 ? -col : ceil_div(-col, step);
        const int64_t inside = col >= map.src_w ? 0 : step == 1 ? map.src_w - col : (map.src_w - 1 - col) / step + 1;
        lo = min_i64(len, before);
        hi = min_i64(len, inside);
        if (hi < lo) hi = lo;
      }
      int64_t j = 0;
      for (; j < lo; ++j) zero(out + j * xs_ld);
      if (j < hi) {
        const T* s = src + ((n * map.src_h + r) * map.src_w + col + lo * step) * src_ld + chan;
        for (; j < hi; ++j, s += step * src_ld) __builtin_memcpy(out + j * xs_ld, s, K * sizeof(T));
      }
      for (; j < len; ++j) zero(out + j * xs_ld);
    }
    m += len;
    j0 = 0;
    if (++i == map.grid_h) {
      i = 0;
      ++n;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gather GEMM: forward, and the input gradient (one residue class of the input at a time).

constexpr int64_t kGemmChunkTiles = 8;  // pixels per work item = 8 tiles: small items balance threads

template <typename T, int L, int P, int V>
inline __attribute__((always_inline)) void gemm_tile(
    const T* const* src, int64_t src_stride, int64_t chan, int num_taps, const int* tap,
    const T* weight, int64_t k, const T* bias, T* const* dst) {
  typedef typename VecOf<T, L>::type vec;
  constexpr int B = V * L;
  vec acc[P][V];
  for (int v = 0; v < V; ++v) {
    const vec b = bias != nullptr ? load_vec<vec>(bias + v * L) : vec{};
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int a = 0; a < num_taps; ++a) {
    const T* s[P];
    for (int p = 0; p < P; ++p) s[p] = src[a * src_stride + p] + chan;
    const T* w = weight + static_cast<int64_t>(tap[a]) * k * B;
    for (int64_t c = 0; c < k; ++c) {
      vec wv[V];
      for (int v = 0; v < V; ++v) wv[v] = load_vec<vec>(w + c * B + v * L);
      for (int p = 0; p < P; ++p) {
        const vec x = broadcast<vec>(s[p][c]);
        for (int v = 0; v < V; ++v) acc[p][v] += x * wv[v];
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) store_vec(dst[p] + v * L, acc[p][v]);
}

// Item `item` of a gather GEMM (items: group, output block, chunk of kChunk grid points; chunk
// fastest): its group, block and number of real points; fills the tap pointers and destination
// pixels of the chunk's points, those past the last point reading zeros.
struct GatherItem {
  int64_t g, b, count;
};

template <int64_t kChunk, typename Args, typename E>
inline GatherItem gather_item(const Args& a, int64_t item, int64_t chunks, int64_t blocks, const E** src,
                              int64_t* dst_pixel) {
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t m0 = (item % chunks) * kChunk;
  const int64_t count = min_i64(kChunk, points - m0);
  grid_pointers(a.map, a.src, a.src_ld, a.zeros, m0, count, src, kChunk, dst_pixel);
  for (int t = 0; t < a.map.num_taps; ++t)
    for (int64_t m = count; m < kChunk; ++m) src[t * kChunk + m] = a.zeros;
  return {item / chunks / blocks, (item / chunks) % blocks, count};
}

template <typename T, int P, int B>
int64_t gather_gemm_items_impl(const GatherGemmArgs<T>& a) {
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  return a.groups * ceil_div(a.n, B) * ceil_div(points, kGemmChunkTiles * P);
}

// One chunk's register tiles: tile(m, out) computes points [m, m + P) of the chunk into out[p];
// full tiles store to the destination, the last one (and blocks narrower than B) to a scratch tile.
template <typename E, int P, int B, typename Args, typename TileAt>
inline __attribute__((always_inline)) void chunk_tiles(const Args& a, E* dst, int64_t cols, int64_t count,
                                                       const int64_t* dst_pixel, E* tail, TileAt tile) {
  E* tail_rows[P];
  for (int p = 0; p < P; ++p) tail_rows[p] = tail + p * B;
  for (int64_t m = 0; m < count; m += P) {
    const int64_t rows = min_i64(P, count - m);
    if (rows == P && cols == B) {
      E* out[P];
      for (int p = 0; p < P; ++p) out[p] = dst + dst_pixel[m + p] * a.dst_ld;
      tile(m, out);
    } else {
      // Edge tile: the points past `count` read zeros (or a previous chunk's values); write to the
      // scratch tile and copy.
      tile(m, tail_rows);
      for (int64_t p = 0; p < rows; ++p)
        for (int64_t j = 0; j < cols; ++j) dst[dst_pixel[m + p] * a.dst_ld + j] = tail[p * B + j];
    }
  }
}

// Gather GEMMs with at most this many channels reduced per group: a first layer's forward pass
// (3 channels), the input gradient of layers with few output channels per group.
constexpr int64_t kFewChannelGemm = 4;

// Their tiles reduce over the rows (active tap a, channel c) as one flat list, a * k + c: the
// chunk's values are copied into xs[point][row] (grid_values), K = k rows of each tap, points LD
// apart (room for all five taps), and Tile::run_flat reads them at fixed offsets from one pointer,
// with the weight block's rows in the same order (Tile::flatten, once per group and block).
// With k = 3, a pointer per tap and point was about a third of the time of a bfloat16
// 3 -> 16 forward pass (perf); the bfloat16 tiles took each tap's channel pairs, 10 per point where
// the flat rows have 8; and a tile's 14 source pointers did not fit the general registers. The
// float32 tiles sum in the same order as over the taps, so their results keep their bits.
template <typename Tile, typename E, int P, int B, int K, typename Args>
void few_channel_gemm_items(const Args& a, int64_t weight_block, int64_t begin, int64_t end) {
  constexpr int64_t kChunk = kGemmChunkTiles * P;
  constexpr int LD = Tile::flat_rows(kTaps * K);
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t chunks = ceil_div(points, kChunk);
  const int64_t blocks = ceil_div(a.n, B);
  const int64_t rows = Tile::flat_rows(a.map.num_taps * K);
  alignas(64) E xs[kChunk * LD];
  alignas(64) E flat_weight[LD * B];
  alignas(64) E tail[P * B];
  int64_t dst_pixel[kChunk];
  // Zeros once: the rows past num_taps * k (an odd count's bfloat16 partner) are never written, and
  // the edge tiles' points past the chunk read zeros or a previous chunk's values.
  for (int64_t i = 0; i < kChunk * LD; ++i) xs[i] = E{};
  int64_t flattened = -1;  // the (group, block) whose weight flat_weight holds

  for (int64_t item = begin; item < end; ++item) {
    const int64_t m0 = (item % chunks) * kChunk;
    const int64_t count = min_i64(kChunk, points - m0);
    const int64_t g = item / chunks / blocks, b = (item / chunks) % blocks;
    grid_values<K>(a.map, a.src, a.src_ld, g * K, m0, count, xs, LD, dst_pixel);
    if (g * blocks + b != flattened) {
      flattened = g * blocks + b;
      Tile::flatten(a.weight + flattened * weight_block, a.map, K, B, flat_weight);
    }
    const auto* bias = a.bias != nullptr ? a.bias + (g * blocks + b) * B : nullptr;
    chunk_tiles<E, P, B>(a, a.dst + g * a.n + b * B, min_i64(B, a.n - b * B), count, dst_pixel, tail,
                         [&](int64_t m, E* const* out) {
                           Tile::template run_flat<LD>(xs + m * LD, flat_weight, rows, bias, out);
                         });
  }
}

template <typename Tile, typename E, int P, int B, typename Args>
void few_channel_gemm_driver(const Args& a, int64_t weight_block, int64_t begin, int64_t end) {
  static_assert(kFewChannelGemm == 4, "a case for every k");
  switch (a.k) {
    case 1: return few_channel_gemm_items<Tile, E, P, B, 1>(a, weight_block, begin, end);
    case 2: return few_channel_gemm_items<Tile, E, P, B, 2>(a, weight_block, begin, end);
    case 3: return few_channel_gemm_items<Tile, E, P, B, 3>(a, weight_block, begin, end);
    case 4: return few_channel_gemm_items<Tile, E, P, B, 4>(a, weight_block, begin, end);
  }
}

// Items are (group, output block, chunk of grid points), chunk fastest: a thread's range sweeps
// many chunks with one block of weights, which stays in L2 (5 * k * block values; all five
// blocks of a 512-channel layer would not).
// The driver for any element type E and register tile (float32 here, bfloat16 in
// tap_kernels_avx512_bf16.cpp): Tile::run(src, src_stride, chan, num_taps, tap, weight, k, bias, out)
// computes P points x B columns and stores them to out[p]; Tile::flat_rows and Tile::flatten serve
// few_channel_gemm_driver. `weight_block`: elements of the packed weight per (group, output block).
template <typename Tile, typename E, int P, int B, typename Args>
void gather_gemm_driver(const Args& a, int64_t weight_block, int64_t begin, int64_t end) {
  if (a.k >= 1 && a.k <= kFewChannelGemm) return few_channel_gemm_driver<Tile, E, P, B>(a, weight_block, begin, end);
  constexpr int64_t kChunk = kGemmChunkTiles * P;
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t chunks = ceil_div(points, kChunk);
  const int64_t blocks = ceil_div(a.n, B);
  const E* src[kTaps * kChunk];
  int64_t dst_pixel[kChunk];
  alignas(64) E tail[P * B];

  for (int64_t item = begin; item < end; ++item) {
    const GatherItem it = gather_item<kChunk>(a, item, chunks, blocks, src, dst_pixel);
    const int64_t g = it.g, b = it.b;
    const auto* w = a.weight + (g * blocks + b) * weight_block;
    const auto* bias = a.bias != nullptr ? a.bias + (g * blocks + b) * B : nullptr;
    chunk_tiles<E, P, B>(a, a.dst + g * a.n + b * B, min_i64(B, a.n - b * B), it.count, dst_pixel, tail,
                         [&](int64_t m, E* const* out) {
                           Tile::run(src + m, kChunk, g * a.k, a.map.num_taps, a.map.tap, w, a.k, bias, out);
                         });
  }
}

// few_channel_gemm_items' tile: point p's flat rows at xs[p * LD + r], r < rows, against the
// weight rows [rows][V * L]; gemm_tile's sums in its order.
template <typename T, int L, int P, int V, int LD>
inline __attribute__((always_inline)) void flat_gemm_tile(const T* xs, const T* weight, int64_t rows, const T* bias,
                                                          T* const* dst) {
  typedef typename VecOf<T, L>::type vec;
  constexpr int B = V * L;
  vec acc[P][V];
  for (int v = 0; v < V; ++v) {
    const vec b = bias != nullptr ? load_vec<vec>(bias + v * L) : vec{};
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int64_t r = 0; r < rows; ++r) {
    vec wv[V];
    for (int v = 0; v < V; ++v) wv[v] = load_vec<vec>(weight + r * B + v * L);
    for (int p = 0; p < P; ++p) {
      const vec x = broadcast<vec>(xs[p * LD + r]);
      for (int v = 0; v < V; ++v) acc[p][v] += x * wv[v];
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) store_vec(dst[p] + v * L, acc[p][v]);
}

template <typename T, int L, int P, int V>
struct FloatTile {
  static inline __attribute__((always_inline)) void run(
      const T* const* src, int64_t src_stride, int64_t chan, int num_taps, const int* tap, const T* weight,
      int64_t k, const T* bias, T* const* dst) {
    gemm_tile<T, L, P, V>(src, src_stride, chan, num_taps, tap, weight, k, bias, dst);
  }
  template <int LD>
  static inline __attribute__((always_inline)) void run_flat(const T* xs, const T* weight, int64_t rows,
                                                             const T* bias, T* const* dst) {
    flat_gemm_tile<T, L, P, V, LD>(xs, weight, rows, bias, dst);
  }
  static constexpr int flat_rows(int64_t rows) { return static_cast<int>(rows); }
  // The packed block [5][k][block] as rows (a, c) of the active taps: [num_taps * k][block].
  static void flatten(const T* w, const TapMap& map, int64_t k, int64_t block, T* flat) {
    for (int a = 0; a < map.num_taps; ++a)
      for (int64_t i = 0; i < k * block; ++i) flat[a * k * block + i] = w[map.tap[a] * k * block + i];
  }
};

template <typename T, int L, int P, int V>
void gather_gemm_impl(const GatherGemmArgs<T>& a, int64_t begin, int64_t end) {
  gather_gemm_driver<FloatTile<T, L, P, V>, T, P, V * L>(a, kTaps * a.k * V * L, begin, end);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient: for every (tap, channel tile, output block) a register tile of P input channels
// x (V * lanes) output channels summed over all output pixels. Items are those tiles; every item
// sums the pixels in the same order, so the result is bitwise independent of the thread count.

// Output pixels summed per pass: one block of their grad_output (128 x block values) stays in L1
// while consecutive items run through the input-channel tiles.
constexpr int64_t kWgradChunk = 128;

// `first`: the first pass over the pixels starts from zero (dw need not be initialised).
template <typename T, int L, int P, int V>
inline __attribute__((always_inline)) void wgrad_tile(
    const T* const* src, const T* const* dy, int64_t count, int64_t chan, int64_t dy_off, T* dw,
    int64_t ldw, bool first) {
  typedef typename VecOf<T, L>::type vec;
  vec acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = first ? vec{} : load_vec<vec>(dw + p * ldw + v * L);
  for (int64_t m = 0; m < count; ++m) {
    vec g[V];
    for (int v = 0; v < V; ++v) g[v] = load_vec<vec>(dy[m] + dy_off + v * L);
    const T* s = src[m] + chan;
    for (int p = 0; p < P; ++p) {
      const vec x = broadcast<vec>(s[p]);
      for (int v = 0; v < V; ++v) acc[p][v] += x * g[v];
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) store_vec(dw + p * ldw + v * L, acc[p][v]);
}

// The last channel tile when k is not a multiple of P (rows < P): same sums, fewer rows.
template <typename T, int L, int V>
void wgrad_tile_rows(
    const T* const* src, const T* const* dy, int64_t count, int64_t chan, int64_t dy_off, T* dw,
    int64_t ldw, bool first, int64_t rows) {
  typedef typename VecOf<T, L>::type vec;
  for (int64_t p = 0; p < rows; ++p) {
    vec acc[V];
    for (int v = 0; v < V; ++v) acc[v] = first ? vec{} : load_vec<vec>(dw + p * ldw + v * L);
    for (int64_t m = 0; m < count; ++m) {
      const vec x = broadcast<vec>(src[m][chan + p]);
      for (int v = 0; v < V; ++v) acc[v] += x * load_vec<vec>(dy[m] + dy_off + v * L);
    }
    for (int v = 0; v < V; ++v) store_vec(dw + p * ldw + v * L, acc[v]);
  }
}

// Channel rows per weight-gradient tile: the register budget's P, or kShortTileRows where that
// leaves fewer rows over in each tap's last tile (16 channels: 14 + 2 rows, the 2 through
// wgrad_tile_rows, which loads grad_output once per row, and in the bfloat16 kernels a whole tile
// of 14 for them; with 8: 8 + 8). Each sum runs over the same pixels in the same order either way:
// the same bits. Three A/B runs of alternating processes (batch 32 at 32 x 32, float32 channels_last
// weight gradient): 16 channels 1.36x, 1.11x and 1.15x as fast, 32 channels 1.09x, 1.22x and 1.13x,
// while 24 channels (unchanged: 12 + 12) came out 1.54x, 0.74x and 0.90x.
constexpr int kShortTileRows = 8;
inline bool short_wgrad_tiles(int64_t k, int p) {
  const int64_t s = kShortTileRows;
  return p > s && ceil_div(k, s) * s - k < ceil_div(k, int64_t{p}) * p - k;
}

template <typename T, int P, int B>
int64_t wgrad_items_impl(const WgradArgs<T>& a) {
  return a.groups * kTaps * ceil_div(a.k, P) * ceil_div(a.n, B);
}

template <typename T, int L, int P, int V>
void wgrad_impl(const WgradArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int B = V * L;
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t blocks = ceil_div(a.n, B);
  const int64_t channel_tiles = ceil_div(a.k, P);
  const T* src[kTaps * kWgradChunk];
  const T* dy[kWgradChunk];
  for (int64_t m0 = 0; m0 < points; m0 += kWgradChunk) {
    const int64_t count = min_i64(kWgradChunk, points - m0);
    grid_pointers(a.map, a.src, a.src_ld, a.zeros, m0, count, src, kWgradChunk, nullptr);
    for (int64_t m = 0; m < count; ++m) dy[m] = a.dy + (m0 + m) * a.dy_ld;
    for (int64_t item = begin; item < end; ++item) {
      // item = ((g * blocks + b) * 5 + t) * channel_tiles + ct
      const int64_t ct = item % channel_tiles;
      const int64_t t = (item / channel_tiles) % kTaps;
      const int64_t b = (item / channel_tiles / kTaps) % blocks;
      const int64_t g = item / channel_tiles / kTaps / blocks;
      const int64_t c0 = ct * P;
      const int64_t rows = min_i64(P, a.k - c0);
      T* dw = a.dw + (((g * blocks + b) * kTaps + t) * a.k + c0) * B;  // rows of B (WgradArgs::dw)
      const int64_t dy_off = g * a.dy_group_stride + b * B;
      const T* const* tap_src = src + t * kWgradChunk;
      if (rows == P) {
        wgrad_tile<T, L, P, V>(tap_src, dy, count, g * a.k + c0, dy_off, dw, B, m0 == 0 && !a.accumulate);
      } else {
        wgrad_tile_rows<T, L, V>(tap_src, dy, count, g * a.k + c0, dy_off, dw, B, m0 == 0 && !a.accumulate, rows);
      }
    }
  }
}

// The weight gradient of layers with few input channels per group (k <= kFewChannelWgrad: first
// layers of RGB images). wgrad_impl's tiles are one tap by up to P channels, so with k = 3 each
// pixel's grad_output is loaded for 15 rows of 3 and the five taps are five items (3 : 2 on two
// threads). Here a tile is up to kFewRows rows of all the taps at once: rows t * k + c, as
// WgradArgs::dw lays them out, one vector of output channels (the dispatcher asks for vectors == 1:
// wgrad_vectors). Each chunk's input values for those rows are gathered once per group into `xs`
// ([pixel][5 * k], grid_values), and every tile streams grad_output past them. Each sum runs
// over the call's pixels in order, as in wgrad_impl (channels_last batches come in fixed slots of
// images: channels_last_wgrad_sums in the dispatcher).
constexpr int kFewRows = SKELETON_MAX_VECTORS >= 4 ? 20 : 10;  // 32 vector registers, else 16
static_assert(kFewRows == 10 || kFewRows == 20, "tiles of whole taps, as few_channel_items' switch has them");

template <typename T, int L, int R>
inline __attribute__((always_inline)) void few_channel_tile(const T* xs, int64_t xs_ld, const T* const* dy, int64_t count,
                                                            int64_t dy_off, T* dw, int64_t ldw, bool first) {
  typedef typename VecOf<T, L>::type vec;
  vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = first ? vec{} : load_vec<vec>(dw + r * ldw);
  for (int64_t m = 0; m < count; ++m) {
    // A tile reads one vector of each pixel's grad_output, pixels up to a few cache lines apart, and
    // the hardware prefetchers left it waiting on them: a 3 -> 64 float32 layer at 112 x 112 (batch
    // 8) took 7.9-8.1 ms a call on one thread of this project's VM without this (means of 300 and
    // 1,000 calls, under perf), 5.3-5.5 ms with it (means of 300 and medians of 100, without perf).
    if (m + 32 < count) __builtin_prefetch(dy[m + 32] + dy_off);
    const vec g = load_vec<vec>(dy[m] + dy_off);
    const T* x = xs + m * xs_ld;
    for (int r = 0; r < R; ++r) acc[r] += broadcast<vec>(x[r]) * g;
  }
  for (int r = 0; r < R; ++r) store_vec(dw + r * ldw, acc[r]);
}

static_assert(kFewChannelWgrad == 4, "few_channel_items' switch over k");

// Whether a weight gradient's arguments ask for those tiles (WgradArgs or Bf16WgradArgs).
template <typename Args>
inline bool uses_few_channel_tiles(const Args& a) {
  return a.k <= kFewChannelWgrad && a.vectors == 1;
}

// Items: (g * blocks + b) * row_tiles + tile, blocks of L output channels, tiles of kFewRows rows.
template <typename T, int L, typename Args>
int64_t few_channel_wgrad_items(const Args& a) {
  return a.groups * ceil_div(a.n, int64_t{L}) * ceil_div(kTaps * a.k, int64_t{kFewRows});
}

// The item loop of the few-channel weight gradients, chunk by chunk of kWgradChunk pixels. Chunk (a
// kernel's buffers) has start(a, m0, count), which points at the chunk's pixels; gather<K>(g), which
// fills the input rows of group g (once per group and chunk, k = K a compile-time constant: GCC
// makes a loop over c < k a memcpy call otherwise); and tile<R>(r0, rows, dy_off, dw, first), which
// runs the tile of rows [r0, r0 + R) of one block of output channels.
template <int L, typename Chunk, typename Args>
void few_channel_items(const Args& a, Chunk& chunk, int64_t begin, int64_t end) {
  const int64_t points = a.map.batch * a.map.grid_h * a.map.grid_w;
  const int64_t blocks = ceil_div(a.n, int64_t{L});
  const int64_t rows = kTaps * a.k;  // a multiple of kTaps, as every tile
  const int64_t tiles = ceil_div(rows, int64_t{kFewRows});
  for (int64_t m0 = 0; m0 < points; m0 += kWgradChunk) {
    chunk.start(a, m0, min_i64(kWgradChunk, points - m0));
    int64_t gathered = -1;  // the group whose input the chunk holds
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tile = item % tiles;
      const int64_t b = (item / tiles) % blocks;
      const int64_t g = item / tiles / blocks;
      if (g != gathered) {
        gathered = g;
        switch (a.k) {
          case 1: chunk.template gather<1>(g); break;
          case 2: chunk.template gather<2>(g); break;
          case 3: chunk.template gather<3>(g); break;
          case 4: chunk.template gather<4>(g); break;
        }
      }
      const int64_t r0 = tile * kFewRows;
      auto* dw = a.dw + ((g * blocks + b) * rows + r0) * L;  // rows of L (WgradArgs::dw)
      const int64_t dy_off = g * a.dy_group_stride + b * L;
      const bool first = m0 == 0 && !a.accumulate;
      switch (min_i64(kFewRows, rows - r0)) {  // whole taps: a multiple of kTaps
        case 5: chunk.template tile<5>(r0, rows, dy_off, dw, first); break;
        case 10: chunk.template tile<10>(r0, rows, dy_off, dw, first); break;
#if SKELETON_MAX_VECTORS >= 4
        case 15: chunk.template tile<15>(r0, rows, dy_off, dw, first); break;
        case 20: chunk.template tile<20>(r0, rows, dy_off, dw, first); break;
#endif
      }
    }
  }
}

// few_channel_items' buffers for the float tiles: xs[pixel][t * k + c] (grid_values).
template <typename T, int L>
struct FewChannelChunk {
  const T* dy[kWgradChunk];
  alignas(64) T xs[kWgradChunk * kTaps * kFewChannelWgrad];
  const WgradArgs<T>* args = nullptr;
  int64_t m0 = 0, count = 0;

  void start(const WgradArgs<T>& a, int64_t first, int64_t n) {
    args = &a;
    m0 = first;
    count = n;
    for (int64_t m = 0; m < count; ++m) dy[m] = a.dy + (m0 + m) * a.dy_ld;
  }
  template <int K>
  void gather(int64_t g) {
    grid_values<K>(args->map, args->src, args->src_ld, g * K, m0, count, xs, kTaps * K, nullptr);
  }
  template <int R>
  void tile(int64_t r0, int64_t rows, int64_t dy_off, T* dw, bool first) {
    few_channel_tile<T, L, R>(xs + r0, rows, dy, count, dy_off, dw, L, first);
  }
};

// a.k <= kFewChannelWgrad and a.vectors == 1.
template <typename T, int L>
void few_channel_wgrad_impl(const WgradArgs<T>& a, int64_t begin, int64_t end) {
  FewChannelChunk<T, L> chunk;
  few_channel_items<L>(a, chunk, begin, end);
}

// ---------------------------------------------------------------------------------------------
// Depthwise: memory-bound, so one pass over each image row with the channels in vector lanes.

template <typename T, typename S>
int64_t depthwise_items_impl(const DepthwiseArgs<T, S>& a) {
  return a.num_maps > 0 ? a.maps[0].batch * a.maps[0].dst_h : 0;  // one item per destination row
}

// One destination pixel d of a depthwise layer: d[c] = bias[c] + sum over the n taps of s[t][c] * w[t][c].
template <typename T, int L, typename S>
inline void depthwise_pixel(const S* const* s, const T* const* w, int n, const T* bias, S* d, int64_t C) {
  typedef typename VecOf<T, L>::type vec;
  int64_t c = 0;
  for (; c + 4 * L <= C; c += 4 * L) {
    vec acc[4];
    for (int v = 0; v < 4; ++v) acc[v] = bias != nullptr ? load_vec<vec>(bias + c + v * L) : vec{};
    for (int t = 0; t < n; ++t)
      for (int v = 0; v < 4; ++v) acc[v] += load_elems<vec>(s[t] + c + v * L) * load_vec<vec>(w[t] + c + v * L);
    for (int v = 0; v < 4; ++v) store_elems(d + c + v * L, acc[v]);
  }
  for (; c + L <= C; c += L) {
    vec acc = bias != nullptr ? load_vec<vec>(bias + c) : vec{};
    for (int t = 0; t < n; ++t) acc += load_elems<vec>(s[t] + c) * load_vec<vec>(w[t] + c);
    store_elems(d + c, acc);
  }
  for (; c < C; ++c) {
    T acc = bias != nullptr ? bias[c] : T(0);
    for (int t = 0; t < n; ++t) acc += load_elem(s[t] + c) * w[t][c];
    store_elem(d + c, acc);
  }
}

// Channels [c, c + V * L) of `count` interior grid points (every tap reads inside the image):
// the block's NT tap weights and its bias stay in registers while the points stream past, so a
// point costs one load per tap and vector instead of two. Sums in the order of depthwise_pixel
// (bias, then the taps in order), so a point gives the same bits on either path.
template <typename T, int L, int NT, int V, typename S>
inline __attribute__((always_inline)) void depthwise_interior_block(
    const S* const* s, const T* const* w, const T* bias, S* d, int64_t src_step, int64_t dst_step,
    int64_t count, int64_t c) {
  typedef typename VecOf<T, L>::type vec;
  vec wr[NT > 0 ? NT : 1][V];
  vec b[V];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < V; ++v) wr[t][v] = load_vec<vec>(w[t] + c + v * L);
  for (int v = 0; v < V; ++v) b[v] = bias != nullptr ? load_vec<vec>(bias + c + v * L) : vec{};
  for (int64_t j = 0; j < count; ++j) {
    vec acc[V];
    for (int v = 0; v < V; ++v) acc[v] = b[v];
    for (int t = 0; t < NT; ++t)
      for (int v = 0; v < V; ++v) acc[v] += load_elems<vec>(s[t] + j * src_step + c + v * L) * wr[t][v];
    for (int v = 0; v < V; ++v) store_elems(d + j * dst_step + c + v * L, acc[v]);
  }
}

// bfloat16 sources taken 2 * L channels at a time: one load of L 32-bit words, each holding an
// even channel (its low half, shifted up) and the next odd channel (its high half, masked), so a
// tap costs one load and two bit operations for 2 * L channels where load_elems costs two widening
// loads and two shifts. The weights and bias come reordered to match, evens then odds within each
// 2 * L channels (DepthwiseArgs::pair_weight). Per channel the same sums in the same order as
// depthwise_interior_block: the same bits.
template <typename T>
struct PairTaps {
  const T* const* w = nullptr;  // per active tap: [pair_channels], reordered
  const T* bias = nullptr;      // [pair_channels], reordered, or nullptr
  int64_t channels = 0;         // a multiple of 2 * L
};

// Rounds two float vectors to bfloat16 as store_elems does and stores them interleaved: lane i of
// `even` to element 2i, lane i of `odd` to element 2i + 1.
template <typename V>
inline void store_bf16_pairs(uint16_t* p, V even, V odd) {
  const auto bits = bf16_bits(even) | (bf16_bits(odd) << 16);
  __builtin_memcpy(p, &bits, sizeof(bits));
}

// Channels [0, p.channels) of `count` interior points for bfloat16 storage, 2 * L at a time; returns
// the first channel left for the other blocks. Any other storage: none done.
template <typename T, int L, int NT, typename S>
inline int64_t depthwise_interior_pairs(const S* const*, const PairTaps<T>&, S*, int64_t, int64_t, int64_t) {
  return 0;
}

// VP groups of 2 * L channels from channel c: NT * VP * 2 weight vectors and VP * 2 accumulators.
template <typename T, int L, int NT, int VP>
inline __attribute__((always_inline)) void depthwise_pairs_block(const uint16_t* const* s, const PairTaps<T>& p,
                                                                 uint16_t* d, int64_t src_step, int64_t dst_step,
                                                                 int64_t count, int64_t c) {
  typedef typename VecOf<T, L>::type vec;
  typedef typename VecOf<uint32_t, L>::type u32v;
  vec we[NT > 0 ? NT : 1][VP], wo[NT > 0 ? NT : 1][VP], be[VP], bo[VP];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < VP; ++v)
      we[t][v] = load_vec<vec>(p.w[t] + c + 2 * L * v), wo[t][v] = load_vec<vec>(p.w[t] + c + 2 * L * v + L);
  for (int v = 0; v < VP; ++v) {
    be[v] = p.bias != nullptr ? load_vec<vec>(p.bias + c + 2 * L * v) : vec{};
    bo[v] = p.bias != nullptr ? load_vec<vec>(p.bias + c + 2 * L * v + L) : vec{};
  }
  for (int64_t j = 0; j < count; ++j) {
    vec ae[VP], ao[VP];
    for (int v = 0; v < VP; ++v) ae[v] = be[v], ao[v] = bo[v];
    for (int t = 0; t < NT; ++t)
      for (int v = 0; v < VP; ++v) {
        const u32v raw = load_vec<u32v>(s[t] + j * src_step + c + 2 * L * v);
        ae[v] += reinterpret_cast<vec>(raw << 16) * we[t][v];
        ao[v] += reinterpret_cast<vec>(raw & 0xFFFF0000u) * wo[t][v];
      }
    for (int v = 0; v < VP; ++v) store_bf16_pairs(d + j * dst_step + c + 2 * L * v, ae[v], ao[v]);
  }
}

template <typename T, int L, int NT>
inline int64_t depthwise_interior_pairs(const uint16_t* const* s, const PairTaps<T>& p, uint16_t* d,
                                        int64_t src_step, int64_t dst_step, int64_t count) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  return 0;  // the even channel is the low half of a word only on little-endian CPUs
#endif
  // 2 * NT * VP weights + 4 * VP bias and sums: about the registers of depthwise_interior_block's
  // widest block (NT * V + 2 * V, V = 2 * VP)
  constexpr int VP = SKELETON_MAX_VECTORS / 2 > 0 ? SKELETON_MAX_VECTORS / 2 : 1;
  int64_t c = 0;
  for (; c + 2 * L * VP <= p.channels; c += 2 * L * VP)
    depthwise_pairs_block<T, L, NT, VP>(s, p, d, src_step, dst_step, count, c);
  for (; c < p.channels; c += 2 * L) depthwise_pairs_block<T, L, NT, 1>(s, p, d, src_step, dst_step, count, c);
  return p.channels;
}

// Points per chunk of depthwise_interior: a chunk's source rows stay in L1 while its channel blocks
// sweep it. On this project's 2-core AVX-512 VM (dw144@56, N=8, float32), the forward took 1.46x
// the time of a copy of its input with chunks of 8 points (median of 5 processes), 1.71x with the
// per-point loop before it, and about that with chunks of 16 or whole rows (3 processes).
constexpr int64_t kDepthwiseChunk = 8;

// The grid points [0, count) of a row whose NT taps all read inside the image: the same taps at
// every point, their sources advancing by one source step per point, so nothing is tested or
// looked up per point. Chunks of points, channel blocks within a chunk (see
// depthwise_interior_block): the widest the registers hold with NT * V weights + V accumulators
// (SKELETON_MAX_VECTORS), then single vectors, then scalars.
// s: the taps' sources at the first point, d: its destination.
template <typename T, int L, int NT, typename S>
void depthwise_interior(const S* const* s, const T* const* w, const T* bias, const PairTaps<T>& pairs, S* d,
                        int64_t src_step, int64_t dst_step, int64_t count, int64_t C) {
  constexpr int V = SKELETON_MAX_VECTORS;
  constexpr int64_t chunk = kDepthwiseChunk;
  for (int64_t j0 = 0; j0 < count; j0 += chunk) {
    const int64_t n = min_i64(chunk, count - j0);
    const S* sj[NT > 0 ? NT : 1];
    for (int t = 0; t < NT; ++t) sj[t] = s[t] + j0 * src_step;
    S* dj = d + j0 * dst_step;
    int64_t c = depthwise_interior_pairs<T, L, NT>(sj, pairs, dj, src_step, dst_step, n);
    for (; c + V * L <= C; c += V * L) depthwise_interior_block<T, L, NT, V, S>(sj, w, bias, dj, src_step, dst_step, n, c);
    for (; c + L <= C; c += L) depthwise_interior_block<T, L, NT, 1, S>(sj, w, bias, dj, src_step, dst_step, n, c);
    for (; c < C; ++c) {
      for (int64_t j = 0; j < n; ++j) {
        T acc = bias != nullptr ? bias[c] : T(0);
        for (int t = 0; t < NT; ++t) acc += load_elem(sj[t] + j * src_step + c) * w[t][c];
        store_elem(dj + j * dst_step + c, acc);
      }
    }
  }
}

// Row i of `map`'s grid in image n. Per-pixel tap tests cost about as much as the arithmetic of a
// pixel with few channels, so only the border columns take them; the columns between run
// depthwise_interior.
template <typename T, int L, typename S>
void depthwise_row(const DepthwiseArgs<T, S>& a, const TapMap& map, int64_t n, int64_t i) {
  const int64_t C = a.channels;
  const S* row[kTaps];
  for (int t = 0; t < map.num_taps; ++t) {
    const int64_t r = map.src_row_step * i + map.src_row_off[t];
    row[t] = r >= 0 && r < map.src_h ? a.src + (n * map.src_h + r) * map.src_w * C : nullptr;
  }
  S* dst_row = a.dst + ((n * map.dst_h + map.dst_row0 + map.dst_row_step * i) * map.dst_w) * C;
  const int64_t dst_step = map.dst_col_step * C;
  S* const d0 = dst_row + map.dst_col0 * C;

  // The taps with a source row, and the columns [j_lo, j_hi) where every one of them reads inside
  // the image: step * j + off in [0, src_w) <=> j in [ceil(-off / step), floor((src_w - 1 - off) / step)].
  const int64_t step = map.src_col_step;
  int active[kTaps];
  int taps = 0;
  int64_t j_lo = 0, j_hi = map.grid_w;
  for (int t = 0; t < map.num_taps; ++t) {
    if (row[t] == nullptr) continue;
    const int64_t off = map.src_col_off[t];
    const int64_t first = off >= 0 ? 0 : ceil_div(-off, step);
    const int64_t end = map.src_w - 1 - off >= 0 ? (map.src_w - 1 - off) / step + 1 : 0;
    j_lo = first > j_lo ? first : j_lo;
    j_hi = end < j_hi ? end : j_hi;
    active[taps++] = t;
  }
  if (j_lo > map.grid_w) j_lo = map.grid_w;
  if (j_hi < j_lo) j_hi = j_lo;

  auto border = [&](int64_t j) {
    const S* s[kTaps];
    const T* wb[kTaps];
    int valid = 0;
    for (int t = 0; t < map.num_taps; ++t) {
      const int64_t c = map.src_col_step * j + map.src_col_off[t];
      if (row[t] != nullptr && c >= 0 && c < map.src_w) {
        s[valid] = row[t] + c * C;
        wb[valid] = a.weight + map.tap[t] * C;
        ++valid;
      }
    }
    depthwise_pixel<T, L>(s, wb, valid, a.bias, d0 + j * dst_step, C);
  };
  for (int64_t j = 0; j < j_lo; ++j) border(j);
  if (j_lo < j_hi) {
    const S* s[kTaps];
    const T* w[kTaps];
    const T* wp[kTaps];
    for (int k = 0; k < taps; ++k) {
      const int t = active[k];
      s[k] = row[t] + (step * j_lo + map.src_col_off[t]) * C;
      w[k] = a.weight + map.tap[t] * C;
      wp[k] = a.pair_weight != nullptr ? a.pair_weight + map.tap[t] * a.pair_channels : nullptr;
    }
    PairTaps<T> pairs;
    if (a.pair_weight != nullptr) {
      pairs.w = wp;
      pairs.bias = a.pair_bias;
      pairs.channels = a.pair_channels;
    }
    S* const d = d0 + j_lo * dst_step;
    const int64_t count = j_hi - j_lo, src_step = step * C;
    switch (taps) {  // the tap count a compile-time constant, so each loop unrolls
      case 5: depthwise_interior<T, L, 5>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
      case 4: depthwise_interior<T, L, 4>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
      case 3: depthwise_interior<T, L, 3>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
      case 2: depthwise_interior<T, L, 2>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
      case 1: depthwise_interior<T, L, 1>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
      default: depthwise_interior<T, L, 0>(s, w, a.bias, pairs, d, src_step, dst_step, count, C); break;
    }
  }
  for (int64_t j = j_hi; j < map.grid_w; ++j) border(j);
}

template <typename T, int L, typename S>
void depthwise_impl(const DepthwiseArgs<T, S>& a, int64_t begin, int64_t end) {
  const int64_t dst_h = a.maps[0].dst_h;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / dst_h;
    const int64_t r = item % dst_h;
    for (int k = 0; k < a.num_maps; ++k) {
      const TapMap& map = a.maps[k];
      const int64_t offset = r - map.dst_row0;
      if (offset < 0 || offset % map.dst_row_step != 0 || offset / map.dst_row_step >= map.grid_h) continue;
      depthwise_row<T, L, S>(a, map, n, offset / map.dst_row_step);
    }
  }
}

// Items are (image, band of output rows, block of 4 * lanes channels); each writes its own partial
// sums, which the caller adds in a fixed order, so the result does not depend on the threads.
template <typename T, int L, typename S>
int64_t depthwise_wgrad_items_impl(const DepthwiseWgradArgs<T, S>& a) {
  return a.map.batch * a.bands * ceil_div(a.channels, 4 * L);
}

template <typename T, int L, int V, typename S>
void depthwise_wgrad_block(const DepthwiseWgradArgs<T, S>& a, int64_t n, int64_t i0, int64_t i1,
                           int64_t c0, T* dw) {
  typedef typename VecOf<T, L>::type vec;
  const TapMap& map = a.map;
  const int64_t C = a.channels;
  vec acc[kTaps][V];
  for (int t = 0; t < kTaps; ++t)
    for (int v = 0; v < V; ++v) acc[t][v] = vec{};
  for (int64_t i = i0; i < i1; ++i) {
    const S* row[kTaps];
    for (int t = 0; t < kTaps; ++t) {
      const int64_t r = map.src_row_step * i + map.src_row_off[t];
      row[t] = r >= 0 && r < map.src_h ? a.src + (n * map.src_h + r) * map.src_w * C + c0 : nullptr;
    }
    const S* dy = a.dy + ((n * map.grid_h + i) * map.grid_w) * C + c0;
    for (int64_t j = 0; j < map.grid_w; ++j, dy += C) {
      vec g[V];
      for (int v = 0; v < V; ++v) g[v] = load_elems<vec>(dy + v * L);
      for (int t = 0; t < kTaps; ++t) {
        const int64_t c = map.src_col_step * j + map.src_col_off[t];
        if (row[t] == nullptr || c < 0 || c >= map.src_w) continue;
        const S* s = row[t] + c * C;
        for (int v = 0; v < V; ++v) acc[t][v] += load_elems<vec>(s + v * L) * g[v];
      }
    }
  }
  for (int t = 0; t < kTaps; ++t)
    for (int v = 0; v < V; ++v) store_vec(dw + t * C + c0 + v * L, acc[t][v]);
}

// Channels left over after the last full vector: plain sums, same order.
template <typename T, typename S>
void depthwise_wgrad_scalar(const DepthwiseWgradArgs<T, S>& a, int64_t n, int64_t i0, int64_t i1,
                            int64_t c0, int64_t c1, T* dw) {
  const TapMap& map = a.map;
  const int64_t C = a.channels;
  for (int64_t ch = c0; ch < c1; ++ch) {
    T acc[kTaps] = {};
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < map.grid_w; ++j) {
        const T g = load_elem(a.dy + ((n * map.grid_h + i) * map.grid_w + j) * C + ch);
        for (int t = 0; t < kTaps; ++t) {
          const int64_t r = map.src_row_step * i + map.src_row_off[t];
          const int64_t c = map.src_col_step * j + map.src_col_off[t];
          if (r >= 0 && r < map.src_h && c >= 0 && c < map.src_w)
            acc[t] += load_elem(a.src + ((n * map.src_h + r) * map.src_w + c) * C + ch) * g;
        }
      }
    for (int t = 0; t < kTaps; ++t) dw[t * C + ch] = acc[t];
  }
}

template <typename T, int L, typename S>
void depthwise_wgrad_impl(const DepthwiseWgradArgs<T, S>& a, int64_t begin, int64_t end) {
  constexpr int64_t width = 4 * L;
  const int64_t blocks = ceil_div(a.channels, width);
  const int64_t band_rows = ceil_div(a.map.grid_h, a.bands);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t cb = item % blocks;
    const int64_t band = (item / blocks) % a.bands;
    const int64_t n = item / blocks / a.bands;
    const int64_t i0 = band * band_rows;
    const int64_t i1 = min_i64(a.map.grid_h, i0 + band_rows);
    T* dw = a.dw + (n * a.bands + band) * kTaps * a.channels;
    const int64_t c0 = cb * width;
    const int64_t c1 = min_i64(a.channels, c0 + width);
    if (i0 >= i1) {  // an empty band still owns its partial sums
      for (int t = 0; t < kTaps; ++t)
        for (int64_t c = c0; c < c1; ++c) dw[t * a.channels + c] = T(0);
      continue;
    }
    int64_t c = c0;
    for (; c + 4 * L <= c1; c += 4 * L) depthwise_wgrad_block<T, L, 4, S>(a, n, i0, i1, c, dw);
    for (; c + L <= c1; c += L) depthwise_wgrad_block<T, L, 1, S>(a, n, i0, i1, c, dw);
    if (c < c1) depthwise_wgrad_scalar(a, n, i0, i1, c, c1, dw);
  }
}

// ---------------------------------------------------------------------------------------------
// Transposes between NCHW and channels_last (TransposeArgs): L x L tiles transposed in registers,
// log2(L) rounds of two-vector shuffles (AVX-512: vpermt2ps), so a tile costs L loads, L stores
// and L log2(L) shuffles instead of L * L scalar moves.

// The signed lane index of __builtin_shuffle's mask for elements of `Bytes` bytes.
template <int Bytes>
struct LaneIndex;
template <>
struct LaneIndex<2> { typedef int16_t type; };
template <>
struct LaneIndex<4> { typedef int32_t type; };
template <>
struct LaneIndex<8> { typedef int64_t type; };

template <int... I>
struct LaneSeq {};
template <int N, int... I>
struct MakeLaneSeq : MakeLaneSeq<N - 1, N - 1, I...> {};
template <int... I>
struct MakeLaneSeq<0, I...> { typedef LaneSeq<I...> type; };

// Round D of the tile transpose (rows i and i + D, i & D == 0): in every 2D-lane block, the new
// row i takes the lower D lanes of row i then the lower D of row i + D; the new row i + D the upper
// D of each. Lane k of the result, as a __builtin_shufflevector index (L + k: lane k of b).
constexpr int transpose_lane(int k, int d, bool upper, int lanes) {
  return (k % (2 * d) < d ? (k / (2 * d)) * 2 * d + k % (2 * d) : lanes + (k / (2 * d)) * 2 * d + k % (2 * d) - d) +
         (upper ? d : 0);
}

template <typename V, int L, int D, bool Upper, int... I>
inline V transpose_shuffle(V a, V b, LaneSeq<I...>) {
#if defined(__clang__) || __GNUC__ >= 12
  return __builtin_shufflevector(a, b, transpose_lane(I, D, Upper, L)...);
#else
  typedef typename VecOf<typename LaneIndex<sizeof(a[0])>::type, L>::type mask_t;
  const mask_t mask = {transpose_lane(I, D, Upper, L)...};
  return __builtin_shuffle(a, b, mask);
#endif
}

template <typename V, int L, int D>
inline __attribute__((always_inline)) void transpose_rounds(V* r) {
  if constexpr (D >= 1) {
    for (int i = 0; i < L; ++i) {
      if ((i & D) == 0) {
        const V lower = transpose_shuffle<V, L, D, false>(r[i], r[i + D], typename MakeLaneSeq<L>::type{});
        const V upper = transpose_shuffle<V, L, D, true>(r[i], r[i + D], typename MakeLaneSeq<L>::type{});
        r[i] = lower;
        r[i + D] = upper;
      }
    }
    transpose_rounds<V, L, D / 2>(r);
  }
}

// b[j][i] = a[i][j] for i, j < L.
template <typename E, int L>
inline void transpose_tile(const E* a, int64_t lda, E* b, int64_t ldb) {
  typedef typename VecOf<E, L>::type vec;
  vec r[L];
  for (int i = 0; i < L; ++i) r[i] = load_vec<vec>(a + i * lda);
  transpose_rounds<vec, L, L / 2>(r);
  for (int i = 0; i < L; ++i) store_vec(b + i * ldb, r[i]);
}

// b[j][i] = a[i][j] for i < rows, j < cols: whole tiles, then the edges element by element.
template <typename E, int L>
void transpose_block(const E* a, int64_t lda, E* b, int64_t ldb, int64_t rows, int64_t cols) {
  int64_t i = 0;
  for (; i + L <= rows; i += L) {
    int64_t j = 0;
    for (; j + L <= cols; j += L) transpose_tile<E, L>(a + i * lda + j, lda, b + j * ldb + i, ldb);
    for (; j < cols; ++j)
      for (int r = 0; r < L; ++r) b[j * ldb + i + r] = a[(i + r) * lda + j];
  }
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) b[j * ldb + i] = a[i * lda + j];
}

inline int64_t transpose_items_impl(const TransposeArgs& a) {
  return a.matrices * ceil_div(a.rows, kTransposeBlock) * ceil_div(a.cols, kTransposeBlock);
}

template <typename E, int L>
void transpose_items_of(const TransposeArgs& a, int64_t begin, int64_t end) {
  const int64_t row_blocks = ceil_div(a.rows, kTransposeBlock), col_blocks = ceil_div(a.cols, kTransposeBlock);
  const E* src = static_cast<const E*>(a.src);
  E* dst = static_cast<E*>(a.dst);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t m = item / (row_blocks * col_blocks);
    const int64_t i0 = item / col_blocks % row_blocks * kTransposeBlock, j0 = item % col_blocks * kTransposeBlock;
    transpose_block<E, L>(src + m * a.src_matrix_stride + i0 * a.src_ld + j0, a.src_ld,
                          dst + m * a.dst_matrix_stride + j0 * a.dst_ld + i0, a.dst_ld,
                          min_i64(kTransposeBlock, a.rows - i0), min_i64(kTransposeBlock, a.cols - j0));
  }
}

// VB: bytes per vector register. 16-bit elements take half-width vectors (their 32-lane shuffles
// need AVX512BW, which the avx512 family does not assume).
template <int VB>
void transpose_impl(const TransposeArgs& a, int64_t begin, int64_t end) {
  switch (a.elem_size) {
    case 2: return transpose_items_of<uint16_t, VB / 4>(a, begin, end);
    case 4: return transpose_items_of<uint32_t, VB / 4>(a, begin, end);
    case 8: return transpose_items_of<uint64_t, VB / 8>(a, begin, end);
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch on the block width chosen by the caller (args.vectors).

// The depthwise kernels on 16-bit activations S (bfloat16 or float16 bits): float32 tables only.
template <typename T, int L, typename S>
struct NarrowActivations {
  static constexpr int64_t (*depthwise_items)(const DepthwiseArgs<T, S>&) = nullptr;
  static constexpr void (*depthwise)(const DepthwiseArgs<T, S>&, int64_t, int64_t) = nullptr;
  static constexpr int64_t (*depthwise_wgrad_items)(const DepthwiseWgradArgs<T, S>&) = nullptr;
  static constexpr void (*depthwise_wgrad)(const DepthwiseWgradArgs<T, S>&, int64_t, int64_t) = nullptr;
};

template <int L, typename S>
struct NarrowActivations<float, L, S> {
  static constexpr int64_t (*depthwise_items)(const DepthwiseArgs<float, S>&) = &depthwise_items_impl<float, S>;
  static constexpr void (*depthwise)(const DepthwiseArgs<float, S>&, int64_t, int64_t) = &depthwise_impl<float, L, S>;
  static constexpr int64_t (*depthwise_wgrad_items)(const DepthwiseWgradArgs<float, S>&) =
      &depthwise_wgrad_items_impl<float, L, S>;
  static constexpr void (*depthwise_wgrad)(const DepthwiseWgradArgs<float, S>&, int64_t, int64_t) =
      &depthwise_wgrad_impl<float, L, S>;
};

template <typename T, int L>
struct Kernels {
  template <int V>
  static constexpr int rows() { return SKELETON_TILE_ROWS(V); }

  static int64_t gather_gemm_items(const GatherGemmArgs<T>& a) {
    switch (a.vectors) {
      case 1: return gather_gemm_items_impl<T, rows<1>(), L>(a);
      case 2: return gather_gemm_items_impl<T, rows<2>(), 2 * L>(a);
#if SKELETON_MAX_VECTORS >= 4
      case 3: return gather_gemm_items_impl<T, rows<3>(), 3 * L>(a);
      case 4: return gather_gemm_items_impl<T, rows<4>(), 4 * L>(a);
#endif
    }
    return 0;
  }
  static void gather_gemm(const GatherGemmArgs<T>& a, int64_t begin, int64_t end) {
    switch (a.vectors) {
      case 1: return gather_gemm_impl<T, L, rows<1>(), 1>(a, begin, end);
      case 2: return gather_gemm_impl<T, L, rows<2>(), 2>(a, begin, end);
#if SKELETON_MAX_VECTORS >= 4
      case 3: return gather_gemm_impl<T, L, rows<3>(), 3>(a, begin, end);
      case 4: return gather_gemm_impl<T, L, rows<4>(), 4>(a, begin, end);
#endif
    }
  }
  static int64_t wgrad_items(const WgradArgs<T>& a) {
    if (uses_few_channel_tiles(a)) return few_channel_wgrad_items<T, L>(a);
    switch (a.vectors) {
      case 1:
        if (short_wgrad_tiles(a.k, rows<1>())) return wgrad_items_impl<T, kShortTileRows, L>(a);
        return wgrad_items_impl<T, rows<1>(), L>(a);
      case 2:
        if (short_wgrad_tiles(a.k, rows<2>())) return wgrad_items_impl<T, kShortTileRows, 2 * L>(a);
        return wgrad_items_impl<T, rows<2>(), 2 * L>(a);
#if SKELETON_MAX_VECTORS >= 4
      case 3: return wgrad_items_impl<T, rows<3>(), 3 * L>(a);
      case 4: return wgrad_items_impl<T, rows<4>(), 4 * L>(a);
#endif
    }
    return 0;
  }
  static void wgrad(const WgradArgs<T>& a, int64_t begin, int64_t end) {
    if (uses_few_channel_tiles(a)) return few_channel_wgrad_impl<T, L>(a, begin, end);
    switch (a.vectors) {
      case 1:
        if constexpr (rows<1>() > kShortTileRows) {
          if (short_wgrad_tiles(a.k, rows<1>())) return wgrad_impl<T, L, kShortTileRows, 1>(a, begin, end);
        }
        return wgrad_impl<T, L, rows<1>(), 1>(a, begin, end);
      case 2:
        if constexpr (rows<2>() > kShortTileRows) {
          if (short_wgrad_tiles(a.k, rows<2>())) return wgrad_impl<T, L, kShortTileRows, 2>(a, begin, end);
        }
        return wgrad_impl<T, L, rows<2>(), 2>(a, begin, end);
#if SKELETON_MAX_VECTORS >= 4
      case 3: return wgrad_impl<T, L, rows<3>(), 3>(a, begin, end);
      case 4: return wgrad_impl<T, L, rows<4>(), 4>(a, begin, end);
#endif
    }
  }

  static const KernelTable<T>* table() {
    static const KernelTable<T> kTable = {
        SKELETON_ISA_NAME,
        L,
        SKELETON_MAX_VECTORS,
        &gather_gemm_items,
        &gather_gemm,
        &wgrad_items,
        &wgrad,
        &depthwise_items_impl<T, T>,
        &depthwise_impl<T, L, T>,
        &depthwise_wgrad_items_impl<T, L, T>,
        &depthwise_wgrad_impl<T, L, T>,
        NarrowActivations<T, L, uint16_t>::depthwise_items,
        NarrowActivations<T, L, uint16_t>::depthwise,
        NarrowActivations<T, L, uint16_t>::depthwise_wgrad_items,
        NarrowActivations<T, L, uint16_t>::depthwise_wgrad,
        NarrowActivations<T, L, Float16Bits>::depthwise_items,
        NarrowActivations<T, L, Float16Bits>::depthwise,
        NarrowActivations<T, L, Float16Bits>::depthwise_wgrad_items,
        NarrowActivations<T, L, Float16Bits>::depthwise_wgrad,
        &transpose_items_impl,
        &transpose_impl<L * sizeof(T)>,
    };
    return &kTable;
  }
};

}  // namespace SKELETON_ISA
}  // namespace cpu
}  // namespace skeleton_cuda
