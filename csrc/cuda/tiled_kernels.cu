// Tiled implicit GEMMs on CUDA cores for dense and grouped layers: the default CUDA path of every
// dtype (float64, float32, float16, bfloat16; float64 accumulates in double, the others in float)
// on channels_last-contiguous activations (the host converts NCHW). The tensor-core kernels
// (tensor_core_kernels.cu, opt-in) take over bf16 / fp16 / TF32 layers where they apply, and the
// direct kernels (dense_kernels.cu) what exceeds these kernels' 32-bit coordinates.
//
// Why tiles: the direct kernels compute one result element per thread (forward, input gradient)
// or one (output channel, input channel) pair per block (weight gradient), so every activation is
// read from L1/L2 once per result it feeds, and the weight gradient streams both activation planes
// once per channel pair. Here a block computes a 64 x 64 tile of results as a sum of outer
// products of 64 x 8 slices staged in shared memory: each loaded value feeds 64 multiply-adds, and
// each thread keeps a 4 x 4 register tile (16 multiply-adds per 8 shared-memory reads).
//
// Forward and input gradient: the gather GEMM of the tensor-core path (gather_map.cuh), rows =
// grid points, columns = produced channels of a group, K = active taps x reduced channels in steps
// of 8 channels of one tap; the input gradient runs one launch per residue class of the input
// modulo the stride (only the taps that reach it: strided layers waste no work; a class no tap
// reaches is written as zeros). The weight is packed [G][5][K][N] (N contiguous).
// Weight gradient: rows (tap, input channel) = 5 x C_in/G, columns C_out/G, K = output pixels in
// shape-determined chunks (reduction_chunks): each block writes its tile of partials[chunk] once
// and finish_weight_grad adds the chunks in a fixed order. Deterministic, no atomics.
//
// Pipeline: two shared-memory buffers; while the threads multiply one, they hold the next step's
// values in registers (loaded from global memory before the multiply, so its latency hides behind
// it) and store them into the other buffer, one barrier per step.
//
// Loads: A (gathered activations) by 8 consecutive threads reading 8 consecutive channels of one
// pixel (channels_last), B (weights, dy) by 64 consecutive threads reading 64 consecutive
// channels: whole 32-byte sectors. Shared-memory rows are padded by 4 elements, so the transposed
// stores of A hit distinct banks. Results: each thread's 4 columns are consecutive channels of a
// pixel, 16 threads covering 64 channels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>

#include "common.cuh"
#include "gather_map.cuh"
#include "gather_problems.h"
#include "launch.cuh"
#include "launchers.cuh"

