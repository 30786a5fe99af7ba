// Tensor-core kernels of skeleton_conv2d: implicit GEMMs on mma.sync (bf16 / fp16, and float32 as
// TF32; fp32 accumulation; sm_80 and newer) for the forward pass, the input gradient and the weight
// gradient of dense and grouped layers. OPT-IN and UNTESTED ON A GPU: they were written and compile-checked on a machine
// without one, so skeleton_conv2d_cuda.cu routes to them only when SKELETON_CUDA_TENSOR_CORES=1 and
// the layer qualifies (tensor_core_eligible); everything else keeps the tiled CUDA-core kernels.
//
// DESIGN
// ------
// Everything runs on channels_last-contiguous, 16-byte aligned activations (the host converts), where
// the channels of one pixel are contiguous: a tap of a pixel is one contiguous vector of channels, so
// a gathered GEMM row is a handful of 16-byte copies. The exception is contiguous NCHW activations,
// which have their own block bodies (tensor_core_nchw.cuh: element-wise copies along pixels, the
// same GEMMs, tiles, pipeline and mma sequence) and so are read and written in place.
//
// Element types: bf16 / fp16 run mma.m16n8k16; float32 runs mma.m16n8k8.tf32 with each operand
// rounded to TF32 (cvt.rna) as it leaves shared memory, only while PyTorch allows TF32 for
// convolutions (tf32_policy.cpp). A tile row holds the same BYTES for every type (a K step is 64
// bytes of channels: 32 16-bit ones or 16 floats), so shared memory and every ldmatrix address are
// identical; a 32-bit fragment register holds two 16-bit elements or one float, which is what both
// mma shapes expect (tensor_core_gemm.cuh: Tile<T>). Channel counts per group must be multiples of
// one 16-byte copy: 8 16-bit elements, 4 floats.
//
// Forward and input gradient: one "gather GEMM" per tap map (tensor_core_gemm.cuh: GatherMap, the
// device twin of the CPU TapMap). M = grid points (N * grid_h * grid_w), N = produced channels per
// group, K = active taps x reduced channels per group, ordered tap-major in steps of kBK (32 16-bit
// or 16 float channels of one tap; a channel count that is not a multiple of kBK zero-fills the tail
// of its last step, and an mma slice that is all tail is skipped). The forward has one map (the output grid,
// five taps); the input gradient one map per residue class of the input modulo the stride, each with
// only the taps that reach it (the transposed weight), so strided layers waste no tap work; a class
// that no tap reaches is written as zeros. B is the weight packed on the host as [G][5][N_ch][K_ch],
// K contiguous like A (forward: [g][t][c_out][c_in]; input gradient: [g][t][c_in][c_out]), so both
// operands take plain ldmatrix (no .trans, which float lacks); re-packed every call (it is tiny next
// to the activations).
//   Block tile 128 x 64 x kBK, 4 warps of 64 x 32 (4 x 4 mma per K slice, 64 fp32 accumulators per
//   thread; per slice the warp loads its 4 B fragments, then one m16 tile's A fragment at a time
//   with its 4 mma, which keeps 12 fragment registers live instead of 24). Why: N = 64 is the
//   smallest channel count of common layers (64, 128, 256, 512) so no column is wasted there,
//   whereas a 128-wide tile would idle half the tensor cores on 64-channel layers; M = 128 reuses
//   every B fragment over 4 m16 tiles and every A fragment over 4 n8 tiles (ldmatrix : mma = 6 : 16
//   per slice); 4 warps keep the block small enough for several blocks per SM, which hides the
//   gather latency that a deeper pipeline would otherwise have to.
//   Small grids take 64 x 64 tiles instead (4 warps of 32 x 32, 2 x 4 mma per slice, 32
//   accumulators, ldmatrix : mma = 4 : 8): the late layers of a network (256 @ 14, 512 @ 7 at batch
//   64: 392 and 200 blocks of 128 rows) give an H100's 132 SMs one to three 4-warp blocks each,
//   too few warps to hide the gather. The host picks per GEMM (gather_rows_for): 128 rows while
//   that gives every SM at least 8 blocks, 64 below; SKELETON_CUDA_GATHER_ROWS forces either. Each
//   output sums the same K steps in the same order with both, so results are bitwise the same.
//   Grid: one linear x dimension, block = (m_tile * groups + g) * n_tiles + n_tile, so the blocks
//   that read the same pixels (other column tiles, other groups) run side by side and share L2.
//   A (gathered activations): each thread owns 4 rows (2 with 64-row tiles) x one 16-byte chunk of the kBK channels; the
//   grid point -> source pixel math (two 64-bit divisions) runs once per row per block, a K step only
//   adds the tap's offsets and tests the image bounds. cp.async.cg 16-byte copies, src-size 0 (zero
//   fill, nothing read) for taps outside the image, rows past M and channels past K_ch.
//   B (weights): 2 rows x the same 16-byte chunk per thread per step, zero-filled past K_ch / N_ch.
//   Epilogue: accumulators + bias (fp32) rounded once to T and staged in shared memory over the A
//   stages, then written with 16-byte stores, 8 consecutive threads covering 128 contiguous bytes
//   of one destination pixel; destination offsets (-1 past M) are computed once per row in the
//   prologue. Output is channels_last; the host copies into NCHW when the caller's format is NCHW
//   (except for float32, whose NCHW bodies write NCHW).
//
// Weight gradient: one GEMM per group with M = 5 x C_in/g rows (tap, input channel) tap-major,
// N = C_out/g, K = output pixels: dW[t][c][j] = sum_p x[tap t of p][c] * dy[p][j]. Treating the
// five taps as rows of one M (rather than five GEMMs) lets one block reuse each dy tile for all taps
// its rows cover and wastes at most one partial tile for 5 x C_in/g rows. K is split over pixel
// chunks (a function of the shape only: reduction_chunks of common.cuh, chunk length a multiple of
// 32), each block writes its fp32 tile into partials[chunk] (every element exactly once, no atomics),
// and finish_weight_grad (partial_sums.cu) adds the chunks in a fixed order: bitwise reproducible.
//   Block tile 128 x 64 x kWK pixels (32 for 16-bit types, 16 for float: the same bytes), 4 warps
//   of 64 x 32. A' (x gathered per tap) and B' (dy) are stored [pixel][column] as they arrive from
//   channels_last memory, so the 16-bit types take ldmatrix.trans and float one 32-bit shared load
//   per fragment register (conflict-free: both pitches are 8 words modulo 32 banks). Each thread owns
//   4 pixel rows; it advances them by kWK pixels per step by adding the mixed-radix digits of kWK
//   (image, row, column) with two carries instead of dividing. Pixel chunks are multiples of 32 for
//   every type, so the chunking, and the order of the deterministic sum, depend on the shape only.
//
// Pipeline (both kernels): 3 stages of cp.async, one commit group per K step (empty groups past the
// end keep the count uniform), wait_group 1 then __syncthreads before computing step s, and the copy
// for step s + 2 issued right after that barrier into the stage computed at step s - 1, which the
// barrier proved free. Shared memory is padded per row (A and B 80 B; C 144 B for 16-bit types and
// 288 B for float; A' 272 B and B' 144 B for 16-bit types, 544 B and 288 B for float) so that the 8
// row addresses of each ldmatrix phase, the epilogue's paired stores and the float fragment loads hit
// distinct banks. Static shared memory: 46 KB (gather with 128-row tiles; the epilogue tile reuses
// the A and B stages), 30.5 KB (64-row tiles), 39 KB (weight gradient), for every type; no opt-in
// needed.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16/.f16, .row.col): lane = 4 * group + tig;
//   a0 = A[group][2tig..+1], a1 = A[group+8][2tig..], a2 = A[group][2tig+8..], a3 = A[group+8][2tig+8..];
//   b0 = B[2tig..+1][group], b1 = B[2tig+8..][group]; c0,c1 = C[group][2tig..+1], c2,c3 = C[group+8][..].
// mma.m16n8k8 with .tf32: a0 = A[group][tig], a1 = A[group+8][tig], a2 = A[group][tig+4],
//   a3 = A[group+8][tig+4]; b0 = B[tig][group], b1 = B[tig+4][group]; C as above.
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of matrix i, register i of lane l receives
// row l / 4, elements 2 (l % 4) and +1 of matrix i (.trans: column l / 4, rows 2 (l % 4) and +1).
// The addressing that follows from these is written out, with the matrix order, next to each
// ldmatrix in tensor_core_gemm.cuh.
//
// Resources (nvcc 13.0, -O3, -Xptxas -v, sm_90): gather GEMM 127 registers for bf16, fp16 and float
// (capped by __launch_bounds__(128, 4)), 47104 B static shared memory; weight gradient 128 registers,
// 39936 B; no stack frame, no spills. 128 threads x 128 registers and 46 KB allow 4 blocks (16 warps)
// per SM on an H100 (on an A100's 164 KB, 3). With 64-row tiles the gather GEMM takes 77 registers
// and 31232 B (NCHW: 77 float, 80 16-bit; 29696 B): 6 blocks (24 warps) per SM, as its
// __launch_bounds__(128, 6) asks. The NCHW bodies: gather GEMM 119 registers (float),
// 128 (16-bit), 42496 B; weight gradient 124 (float) and 128 (16-bit), 48128 B (under 48 KB: still
// static); no spills (on sm_80 the NCHW weight gradient took 130 and 155). No kernel here calls the
// 64-bit division subroutine: rows and pixels are split by FastDivmod (index_division.cuh). (Loading all four A
// fragments of a slice before the mma, as an earlier version did, made the float kernels spill: the
// TF32 rounding needs registers too.) The float kernels' PTX has cvt.rna.tf32.f32,
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 and, in the weight gradient, ld.shared.f32 for the fragments; the 16-bit ones' SASS had HMMA.16816.F32(.BF16),
// LDSM.16.M88.4 / LDSM.16.MT88.4 and LDGSTS.E.BYPASS.128 in the main loops, no LDL/STL.
//
// CHECKED WITHOUT A GPU: compilation and the SASS above; this whole file, host launchers included,
// on the CPU runtime of tests/simt (tests/test_cuda_kernels_on_cpu.py: packing, residue classes,
// chunking and the kernels against the float64 oracle, with ldmatrix / mma.sync from
// tests/ptx_model.h); and the block bodies themselves, run by
// tests/tensor_core_emulator.cpp (tests/test_cuda_tensor_cores.py builds and runs it on any
// Linux machine) one thread per fiber, with cp.async (landing at issue, or as late as wait_group
// allows), ldmatrix and mma.sync emulated from the PTX ISA, bounds and alignment of every access
// checked, warps skewed against each other, against a float64 reference over strides, paddings,
// dilations, groups, ragged tiles and several pixel chunks. Mutations of the bodies (fragment
// addressing, register order, wait counts, the refilled stage, each barrier, carries, offsets) all
// fail it. Its ldmatrix and mma models (tests/ptx_model.h, read from the PTX ISA like the kernels)
// are in turn checked against the fragment layouts of NVIDIA's CuTe library for the same
// instructions (tests/ptx_model_check.cpp). It cannot see timing, the memory model, or races its
// fiber orders do not expose.
//
// WHAT A GPU MUST STILL VERIFY
//  1. tests/test_cuda_tensor_cores.py passes on an sm_80+ GPU (H100): outputs and all gradients
//     against the float64 oracle, bitwise determinism, routing (torch.ops.skeleton_cuda.
//     tensor_core_calls), fallback for unsupported shapes; also with compute-sanitizer
//     (memcheck, racecheck, synccheck) on a few small configs.
//  2. The fragment layouts on real hardware (bf16, fp16 and TF32; they match CuTe's, per
//     tests/ptx_model_check.cpp): a wrong ldmatrix/mma mapping shows as errors of order 1 in the
//     oracle tests, not as rounding.
//  3. Speed against cuDNN 3x3 (nn.Conv2d) and the tiled kernels, per pass, on layers that fill
//     the chip; then tune: the 128 / 64-row threshold (runbook stages bench-tc-rows128 and
//     bench-tc-rows64), tile shape (128x128 with 8 warps for wide layers), stages (3 vs 4),
//     chunk count of the weight gradient, and possibly swizzled instead of padded shared memory.
//     Known costs to weigh: the weight is re-packed every call (a small permute copy); NCHW runs in
//     place, but the 16-bit NCHW bodies gather with plain loads (compare with
//     SKELETON_CUDA_TENSOR_CORES_NCHW=0, which converts to channels_last and back); a stride-s
//     input gradient is s_h * s_w launches of a fraction of the rows each; the weight-gradient partials take chunks x 5 x C_in x C_out/g
//     x 4 bytes (about 68 MB for a 512 -> 512 layer at batch 256, 7 x 7).
//  4. Nsight Compute: no shared-memory bank conflicts on ldmatrix / the epilogue (the padding
//     intends none), achieved occupancy (4 blocks per SM expected; 6 with 64-row gather tiles), DRAM traffic of the gather
//     close to one read of the activations per column tile.
//  5. Only then make the path the default for eligible layers (remove the opt-in; tests/test_cuda.py's
//     float32 tolerances then need TF32 switched off there, as PyTorch's own tests do), and consider
//     wgmma (sm_90a), which this path does not have.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.cuh"
#include "gather_problems.h"
#include "launch.cuh"
#include "launchers.cuh"
#include "tensor_core_gemm.cuh"
#include "tensor_core_nchw.cuh"

