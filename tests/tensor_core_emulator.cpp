// Host emulator of the tensor-core block bodies (tensor_core_gemm.cuh), for machines without a GPU:
// bf16 and fp16 (mma.m16n8k16) and float run as TF32 (cvt.rna.tf32.f32, mma.m16n8k8.tf32).
//
// It runs the very code the kernels run (gather_gemm_block, wgrad_block) with an `Arch` whose
// primitives are emulated from the PTX ISA: every CUDA thread of a block is a fiber (ucontext), a
// block barrier and every warp-collective instruction (ldmatrix, mma.sync) block their fiber until
// all 128 threads, or all 32 lanes of the warp, arrive; cp.async copies land either at issue or as
// late as cp.async.wait_group allows; the fiber order is shuffled. It checks, besides the results
// against a float64 reference:
//   - every cp.async source and every global store lies inside its tensor, 16-byte copies aligned;
//   - every shared-memory access lies inside the block's shared memory, ldmatrix rows 16-byte aligned;
//   - all lanes of a warp issue the same collective, and no barrier deadlocks;
//   - shared memory starts as NaNs each block, outputs and partials start as NaNs: reading a slot
//     the loaders never wrote, or leaving an output unwritten, shows in the comparison.
// It does not see timing, the hardware's real instruction semantics, or races that the fiber orders
// it tries do not expose.
//
// Test tooling, not part of the extension. Build and run from the repository root:
//   g++ -std=c++17 -O2 -I csrc tests/tensor_core_emulator.cpp -o /tmp/tc_emulator && /tmp/tc_emulator
// (tests/test_cuda_tensor_cores.py does this on machines without a GPU too). Arguments: `quick` runs
// fewer configurations.
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/tensor_core_gemm.cuh"
#include "cuda/tensor_core_nchw.cuh"
#include "ptx_model.h"

namespace emu {

using skeleton_cuda::kTapCol;
using skeleton_cuda::kTapRow;
using skeleton_cuda::kTaps;
namespace tc = skeleton_cuda::gpu::tc;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "EMULATOR FAILURE: %s\n", what.c_str());
  std::exit(1);
}

// ---- 16-bit floating types (storage only) ---------------------------------------------------------

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

float bits_to_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}

float to_float(bf16 v) { return bits_to_float(uint32_t{v.bits} << 16); }

bf16 to_bf16(float f) {  // round to nearest even
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((x >> 16) | 0x40)};
  return bf16{static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}

float to_float(f16 v) {
  const uint32_t sign = (uint32_t{v.bits} & 0x8000u) << 16;
  const int exp = (v.bits >> 10) & 0x1f;
  const uint32_t mant = v.bits & 0x3ffu;
  if (exp == 0) {
    const float m = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -m : m;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | (static_cast<uint32_t>(exp - 15 + 127) << 23) | (mant << 13));
}

f16 to_f16(float f) {  // round to nearest even
  const uint32_t x = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t mant = x & 0x7fffffu;
  const int exp = (x >> 23) & 0xff;
  if (exp == 0xff) return f16{static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u))};
  const int e = exp - 127 + 15;
  if (e >= 31) return f16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (e <= 0) {
    if (e < -10) return f16{sign};
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return f16{static_cast<uint16_t>(sign | h)};
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return f16{static_cast<uint16_t>(sign | h)};
}

float to_float(float v) { return v; }

template <typename T>
T from_float(float f);
template <>
bf16 from_float<bf16>(float f) { return to_bf16(f); }
template <>
f16 from_float<f16>(float f) { return to_f16(f); }
template <>
float from_float<float>(float f) { return f; }

float round_to_tf32(float f) { return bits_to_float(ptx_model::round_to_tf32(float_to_bits(f))); }

// The element types the kernels run, as the emulated tensor cores see them.
using ptx_model::Kind;

template <typename T>
constexpr Kind kind_of() {
  return std::is_same<T, bf16>::value ? Kind::bf16 : std::is_same<T, f16>::value ? Kind::f16 : Kind::tf32;
}

const char* kind_name(Kind k) { return k == Kind::bf16 ? "bf16" : k == Kind::f16 ? "fp16" : "tf32"; }

// ---- the block runtime: fibers, barriers, warp collectives, cp.async --------------------------------

constexpr int kThreads = tc::kThreads;
constexpr size_t kStack = 256 * 1024;

struct Copy {
  unsigned char* dst;
  unsigned char bytes[16];
  int size;  // 16, or 4 (the NCHW float bodies' single elements)
};

struct Region {
  const unsigned char* begin;
  size_t size;
  bool writable;
  std::string name;
};

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  const int* wait_ptr = nullptr;  // blocked while *wait_ptr == wait_value
  int wait_value = 0;
  std::vector<Copy> open;                 // issued, not yet committed
  std::deque<std::vector<Copy>> groups;   // committed, not yet landed
};

