// Tensor-core implicit GEMMs of skeleton_conv2d (bf16 / fp16, or float as TF32; fp32 accumulation;
// sm_80+): tile shapes, kernel parameters, the warp-level primitives (cp.async, ldmatrix, mma.sync),
// and the block bodies of the kernels. The design, and what a GPU must still verify, is written at
// the top of tensor_core_kernels.cu, which launches these bodies.
//
// This header includes no CUDA or ATen header and no ATen type: every primitive a block body uses
// comes from its `Arch` template argument. DeviceArch (below, CUDA only) issues the PTX
// instructions; a host emulator (tests/tensor_core_emulator.cpp) runs the very same
// bodies one CUDA thread per fiber, with cp.async, ldmatrix and mma.sync emulated from the PTX ISA,
// so that the index math, the fragment layouts and the pipeline can be checked on a machine
// without a GPU. Keep it that way: no intrinsic or device-only call directly in a block body.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include "../taps.h"
#include "gather_map.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace tc {

// The gather geometry and helpers the tensor-core bodies share with the CUDA-core tiled kernels.
using gpu::advance_pixel;
using gpu::ceil_div64;
using gpu::destination_offset;
using gpu::forward_gather_map;
using gpu::gather_row;
using gpu::gather_tile;
using gpu::GatherTile;
using gpu::GatherMap;
using gpu::GatherRow;
using gpu::input_grad_gather_map;
using gpu::select5;

// ---- tiles ---------------------------------------------------------------------------------------

constexpr int kThreads = 128;  // 4 warps per block, for both kernels
constexpr int kStages = 3;     // cp.async pipeline depth

// Gather GEMM (forward and input gradient): C[BM x kBN] += A[BM x kBK] * B[kBK x kBN] per step.
// Rows are grid points (pixels), columns produced channels, K runs over (active tap, reduced channel).
// Weight gradient: C[kWM x kWN] += A'[kWM x kWK] * B'[kWK x kWN] per step, with rows (tap, input
// channel), columns output channels and K running over pixels.
constexpr int kBN = 64;
constexpr int kWM = 128, kWN = 64;

// The row tile BM of a gather GEMM, chosen per layer on the host (tensor_core_kernels.cu:
// gather_rows_for): 128 rows, or 64 for grids too small to give every SM several 128-row blocks.
// Both run 4 warps in 2 x 2 over the tile, each warp kWarpRows x 32 (kMi m16 tiles by 4 n8 tiles).
// Each output element sums the same K steps in the same order with either tile, so the choice never
// changes a result bit (the tests check it).
template <int BM>
struct GatherRows {
  static_assert(BM == 128 || BM == 64, "128- or 64-row tiles");
  static constexpr int kRows = BM;
  static constexpr int kWarpRows = BM / 2;
  static constexpr int kMi = kWarpRows / 16;     // m16 tiles per warp: 4 or 2
  static constexpr int kLoaderRows = BM / 32;    // channels_last A rows per thread (4 threads per row)
  static constexpr int kThreadsPerRow = 128 / BM;  // NCHW A loaders per row (each a share of kBK)
};

// What depends on the element type T: 16-bit types (bf16, fp16: mma.m16n8k16) or float (TF32:
// mma.m16n8k8). Every tile row holds the same number of BYTES for both, so a 16-bit K step of 32
// channels is a float step of 16, the shared-memory layout is byte for byte the same, and every
// ldmatrix address (which is in bytes) is too: a 32-bit register of an ldmatrix fragment holds two
// 16-bit elements or one float, which is exactly what m16n8k16 and m16n8k8.tf32 expect of their
// A and B registers (row g, 32-bit column t of each 8 x 16-byte matrix).
template <typename T>
struct Tile {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "16-bit types or float");
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte copy
  static constexpr int kSlice = 2 * kVec;  // K depth of one mma: 16 (m16n8k16) or 8 (m16n8k8.tf32)
  // Gather GEMM: K steps of 64 bytes of one tap's channels; A [BM][kBK] and B [kBN][kBK] (both
  // K-contiguous), padded by 16 bytes per row so that the 8 rows of every ldmatrix 8x8 matrix fall
  // in distinct bank quads (80-byte pitch).
  static constexpr int kBK = 4 * kVec;
  static constexpr int kLdA = kBK + kVec;
  static constexpr int kLdB = kBK + kVec;
  // Epilogue staging pitch: 8 elements of padding keep the accumulator stores conflict-free for both
  // widths (4-byte pairs: 36-word pitch; 8-byte pairs: 72-word pitch, per half warp).
  static constexpr int kLdC = kBN + 8;
  // Weight gradient: K steps of kWK pixels; A' [kWK][kWM] and B' [kWK][kWN] as they arrive from
  // channels_last memory (M / N contiguous). 16-bit types read fragments with ldmatrix.trans (272-
  // and 144-byte pitches); float has no transposing ldmatrix, so it reads each fragment element with
  // a 32-bit load, conflict-free because both pitches are 8 words modulo 32 banks.
  static constexpr int kWK = sizeof(T) == 2 ? 32 : 16;
  static constexpr int kLdWA = kWM + 8;
  static constexpr int kLdWB = kWN + 8;
  // Loader geometry of the weight gradient: kWM / kVec 16-byte chunks per A' row, one per thread of a
  // pass over kRowsPerPass pixel rows; 4 passes cover the step.
  static constexpr int kAChunks = kWM / kVec;
  static constexpr int kBChunks = kWN / kVec;
  static constexpr int kRowsPerPass = kThreads / kAChunks;

  // Shared memory of one weight-gradient block, in bytes (static, under the 48 KB that needs no
  // opt-in); the gather GEMM's depends on its row tile too (GatherSmem).
  static constexpr int kGatherSmemB = kStages * kBN * kLdB * static_cast<int>(sizeof(T));
  static constexpr int kWgradSmemA = kStages * kWK * kLdWA * static_cast<int>(sizeof(T));
  static constexpr int kWgradSmemBytes = kWgradSmemA + kStages * kWK * kLdWB * static_cast<int>(sizeof(T));

  static_assert(kWgradSmemBytes <= 48 * 1024, "static shared memory");
  static_assert(kGatherSmemB % 16 == 0, "alignment");
  static_assert(kBK / kVec == 4 && kBN == kThreads / 2, "gather loader map: 4 threads per A row, 2 B rows per thread");
  static_assert(kRowsPerPass * 4 == kWK && kAChunks == 2 * kBChunks, "weight-gradient loader map");
  static_assert(kBK % kSlice == 0 && kWK % kSlice == 0, "whole mma steps");
};