#if !defined(SKELETON_SIMT_EMULATOR)
#include <cuda_runtime.h>
#endif

namespace skeleton_cuda {
namespace gpu {
namespace {

// The primitives the block bodies are built on: PTX on a GPU; under the CPU runtime
// (SKELETON_SIMT_EMULATOR, tests/simt/tensor_core_arch.h) the same instructions emulated.
#if defined(SKELETON_SIMT_EMULATOR)
using KernelArch = simt::TensorCoreArch;
#else
using KernelArch = tc::DeviceArch;
#endif

// ---- kernels ---------------------------------------------------------------------------------------

// Built for every architecture in the arch list; below sm_80 (no cp.async, no bf16 mma) the body is
// a trap, and the host never launches it there (tensor_core_eligible checks the device and the
// architecture the kernel was actually compiled for).
// (128 threads, 4 blocks per SM): caps the gather GEMM at 128 registers, which it fits without a
// spill on sm_80 and sm_90 (uncapped, sm_80 takes 146 and only 3 blocks fit). The weight gradient is
// left uncapped: the cap makes it spill. The 64-row gather tile (half the accumulators) is asked
// for kGatherMinBlocks<64> blocks.
template <int BM>
constexpr int kGatherMinBlocks = BM == 128 ? 4 : 6;

template <typename T, int BM>
__global__ void __launch_bounds__(tc::kThreads, kGatherMinBlocks<BM>) tc_gather_gemm_kernel(
    const tc::GatherGemmParams<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ __align__(16) unsigned char smem[tc::GatherSmem<T, BM>::kBytes];
  tc::gather_gemm_block<T, BM, KernelArch>(p, smem, static_cast<int>(threadIdx.x), static_cast<int64_t>(blockIdx.x));
#endif
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads) tc_wgrad_kernel(const tc::WgradParams<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ __align__(16) unsigned char smem[tc::Tile<T>::kWgradSmemBytes];
  tc::wgrad_block<T, KernelArch>(p, smem, static_cast<int>(threadIdx.x), static_cast<int64_t>(blockIdx.x));
#endif
}

// The bodies for contiguous NCHW activations (tensor_core_nchw.cuh), under the same bounds.
template <typename T, int BM>
__global__ void __launch_bounds__(tc::kThreads, kGatherMinBlocks<BM>) tc_gather_gemm_nchw_kernel(
    const tc::GatherGemmParams<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ __align__(16) unsigned char smem[tc::NchwGatherSmem<T, BM>::kBytes];
  tc::gather_gemm_block_nchw<T, BM, KernelArch>(p, smem, static_cast<int>(threadIdx.x),
                                                static_cast<int64_t>(blockIdx.x));
#endif
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads) tc_wgrad_nchw_kernel(const tc::WgradParams<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ __align__(16) unsigned char smem[tc::NchwWgradSmem<T>::kBytes];
  tc::wgrad_block_nchw<T, KernelArch>(p, smem, static_cast<int>(threadIdx.x), static_cast<int64_t>(blockIdx.x));
#endif
}

// ---- host helpers ------------------------------------------------------------------------------------

// The activation layout a launcher reads and writes: channels_last, or contiguous NCHW
// (tensor_core_nchw.cuh).
enum class Layout { kChannelsLast, kNchw };

// Launches of the tensor-core path, by pass: forward, input gradient, weight gradient; all of them,
// and those that ran the NCHW kernels.
std::array<std::atomic<int64_t>, 3> g_calls{};
std::array<std::atomic<int64_t>, 3> g_nchw_calls{};

// Counts a call of pass `pass` (0 forward, 1 input gradient, 2 weight gradient) in `layout`.
void count_call(int pass, Layout layout) {
  g_calls[pass].fetch_add(1, std::memory_order_relaxed);
  if (layout == Layout::kNchw) {
    g_nchw_calls[pass].fetch_add(1, std::memory_order_relaxed);
  }
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with the CUDA type of the dtype: bfloat16, float16, or float32 (run as TF32).
template <typename F>
void dispatch_types(at::ScalarType dtype, const char* name, F f) {
  if (dtype == at::kBFloat16) {
    f(Tag<__nv_bfloat16>{});
  } else if (dtype == at::kHalf) {
    f(Tag<__half>{});
  } else if (dtype == at::kFloat) {
    f(Tag<float>{});
  } else {
    TORCH_CHECK(false, name, ": the tensor-core kernels take bfloat16, float16 or float32, got ", dtype);
  }
}

// Elements per 16-byte copy of the dtype: the channel counts per group must be multiples of it.
int64_t vector_width(at::ScalarType dtype) {
  return dtype == at::kFloat ? tc::kVecOf<float> : tc::kVecOf<__nv_bfloat16>;
}

template <typename T>
const T* data(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* mutable_data(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

void check_activation(const at::Tensor& t, const char* what, Layout layout) {
  if (layout == Layout::kNchw) {  // element-wise copies: the element's own alignment
    TORCH_CHECK(t.dim() == 4 && t.is_contiguous() &&
                    reinterpret_cast<uintptr_t>(t.const_data_ptr()) % t.element_size() == 0,
                "skeleton_conv2d (tensor cores, NCHW): expected ", what,
                " to be a contiguous, element-aligned 4-D tensor");
    return;
  }
  TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0,
              "skeleton_conv2d (tensor cores): expected ", what,
              " to be a channels_last-contiguous, 16-byte aligned 4-D tensor");
}

// The weight in the order the kernels read it (`permuted`, a view of the caller's weight), as a
// contiguous, 16-byte aligned tensor (cp.async would fault otherwise). Usually a fresh copy; but a
// weight that is itself a view already laid out in that order comes back from contiguous() as
// the same storage, at whatever offset the view has, so that one is copied.
at::Tensor packed_weight(const at::Tensor& permuted) {
  const at::Tensor packed = aligned_contiguous(permuted, at::MemoryFormat::Contiguous, 16);
  TORCH_INTERNAL_ASSERT(packed.is_contiguous() && reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 16 == 0,
                        "skeleton_conv2d (tensor cores): packed weight not 16-byte aligned");
  return packed;
}

// Pixel chunks of the weight gradient: a function of the shape only (never of the GPU or the dtype),
// each a multiple of kChunkQuantum pixels (so of every dtype's K step), none empty.
struct Chunking {
  int64_t chunks, chunk_len;
};
Chunking wgrad_chunking(const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  const int64_t columns = s.groups * ceil_div(kTaps * cin_g, tc::kWM) * ceil_div(cout_g, tc::kWN);
  const int64_t chunks = reduction_chunks(pixels, columns, 8 * tc::kChunkQuantum);
  const int64_t chunk_len = ceil_div(ceil_div(pixels, chunks), tc::kChunkQuantum) * tc::kChunkQuantum;
  return {ceil_div(pixels, chunk_len), chunk_len};
}

// Whether this device runs the tensor-core kernels: compute capability 8.0 or newer, and the kernels
// were compiled for a virtual architecture that has the instructions. ptxVersion is that
// architecture (what __CUDA_ARCH__ saw); binaryVersion is the GPU the code was finally compiled
// for, which for a build of "7.5+PTX" alone is the H100 itself, JIT-compiling the trap body. Definite
// answers are cached per device; a query that fails answers "no" for this call only (and clears
// the error it left, and only that one).
bool device_supported(c10::DeviceIndex device) {
#if defined(SKELETON_SIMT_EMULATOR)
  (void)device;
  return true;  // the CPU runtime runs every kernel
#else
  static std::array<std::atomic<int>, 256> cache{};  // 0 unknown, 1 yes, 2 no
  if (static_cast<int>(device) < 0 || static_cast<int>(device) >= static_cast<int>(cache.size())) {
    return false;
  }
  const int known = cache[device].load(std::memory_order_relaxed);
  if (known != 0) {
    return known == 1;
  }
  auto failed = [](cudaError_t status) {
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return true;
    }
    return false;
  };
  int current = -1, major = 0;
  if (failed(cudaGetDevice(&current)) || current != device ||  // only the current device is asked
      failed(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device))) {
    return false;
  }
  bool ok = false;
  if (major >= 8) {
    cudaFuncAttributes gather{}, wgrad{};
    if (failed(cudaFuncGetAttributes(&gather, tc_gather_gemm_kernel<__nv_bfloat16, 128>)) ||
        failed(cudaFuncGetAttributes(&wgrad, tc_wgrad_kernel<__nv_bfloat16>))) {
      return false;
    }
    ok = gather.ptxVersion >= 80 && wgrad.ptxVersion >= 80 && gather.binaryVersion >= 80 && wgrad.binaryVersion >= 80;
  }
  cache[device].store(ok ? 1 : 2, std::memory_order_relaxed);
  return ok;
#endif
}

// Streaming multiprocessors of the current device (cached per device); under the CPU runtime, an
// H100's 132.
int64_t multiprocessors(c10::DeviceIndex device) {
#if defined(SKELETON_SIMT_EMULATOR)
  (void)device;
  return 132;
#else
  static std::array<std::atomic<int>, 256> cache{};  // 0: not asked yet
  const int index = static_cast<int>(device);
  if (index < 0 || index >= static_cast<int>(cache.size())) {
    return 1;
  }
  int count = cache[index].load(std::memory_order_relaxed);
  if (count == 0) {
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, index) != cudaSuccess || count <= 0) {
      (void)cudaGetLastError();
      return 1;
    }
    cache[index].store(count, std::memory_order_relaxed);
  }
  return count;
#endif
}

// 128-row blocks per SM below which a gather GEMM takes 64-row tiles: two rounds of the 4 that are
// resident at once. Under that, a 128-row grid leaves SMs with too few warps to hide the gather's
// latency (or idle), and the 64-row grid has twice the blocks at the cost of loading each weight
// tile twice as often. A starting point, not a measurement: the threshold is for a GPU to tune
// (the runbook's bench-tc-rows stages run the suite with each tile forced).
constexpr int64_t kBlocksPerSmFor128Rows = 8;

// The row tile of a gather GEMM of `rows` x `n` per group on a device with `sms` SMs.
// SKELETON_CUDA_GATHER_ROWS=128 or =64 forces one (read at every call, for tests and benchmarks;
// any other value is ignored). Either tile gives bitwise the same result (tc::GatherRows).
int gather_rows_for(int64_t rows, int64_t groups, int64_t n, int64_t sms) {
  const char* flag = std::getenv("SKELETON_CUDA_GATHER_ROWS");
  if (flag != nullptr && std::strcmp(flag, "128") == 0) {
    return 128;
  }
  if (flag != nullptr && std::strcmp(flag, "64") == 0) {
    return 64;
  }
  return tc::gather_blocks(rows, groups, n, 128) >= kBlocksPerSmFor128Rows * sms ? 128 : 64;
}

// Gather-GEMM launches by row tile: 128 rows, 64 rows (torch.ops.skeleton_cuda.
// tensor_core_gather_launches). Counted when the host launches, so a captured CUDA graph counts at
// capture, not at its replays.
std::array<std::atomic<int64_t>, 2> g_gather_launches{};

template <typename T, int BM>
void launch_gather_rows(const tc::GatherGemmParams<T>& p, Layout layout) {
  const int64_t blocks = tc::gather_blocks(p.rows, p.groups, p.n, BM);
  TORCH_CHECK(blocks <= INT32_MAX, "skeleton_conv2d (tensor cores): too many blocks (", blocks, ")");
  if (layout == Layout::kNchw) {
    launch(tc_gather_gemm_nchw_kernel<T, BM>, dim3(static_cast<unsigned>(blocks)), dim3(tc::kThreads), p);
  } else {
    launch(tc_gather_gemm_kernel<T, BM>, dim3(static_cast<unsigned>(blocks)), dim3(tc::kThreads), p);
  }
  g_gather_launches[BM == 128 ? 0 : 1].fetch_add(1, std::memory_order_relaxed);
}

template <typename T>
void launch_gather(const tc::GatherGemmParams<T>& p, Layout layout, c10::DeviceIndex device) {
  if (p.rows == 0) {
    return;
  }
  if (gather_rows_for(p.rows, p.groups, p.n, multiprocessors(device)) == 128) {
    launch_gather_rows<T, 128>(p, layout);
  } else {
    launch_gather_rows<T, 64>(p, layout);
  }
}

template <typename T>
void launch_wgrad(const tc::WgradParams<T>& p, int64_t blocks, Layout layout) {
  TORCH_CHECK(blocks <= INT32_MAX, "skeleton_conv2d (tensor cores): too many blocks (", blocks, ")");
  if (layout == Layout::kNchw) {
    launch(tc_wgrad_nchw_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(tc::kThreads), p);
  } else {
    launch(tc_wgrad_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(tc::kThreads), p);
  }
}

}  // namespace

