// Tensor-core block bodies for activations in contiguous NCHW memory (bf16, fp16, and float32 as
// TF32), so that NCHW callers (fp32 NCHW is PyTorch's default and one of the benchmark suites) pay no
// conversion to channels_last and back: that conversion reads and writes every activation twice
// more than the convolution itself, which for a 64-channel 56 x 56 layer would cost more than the
// 5-tap GEMM (an estimate from the tensor sizes).
//
// Same GEMMs, tiles, warp layout, pipeline and weight packing as the channels_last bodies
// (tensor_core_gemm.cuh); only the activation side changes, because in NCHW a pixel's channels are
// a plane apart and a channel's pixels are contiguous:
//   - gather GEMM (forward, input gradient): A is stored [k][row] (rows = pixels contiguous): thread
//     tid owns tile row tid % BM and copies its kBK channels (half of them each, two threads per
//     row, with 64-row tiles), so the 32 lanes of a warp copy 32 consecutive grid points of one
//     channel (coalesced along image rows). The fragments come from
//     the [k][row] tile as the channels_last weight gradient reads its tiles (ldmatrix.trans for
//     16-bit types, 32-bit shared loads for float); the results go from the accumulators straight
//     to NCHW memory,
//     8 grid points x 4 channel planes per warp store (8 consecutive pixels in the forward at
//     stride 1: whole 32-byte sectors for float, half sectors for 16-bit types; a strided input
//     gradient's grid points, and a strided forward's sources, are `stride` apart, which halves the
//     sector use again at stride 2).
//   - weight gradient: K is pixels, which NCHW stores contiguously, so A' ([tap, channel] x pixels)
//     and B' (output channel x pixels) are stored K-contiguous and read with plain ldmatrix like
//     the gather GEMM's channels_last tiles. Each thread owns one pixel of the kWK of a step (lanes
//     along pixels: coalesced) and 16 A' rows / 8 B' rows. A table in shared memory, computed once
//     per block, holds each A' row's offset from the pixel's tap-less position, so that a copy costs
//     a bounds test and one 64-bit add.
// Single elements are copied: float with 4-byte cp.async, like the rest of the pipeline; 16-bit types,
// for which cp.async has no 2-byte size, with plain loads into registers, a batch of them issued
// before their shared-memory stores so that their latencies overlap (StagedCopies). Those stores
// land in the stage of a later K step, which the pipeline's barriers already order, but each warp
// waits for its loads before its MMA: only the other warps hide that latency. That is why the host
// sends 16-bit NCHW layers here only when SKELETON_CUDA_TENSOR_CORES_NCHW=1 (skeleton_conv2d_cuda.cu).
// This header, like tensor_core_gemm.cuh, takes every primitive from `Arch` (the emulator runs it).
#pragma once

#include <cstdint>

#include "tensor_core_gemm.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace tc {

// Shared-memory geometry of the NCHW gather GEMM with BM-row tiles, the same in bytes for every type
// (a K step is 64 bytes of channels): A [kStages][kBK][kLdA] (pitch BM + 8 elements: 272 or 144
// bytes for 16-bit types, conflict-free for ldmatrix.trans, and 136 or 72 words for float, 8 banks
// modulo 32 for the 32-bit fragment loads), B as in Tile<T>, destination offsets.
template <typename T, int BM>
struct NchwGatherSmem {
  using Tl = Tile<T>;
  static constexpr int kElem = static_cast<int>(sizeof(T));
  static constexpr int kBK = Tl::kBK;  // 32 16-bit channels or 16 floats
  static constexpr int kLdA = BM + 8;
  static constexpr int kA = kStages * kBK * kLdA * kElem;
  static constexpr int kB = Tl::kGatherSmemB;
  static constexpr int kBytes = kA + kB + BM * 8;
  // Loader map: kThreadsPerRow threads per A row, each copying kShare of the kBK channels.
  static constexpr int kShare = kBK / GatherRows<BM>::kThreadsPerRow;