// Shared memory of a channels_last gather-GEMM block with BM-row tiles: A stages, B stages, and
// the destination offsets of the rows; the epilogue stages the result tile over A and B.
template <typename T, int BM>
struct GatherSmem {
  using Tl = Tile<T>;
  static constexpr int kA = kStages * BM * Tl::kLdA * static_cast<int>(sizeof(T));
  static constexpr int kB = Tl::kGatherSmemB;
  static constexpr int kBytes = kA + kB + BM * 8;
  static_assert(kBytes <= 48 * 1024, "static shared memory");
  static_assert(BM * Tl::kLdC * static_cast<int>(sizeof(T)) <= kA + kB, "the epilogue tile reuses the A and B stages");
  static_assert(kA % 16 == 0, "alignment");
  static_assert(BM <= kThreads, "one destination row per thread in the gather GEMM prologue");
};

// The element count that channel counts must be multiples of (one 16-byte copy).
template <typename T>
constexpr int kVecOf = Tile<T>::kVec;

// Weight-gradient pixel chunks are multiples of this (every type's kWK divides it).
constexpr int kChunkQuantum = 32;

// ---- parameters ----------------------------------------------------------------------------------

// dst[dst pixel][g * n + j] = bias[g * n + j] + sum over active taps a and c < k of
//                             src[source pixel of tap a][g * k + c] * weight[g][tap[a]][c][j]
// src and dst are channels_last-contiguous (pixel-major) with src_ld and dst_ld channels per pixel;
// weight is packed [groups][5][n][k] (K-contiguous, like A). Block b covers rows [m_tile * BM, +BM) of group g and
// columns [n_tile * kBN, +kBN), with b = (m_tile * groups + g) * n_tiles + n_tile.
template <typename T>
struct GatherGemmParams {
  GatherMap map;
  const T* src = nullptr;
  T* dst = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;  // [groups * n] or nullptr
  int64_t src_ld = 0, dst_ld = 0;
  int64_t rows = 0;         // batch * grid_h * grid_w
  int k = 0, n = 0, groups = 1;
  int k_chunks = 0;         // ceil(k / Tile<T>::kBK): K steps per active tap
  int n_tiles = 0;          // ceil(n / kBN)
};

// partials[chunk][g][t * k + c][j] = sum over the output pixels p of chunk of
//                                    x[source pixel of tap t for p][g * k + c] * dy[p][g * n + j]
// x and dy channels_last-contiguous. Block b covers rows [m_tile * kWM, +kWM) of the 5 * k rows,
// columns [n_tile * kWN, +kWN), pixels [chunk * chunk_len, +chunk_len), with
// b = ((chunk * groups + g) * m_tiles + m_tile) * n_tiles + n_tile. Every element of partials is
// written exactly once, so the second pass (finish_weight_grad) sees no uninitialised memory.
template <typename T>
struct WgradParams {
  const T* x = nullptr;
  const T* dy = nullptr;
  float* partials = nullptr;
  int64_t x_ld = 0, dy_ld = 0;  // C_in, C_out
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t stride_h = 1, stride_w = 1;
  int row_off[kTaps] = {};  // kTapRow[t] * dilation_h - padding_h
  int col_off[kTaps] = {};
  int64_t pixels = 0;       // batch * out_h * out_w
  int64_t chunk_len = 0;    // a multiple of kChunkQuantum, below 2^30 (pixels within a chunk are int)
  int k = 0, n = 0, groups = 1;
  int m_tiles = 0, n_tiles = 0;
  // Tile<T>::kWK pixels as digits of the mixed radix (image, row, column) of the output grid, so
  // that a loader advances its pixel by one K step with two carries instead of divisions.
  int step_n = 0, step_h = 0, step_w = 0;
  PixelSplitter out_pixels;  // a loader's first pixel as (image, row, column)
};

// ---- host-side construction (plain C++, shared with the emulator) ---------------------------------

// Fills the fields of a gather GEMM that follow from the map and the channel counts.
template <typename T>
inline void finish_gather_params(GatherGemmParams<T>& p) {
  p.rows = p.map.batch * p.map.grid_h * p.map.grid_w;
  p.k_chunks = static_cast<int>(ceil_div64(p.k, Tile<T>::kBK));
  p.n_tiles = static_cast<int>(ceil_div64(p.n, kBN));
}

// Blocks of a gather GEMM with row tiles of `tile_rows` (128 or 64).
inline int64_t gather_blocks(int64_t rows, int64_t groups, int64_t n, int tile_rows) {
  return ceil_div64(rows, tile_rows) * groups * ceil_div64(n, kBN);
}