bool tensor_core_eligible(const ConvShape& s, at::ScalarType dtype, c10::DeviceIndex device) {
  if (dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat) {
    return false;
  }
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t vec = vector_width(dtype);
  if (cin_g <= 0 || cout_g <= 0 || cin_g % vec != 0 || cout_g % vec != 0) {
    return false;  // 16-byte copies of whole channel groups (this also excludes depthwise layers)
  }
  if (!gather_coordinates_fit(s)) {
    return false;
  }
  const int64_t in_pixels = s.batch * s.in_h * s.in_w, out_pixels = s.batch * s.out_h * s.out_w;
  if (tc::gather_blocks(out_pixels, s.groups, cout_g, 64) > INT32_MAX ||  // the larger grid of the two tiles
      tc::gather_blocks(in_pixels, s.groups, cin_g, 64) > INT32_MAX) {
    return false;
  }
  if (out_pixels > 0) {
    const Chunking c = wgrad_chunking(s);
    if (c.chunk_len >= (int64_t{1} << 30) || tc::wgrad_blocks(c.chunks, s.groups, cin_g, cout_g) > INT32_MAX) {
      return false;
    }
  }
  return device_supported(device);
}

namespace {

void forward_in(Layout layout, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                const ConvShape& s) {
  check_activation(x, "input", layout);
  check_activation(y, "output", layout);
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][5][C_out/G][C_in/G]: per tap, the produced channels' rows, K contiguous
  const at::Tensor packed = packed_weight(w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 3, 1, 2}));
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  dispatch_types(x.scalar_type(), "skeleton_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    tc::GatherGemmParams<T> p;
    set_problem(p, forward_problem(s));
    p.src = data<T>(x);
    p.dst = mutable_data<T>(y);
    p.weight = data<T>(packed);
    p.bias = b.defined() ? data<T>(b) : nullptr;
    tc::finish_gather_params(p);
    launch_gather(p, layout, x.device().index());
  });
  count_call(0, layout);
}