struct WarpState {
  int count = 0, epoch = 0;
  int op[32];
  const unsigned char* addr[32];
  uint32_t a[32][4], b[32][2];
  float c[32][4];
  uint32_t out[32][4];
  float d[32][4];
};

struct Runtime {
  ucontext_t main_ctx;
  std::vector<Fiber> fibers = std::vector<Fiber>(kThreads);
  int current = -1;
  unsigned char* smem = nullptr;
  size_t smem_size = 0;
  int bar_count = 0, bar_epoch = 0;
  WarpState warps[kThreads / 32];
  std::vector<Region> regions;
  bool eager_copies = false;
  bool shuffle = true;
  bool skew = true;
  std::mt19937 rng{12345};
  std::function<void(int)> body;
  Kind kind = Kind::bf16;
};

Runtime* g_rt = nullptr;

void yield_while(const int* ptr, int value) {
  Fiber& f = g_rt->fibers[g_rt->current];
  f.wait_ptr = ptr;
  f.wait_value = value;
  swapcontext(&f.ctx, &g_rt->main_ctx);
}

void trampoline() {
  const int tid = g_rt->current;
  g_rt->body(tid);
  g_rt->fibers[tid].done = true;
}  // returns to uc_link = main_ctx

void check_smem(const void* p, size_t bytes, size_t align, const char* what) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < g_rt->smem || c + bytes > g_rt->smem + g_rt->smem_size)
    fail(std::string(what) + ": shared-memory access out of bounds");
  if ((c - g_rt->smem) % align != 0) fail(std::string(what) + ": misaligned shared-memory access");
}

const Region& check_global(const void* p, size_t bytes, size_t align, bool write, const char* what) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (const Region& r : g_rt->regions) {
    if (c >= r.begin && c + bytes <= r.begin + r.size) {
      if (write && !r.writable) fail(std::string(what) + ": write into read-only tensor " + r.name);
      if (reinterpret_cast<uintptr_t>(c) % align != 0) fail(std::string(what) + ": misaligned access to " + r.name);
      return r;
    }
  }
  fail(std::string(what) + ": global access outside every tensor");
}

void land(std::vector<Copy>& copies) {
  for (Copy& c : copies) std::memcpy(c.dst, c.bytes, c.size);
  copies.clear();
}

template <typename Fill, typename Compute, typename Read>
void collective(int op, Fill fill, Compute compute, Read read) {
  const int tid = g_rt->current, lane = tid % 32;
  WarpState& ws = g_rt->warps[tid / 32];
  const int epoch = ws.epoch;
  ws.op[lane] = op;
  fill(ws, lane);
  if (++ws.count == 32) {
    for (int l = 0; l < 32; ++l)
      if (ws.op[l] != op) fail("lanes of one warp issued different collective instructions (divergence)");
    compute(ws);
    ws.count = 0;
    ++ws.epoch;
  } else {
    yield_while(&ws.epoch, epoch);
  }
  read(ws, lane);
}

void ldmatrix(uint32_t (&r)[4], const void* p, bool trans) {
  collective(
      trans ? 2 : 1,
      [&](WarpState& ws, int lane) { ws.addr[lane] = static_cast<const unsigned char*>(p); },
      [&](WarpState& ws) {
        for (int l = 0; l < 32; ++l) check_smem(ws.addr[l], 16, 16, "ldmatrix");
        ptx_model::ldmatrix_x4(ws.addr, trans, ws.out);
      },
      [&](WarpState& ws, int lane) {
        for (int i = 0; i < 4; ++i) r[i] = ws.out[lane][i];
      });
}

void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  collective(
      3,
      [&](WarpState& ws, int lane) {
        for (int i = 0; i < 4; ++i) ws.a[lane][i] = a[i], ws.c[lane][i] = d[i];
        ws.b[lane][0] = b[0], ws.b[lane][1] = b[1];
      },
      [&](WarpState& ws) { ptx_model::mma(g_rt->kind, ws.a, ws.b, ws.c, ws.d); },
      [&](WarpState& ws, int lane) {
        for (int i = 0; i < 4; ++i) d[i] = ws.d[lane][i];
      });
}

// cp.async of `size` bytes (16, or 4): the source is read at issue, the destination written at issue
// or as late as cp.async.wait_group allows.
void cp_async(void* smem_dst, const void* src, bool valid, int size) {
  check_smem(smem_dst, size, size, "cp.async destination");
  check_global(src, valid ? size : 0, size, false, "cp.async source");
  Copy c;
  c.dst = static_cast<unsigned char*>(smem_dst);
  c.size = size;
  if (valid) {
    std::memcpy(c.bytes, src, size);
  } else {
    std::memset(c.bytes, 0, size);
  }
  Fiber& f = g_rt->fibers[g_rt->current];
  if (g_rt->eager_copies) {
    std::memcpy(c.dst, c.bytes, size);
  } else {
    f.open.push_back(c);
  }
}