// Fills the tap offsets, tile counts and the pixel step of a weight gradient.
template <typename T>
inline void finish_wgrad_params(WgradParams<T>& p, int64_t batch, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                int64_t dil_w) {
  for (int t = 0; t < kTaps; ++t) {
    p.row_off[t] = static_cast<int>(kTapRow[t] * dil_h - pad_h);
    p.col_off[t] = static_cast<int>(kTapCol[t] * dil_w - pad_w);
  }
  p.pixels = batch * p.out_h * p.out_w;
  p.out_pixels = PixelSplitter(p.out_h, p.out_w);
  p.m_tiles = static_cast<int>(ceil_div64(int64_t{kTaps} * p.k, kWM));
  p.n_tiles = static_cast<int>(ceil_div64(p.n, kWN));
  const int64_t image = p.out_h * p.out_w;
  constexpr int64_t step = Tile<T>::kWK;
  p.step_n = static_cast<int>(step / image);
  p.step_h = static_cast<int>((step % image) / p.out_w);
  p.step_w = static_cast<int>((step % image) % p.out_w);
}

inline int64_t wgrad_blocks(int64_t chunks, int64_t groups, int64_t k, int64_t n) {
  return chunks * groups * ceil_div64(int64_t{kTaps} * k, kWM) * ceil_div64(n, kWN);
}

// ---- small helpers for the block bodies -----------------------------------------------------------

// A warp's MI x 4 mma tiles of 4 fp32 accumulators each, zeroed.
template <int MI>
SKC_HOST_DEVICE void zero_accumulators(float (&acc)[MI][4][4]) {
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
}

// Pipeline prologue: K steps 0 .. kStages-2 in flight, one commit group each (empty past the end,
// so that the group count, and with it cp.async.wait_group, stays uniform).
template <class Arch, typename LoadStep>
SKC_HOST_DEVICE void start_pipeline(int k_steps, LoadStep& load_step) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_steps) {
      load_step(s);
    }
    Arch::cp_async_commit();
  }
}

// Before computing K step `step`: groups committed so far are kStages - 1 + step, group j holding
// K step j. Waiting until at most kStages - 2 are pending completes group `step` for this thread;
// the barrier then makes every thread's copies visible, and guarantees that every warp finished
// reading the stage computed in the previous iteration, which is the one refilled here with step
// step + kStages - 1 (an empty group past the end).
template <class Arch, typename LoadStep>
SKC_HOST_DEVICE void advance_pipeline(int step, int k_steps, LoadStep& load_step) {
  Arch::template cp_async_wait<kStages - 2>();
  Arch::sync_threads();
  const int next = step + kStages - 1;
  if (next < k_steps) {
    load_step(next % kStages);
  }
  Arch::cp_async_commit();
}

// The main loop of every tensor-core body: compute(stage) multiplies K steps 0 .. k_steps - 1 in
// order, each once load_step has filled its stage. Returns with every copy landed (the groups left
// are empty), but without a barrier: a body that reuses the stages or reads other threads' shared
// memory afterwards must synchronise first.
template <class Arch, typename LoadStep, typename Compute>
SKC_HOST_DEVICE void run_pipeline(int k_steps, LoadStep& load_step, Compute&& compute) {
  start_pipeline<Arch>(k_steps, load_step);
  for (int step = 0; step < k_steps; ++step) {
    advance_pipeline<Arch>(step, k_steps, load_step);
    compute(step % kStages);
  }
  Arch::template cp_async_wait<0>();
}

// The block of a weight gradient (b = ((chunk * groups + g) * m_tiles + m_tile) * n_tiles + n_tile):
// its pixel chunk, group, first row and column, the chunk's pixels and its K steps of `k_step` pixels.
struct WgradTile {
  int64_t chunk = 0, pixel_begin = 0;
  int g = 0, m0 = 0, n0 = 0, pixels = 0, k_steps = 0;
};

// Grids have at most 2^31 - 1 blocks (the launcher checks): the decode divides in 32 bits.
template <typename P>
SKC_HOST_DEVICE WgradTile wgrad_tile(const P& p, int64_t block, int k_step) {
  WgradTile t;
  uint32_t rest = static_cast<uint32_t>(block);
  const uint32_t n_tiles = static_cast<uint32_t>(p.n_tiles), m_tiles = static_cast<uint32_t>(p.m_tiles);
  const uint32_t groups = static_cast<uint32_t>(p.groups);
  const int n_tile = static_cast<int>(rest % n_tiles);
  rest /= n_tiles;
  const int m_tile = static_cast<int>(rest % m_tiles);
  rest /= m_tiles;
  t.g = static_cast<int>(rest % groups);
  t.chunk = rest / groups;
  t.m0 = m_tile * kWM;
  t.n0 = n_tile * kWN;
  t.pixel_begin = t.chunk * p.chunk_len;
  t.pixels = static_cast<int>(t.pixel_begin + p.chunk_len < p.pixels ? p.chunk_len : p.pixels - t.pixel_begin);
  t.k_steps = (t.pixels + k_step - 1) / k_step;
  return t;
}