namespace skeleton_cuda {
namespace gpu {
namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 8;
constexpr int kTiledThreads = 256;  // 16 x 16 threads, a 4 x 4 register tile each
constexpr int kPad = 4;             // shared-memory row padding, in elements
static_assert(kTileM * kTileK == 2 * kTiledThreads && kTileN * kTileK == 2 * kTiledThreads, "2 loads per operand");

template <typename T>
struct TiledGatherParams {
  GatherMap map;
  const T* src = nullptr;
  T* dst = nullptr;
  const T* weight = nullptr;  // [groups][5][k][n]
  const T* bias = nullptr;    // [groups * n] or nullptr
  int64_t src_ld = 0, dst_ld = 0;
  int64_t rows = 0;           // batch * grid_h * grid_w
  int k = 0, n = 0, groups = 1;
  int k_chunks = 0;           // ceil(k / kTileK)
  int n_tiles = 0;            // ceil(n / kTileN)
};

template <typename T>
struct TiledWgradParams {
  const T* x = nullptr;
  const T* dy = nullptr;
  at::opmath_type<T>* partials = nullptr;  // [chunks][groups][5 * k][n]
  int64_t x_ld = 0, dy_ld = 0;
  int in_h = 0, in_w = 0, out_h = 0, out_w = 0, stride_h = 1, stride_w = 1;
  int row_off[kTaps] = {};  // kTapRow[t] * dilation_h - padding_h
  int col_off[kTaps] = {};
  int64_t pixels = 0, chunk_len = 0;  // chunk_len: a multiple of kTileK, below 2^30
  int k = 0, n = 0, groups = 1, m_tiles = 0, n_tiles = 0;
  int step_n = 0, step_h = 0, step_w = 0;  // kTileK pixels as (image, row, column) digits
  PixelSplitter out_pixels;                 // a loader's first pixel as (image, row, column)
};

template <typename acc_t>
using TileA = acc_t[kTileK][kTileM + kPad];
template <typename acc_t>
using TileB = acc_t[kTileK][kTileN + kPad];

// Four consecutive values, read from shared memory in one vector load (two for double). With
// scalar loads the 16 column groups of a warp would hit each bank twice (2-way conflicts) and the
// shared-memory pipe, not the FMA pipe, would bound the multiply. Row pitches (68 elements) and
// tile sizes are multiples of 4 elements, so every tn * 4 / tm * 4 column is aligned.
template <typename acc_t>
struct alignas(4 * sizeof(acc_t)) Quad {
  acc_t v[4];
};
constexpr int kTileAlign = 4 * sizeof(double);
static_assert((kTileM + kPad) % 4 == 0 && (kTileN + kPad) % 4 == 0, "aligned quads");

// acc += A(64 x 8) B(8 x 64) restricted to this thread's rows tm * 4 + i and columns tn * 4 + j.
template <typename acc_t>
__device__ __forceinline__ void multiply_tile(acc_t (&acc)[4][4], const TileA<acc_t>& a_tile,
                                              const TileB<acc_t>& b_tile, int tm, int tn) {
#pragma unroll
  for (int kk = 0; kk < kTileK; ++kk) {
    const Quad<acc_t> a = *reinterpret_cast<const Quad<acc_t>*>(&a_tile[kk][tm * 4]);
    const Quad<acc_t> b = *reinterpret_cast<const Quad<acc_t>*>(&b_tile[kk][tn * 4]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[i][j] += a.v[i] * b.v[j];
      }
    }
  }
}

// The main loop of both tiled kernels: K steps 0 .. k_steps - 1, each loaded into registers by
// load() (which advances to the next step), stored into shared-memory buffer step % 2 by
// store(buffer) and multiplied by multiply(buffer). The next step's global loads are issued before
// this step's multiply, and stored after it into the buffer multiplied in the previous step (free
// since that step's barrier): one barrier per step. Everything written to shared memory before the
// call is visible after its first barrier.
template <typename Load, typename Store, typename Multiply>
__device__ __forceinline__ void run_double_buffered(int k_steps, Load& load, Store& store, Multiply&& multiply) {
  if (k_steps > 0) {
    load();
    store(0);
  }
  __syncthreads();
  for (int step = 0; step < k_steps; ++step) {
    const bool more = step + 1 < k_steps;
    if (more) {
      load();
    }
    multiply(step % 2);
    if (more) {
      store((step + 1) % 2);
    }
    __syncthreads();
  }
}

// Block (m_tile * groups + g) * n_tiles + n_tile: rows [m_tile * 64, +64) of group g, columns
// [n_tile * 64, +64). Thread roles: destination offsets of the 64 rows (threads 0-63); A loader:
// channel tid % 8 of rows tid / 8 and tid / 8 + 32; B loader: column tid % 64 of K rows tid / 64 and
// tid / 64 + 4; results: rows (tid / 16) * 4 + i, columns (tid % 16) * 4 + j.
template <typename T>
__global__ void __launch_bounds__(kTiledThreads) tiled_gather_gemm_kernel(const TiledGatherParams<T> p) {
  using acc_t = at::opmath_type<T>;
  __shared__ __align__(kTileAlign) TileA<acc_t> a_tiles[2];
  __shared__ __align__(kTileAlign) TileB<acc_t> b_tiles[2];
  __shared__ int64_t dst_offset[kTileM];

  const int tid = static_cast<int>(threadIdx.x);
  const GatherTile tile = gather_tile(blockIdx.x, p.n_tiles, p.groups, kTileM, kTileN);
  const int g = tile.g, n0 = tile.n0;
  const int64_t m0 = tile.m0;
  const GatherMap& map = p.map;

  if (tid < kTileM) {  // element offset of channel g * n + n0 of the row's destination pixel, or -1
    dst_offset[tid] = destination_offset(map, m0 + tid, p.rows, p.dst_ld, int64_t{g} * p.n + n0);
  }

  // The A loader's two rows.
  const int a_k = tid % kTileK;
  GatherRow a_rows[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    a_rows[i] = gather_row(map, m0 + tid / kTileK + 32 * i, p.rows);
  }
  const int src_h = static_cast<int>(map.src_h), src_w = static_cast<int>(map.src_w);
  const int b_col = tid % kTileN, b_k = tid / kTileN;
  const bool b_col_ok = n0 + b_col < p.n;
  const T* const src_group = p.src + int64_t{g} * p.k;
  const T* const w_group = p.weight + int64_t{g} * kTaps * p.k * p.n + n0 + b_col;

  // The next K step (active tap a, 8-channel chunk) into registers, then advance to the one after
  // (steps are loaded in order: a cursor, not a division per step); zero outside the image, past
  // the last row, past the channel count and past the column count.
  acc_t a_next[2], b_next[2];
  int a = 0, chunk = 0;  // the cursor
  auto load = [&]() {
    const int c0 = chunk * kTileK;
    const int roff = select5(map.src_row_off, a), coff = select5(map.src_col_off, a);
    const int wtap = select5(map.tap, a);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int y = a_rows[i].y + roff, x = a_rows[i].x + coff, c = c0 + a_k;
      const bool ok = a_rows[i].ok && c < p.k && y >= 0 && y < src_h && x >= 0 && x < src_w;
      a_next[i] = ok ? static_cast<acc_t>(src_group[(a_rows[i].image + int64_t{y} * src_w + x) * p.src_ld + c])
                     : acc_t(0);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = c0 + b_k + 4 * i;
      b_next[i] = b_col_ok && c < p.k ? static_cast<acc_t>(w_group[(int64_t{wtap} * p.k + c) * p.n]) : acc_t(0);
    }
    if (++chunk == p.k_chunks) {
      chunk = 0;
      ++a;
    }
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      a_tiles[buffer][a_k][tid / kTileK + 32 * i] = a_next[i];
      b_tiles[buffer][b_k + 4 * i][b_col] = b_next[i];
    }
  };

  acc_t acc[4][4] = {};
  const int tm = tid / 16, tn = tid % 16;
  const int k_steps = map.num_taps * p.k_chunks;
  // (Its first barrier also publishes the destination offsets.)
  run_double_buffered(k_steps, load, store,
                      [&](int buffer) { multiply_tile(acc, a_tiles[buffer], b_tiles[buffer], tm, tn); });

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t offset = dst_offset[tm * 4 + i];
    if (offset < 0) {
      continue;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = tn * 4 + j;
      if (n0 + col < p.n) {
        const acc_t b = p.bias != nullptr ? static_cast<acc_t>(p.bias[int64_t{g} * p.n + n0 + col]) : acc_t(0);
        p.dst[offset + col] = static_cast<T>(acc[i][j] + b);
      }
    }
  }
}