struct EmuArch {
  static void cp_async16(void* smem_dst, const void* src, bool valid) { cp_async(smem_dst, src, valid, 16); }
  static void cp_async4(void* smem_dst, const void* src, bool valid) { cp_async(smem_dst, src, valid, 4); }
  static void cp_async_commit() {
    Fiber& f = g_rt->fibers[g_rt->current];
    f.groups.push_back(std::move(f.open));
    f.open.clear();
  }
  template <int N>
  static void cp_async_wait() {
    Fiber& f = g_rt->fibers[g_rt->current];
    while (static_cast<int>(f.groups.size()) > N) {
      land(f.groups.front());
      f.groups.pop_front();
    }
  }
  static void sync_threads() {
    const int epoch = g_rt->bar_epoch;
    if (++g_rt->bar_count == kThreads) {
      g_rt->bar_count = 0;
      ++g_rt->bar_epoch;
    } else {
      yield_while(&g_rt->bar_epoch, epoch);
    }
  }
  static void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix(r, p, false); }
  static void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix(r, p, true); }
  template <typename T>
  static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if (kind_of<T>() != g_rt->kind) fail("mma of another element type than the block's");
    emu::mma(d, a, b);
  }
  static uint32_t load_shared32(const void* p) {
    check_smem(p, 4, 4, "32-bit shared load");
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static uint32_t round_to_tf32(uint32_t x) { return ptx_model::round_to_tf32(x); }
  static float to_float(bf16 v) { return emu::to_float(v); }
  static float to_float(f16 v) { return emu::to_float(v); }
  static float to_float(float v) { return v; }
  template <typename T>
  static void store_pair(T* dst, float v0, float v1) {
    check_smem(dst, 2 * sizeof(T), 2 * sizeof(T), "epilogue staging store");
    dst[0] = from_float<T>(v0);
    dst[1] = from_float<T>(v1);
  }
  static void copy16(void* dst, const void* src) {
    check_smem(src, 16, 16, "epilogue staging load");
    check_global(dst, 16, 16, true, "epilogue store");
    std::memcpy(dst, src, 16);
  }
  static void store_float2(float* dst, float v0, float v1) {
    check_global(dst, 8, 8, true, "partials store");
    dst[0] = v0;
    dst[1] = v1;
  }
  static uint32_t load_global16(const void* src) {
    check_global(src, 2, 2, false, "16-bit NCHW load");
    uint16_t v;
    std::memcpy(&v, src, 2);
    return v;
  }
  static void store_shared16(void* dst, uint32_t bits) {
    check_smem(dst, 2, 2, "16-bit shared store");
    const uint16_t v = static_cast<uint16_t>(bits);
    std::memcpy(dst, &v, 2);
  }
  template <typename T>
  static void store_element(T* dst, float v) {
    check_global(dst, sizeof(T), sizeof(T), true, "NCHW output store");
    *dst = from_float<T>(v);
  }
};

// Runs one block: 128 fibers executing body(tid) until all finish.
// kSmemGuard bytes past the body's shared memory hold a pattern that must survive the block: the
// body's plain C++ accesses (offset and row tables) are not checked one by one like the Arch ones.
constexpr size_t kSmemGuard = 256;
constexpr unsigned char kGuardByte = 0xa5;

void run_block(Runtime& rt, const std::function<void(int)>& body) {
  std::memset(rt.smem, 0xff, rt.smem_size);  // NaN in bf16, fp16 and float
  std::memset(rt.smem + rt.smem_size, kGuardByte, kSmemGuard);
  rt.body = body;
  rt.bar_count = 0;
  for (WarpState& w : rt.warps) w.count = 0;
  for (int t = 0; t < kThreads; ++t) {
    Fiber& f = rt.fibers[t];
    f.done = false;
    f.wait_ptr = nullptr;
    f.open.clear();
    f.groups.clear();
    if (f.stack.empty()) f.stack.resize(kStack);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &rt.main_ctx;
    makecontext(&f.ctx, trampoline, 0);
  }
  std::vector<int> order(kThreads);
  for (int t = 0; t < kThreads; ++t) order[t] = t;
  auto runnable = [&](int t) {
    const Fiber& f = rt.fibers[t];
    return !f.done && !(f.wait_ptr != nullptr && *f.wait_ptr == f.wait_value);
  };
  int favoured = -1, favour_rounds = 0;
  while (true) {
    if (rt.shuffle) std::shuffle(order.begin(), order.end(), rt.rng);
    // Warp skew: now and then one warp runs alone for a stretch of rounds (as far as it can get
    // before a barrier), so that a missing barrier between warps shows as a wrong result.
    if (rt.skew && favour_rounds == 0 && rt.rng() % 4 == 0) {
      favoured = static_cast<int>(rt.rng() % (kThreads / 32));
      favour_rounds = 1 + static_cast<int>(rt.rng() % 64);
    }
    bool any_favoured = false;
    if (favour_rounds > 0) {
      --favour_rounds;
      for (int t = favoured * 32; t < favoured * 32 + 32; ++t) any_favoured = any_favoured || runnable(t);
      if (!any_favoured) favour_rounds = 0;
    }
    bool alive = false, progressed = false;
    for (const int t : order) {
      Fiber& f = rt.fibers[t];
      if (f.done) continue;
      alive = true;
      if (!runnable(t) || (any_favoured && t / 32 != favoured)) continue;
      f.wait_ptr = nullptr;
      rt.current = t;
      swapcontext(&rt.main_ctx, &f.ctx);
      progressed = true;
    }
    if (!alive) break;
    if (!progressed) fail("deadlock: a barrier or warp collective is not reached by every thread");
  }
  for (const Fiber& f : rt.fibers) {
    if (!f.open.empty()) fail("cp.async copies issued but never committed");
    if (!f.groups.empty()) fail("cp.async groups still pending when the block ended");
  }
  if (rt.bar_count != 0) fail("barrier count nonzero at block end");
  for (size_t i = 0; i < kSmemGuard; ++i) {
    if (rt.smem[rt.smem_size + i] != kGuardByte) fail("a write past the body's shared memory");
  }
}