// ---- fragments ------------------------------------------------------------------------------------
//
// mma.m16n8k16 (bf16 / fp16) and mma.m16n8k8 (tf32), .row.col, lane = 4 * group + tig: in units of
// 32-bit registers both read A as a0 = (row group, column tig), a1 = (group + 8, tig), a2 = (group,
// tig + 4), a3 = (group + 8, tig + 4), and B as b0 = (k tig, column group), b1 = (k tig + 4, group),
// where a 32-bit column is two 16-bit elements or one float. C: c0, c1 = C[group][2 tig, +1],
// c2, c3 = C[group + 8][2 tig, +1], in both.
// ldmatrix.x4 (b16): lanes 8i..8i+7 address the 8 rows (16 bytes each) of matrix i; register i of
// lane l receives 32-bit word l % 4 of row l / 4 of matrix i (.trans: the 16-bit elements of column
// l / 4, rows 2 (l % 4) and +1).

// float operands are rounded to TF32 as they are loaded (round to nearest, ties away:
// cvt.rna.tf32.f32), like CUTLASS's default float-to-TF32 conversion, rather than left for the
// tensor core to truncate, which would bias every product towards zero. 16-bit fragments pass
// unchanged.
template <class Arch, typename T, int N>
SKC_HOST_DEVICE void to_mma_operand(uint32_t (&r)[N]) {
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < N; ++i) r[i] = Arch::round_to_tf32(r[i]);
  }
}

// Each K slice loads the warp's four B fragments, then one m16 tile's A fragment at a time and its
// four mma: 4 + 8 fragment registers live next to the 64 accumulators instead of 16 + 8, which keeps
// the float kernels (their TF32 rounding needs registers too) within 128 registers without a spill.

// B fragments of the warp's four n8 tiles (columns col0 + 8 ni) for the K slice at element k0, from
// a [column][k] tile (K contiguous, pitch ld elements): per pair of n8 tiles, lanes address column
// rows (lane / 16) * 8 + lane % 8 at byte half (lane / 8) % 2 of the slice; matrices (n 0-7, bytes
// 0-15), (n 0-7, 16-31), (n 8-15, 0-15), (n 8-15, 16-31) = (b0, b1) of n8 tile 2 * pair, then of
// n8 tile 2 * pair + 1.
template <class Arch, typename T>
SKC_HOST_DEVICE void load_b_fragments(uint32_t (&b_frag)[4][2], const T* stage, int ld, int col0, int k0, int lane) {
  constexpr int kVec = Tile<T>::kVec;
#pragma unroll
  for (int pair = 0; pair < 2; ++pair) {
    uint32_t r[4];
    Arch::ldmatrix_x4(r, stage + (col0 + pair * 16 + (lane / 16) * 8 + lane % 8) * ld + k0 + ((lane / 8) % 2) * kVec);
    to_mma_operand<Arch, T>(r);
    b_frag[2 * pair][0] = r[0];
    b_frag[2 * pair][1] = r[1];
    b_frag[2 * pair + 1][0] = r[2];
    b_frag[2 * pair + 1][1] = r[3];
  }
}

// The A fragment of the m16 tile at row `row` for the K slice at k0, from a [row][k] tile (K
// contiguous): lanes 0-15 address rows 0-15 at the slice's first 16 bytes, lanes 16-31 rows 0-15 at
// its second 16 bytes; matrices (rows 0-7, bytes 0-15), (8-15, 0-15), (0-7, 16-31), (8-15, 16-31) =
// a0..a3.
template <class Arch, typename T>
SKC_HOST_DEVICE void load_a_fragment(uint32_t (&a)[4], const T* stage, int ld, int row, int k0, int lane) {
  Arch::ldmatrix_x4(a, stage + (row + lane % 16) * ld + k0 + (lane / 16) * Tile<T>::kVec);
  to_mma_operand<Arch, T>(a);
}

// The weight gradient's tiles are stored [k][m] and [k][n] (M / N contiguous, pixels along K).
// 16-bit types load them with ldmatrix.trans; float, for which no transposing ldmatrix exists, with
// one 32-bit load per register: lane (group, tig) reads k rows tig and tig + 4 at column group
// (+ 8), and with pitches of 8 words modulo 32 the 32 lanes hit 32 distinct banks.

// B fragments of the warp's four n8 tiles from [k][n]. ldmatrix.trans: lanes 0-15 address k rows
// 0-15 at column 0, lanes 16-31 at column 8; matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7,
// n 8-15), (k 8-15, n 8-15).
template <class Arch, typename T>
SKC_HOST_DEVICE void load_b_fragments_transposed(uint32_t (&b_frag)[4][2], const T* stage, int ld, int col0, int k0,
                                                 int lane) {
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {
      uint32_t r[4];
      Arch::ldmatrix_x4_trans(r, stage + (k0 + lane % 16) * ld + col0 + pair * 16 + (lane / 16) * 8);
      b_frag[2 * pair][0] = r[0];
      b_frag[2 * pair][1] = r[1];
      b_frag[2 * pair + 1][0] = r[2];
      b_frag[2 * pair + 1][1] = r[3];
    }
  } else {
    const T* const base = stage + (k0 + lane % 4) * ld + col0 + lane / 4;
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      b_frag[ni][0] = Arch::round_to_tf32(Arch::load_shared32(base + ni * 8));
      b_frag[ni][1] = Arch::round_to_tf32(Arch::load_shared32(base + ni * 8 + 4 * ld));
    }
  }
}