// Block (g * m_tiles + m_tile) * n_tiles + n_tile along x, pixel chunk along y: rows
// [m_tile * 64, +64) of the 5 * k (tap, input channel) rows, columns [n_tile * 64, +64).
// Loaders: row / column tid % 64 of pixels tid / 64 and tid / 64 + 4 of each 8-pixel step; each
// thread advances its two pixels by 8 per step with carries over (image, row, column).
template <typename T>
__global__ void __launch_bounds__(kTiledThreads) tiled_wgrad_kernel(const TiledWgradParams<T> p) {
  using acc_t = at::opmath_type<T>;
  __shared__ __align__(kTileAlign) TileA<acc_t> a_tiles[2];
  __shared__ __align__(kTileAlign) TileB<acc_t> b_tiles[2];

  const int tid = static_cast<int>(threadIdx.x);
  // 32-bit decode: blockIdx.x < 2^31.
  const uint32_t n_tiles = static_cast<uint32_t>(p.n_tiles), m_tiles = static_cast<uint32_t>(p.m_tiles);
  const int n_tile = static_cast<int>(blockIdx.x % n_tiles);
  const uint32_t rest = blockIdx.x / n_tiles;
  const int m_tile = static_cast<int>(rest % m_tiles);
  const int g = static_cast<int>(rest / m_tiles);
  const int64_t chunk = blockIdx.y;
  const int m0 = m_tile * kTileM, n0 = n_tile * kTileN;
  const int rows_total = kTaps * p.k;
  const int64_t pixel_begin = chunk * p.chunk_len;
  const int chunk_pixels =
      static_cast<int>(pixel_begin + p.chunk_len < p.pixels ? p.chunk_len : p.pixels - pixel_begin);
  const int k_steps = (chunk_pixels + kTileK - 1) / kTileK;

  const int lane = tid % kTileM;  // the row (A') and the column (B') this thread loads
  const int a_row = m0 + lane;
  const bool a_ok = a_row < rows_total;
  const int a_tap = a_ok ? a_row / p.k : 0;
  const int roff = select5(p.row_off, a_tap), coff = select5(p.col_off, a_tap);
  const T* const x_row = p.x + int64_t{g} * p.k + (a_ok ? a_row - a_tap * p.k : 0);
  const bool b_ok = n0 + lane < p.n;
  const T* const dy_col = p.dy + int64_t{g} * p.n + n0 + lane;

  // This thread's two pixels of the next step: index within the chunk and (image, row, column).
  int pix[2], pn[2], ph[2], pw[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    pix[i] = tid / kTileM + 4 * i;
    p.out_pixels.split(pixel_begin + pix[i], pn[i], ph[i], pw[i]);
  }

  acc_t a_next[2], b_next[2];
  auto load = [&]() {  // the next step, then advance the pixels by kTileK
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool in_chunk = pix[i] < chunk_pixels;
      const int y = ph[i] * p.stride_h + roff, x = pw[i] * p.stride_w + coff;
      const bool ok = a_ok && in_chunk && y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
      a_next[i] = ok ? static_cast<acc_t>(x_row[((int64_t{pn[i]} * p.in_h + y) * p.in_w + x) * p.x_ld]) : acc_t(0);
      b_next[i] = b_ok && in_chunk ? static_cast<acc_t>(dy_col[(pixel_begin + pix[i]) * p.dy_ld]) : acc_t(0);
      pix[i] += kTileK;
      advance_pixel(pn[i], ph[i], pw[i], p.step_n, p.step_h, p.step_w, p.out_h, p.out_w);
    }
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      a_tiles[buffer][tid / kTileM + 4 * i][lane] = a_next[i];
      b_tiles[buffer][tid / kTileM + 4 * i][lane] = b_next[i];
    }
  };

  acc_t acc[4][4] = {};
  const int tm = tid / 16, tn = tid % 16;
  run_double_buffered(k_steps, load, store,
                      [&](int buffer) { multiply_tile(acc, a_tiles[buffer], b_tiles[buffer], tm, tn); });

  acc_t* const out = p.partials + (chunk * p.groups + g) * int64_t{rows_total} * p.n;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = m0 + tm * 4 + i;
    if (row >= rows_total) {
      continue;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + tn * 4 + j;
      if (col < p.n) {
        out[int64_t{row} * p.n + col] = acc[i][j];
      }
    }
  }
}