// ---- problems and the float64 reference ------------------------------------------------------------

struct Config {
  int64_t batch, cin, cout, groups, h, w;
  int64_t sh, sw, ph, pw, dh, dw;
  bool bias;
  int64_t chunk_len;  // weight-gradient pixel chunk (multiple of 32)
};

int64_t out_size(int64_t in, int64_t pad, int64_t dil, int64_t stride) {
  const int64_t span = 2 * dil + 1;
  return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / stride + 1;
}

struct Stats {
  double max_err = 0, max_ref = 0;
  int64_t bad = 0;
};

// Layout helpers: a channels_last (n, h, w, c) array as contiguous NCHW, and the NCHW index of
// channels_last element i.
template <typename V>
std::vector<V> to_nchw(const std::vector<V>& v, int64_t n, int64_t h, int64_t w, int64_t c) {
  std::vector<V> out(v.size());
  for (int64_t i = 0; i < n * h * w; ++i)
    for (int64_t ch = 0; ch < c; ++ch) out[((i / (h * w)) * c + ch) * h * w + i % (h * w)] = v[i * c + ch];
  return out;
}
int64_t nchw_index(int64_t i, int64_t h, int64_t w, int64_t c) {
  const int64_t pixel = i / c, ch = i % c;
  return ((pixel / (h * w)) * c + ch) * h * w + pixel % (h * w);
}