// The A fragment of the m16 tile at column `row` of a [k][m] tile. ldmatrix.trans: matrix i must be
// (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) = a0..a3, so lanes 8i..8i+7
// address k rows 8 * (i / 2) + 0..7 at m column 8 * (i % 2).
template <class Arch, typename T>
SKC_HOST_DEVICE void load_a_fragment_transposed(uint32_t (&a)[4], const T* stage, int ld, int row, int k0, int lane) {
  if constexpr (sizeof(T) == 2) {
    Arch::ldmatrix_x4_trans(a, stage + (k0 + (lane / 16) * 8 + lane % 8) * ld + row + ((lane / 8) % 2) * 8);
  } else {
    const T* const base = stage + (k0 + lane % 4) * ld + row + lane / 4;
    a[0] = Arch::round_to_tf32(Arch::load_shared32(base));
    a[1] = Arch::round_to_tf32(Arch::load_shared32(base + 8));
    a[2] = Arch::round_to_tf32(Arch::load_shared32(base + 4 * ld));
    a[3] = Arch::round_to_tf32(Arch::load_shared32(base + 4 * ld + 8));
  }
}

// The four mma of one m16 tile of the warp (acc_row = its accumulators) for one K slice.
template <class Arch, typename T>
SKC_HOST_DEVICE void mma_row(float (&acc_row)[4][4], const uint32_t (&a)[4], const uint32_t (&b_frag)[4][2]) {
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) Arch::template mma<T>(acc_row[ni], a, b_frag[ni]);
}

// ---- pieces the block bodies share (this file's channels_last ones and tensor_core_nchw.cuh's) --------

// The B (weight) part of gather-GEMM K step (weight tap wtap, channels c0 .. c0 + kBK) into `b_stage`
// ([kBN][kLdB], K contiguous): thread tid copies 16-byte chunk tid % 4 of columns n0 + tid / 4 and
// n0 + tid / 4 + 32, zero past the channel counts.
template <typename T, class Arch>
SKC_DEVICE void load_weight_tile(T* b_stage, const GatherGemmParams<T>& p, int g, int n0, int wtap, int c0, int tid) {
  using Tl = Tile<T>;
  const int chunk = tid % 4;
  const bool chan_ok = c0 + chunk * Tl::kVec < p.k;
  T* const dst = b_stage + (tid / 4) * Tl::kLdB + chunk * Tl::kVec;
  const T* const w_tap = p.weight + (int64_t{g} * kTaps + wtap) * p.n * p.k + c0 + chunk * Tl::kVec;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int col = n0 + tid / 4 + 32 * i;
    const bool ok = chan_ok && col < p.n;
    Arch::cp_async16(dst + 32 * i * Tl::kLdB, ok ? w_tap + int64_t{col} * p.k : p.weight, ok);
  }
}

// The MMA of one gather-GEMM K step: the warp's (16 MI) x 32 tile over the kBK channels of the step,
// of which `k_left` exist (an mma slice past them holds only zeros and is skipped; warp-uniform). B
// is [column][k]; A is [row][k], or [k][row] when kATransposed (tensor_core_nchw.cuh).
template <class Arch, typename T, bool kATransposed, int MI>
SKC_DEVICE void gather_step_mma(float (&acc)[MI][4][4], const T* a_stage, int lda, const T* b_stage, int ldb,
                                int warp_m, int warp_n, int k_left, int lane) {
#pragma unroll
  for (int k0 = 0; k0 < Tile<T>::kBK; k0 += Tile<T>::kSlice) {
    if (k0 < k_left) {
      uint32_t b_frag[4][2];
      load_b_fragments<Arch>(b_frag, b_stage, ldb, warp_n, k0, lane);
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        uint32_t a[4];
        if constexpr (kATransposed) {
          load_a_fragment_transposed<Arch>(a, a_stage, lda, warp_m + mi * 16, k0, lane);
        } else {
          load_a_fragment<Arch>(a, a_stage, lda, warp_m + mi * 16, k0, lane);
        }
        mma_row<Arch, T>(acc[mi], a, b_frag);
      }
    }
  }
}

// The weight gradient's epilogue: the warp's fp32 pairs straight from the accumulators into
// partials[chunk][g][row][column] (8 rows x 32 contiguous bytes per warp store: whole sectors).
template <typename T, class Arch>
SKC_DEVICE void store_wgrad_tile(const WgradParams<T>& p, const float (&acc)[4][4][4], int64_t chunk, int g, int m0,
                                 int n0, int warp_m, int warp_n, int lane) {
  const int rows_total = kTaps * p.k;
  float* const out = p.partials + (chunk * p.groups + g) * int64_t{rows_total} * p.n;
  const int group_row = lane / 4, pair_col = 2 * (lane % 4);
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + warp_m + mi * 16 + group_row + 8 * half;
      if (row < rows_total) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int col = n0 + warp_n + ni * 8 + pair_col;
          if (col < p.n) {
            Arch::store_float2(out + int64_t{row} * p.n + col, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
          }
        }
      }
    }
  }
}