  static_assert(kBytes <= 48 * 1024, "static shared memory");
  static_assert(kA % 16 == 0 && kLdA * kElem % 16 == 0, "alignment");
  static_assert(kThreads % BM == 0, "whole threads per A row");
  static_assert(kBK == 2 * Tl::kSlice, "two mma slices per K step");
};

// Shared-memory geometry of the NCHW weight gradient, the same in bytes for every type (a K step is
// 64 bytes of pixels): A' [kStages][kWM][kLdW] and B' [kStages][kWN][kLdW] with the 80-byte pitch
// of the channels_last A and B tiles (conflict-free ldmatrix), and the row table.
template <typename T>
struct NchwWgradSmem {
  using Tl = Tile<T>;
  static constexpr int kElem = static_cast<int>(sizeof(T));
  static constexpr int kWK = Tl::kWK;  // 32 or 16 pixels
  static constexpr int kLdW = kWK + Tl::kVec;
  static constexpr int kA = kStages * kWM * kLdW * kElem;
  static constexpr int kB = kStages * kWN * kLdW * kElem;
  static constexpr int kBytes = kA + kB + kWM * 16;  // + the row table
  // Loader map of the weight gradient: kWK pixel lanes, kThreads / kWK row groups (4 or 8).
  static constexpr int kRowGroups = kThreads / kWK;

  static_assert(kBytes <= 48 * 1024, "static shared memory");
  static_assert(kA % 16 == 0 && kB % 16 == 0, "alignment");
  static_assert(kLdW * kElem == 80, "pitch");
  static_assert(kWM % kRowGroups == 0 && kWN % kRowGroups == 0 && kWK * kElem == 64, "weight-gradient loader map");
  static_assert(kThreads == kWM, "one row-table entry per thread");
  static_assert(kWK == 2 * Tl::kSlice, "two mma slices per K step");
};

// Copies of N single elements of an NCHW activation into shared memory, element i going to
// dst0 + i * dst_step, zero where the source is not ok (`fallback`: any valid address). float:
// 4-byte cp.async, in the step's commit group. 16-bit types: copy() loads into a register and
// store() writes them all, so that a batch of loads is in flight at once.
template <typename T, class Arch, int N>
struct StagedCopies {
  uint32_t bits[sizeof(T) == 2 ? N : 1];

  SKC_DEVICE void copy(int i, T* dst0, int dst_step, const T* src, bool ok, const T* fallback) {
    if constexpr (sizeof(T) == 4) {
      Arch::cp_async4(dst0 + i * dst_step, ok ? src : fallback, ok);
    } else {
      (void)dst0;
      (void)dst_step;
      (void)fallback;
      bits[i] = ok ? Arch::load_global16(src) : 0u;
    }
  }
  SKC_DEVICE void store(T* dst0, int dst_step) {
    if constexpr (sizeof(T) == 2) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        Arch::store_shared16(dst0 + i * dst_step, bits[i]);
      }
    } else {
      (void)dst0;
      (void)dst_step;
    }
  }
};

// Loads in flight per StagedCopies batch of the 16-bit types: enough to overlap their latencies,
// few enough to stay within the gather GEMM's 128 registers next to its 64 accumulators.
constexpr int kCopyBatch = 16;