int64_t gather_blocks_tiled(int64_t rows, int64_t groups, int64_t n) {
  return ceil_div(rows, kTileM) * groups * ceil_div(n, kTileN);
}

struct TiledChunking {
  int64_t chunks, chunk_len;
};

// Pixel chunks of the weight gradient: a function of the shape only, each a multiple of kTileK
// pixels, none empty.
TiledChunking tiled_wgrad_chunking(const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  const int64_t columns = s.groups * ceil_div(kTaps * cin_g, kTileM) * ceil_div(cout_g, kTileN);
  const int64_t chunks = reduction_chunks(pixels, columns, 32 * kTileK);
  const int64_t chunk_len = ceil_div(ceil_div(pixels, chunks), kTileK) * kTileK;
  return {ceil_div(pixels, chunk_len), chunk_len};
}

template <typename T>
void launch_gather(TiledGatherParams<T>& p) {
  p.rows = p.map.batch * p.map.grid_h * p.map.grid_w;
  p.k_chunks = static_cast<int>(ceil_div(p.k, kTileK));
  p.n_tiles = static_cast<int>(ceil_div(p.n, kTileN));
  if (p.rows == 0 || p.n == 0) {
    return;  // nothing to write (a launch of no blocks is an error)
  }
  const int64_t blocks = gather_blocks_tiled(p.rows, p.groups, p.n);
  launch(tiled_gather_gemm_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kTiledThreads), p);
}

}  // namespace