// The K loop of a gather GEMM block, for either A layout: steps of kBK channels of one active tap,
// tap-major (k_chunks steps per tap). load_a(a_stage, roff, coff, c0) fills the A stage of a step
// (tap offsets roff / coff, channels c0 .. c0 + kBK), writing every slot the MMA reads, zeros where
// the gather falls outside the image, past the last row or past the channel count; this loads the
// weights (B) and runs the warp's MMA into acc (warp w: rows (w / 2) * 16 MI, columns (w % 2) * 32).
// Returns as run_pipeline does.
template <class Arch, typename T, bool kATransposed, int MI, typename LoadA>
SKC_DEVICE void gather_mainloop(const GatherGemmParams<T>& p, float (&acc)[MI][4][4], T* As, int a_stage_size,
                                int lda, T* Bs, int g, int n0, int tid, LoadA&& load_a) {
  constexpr int kBK = Tile<T>::kBK, kLdB = Tile<T>::kLdB;
  int load_tap = 0, load_chunk = 0;  // the next K step to load: active tap, kBK-channel chunk
  auto load_step = [&](int stage) {
    const int c0 = load_chunk * kBK;
    load_a(As + stage * a_stage_size, select5(p.map.src_row_off, load_tap), select5(p.map.src_col_off, load_tap), c0);
    load_weight_tile<T, Arch>(Bs + stage * (kBN * kLdB), p, g, n0, select5(p.map.tap, load_tap), c0, tid);
    if (++load_chunk == p.k_chunks) {
      load_chunk = 0;
      ++load_tap;
    }
  };
  zero_accumulators(acc);
  const int warp = tid / 32, lane = tid % 32;
  int compute_chunk = 0;  // of the step computed next
  run_pipeline<Arch>(p.map.num_taps * p.k_chunks, load_step, [&](int stage) {
    gather_step_mma<Arch, T, kATransposed>(acc, As + stage * a_stage_size, lda, Bs + stage * (kBN * kLdB), kLdB,
                                           (warp / 2) * (16 * MI), (warp % 2) * 32, p.k - compute_chunk * kBK, lane);
    compute_chunk = compute_chunk + 1 == p.k_chunks ? 0 : compute_chunk + 1;
  });
}

// ---- the gather GEMM block body ---------------------------------------------------------------------
//
// Thread roles (tid = 0..127, warp = tid / 32, lane = tid % 32), for BM-row tiles (GatherRows<BM>):
//   destination row      : row tid < BM of the tile (its destination offset goes to shared memory)
//   A loader (gather)    : rows tid / 4 + 32 * i (i < BM / 32), 16-byte chunk tid % 4 of the kBK channels
//   B loader (weights)   : columns tid / 4 + 32 * i (i = 0..1), the same chunk of their kBK channels
//   MMA                  : warp tile (BM / 2) x 32 at rows (BM / 2) * (warp / 2), columns 32 * (warp % 2):
//                          (BM / 32) x 4 mma per K slice (2 slices per step), BM / 2 fp32 accumulators
//                          per thread
//   epilogue             : tile staged through shared memory, 16-byte coalesced stores per pixel
template <typename T, int BM, class Arch>
SKC_DEVICE void gather_gemm_block(const GatherGemmParams<T>& p, unsigned char* smem, int tid, int64_t block) {
  using Tl = Tile<T>;
  using Rows = GatherRows<BM>;
  using Smem = GatherSmem<T, BM>;
  constexpr int kVec = Tl::kVec, kLdA = Tl::kLdA, kLdC = Tl::kLdC, kMi = Rows::kMi;
  T* const As = reinterpret_cast<T*>(smem);                                 // [kStages][BM][kLdA]
  T* const Bs = reinterpret_cast<T*>(smem + Smem::kA);                      // [kStages][kBN][kLdB]
  int64_t* const dst_offset = reinterpret_cast<int64_t*>(smem + Smem::kA + Smem::kB);  // [BM]
  T* const Cs = As;                                              // [BM][kLdC], epilogue (over A and B)

  const GatherTile tile = gather_tile(block, p.n_tiles, p.groups, BM, kBN);
  const int g = tile.g, n0 = tile.n0;
  const int64_t m0 = tile.m0;
  const GatherMap& map = p.map;

  // Destination offset of tile row tid: element offset of channel g * n + n0 of its pixel, or -1.
  if (tid < BM) {
    dst_offset[tid] = destination_offset(map, m0 + tid, p.rows, p.dst_ld, int64_t{g} * p.n + n0);
  }

  // The A loader's rows: source image base (in pixels) and the (row, column) of the grid point's
  // tap-less source position; a tap adds its offset. Rows past the end never load (row_ok).
  const int a_chunk = tid % 4;
  GatherRow a_rows[Rows::kLoaderRows];
#pragma unroll
  for (int i = 0; i < Rows::kLoaderRows; ++i) {
    a_rows[i] = gather_row(map, m0 + tid / 4 + 32 * i, p.rows);
  }
  const int src_h = static_cast<int>(map.src_h), src_w = static_cast<int>(map.src_w);
  const T* const src_group = p.src + int64_t{g} * p.k + a_chunk * kVec;

  float acc[kMi][4][4];
  gather_mainloop<Arch, T, false>(p, acc, As, BM * kLdA, kLdA, Bs, g, n0, tid,
                                  [&](T* a_stage, int roff, int coff, int c0) {
    T* const a_dst = a_stage + (tid / 4) * kLdA + a_chunk * kVec;
    const bool chan_ok = c0 + a_chunk * kVec < p.k;
#pragma unroll
    for (int i = 0; i < Rows::kLoaderRows; ++i) {
      const int y = a_rows[i].y + roff, x = a_rows[i].x + coff;
      const bool ok = chan_ok && a_rows[i].ok && y >= 0 && y < src_h && x >= 0 && x < src_w;
      const T* src = p.src;
      if (ok) {
        src = src_group + ((a_rows[i].image + int64_t{y} * src_w + x) * p.src_ld + c0);
      }
      Arch::cp_async16(a_dst + 32 * i * kLdA, src, ok);
    }
  });
  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = (warp / 2) * Rows::kWarpRows, warp_n = (warp % 2) * 32;

  // Epilogue. All copies landed and, after the barrier, no warp reads the stages any more: stage the
  // tile, with the bias, as T in shared memory over the stages.
  Arch::sync_threads();
  const int group_row = lane / 4, pair_col = 2 * (lane % 4);
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) {
    const int col = warp_n + ni * 8 + pair_col;
    float bias0 = 0.0f, bias1 = 0.0f;
    if (p.bias != nullptr && n0 + col < p.n) {  // col is even and n a multiple of kVec: col + 1 too
      bias0 = Arch::to_float(p.bias[int64_t{g} * p.n + n0 + col]);
      bias1 = Arch::to_float(p.bias[int64_t{g} * p.n + n0 + col + 1]);
    }
#pragma unroll
    for (int mi = 0; mi < kMi; ++mi) {
      const int row = warp_m + mi * 16 + group_row;
      Arch::template store_pair<T>(Cs + row * kLdC + col, acc[mi][ni][0] + bias0, acc[mi][ni][1] + bias1);
      Arch::template store_pair<T>(Cs + (row + 8) * kLdC + col, acc[mi][ni][2] + bias0, acc[mi][ni][3] + bias1);
    }
  }
  Arch::sync_threads();
  // kBN / kVec chunks of 16 bytes per row: consecutive threads write consecutive chunks of a pixel.