// Runs the three passes of one configuration and compares them with a float64 reference: the
// channels_last bodies, or (nchw) the NCHW ones of tensor_core_nchw.cuh.
template <typename T>
bool run_config(const Config& c, bool eager, bool nchw, std::mt19937& rng, bool verbose) {
  constexpr Kind kind = kind_of<T>();
  const int64_t oh = out_size(c.h, c.ph, c.dh, c.sh), ow = out_size(c.w, c.pw, c.dw, c.sw);
  const int64_t cin_g = c.cin / c.groups, cout_g = c.cout / c.groups;
  std::normal_distribution<float> normal;
  auto rand_vec = [&](size_t n) {
    std::vector<T> v(n);
    for (auto& e : v) e = from_float<T>(normal(rng));
    return v;
  };
  // channels_last activations, (C_out, C_in/G, 5) weight
  std::vector<T> x = rand_vec(c.batch * c.h * c.w * c.cin);
  std::vector<T> wt = rand_vec(c.cout * cin_g * kTaps);
  std::vector<T> bias = rand_vec(c.cout);
  std::vector<T> dy = rand_vec(c.batch * oh * ow * c.cout);
  // The operands as the tensor cores multiply them: TF32-rounded for float (so that the reference
  // differs from the kernels by the float32 accumulation only, and a missing rounding shows).
  auto q = [&](T v) { return double(kind == Kind::tf32 ? round_to_tf32(to_float(v)) : to_float(v)); };
  auto X = [&](int64_t n, int64_t y, int64_t xx, int64_t ch) { return q(x[((n * c.h + y) * c.w + xx) * c.cin + ch]); };
  auto W = [&](int64_t co, int64_t ci, int t) { return q(wt[(co * cin_g + ci) * kTaps + t]); };
  auto DY = [&](int64_t n, int64_t y, int64_t xx, int64_t ch) { return q(dy[((n * oh + y) * ow + xx) * c.cout + ch]); };

  // Reference: forward, input gradient and weight gradient in float64.
  std::vector<double> ref_y(c.batch * oh * ow * c.cout, 0.0), ref_dx(c.batch * c.h * c.w * c.cin, 0.0),
      ref_dw(c.cout * cin_g * kTaps, 0.0);
  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        for (int64_t co = 0; co < c.cout; ++co) {
          const int64_t g = co / cout_g;
          double s = c.bias ? double(to_float(bias[co])) : 0.0;
          const double gy = DY(n, i, j, co);
          for (int t = 0; t < kTaps; ++t) {
            const int64_t y = i * c.sh - c.ph + kTapRow[t] * c.dh, xx = j * c.sw - c.pw + kTapCol[t] * c.dw;
            if (y < 0 || y >= c.h || xx < 0 || xx >= c.w) continue;
            for (int64_t ci = 0; ci < cin_g; ++ci) {
              const double xv = X(n, y, xx, g * cin_g + ci);
              s += W(co, ci, t) * xv;
              ref_dx[((n * c.h + y) * c.w + xx) * c.cin + g * cin_g + ci] += W(co, ci, t) * gy;
              ref_dw[(co * cin_g + ci) * kTaps + t] += xv * gy;
            }
          }
          ref_y[((n * oh + i) * ow + j) * c.cout + co] = s;
        }

  Runtime rt;
  g_rt = &rt;
  rt.eager_copies = eager;
  rt.kind = kind;
  rt.rng.seed(static_cast<unsigned>(rng()));
  const int smem_bytes = std::max({tc::GatherSmem<T, 128>::kBytes, tc::GatherSmem<T, 64>::kBytes,
                                   tc::Tile<T>::kWgradSmemBytes, tc::NchwGatherSmem<T, 128>::kBytes,
                                   tc::NchwGatherSmem<T, 64>::kBytes, tc::NchwWgradSmem<T>::kBytes});
  std::vector<unsigned char> smem_buffer(smem_bytes + 16 + kSmemGuard);
  rt.smem = smem_buffer.data() + (16 - reinterpret_cast<uintptr_t>(smem_buffer.data()) % 16) % 16;
  rt.smem_size = smem_bytes;

  auto reg = [&](const void* p, size_t bytes, bool writable, const char* name) {
    rt.regions.push_back({static_cast<const unsigned char*>(p), bytes, writable, name});
  };
  // Emulated global memory must be 16-byte aligned like cudaMalloc's: copy into aligned buffers.
  struct Aligned {
    std::vector<unsigned char> raw;
    unsigned char* p;
  };
  auto aligned = [&](const void* src, size_t bytes, unsigned char fill) {
    Aligned a;
    a.raw.assign(bytes + 32, fill);
    a.p = a.raw.data() + (16 - reinterpret_cast<uintptr_t>(a.raw.data()) % 16) % 16;
    if (src) std::memcpy(a.p, src, bytes);
    return a;
  };

  bool ok = true;
  auto compare = [&](const char* what, const std::vector<double>& ref, auto get, double rel) {
    Stats st;
    for (size_t i = 0; i < ref.size(); ++i) st.max_ref = std::max(st.max_ref, std::abs(ref[i]));
    for (size_t i = 0; i < ref.size(); ++i) {
      const double v = get(i);
      const double err = std::abs(v - ref[i]);
      if (!(err <= rel * std::abs(ref[i]) + 1e-5 * std::max(st.max_ref, 1.0))) ++st.bad;
      if (!(err <= st.max_err)) st.max_err = std::isnan(err) ? INFINITY : err;
    }
    if (st.bad || verbose)
      std::printf("  %-12s max err %.3e (max |ref| %.3e)%s\n", what, st.max_err, st.max_ref,
                  st.bad ? (" MISMATCHES: " + std::to_string(st.bad)).c_str() : "");
    if (st.bad) ok = false;
  };
  // One rounding of the result to T (half an ulp, doubled); float results are not rounded again.
  const double round_rel = kind == Kind::bf16 ? 1.0 / 256 : kind == Kind::f16 ? 1.0 / 2048 : 1e-5;
  constexpr size_t B = sizeof(T);

  // All blocks of a gather GEMM with row tiles of BM, on the body of the layout.
  auto run_gather_rows = [&](auto bm, const tc::GatherGemmParams<T>& p, bool in_nchw) {
    constexpr int BM = decltype(bm)::value;
    const int64_t blocks = tc::gather_blocks(p.rows, p.groups, p.n, BM);
    // Shared-memory accesses are bounds-checked against this body's own size.
    rt.smem_size = in_nchw ? tc::NchwGatherSmem<T, BM>::kBytes : tc::GatherSmem<T, BM>::kBytes;
    for (int64_t b = 0; b < blocks; ++b) {
      if (in_nchw) {
        run_block(rt, [&](int tid) { tc::gather_gemm_block_nchw<T, BM, EmuArch>(p, rt.smem, tid, b); });
      } else {
        run_block(rt, [&](int tid) { tc::gather_gemm_block<T, BM, EmuArch>(p, rt.smem, tid, b); });
      }
    }
  };
  auto run_gather = [&](const tc::GatherGemmParams<T>& p, bool in_nchw, int tile_rows) {
    if (tile_rows == 128) {
      run_gather_rows(std::integral_constant<int, 128>{}, p, in_nchw);
    } else {
      run_gather_rows(std::integral_constant<int, 64>{}, p, in_nchw);
    }
  };
  // Both row tiles must give the same bits (every output sums the same K steps in the same order):
  // `launch_all(tile_rows)` runs a pass into `out` (`bytes`), re-poisoned before each tile.
  auto with_both_row_tiles = [&](unsigned char* out, size_t bytes, const char* what, const auto& launch_all) {
    std::memset(out, 0xff, bytes);
    launch_all(64);
    const std::vector<unsigned char> rows64(out, out + bytes);
    std::memset(out, 0xff, bytes);
    launch_all(128);
    if (std::memcmp(rows64.data(), out, bytes) != 0) {
      std::printf("  %-12s 64-row and 128-row tiles differ\n", what);
      ok = false;
    }
  };

  // ---- forward ----
  {
    rt.regions.clear();
    // [g][t][c_out][c_in]: per tap, the produced channels' rows, K contiguous
    std::vector<T> packed(c.groups * kTaps * cin_g * cout_g);
    for (int64_t g = 0; g < c.groups; ++g)
      for (int t = 0; t < kTaps; ++t)
        for (int64_t j = 0; j < cout_g; ++j)
          for (int64_t ci = 0; ci < cin_g; ++ci)
            packed[((g * kTaps + t) * cout_g + j) * cin_g + ci] = wt[((g * cout_g + j) * cin_g + ci) * kTaps + t];
    const std::vector<T> x_in = nchw ? to_nchw(x, c.batch, c.h, c.w, c.cin) : x;
    Aligned ax = aligned(x_in.data(), x.size() * B, 0), aw = aligned(packed.data(), packed.size() * B, 0),
            ab = aligned(bias.data(), bias.size() * B, 0), ay = aligned(nullptr, ref_y.size() * B, 0xff);
    reg(ax.p, x.size() * B, false, "input");
    reg(aw.p, packed.size() * B, false, "packed weight");
    reg(ay.p, ref_y.size() * B, true, "output");
    tc::GatherGemmParams<T> p;
    p.map = tc::forward_gather_map(c.batch, c.h, c.w, oh, ow, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    p.src = reinterpret_cast<const T*>(ax.p);
    p.dst = reinterpret_cast<T*>(ay.p);
    p.weight = reinterpret_cast<const T*>(aw.p);
    p.bias = c.bias ? reinterpret_cast<const T*>(ab.p) : nullptr;
    p.src_ld = c.cin;
    p.dst_ld = c.cout;
    p.k = static_cast<int>(cin_g);
    p.n = static_cast<int>(cout_g);
    p.groups = static_cast<int>(c.groups);
    tc::finish_gather_params(p);
    with_both_row_tiles(ay.p, ref_y.size() * B, "output", [&](int tile_rows) { run_gather(p, nchw, tile_rows); });
    const T* y = reinterpret_cast<const T*>(ay.p);
    compare("output", ref_y, [&](size_t i) { return double(to_float(y[nchw ? nchw_index(i, oh, ow, c.cout) : i])); },
            round_rel);
  }

  // ---- input gradient ----
  {
    rt.regions.clear();
    // [g][t][c_in][c_out]: the transposed weight, K (= c_out) contiguous
    std::vector<T> packed(c.groups * kTaps * cout_g * cin_g);
    for (int64_t g = 0; g < c.groups; ++g)
      for (int t = 0; t < kTaps; ++t)
        for (int64_t ci = 0; ci < cin_g; ++ci)
          for (int64_t co = 0; co < cout_g; ++co)
            packed[((g * kTaps + t) * cin_g + ci) * cout_g + co] = wt[((g * cout_g + co) * cin_g + ci) * kTaps + t];
    const std::vector<T> dy_in = nchw ? to_nchw(dy, c.batch, oh, ow, c.cout) : dy;
    Aligned ady = aligned(dy_in.data(), dy.size() * B, 0), aw = aligned(packed.data(), packed.size() * B, 0),
            adx = aligned(nullptr, ref_dx.size() * B, 0xff);
    reg(ady.p, dy.size() * B, false, "grad_output");
    reg(aw.p, packed.size() * B, false, "packed weight");
    reg(adx.p, ref_dx.size() * B, true, "grad_input");
    with_both_row_tiles(adx.p, ref_dx.size() * B, "grad_input", [&](int tile_rows) {
    for (int64_t rh = 0; rh < c.sh; ++rh)
      for (int64_t rw = 0; rw < c.sw; ++rw) {
        tc::GatherGemmParams<T> p;
        p.map = tc::input_grad_gather_map(c.batch, c.h, c.w, oh, ow, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, rh, rw);
        p.src = reinterpret_cast<const T*>(ady.p);
        p.dst = reinterpret_cast<T*>(adx.p);
        p.weight = reinterpret_cast<const T*>(aw.p);
        p.bias = nullptr;
        p.src_ld = c.cout;
        p.dst_ld = c.cin;
        p.k = static_cast<int>(cout_g);
        p.n = static_cast<int>(cin_g);
        p.groups = static_cast<int>(c.groups);
        tc::finish_gather_params(p);
        if (p.rows == 0) continue;
        run_gather(p, nchw, tile_rows);
      }
    });
    const T* dx = reinterpret_cast<const T*>(adx.p);
    compare("grad_input", ref_dx, [&](size_t i) { return double(to_float(dx[nchw ? nchw_index(i, c.h, c.w, c.cin) : i])); },
            round_rel);
  }

  // ---- weight gradient ----
  {
    rt.regions.clear();
    const std::vector<T> x_in = nchw ? to_nchw(x, c.batch, c.h, c.w, c.cin) : x;
    const std::vector<T> dy_in = nchw ? to_nchw(dy, c.batch, oh, ow, c.cout) : dy;
    Aligned ax = aligned(x_in.data(), x.size() * B, 0), ady = aligned(dy_in.data(), dy.size() * B, 0);
    reg(ax.p, x.size() * B, false, "input");
    reg(ady.p, dy.size() * B, false, "grad_output");
    tc::WgradParams<T> p;
    p.x = reinterpret_cast<const T*>(ax.p);
    p.dy = reinterpret_cast<const T*>(ady.p);
    p.x_ld = c.cin;
    p.dy_ld = c.cout;
    p.in_h = c.h;
    p.in_w = c.w;
    p.out_h = oh;
    p.out_w = ow;
    p.stride_h = c.sh;
    p.stride_w = c.sw;
    p.chunk_len = c.chunk_len;
    p.k = static_cast<int>(cin_g);
    p.n = static_cast<int>(cout_g);
    p.groups = static_cast<int>(c.groups);
    tc::finish_wgrad_params(p, c.batch, c.ph, c.pw, c.dh, c.dw);
    const int64_t chunks = tc::ceil_div64(p.pixels, p.chunk_len);
    const int64_t width = c.groups * kTaps * cin_g * cout_g;
    std::vector<float> partials_nan(chunks * width, NAN);
    Aligned ap = aligned(partials_nan.data(), partials_nan.size() * 4, 0);
    reg(ap.p, partials_nan.size() * 4, true, "partials");
    p.partials = reinterpret_cast<float*>(ap.p);
    const int64_t blocks = tc::wgrad_blocks(chunks, c.groups, cin_g, cout_g);
    rt.smem_size = nchw ? tc::NchwWgradSmem<T>::kBytes : tc::Tile<T>::kWgradSmemBytes;
    for (int64_t b = 0; b < blocks; ++b) {
      if (nchw) {
        run_block(rt, [&](int tid) { tc::wgrad_block_nchw<T, EmuArch>(p, rt.smem, tid, b); });
      } else {
        run_block(rt, [&](int tid) { tc::wgrad_block<T, EmuArch>(p, rt.smem, tid, b); });
      }
    }
    // Second pass as finish_weight_grad does (fixed order), then [G][5][k][n] -> (C_out, k, 5).
    std::vector<double> dw(c.cout * cin_g * kTaps);
    for (int64_t g = 0; g < c.groups; ++g)
      for (int t = 0; t < kTaps; ++t)
        for (int64_t ci = 0; ci < cin_g; ++ci)
          for (int64_t j = 0; j < cout_g; ++j) {
            float s = 0;
            for (int64_t ch = 0; ch < chunks; ++ch)
              s += p.partials[ch * width + ((g * kTaps + t) * cin_g + ci) * cout_g + j];
            dw[((g * cout_g + j) * cin_g + ci) * kTaps + t] = s;
          }
    compare("grad_weight", ref_dw, [&](size_t i) { return dw[i]; }, 1e-5);
  }
  g_rt = nullptr;
  return ok;
}

}  // namespace emu