// ---- the gather GEMM (forward, input gradient) -----------------------------------------------------
//
// p as for gather_gemm_block, with src and dst contiguous NCHW: src_ld and dst_ld are the channel
// counts of the source and destination images. Thread tid copies A row tid % BM, share tid / BM of
// the kBK channels of a step (all of them with 128-row tiles, half with 64-row ones), so the lanes of
// a warp always copy 32 consecutive grid points of one channel.
template <typename T, int BM, class Arch>
SKC_DEVICE void gather_gemm_block_nchw(const GatherGemmParams<T>& p, unsigned char* smem, int tid, int64_t block) {
  using Smem = NchwGatherSmem<T, BM>;
  using Rows = GatherRows<BM>;
  constexpr int kBK = Smem::kBK, kLdA = Smem::kLdA, kShare = Smem::kShare;
  T* const As = reinterpret_cast<T*>(smem);                                       // [kStages][kBK][kLdA]
  T* const Bs = reinterpret_cast<T*>(smem + Smem::kA);                            // [kStages][kBN][kLdB]
  int64_t* const dst_offset = reinterpret_cast<int64_t*>(smem + Smem::kA + Smem::kB);  // [BM]

  const GatherTile tile = gather_tile(block, p.n_tiles, p.groups, BM, kBN);
  const int g = tile.g, n0 = tile.n0;
  const int64_t m0 = tile.m0;
  const GatherMap& map = p.map;
  const int64_t src_plane = map.src_h * map.src_w, dst_plane = map.dst_h * map.dst_w;

  // Offset of tile row tid in the plane of its first column (channel g * n + n0), or -1; read back
  // by other threads in the epilogue, after the barrier below.
  if (tid < BM) {
    dst_offset[tid] = destination_offset_nchw(map, m0 + tid, p.rows, p.dst_ld, int64_t{g} * p.n + n0);
  }

  // This thread's A row and channel share: its source image's first plane of the group, and its
  // tap-less position.
  // (With 128-row tiles, tid < 128 = BM: spelled out so that no register holds a zero share.)
  const int a_row = Rows::kThreadsPerRow == 1 ? tid : tid % BM;
  const int share0 = Rows::kThreadsPerRow == 1 ? 0 : (tid / BM) * kShare;
  const GatherRow row = gather_row(map, m0 + a_row, p.rows);
  const int src_h = static_cast<int>(map.src_h), src_w = static_cast<int>(map.src_w);
  const T* const src_group = p.src + row.image * p.src_ld + (int64_t{g} * p.k + share0) * src_plane;

  // Every slot the MMA reads is written: zeros outside the image, past the last row or past the
  // channel count (a multiple of the 16-byte weight copies, so a step has whole mma slices of zeros
  // at most).
  float acc[Rows::kMi][4][4];
  gather_mainloop<Arch, T, true>(p, acc, As, kBK * kLdA, kLdA, Bs, g, n0, tid, [&](T* a_stage, int roff, int coff,
                                                                                   int c0) {
    const int y = row.y + roff, x = row.x + coff;
    const bool inside = row.ok && y >= 0 && y < src_h && x >= 0 && x < src_w;
    const T* const src = src_group + (inside ? (int64_t{c0} * src_h + y) * src_w + x : 0);
    constexpr int kBatch = sizeof(T) == 4 ? kShare : kCopyBatch;
    static_assert(kShare % kBatch == 0, "whole batches");
#pragma unroll
    for (int c0_batch = 0; c0_batch < kShare; c0_batch += kBatch) {
      T* const a_dst = a_stage + (share0 + c0_batch) * kLdA + a_row;
      StagedCopies<T, Arch, kBatch> copies;
#pragma unroll
      for (int c = 0; c < kBatch; ++c) {
        const bool ok = inside && c0 + share0 + c0_batch + c < p.k;
        copies.copy(c, a_dst, kLdA, src + (c0_batch + c) * src_plane, ok, p.src);
      }
      copies.store(a_dst, kLdA);
    }
  });
  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = (warp / 2) * Rows::kWarpRows, warp_n = (warp % 2) * 32;
  Arch::sync_threads();  // dst_offset is read across threads (no main-loop barrier when no tap reaches)

  // Epilogue: accumulator (row group, columns 2 tig, +1) -> two planes of the row's pixel. n is a
  // multiple of 4 and the column even, so its pair exists too.
  const int group_row = lane / 4, pair_col = 2 * (lane % 4);
  int64_t offsets[Rows::kMi][2];  // of this thread's rows, read once
#pragma unroll
  for (int mi = 0; mi < Rows::kMi; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      offsets[mi][half] = dst_offset[warp_m + mi * 16 + group_row + 8 * half];
    }
  }
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) {
    const int col = warp_n + ni * 8 + pair_col;
    if (n0 + col >= p.n) {
      continue;
    }
    float bias0 = 0.0f, bias1 = 0.0f;
    if (p.bias != nullptr) {
      bias0 = Arch::to_float(p.bias[int64_t{g} * p.n + n0 + col]);
      bias1 = Arch::to_float(p.bias[int64_t{g} * p.n + n0 + col + 1]);
    }
#pragma unroll
    for (int mi = 0; mi < Rows::kMi; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t offset = offsets[mi][half];
        if (offset >= 0) {
          T* const dst = p.dst + offset + col * dst_plane;
          Arch::template store_element<T>(dst, acc[mi][ni][2 * half] + bias0);
          Arch::template store_element<T>(dst + dst_plane, acc[mi][ni][2 * half + 1] + bias1);
        }
      }
    }
  }
}