void input_grad_in(Layout layout, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  check_activation(dy, "grad_output", layout);
  check_activation(dx, "grad_input", layout);
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  // (C_out, C_in/G, 5) -> [G][5][C_in/G][C_out/G]: the transposed weight, K (= C_out/G) contiguous
  const at::Tensor packed = packed_weight(w.reshape({s.groups, cout_g, cin_g, kTaps}).permute({0, 3, 2, 1}));
  dispatch_types(dy.scalar_type(), "skeleton_conv2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (const GatherProblem& problem : input_grad_problems(s)) {  // one per residue class
      tc::GatherGemmParams<T> p;
      set_problem(p, problem);
      p.src = data<T>(dy);
      p.dst = mutable_data<T>(dx);
      p.weight = data<T>(packed);
      tc::finish_gather_params(p);
      launch_gather(p, layout, dy.device().index());
    }
  });
  count_call(1, layout);
}

at::Tensor weight_grad_in(Layout layout, const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const at::TensorOptions acc_options = x.options().dtype(at::kFloat);
  const int64_t pixels = s.batch * s.out_h * s.out_w;
  count_call(2, layout);
  if (pixels == 0) {
    return at::zeros({s.out_channels, cin_g, kTaps}, x.options());  // a sum over no pixels
  }
  check_activation(x, "input", layout);
  check_activation(dy, "grad_output", layout);
  const Chunking c = wgrad_chunking(s);
  at::Tensor partials = at::empty({c.chunks, s.groups * kTaps * cin_g * cout_g}, acc_options);
  dispatch_types(x.scalar_type(), "skeleton_conv2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    tc::WgradParams<T> p;
    p.x = data<T>(x);
    p.dy = data<T>(dy);
    p.partials = partials.mutable_data_ptr<float>();
    p.x_ld = s.in_channels;
    p.dy_ld = s.out_channels;
    p.in_h = s.in_h;
    p.in_w = s.in_w;
    p.out_h = s.out_h;
    p.out_w = s.out_w;
    p.stride_h = s.stride_h;
    p.stride_w = s.stride_w;
    p.chunk_len = c.chunk_len;
    p.k = static_cast<int>(cin_g);
    p.n = static_cast<int>(cout_g);
    p.groups = static_cast<int>(s.groups);
    tc::finish_wgrad_params(p, s.batch, s.pad_h, s.pad_w, s.dil_h, s.dil_w);
    launch_wgrad(p, tc::wgrad_blocks(c.chunks, s.groups, cin_g, cout_g), layout);
  });
  // [G][5][C_in/G][C_out/G] -> (C_out, C_in/G, 5), in the weight's dtype
  return finish_weight_grad(partials, s, PartialsOrder::kTapMajor, /*with_bias=*/false, x.scalar_type()).weight;
}

}  // namespace