#pragma unroll
  for (int it = 0; it < BM * kBN / kVec / kThreads; ++it) {
    const int idx = tid + it * kThreads;
    const int row = idx / (kBN / kVec), chunk = idx % (kBN / kVec);
    const int64_t offset = dst_offset[row];
    if (offset >= 0 && n0 + chunk * kVec < p.n) {
      Arch::copy16(p.dst + offset + chunk * kVec, Cs + row * kLdC + chunk * kVec);
    }
  }
}

// ---- the weight-gradient block body -------------------------------------------------------------------
//
// Thread roles:
//   loaders : pixel rows tid / kAChunks + kRowsPerPass * i (i = 0..3) of the kWK pixels of a K step;
//             A' chunk q = tid % kAChunks of the kWM (tap, channel) rows, i.e. a fixed tap and kVec
//             channels per thread; B' chunk q % kBChunks of the kWN output channels for the rows i
//             with i % 2 == q / kBChunks (bf16: 16 chunks, 8 rows per pass; float: 32 and 4)
//   MMA     : warp tile 64 x 32 at rows 64 * (warp / 2), columns 32 * (warp % 2), as in the 128-row
//             gather GEMM
//   epilogue: fp32 pairs straight from the accumulators to the partials (8 rows x 32 contiguous bytes
//             per warp store: whole sectors)
template <typename T, class Arch>
SKC_DEVICE void wgrad_block(const WgradParams<T>& p, unsigned char* smem, int tid, int64_t block) {
  using Tl = Tile<T>;
  constexpr int kVec = Tl::kVec, kWK = Tl::kWK, kLdWA = Tl::kLdWA, kLdWB = Tl::kLdWB, kRows = Tl::kRowsPerPass;
  T* const As = reinterpret_cast<T*>(smem);                   // [kStages][kWK pixels][kLdWA]
  T* const Bs = reinterpret_cast<T*>(smem + Tl::kWgradSmemA);  // [kStages][kWK pixels][kLdWB]

  const WgradTile tile = wgrad_tile(p, block, kWK);
  const int g = tile.g, m0 = tile.m0, n0 = tile.n0, chunk_pixels = tile.pixels;
  const int64_t pixel_begin = tile.pixel_begin;
  const int rows_total = kTaps * p.k;

  // This thread's A' chunk: kVec channels of one tap.
  const int q = tid % Tl::kAChunks;
  const int a_row0 = m0 + q * kVec;  // (tap, channel) row of the chunk's first element
  const bool a_ok = a_row0 < rows_total;
  const int a_tap = a_ok ? a_row0 / p.k : 0;
  const int a_channel = a_ok ? a_row0 - a_tap * p.k : 0;  // k % kVec == 0: the chunk stays in one tap
  const int roff = select5(p.row_off, a_tap), coff = select5(p.col_off, a_tap);
  const T* const x_chunk = p.x + int64_t{g} * p.k + a_channel;
  // This thread's B' chunk.
  const int b_chunk = q % Tl::kBChunks, b_parity = q / Tl::kBChunks;
  const bool b_ok = n0 + b_chunk * kVec < p.n;
  const T* const dy_chunk = p.dy + pixel_begin * p.dy_ld + int64_t{g} * p.n + n0 + b_chunk * kVec;

  // Pixel state of the four loader rows for the next K step to load: pixel index within the chunk
  // and the pixel's (image, row, column) in the output grid.
  int pix[4];
  int pn[4], ph[4], pw[4];
  const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
  const int in_h = static_cast<int>(p.in_h), in_w = static_cast<int>(p.in_w);
  const int stride_h = static_cast<int>(p.stride_h), stride_w = static_cast<int>(p.stride_w);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    pix[i] = tid / Tl::kAChunks + kRows * i;
    p.out_pixels.split(pixel_begin + pix[i], pn[i], ph[i], pw[i]);
  }

  auto load_step = [&](int stage) {
    T* const a_dst = As + stage * (kWK * kLdWA) + (tid / Tl::kAChunks) * kLdWA + q * kVec;
    T* const b_dst = Bs + stage * (kWK * kLdWB) + (tid / Tl::kAChunks) * kLdWB + b_chunk * kVec;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool in_chunk = pix[i] < chunk_pixels;
      const int y = ph[i] * stride_h + roff, x = pw[i] * stride_w + coff;
      const bool ok = a_ok && in_chunk && y >= 0 && y < in_h && x >= 0 && x < in_w;
      const T* src = p.x;
      if (ok) {
        src = x_chunk + ((int64_t{pn[i]} * in_h + y) * in_w + x) * p.x_ld;
      }
      Arch::cp_async16(a_dst + kRows * i * kLdWA, src, ok);
      if (i % 2 == b_parity) {
        const bool dy_ok = b_ok && in_chunk;
        Arch::cp_async16(b_dst + kRows * i * kLdWB, dy_ok ? dy_chunk + int64_t{pix[i]} * p.dy_ld : p.dy, dy_ok);
      }
      pix[i] += kWK;
      advance_pixel(pn[i], ph[i], pw[i], p.step_n, p.step_h, p.step_w, out_h, out_w);
    }
  };

  float acc[4][4][4];
  zero_accumulators(acc);

  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = (warp / 2) * 64, warp_n = (warp % 2) * 32;

  run_pipeline<Arch>(tile.k_steps, load_step, [&](int stage) {
    const T* const a_stage = As + stage * (kWK * kLdWA);
    const T* const b_stage = Bs + stage * (kWK * kLdWB);
#pragma unroll
    for (int k0 = 0; k0 < kWK; k0 += Tl::kSlice) {
      uint32_t b_frag[4][2];
      load_b_fragments_transposed<Arch>(b_frag, b_stage, kLdWB, warp_n, k0, lane);
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        uint32_t a[4];
        load_a_fragment_transposed<Arch>(a, a_stage, kLdWA, warp_m + mi * 16, k0, lane);
        mma_row<Arch, T>(acc[mi], a, b_frag);
      }
    }
  });
  // Nothing reads shared memory below.
  store_wgrad_tile<T, Arch>(p, acc, tile.chunk, g, m0, n0, warp_m, warp_n, lane);
}