int main(int argc, char** argv) {
  using emu::Config;
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  // Self-check of the fp16 rounding against the compiler's, where it has one.
#if defined(__FLT16_MAX__)
  for (float f : {1.0f, -2.5f, 65504.0f, 65520.0f, 1e-5f, 3e-8f, 6e-8f, 0.1f, 1.0009765625f, 1.00146484375f}) {
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    if (bits != emu::to_f16(f).bits) emu::fail("fp16 rounding self-check");
  }
#endif
  // Hand-picked cases that hit every edge, then random ones.
  std::vector<Config> configs = {
      // batch, cin, cout, groups, h, w, sh, sw, ph, pw, dh, dw, bias, chunk_len
      {1, 8, 8, 1, 5, 7, 1, 1, 1, 1, 1, 1, true, 32},        // smallest: one 8-channel chunk, half-steps skipped
      {2, 16, 32, 2, 15, 17, 1, 1, 1, 1, 1, 1, true, 160},   // weight gradient: 5 K steps per chunk, ragged last
      {2, 16, 24, 1, 9, 11, 1, 1, 1, 1, 1, 1, true, 64},     // several m tiles (198 rows), chunks of 64 pixels
      {1, 40, 72, 1, 7, 6, 2, 1, 0, 2, 1, 2, false, 32},     // K tail (40 = 32 + 8), 2 n tiles (72), stride 2
      {2, 32, 16, 2, 8, 9, 2, 3, 2, 1, 3, 1, true, 96},      // groups 2, stride (2, 3), dilation (3, 1)
      {1, 32, 64, 4, 13, 5, 3, 2, 0, 1, 2, 1, true, 32},     // groups 4 (8 and 16 channels per group), stride 3
      {1, 8, 16, 1, 4, 4, 3, 3, 0, 0, 1, 1, false, 32},      // stride 3 > dilation: classes no tap reaches
      {3, 24, 8, 1, 3, 12, 1, 2, 1, 0, 1, 3, true, 32},      // pixel chunk boundaries across images
      {1, 136, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1, false, 32},     // 5 * 136 = 680 weight-gradient rows: 6 m tiles
      // float (TF32) only: channels per group multiples of 4, not 8
      {1, 4, 4, 1, 5, 6, 1, 1, 1, 1, 1, 1, true, 32},        // one 4-channel chunk: 3 of 4 K chunks empty
      {2, 36, 68, 1, 7, 9, 1, 2, 1, 1, 1, 1, true, 64},      // K tail (36 = 2 * 16 + 4), 2 n tiles (68)
      {1, 24, 16, 2, 9, 5, 2, 1, 2, 0, 2, 1, false, 96},     // groups 2 (12 and 8 channels per group), stride 2
      {1, 52, 20, 1, 4, 11, 1, 1, 0, 1, 1, 2, true, 32},     // 5 * 52 = 260 weight-gradient rows: 3 m tiles
  };
  std::mt19937 cfg_rng(7);
  const int random_count = quick ? 6 : 30;
  const size_t fixed = configs.size();
  while (configs.size() < fixed + random_count) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(cfg_rng); };
    Config c;
    c.groups = std::vector<int>{1, 2, 4}[pick(0, 2)];
    const int unit = pick(0, 2) == 0 ? 4 : 8;  // 4: channel counts only float takes
    c.cin = c.groups * unit * pick(1, 3);
    c.cout = c.groups * unit * pick(1, 3);
    c.batch = pick(1, 3);
    c.sh = pick(1, 3), c.sw = pick(1, 3), c.ph = pick(0, 2), c.pw = pick(0, 2), c.dh = pick(1, 3), c.dw = pick(1, 3);
    c.h = pick(std::max<int>(1, 2 * c.dh + 1 - 2 * c.ph), 15) | 1;  // odd sizes
    c.w = pick(std::max<int>(1, 2 * c.dw + 1 - 2 * c.pw), 15) | 1;
    c.bias = pick(0, 3) != 0;
    c.chunk_len = 32 * std::vector<int>{1, 2, 3, 4, 8}[pick(0, 4)];
    if (emu::out_size(c.h, c.ph, c.dh, c.sh) <= 0 || emu::out_size(c.w, c.pw, c.dw, c.sw) <= 0) continue;
    configs.push_back(c);
  }
  if (quick) configs.resize(std::min<size_t>(configs.size(), fixed + 6));
  std::mt19937 rng(1);
  int failures = 0, runs = 0;
  for (size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    // 16-bit types need channels per group in multiples of 8, float in multiples of 4.
    const bool any_type = (c.cin / c.groups) % 8 == 0 && (c.cout / c.groups) % 8 == 0;
    for (int variant = 0; variant < 3; ++variant) {
      const emu::Kind kind = any_type ? static_cast<emu::Kind>((i + variant) % 3) : emu::Kind::tf32;
      const bool eager = (i + variant) % 2 == 1;  // copies landing at issue, or as late as allowed
      // Both layouts: the channels_last bodies and the NCHW ones.
      for (int layout = 0; layout < 2; ++layout) {
        const bool nchw = layout == 1;
        std::printf(
            "config %zu: n%lld c%lldx%lld g%lld %lldx%lld s%lld%lld p%lld%lld d%lld%lld bias%d chunk%lld %s %s %s\n", i,
            (long long)c.batch, (long long)c.cin, (long long)c.cout, (long long)c.groups, (long long)c.h,
            (long long)c.w, (long long)c.sh, (long long)c.sw, (long long)c.ph, (long long)c.pw, (long long)c.dh,
            (long long)c.dw, int(c.bias), (long long)c.chunk_len, emu::kind_name(kind),
            nchw ? "nchw" : "channels_last", eager ? "copies-at-issue" : "copies-at-wait");
        const bool ok = kind == emu::Kind::bf16  ? emu::run_config<emu::bf16>(c, eager, nchw, rng, false)
                        : kind == emu::Kind::f16 ? emu::run_config<emu::f16>(c, eager, nchw, rng, false)
                                                 : emu::run_config<float>(c, eager, nchw, rng, false);
        ++runs;
        if (!ok) ++failures;
      }
    }
  }
  std::printf("%s: %d of %d runs failed\n", failures ? "FAILED" : "ALL OK", failures, runs);
  return failures ? 1 : 0;
}