void tensor_core_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                         const ConvShape& s) {
  forward_in(Layout::kChannelsLast, x, w, bias, y, s);
}

void tensor_core_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  input_grad_in(Layout::kChannelsLast, dy, w, dx, s);
}

at::Tensor tensor_core_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return weight_grad_in(Layout::kChannelsLast, dy, x, s);
}

void tensor_core_forward_nchw(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                              const ConvShape& s) {
  forward_in(Layout::kNchw, x, w, bias, y, s);
}

void tensor_core_input_grad_nchw(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s) {
  input_grad_in(Layout::kNchw, dy, w, dx, s);
}

at::Tensor tensor_core_weight_grad_nchw(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s) {
  return weight_grad_in(Layout::kNchw, dy, x, s);
}

std::vector<int64_t> tensor_core_calls() {
  return {g_calls[0].load(), g_calls[1].load(), g_calls[2].load()};
}

std::vector<int64_t> tensor_core_nchw_calls() {
  return {g_nchw_calls[0].load(), g_nchw_calls[1].load(), g_nchw_calls[2].load()};
}

std::vector<int64_t> tensor_core_gather_launches() {
  return {g_gather_launches[0].load(), g_gather_launches[1].load()};
}

}  // namespace gpu
}  // namespace skeleton_cuda