// ---- the device primitives ----------------------------------------------------------------------------

#if defined(__CUDACC__)

struct DeviceArch {
  // 16 bytes global -> shared, bypassing L1; zero-filled (nothing read) when !valid. `src` must be
  // a valid, 16-byte aligned address either way.
  static __device__ __forceinline__ void cp_async16(void* smem_dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
#endif
  }
  // 4 bytes global -> shared through L1 (.ca: the only level 4-byte copies have), zero-filled when
  // !valid; `src` must be a valid, 4-byte aligned address either way. The NCHW float kernels
  // (tensor_core_nchw.cuh) gather single elements with it.
  static __device__ __forceinline__ void cp_async4(void* smem_dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    const int src_bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
#endif
  }
  static __device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
  }
  template <int N>
  static __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
  }
  static __device__ __forceinline__ void sync_threads() { __syncthreads(); }

  static __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem_src));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
#endif
  }
  static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem_src));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
#endif
  }

  // One 32-bit word of shared memory (a float fragment element of the weight gradient).
  static __device__ __forceinline__ uint32_t load_shared32(const void* smem_src) {
    return *reinterpret_cast<const uint32_t*>(smem_src);
  }

  // The float whose bits are x, rounded to TF32 (10 mantissa bits; nearest, ties away from zero).
  static __device__ __forceinline__ uint32_t round_to_tf32(uint32_t x) {
    uint32_t r = x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
#endif
    return r;
  }

  // d += A * B with fp32 accumulators: A 16x16 (row), B 16x8 (col) for the 16-bit types (m16n8k16);
  // A 16x8, B 8x8 of TF32 for float (m16n8k8).
  template <typename T>
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ float to_float(float v) { return v; }

  // Two consecutive elements (4-byte aligned), rounded to nearest even.
  template <typename T>
  static __device__ __forceinline__ void store_pair(T* dst, float v0, float v1);

  static __device__ __forceinline__ void copy16(void* dst, const void* src) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  }
  static __device__ __forceinline__ void store_float2(float* dst, float v0, float v1) {
    *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
  }
  // The NCHW bodies' single elements (tensor_core_nchw.cuh): a 16-bit activation element through the
  // read-only path, its store into shared memory, and one result element rounded to nearest (even).
  static __device__ __forceinline__ uint32_t load_global16(const void* src) {
    return __ldg(reinterpret_cast<const unsigned short*>(src));
  }
  static __device__ __forceinline__ void store_shared16(void* dst, uint32_t bits) {
    *reinterpret_cast<unsigned short*>(dst) = static_cast<unsigned short>(bits);
  }
  template <typename T>
  static __device__ __forceinline__ void store_element(T* dst, float v);
};

template <>
__device__ __forceinline__ void DeviceArch::mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                                     const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

template <>
__device__ __forceinline__ void DeviceArch::mma<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

template <>
__device__ __forceinline__ void DeviceArch::mma<float>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

template <>
__device__ __forceinline__ void DeviceArch::store_pair<__nv_bfloat16>(__nv_bfloat16* dst, float v0, float v1) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v0, v1);
}

template <>
__device__ __forceinline__ void DeviceArch::store_pair<__half>(__half* dst, float v0, float v1) {
  *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(v0, v1);
}

template <>
__device__ __forceinline__ void DeviceArch::store_pair<float>(float* dst, float v0, float v1) {
  *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
}

template <>
__device__ __forceinline__ void DeviceArch::store_element<__nv_bfloat16>(__nv_bfloat16* dst, float v) {
  *dst = __float2bfloat16_rn(v);
}

template <>
__device__ __forceinline__ void DeviceArch::store_element<__half>(__half* dst, float v) {
  *dst = __float2half_rn(v);
}

template <>
__device__ __forceinline__ void DeviceArch::store_element<float>(float* dst, float v) {
  *dst = v;
}

#endif  // __CUDACC__

}  // namespace tc
}  // namespace gpu
}  // namespace skeleton_cuda