bool tiled_eligible(const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  if (!gather_coordinates_fit(s)) {
    return false;
  }
  const int64_t in_pixels = s.batch * s.in_h * s.in_w, out_pixels = s.batch * s.out_h * s.out_w;
  if (gather_blocks_tiled(out_pixels, s.groups, cout_g) > INT32_MAX ||
      gather_blocks_tiled(in_pixels, s.groups, cin_g) > INT32_MAX) {
    return false;
  }
  if (out_pixels > 0) {
    const TiledChunking c = tiled_wgrad_chunking(s);
    const int64_t columns = s.groups * ceil_div(kTaps * cin_g, kTileM) * ceil_div(cout_g, kTileN);
    if (c.chunk_len >= (int64_t{1} << 30) || columns > INT32_MAX) {
      return false;
    }
  }
  return true;
}

void tiled_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][5][C_in/G][C_out/G]
  const at::Tensor packed = w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 3, 2, 1}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_tiled_forward", [&] {
    TiledGatherParams<scalar_t> p;
    set_problem(p, forward_problem(s));
    p.src = x.const_data_ptr<scalar_t>();
    p.dst = y.mutable_data_ptr<scalar_t>();
    p.weight = packed.const_data_ptr<scalar_t>();
    p.bias = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    launch_gather(p);
  });
}

void tiled_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][5][C_out/G][C_in/G]: the transposed weight
  const at::Tensor packed = w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 3, 1, 2}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "skeleton_conv2d_tiled_input_grad", [&] {
    for (const GatherProblem& problem : input_grad_problems(s)) {  // one per residue class
      TiledGatherParams<scalar_t> p;
      set_problem(p, problem);
      p.src = dy.const_data_ptr<scalar_t>();
      p.dst = dx.mutable_data_ptr<scalar_t>();
      p.weight = packed.const_data_ptr<scalar_t>();
      launch_gather(p);
    }
  });
}

at::Tensor tiled_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const at::TensorOptions acc_options = x.options().dtype(partials_dtype(x.scalar_type()));
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  if (pixels == 0 || cin_g == 0 || cout_g == 0) {
    return at::zeros({s.out_channels, cin_g, kTaps}, x.options());  // a sum over no pixels, or no weights
  }
  const TiledChunking c = tiled_wgrad_chunking(s);
  at::Tensor partials = at::empty({c.chunks, s.groups * kTaps * cin_g * cout_g}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "skeleton_conv2d_tiled_weight_grad", [&] {
    TiledWgradParams<scalar_t> p;
    p.x = x.const_data_ptr<scalar_t>();
    p.dy = dy.const_data_ptr<scalar_t>();
    p.partials = partials.mutable_data_ptr<at::opmath_type<scalar_t>>();
    p.x_ld = s.in_channels;
    p.dy_ld = s.out_channels;
    p.in_h = static_cast<int>(s.in_h);
    p.in_w = static_cast<int>(s.in_w);
    p.out_h = static_cast<int>(s.out_h);
    p.out_w = static_cast<int>(s.out_w);
    p.stride_h = static_cast<int>(s.stride_h);
    p.stride_w = static_cast<int>(s.stride_w);
    for (int t = 0; t < kTaps; ++t) {
      p.row_off[t] = static_cast<int>(kTapRow[t] * s.dil_h - s.pad_h);
      p.col_off[t] = static_cast<int>(kTapCol[t] * s.dil_w - s.pad_w);
    }
    p.pixels = pixels;
    p.chunk_len = c.chunk_len;
    p.k = static_cast<int>(cin_g);
    p.n = static_cast<int>(cout_g);
    p.groups = static_cast<int>(s.groups);
    p.m_tiles = static_cast<int>(ceil_div(kTaps * cin_g, kTileM));
    p.n_tiles = static_cast<int>(ceil_div(cout_g, kTileN));
    const int64_t image = s.out_h * s.out_w;
    p.step_n = static_cast<int>(kTileK / image);
    p.step_h = static_cast<int>((kTileK % image) / s.out_w);
    p.step_w = static_cast<int>((kTileK % image) % s.out_w);
    p.out_pixels = PixelSplitter(s.out_h, s.out_w);
    const dim3 grid(static_cast<unsigned>(int64_t{p.groups} * p.m_tiles * p.n_tiles), static_cast<unsigned>(c.chunks));
    launch(tiled_wgrad_kernel<scalar_t>, grid, dim3(kTiledThreads), p);
  });
  // [G][5][C_in/G][C_out/G] -> (C_out, C_in/G, 5)
  return finish_weight_grad(partials, s, PartialsOrder::kTapMajor, /*with_bias=*/false, x.scalar_type()).weight;
}

}  // namespace gpu
}  // namespace skeleton_cuda