// ---- the weight gradient -----------------------------------------------------------------------------
//
// p as for wgrad_block, with x and dy contiguous NCHW (x_ld = C_in, dy_ld = C_out); the same
// partials, block order and chunking, so the host's second pass is shared.

// One A' row of the block: the offset, within an image of x, of the element its tap reads for output
// pixel (0, 0) (its channel's plane plus the tap's offsets), and the tap's offsets for the bounds
// test. A row past 5 * k gets a row offset that no pixel brings inside the image.
struct alignas(16) WgradRowNchw {  // 16-byte aligned: one shared load per entry
  int64_t delta;
  int row_off, col_off;
};
constexpr int kNoRow = -(1 << 30);  // below -(largest y0 = out_row * stride_h, < 2^29): never inside
static_assert(sizeof(WgradRowNchw) == 16, "row table entries are 16 bytes");

template <typename T, class Arch>
SKC_DEVICE void wgrad_block_nchw(const WgradParams<T>& p, unsigned char* smem, int tid, int64_t block) {
  using Smem = NchwWgradSmem<T>;
  constexpr int kWK = Smem::kWK, kLdW = Smem::kLdW, kGroups = Smem::kRowGroups;
  T* const As = reinterpret_cast<T*>(smem);                    // [kStages][kWM][kLdW]
  T* const Bs = reinterpret_cast<T*>(smem + Smem::kA);         // [kStages][kWN][kLdW]
  WgradRowNchw* const rows = reinterpret_cast<WgradRowNchw*>(smem + Smem::kA + Smem::kB);  // [kWM]

  const WgradTile tile = wgrad_tile(p, block, kWK);
  const int g = tile.g, m0 = tile.m0, n0 = tile.n0, chunk_pixels = tile.pixels;
  const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
  const int in_h = static_cast<int>(p.in_h), in_w = static_cast<int>(p.in_w);
  const int64_t in_plane = p.in_h * p.in_w, out_plane = p.out_h * p.out_w;

  {  // Row table: thread tid describes A' row m0 + tid = (tap, channel), tap-major.
    const int r = m0 + tid;
    const bool valid = r < kTaps * p.k;
    const int tap = valid ? r / p.k : 0;
    const int row_off = select5(p.row_off, tap), col_off = select5(p.col_off, tap);
    rows[tid] = WgradRowNchw{(int64_t{g} * p.k + (r - tap * p.k)) * in_plane + int64_t{row_off} * in_w + col_off,
                             valid ? row_off : kNoRow, col_off};
  }
  Arch::sync_threads();  // the loaders read other threads' rows

  // This thread's pixel lane and row group; its pixel of the next K step to load, as an index within
  // the chunk and as (image, row, column) of the output grid. A 16-bit warp covers one row's 32
  // pixels; a float warp two rows of 16, its half-warps on row groups 4 apart (80 words: 16 banks),
  // so that their 4-byte copies into rows of 20 words do not collide.
  const int lane_pixel = tid % kWK;
  const int row_group = kWK == 32 ? tid / 32 : tid / 32 + 4 * ((tid / kWK) % 2);
  int pix = lane_pixel;
  int pn, ph, pw;
  p.out_pixels.split(tile.pixel_begin + lane_pixel, pn, ph, pw);
  const int stride_h = static_cast<int>(p.stride_h), stride_w = static_cast<int>(p.stride_w);

  auto load_step = [&](int stage) {
    const bool in_chunk = pix < chunk_pixels;
    T* const a_dst = As + stage * (kWM * kLdW) + row_group * kLdW + lane_pixel;
    T* const b_dst = Bs + stage * (kWN * kLdW) + row_group * kLdW + lane_pixel;
    const int y0 = ph * stride_h, x0 = pw * stride_w;
    // x at this pixel's tap-less position: a row adds its delta (one 64-bit add per copy).
    const T* const x_pixel = p.x + (int64_t{pn} * p.x_ld * in_plane + int64_t{y0} * in_w + x0);
    constexpr int kRowsA = kWM / kGroups, kBatchA = sizeof(T) == 4 ? kRowsA : kCopyBatch;
#pragma unroll
    for (int i0 = 0; i0 < kRowsA; i0 += kBatchA) {
      StagedCopies<T, Arch, kBatchA> copies;
#pragma unroll
      for (int i = 0; i < kBatchA; ++i) {
        const WgradRowNchw r = rows[row_group + kGroups * (i0 + i)];
        const int y = y0 + r.row_off, x = x0 + r.col_off;
        const bool ok = in_chunk && y >= 0 && y < in_h && x >= 0 && x < in_w;
        copies.copy(i, a_dst + kGroups * i0 * kLdW, kGroups * kLdW, x_pixel + r.delta, ok, p.x);
      }
      copies.store(a_dst + kGroups * i0 * kLdW, kGroups * kLdW);
    }
    // dy[pn][g * n + n0 + column][ph][pw] for the columns row_group + kGroups * i.
    const T* dy_column =
        p.dy + ((int64_t{pn} * p.dy_ld + int64_t{g} * p.n + n0 + row_group) * out_plane + int64_t{ph} * out_w + pw);
    constexpr int kColumnsB = kWN / kGroups;
    StagedCopies<T, Arch, kColumnsB> copies;
#pragma unroll
    for (int i = 0; i < kColumnsB; ++i) {
      const bool ok = in_chunk && n0 + row_group + kGroups * i < p.n;
      copies.copy(i, b_dst, kGroups * kLdW, dy_column, ok, p.dy);
      dy_column += kGroups * out_plane;
    }
    copies.store(b_dst, kGroups * kLdW);
    pix += kWK;
    advance_pixel(pn, ph, pw, p.step_n, p.step_h, p.step_w, out_h, out_w);
  };

  float acc[4][4][4];
  zero_accumulators(acc);
  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = (warp / 2) * 64, warp_n = (warp % 2) * 32;

  run_pipeline<Arch>(tile.k_steps, load_step, [&](int stage) {
    // A' [m][k] and B' [n][k]: both K-contiguous, as the channels_last gather GEMM's tiles.
    gather_step_mma<Arch, T, false>(acc, As + stage * (kWM * kLdW), kLdW, Bs + stage * (kWN * kLdW), kLdW, warp_m,
                                    warp_n, kWK, lane);
  });
  // Nothing reads shared memory below.
  store_wgrad_tile<T, Arch>(p, acc, tile.chunk, g, m0, n0, warp_m, warp_n, lane);
}

}  // namespace tc
}  // namespace gpu
}  // namespace skeleton_cuda
