// The fiber scheduler behind simt_runtime.h: blocks one after another, the threads of a block as
// fibers, barriers and warp shuffles as points where a fiber waits for the others.
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef SKELETON_SIMT_EMULATOR
#define SKELETON_SIMT_EMULATOR 1
#endif
#include "simt_runtime.h"

namespace simt {
namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr int kWarpSize = 32;

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  uint3 index{0, 0, 0};
  bool done = false;
  const int* wait_on = nullptr;  // blocked while *wait_on == wait_value
  int wait_value = 0;
};

struct Warp {
  int arrived = 0, epoch = 0;
  unsigned offset = 0, mask = 0;
  bool mismatch = false;
  double in[kWarpSize] = {}, out[kWarpSize] = {};
  // warp_collective
  int op_arrived = 0, op_epoch = 0, op = 0;
  std::vector<unsigned char> op_in, op_out;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int threads = 0;
  int barrier_arrived = 0, barrier_epoch = 0;
  int current = -1;
  ucontext_t scheduler;
  const std::function<void()>* body = nullptr;
  std::mt19937 rng{20261125};
};

Block g_block;

void wait_while(const int* value, int unchanged) {
  Fiber& f = g_block.fibers[g_block.current];
  f.wait_on = value;
  f.wait_value = unchanged;
  swapcontext(&f.context, &g_block.scheduler);
}

void fiber_entry() {
  (*g_block.body)();
  g_block.fibers[g_block.current].done = true;
}  // returns to uc_link, the scheduler

int linear_thread() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

void run_block() {
  Block& b = g_block;
  b.barrier_arrived = 0;
  for (Warp& w : b.warps) {
    w.arrived = 0;
    w.op_arrived = 0;
  }
  for (int t = 0; t < b.threads; ++t) {
    Fiber& f = b.fibers[t];
    f.done = false;
    f.wait_on = nullptr;
    f.index = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
    if (f.stack.empty()) {
      f.stack.resize(kStackBytes);
    }
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.data();
    f.context.uc_stack.ss_size = f.stack.size();
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  std::vector<int> order(b.threads);
  for (int t = 0; t < b.threads; ++t) {
    order[t] = t;
  }
  auto runnable = [&](int t) {
    const Fiber& f = b.fibers[t];
    return !f.done && !(f.wait_on != nullptr && *f.wait_on == f.wait_value);
  };
  const int warps = (b.threads + kWarpSize - 1) / kWarpSize;
  int favoured = -1, favour_sweeps = 0;
  while (true) {
    std::shuffle(order.begin(), order.end(), b.rng);
    // Warp skew: now and then one warp runs alone for a stretch of sweeps, as far as it gets
    // before a barrier, so that a missing barrier between warps shows as a wrong result.
    if (favour_sweeps == 0 && warps > 1 && b.rng() % 4 == 0) {
      favoured = static_cast<int>(b.rng() % warps);
      favour_sweeps = 1 + static_cast<int>(b.rng() % 16);
    }
    bool any_favoured = false;
    if (favour_sweeps > 0) {
      --favour_sweeps;
      for (int t = favoured * kWarpSize; t < std::min(b.threads, (favoured + 1) * kWarpSize); ++t) {
        any_favoured = any_favoured || runnable(t);
      }
      if (!any_favoured) {
        favour_sweeps = 0;
      }
    }
    bool alive = false, progressed = false;
    for (const int t : order) {
      Fiber& f = b.fibers[t];
      if (f.done) {
        continue;
      }
      alive = true;
      if (!runnable(t) || (any_favoured && t / kWarpSize != favoured)) {
        continue;
      }
      f.wait_on = nullptr;
      b.current = t;
      threadIdx = f.index;
      swapcontext(&b.scheduler, &f.context);
      progressed = true;
    }
    if (!alive) {
      break;
    }
    if (!progressed) {
      throw std::runtime_error("SIMT emulator: deadlock in block (" + std::to_string(blockIdx.x) + ", " +
                               std::to_string(blockIdx.y) + "): a __syncthreads() or warp shuffle that not "
                               "every thread of the block or warp reaches");
    }
  }
  if (b.barrier_arrived != 0) {
    throw std::runtime_error("SIMT emulator: threads ended while others waited at a barrier");
  }
  for (const Warp& w : b.warps) {
    if (w.mismatch) {
      throw std::runtime_error("SIMT emulator: lanes of one warp asked for different shuffles or instructions");
    }
  }
}

}  // namespace

void sync_threads() {
  Block& b = g_block;
  const int epoch = b.barrier_epoch;
  if (++b.barrier_arrived == b.threads) {
    b.barrier_arrived = 0;
    ++b.barrier_epoch;
  } else {
    wait_while(&b.barrier_epoch, epoch);
  }
  threadIdx = b.fibers[b.current].index;
}

double shuffle_down(double value, unsigned offset, unsigned mask) {
  Block& b = g_block;
  const int tid = linear_thread();
  const int lane = tid % kWarpSize;
  Warp& w = b.warps[tid / kWarpSize];
  const int lanes = std::min(kWarpSize, b.threads - (tid / kWarpSize) * kWarpSize);
  if (w.arrived == 0) {
    w.offset = offset;
    w.mask = mask;
  } else if (w.offset != offset || w.mask != mask) {
    w.mismatch = true;
  }
  const unsigned full = lanes == kWarpSize ? 0xffffffffu : (1u << lanes) - 1;
  if ((mask & full) != full) {
    throw std::runtime_error("SIMT emulator: a shuffle whose mask leaves out lanes of the warp");
  }
  w.in[lane] = value;
  const int epoch = w.epoch;
  if (++w.arrived == lanes) {
    for (int l = 0; l < lanes; ++l) {
      const unsigned source = static_cast<unsigned>(l) + w.offset;
      w.out[l] = source < static_cast<unsigned>(lanes) ? w.in[source] : w.in[l];
    }
    w.arrived = 0;
    ++w.epoch;
  } else {
    wait_while(&w.epoch, epoch);
  }
  threadIdx = b.fibers[b.current].index;
  return w.out[lane];
}

void warp_collective(int op, const void* in, size_t in_bytes, void* out, size_t out_bytes,
                     const std::function<void(const unsigned char* ins, unsigned char* outs)>& compute) {
  Block& b = g_block;
  const int tid = linear_thread();
  const int lane = tid % kWarpSize;
  Warp& w = b.warps[tid / kWarpSize];
  if (b.threads - (tid / kWarpSize) * kWarpSize < kWarpSize) {
    throw std::runtime_error("SIMT emulator: a warp-collective instruction in a partial warp");
  }
  if (w.op_arrived == 0) {
    w.op = op;
    w.op_in.assign(kWarpSize * in_bytes, 0);
  } else if (w.op != op) {
    w.mismatch = true;
  }
  std::memcpy(w.op_in.data() + lane * in_bytes, in, in_bytes);
  const int epoch = w.op_epoch;
  if (++w.op_arrived == kWarpSize) {
    // Only now are the previous results free: every lane read its own before it arrived here.
    w.op_out.assign(kWarpSize * out_bytes, 0);
    compute(w.op_in.data(), w.op_out.data());
    w.op_arrived = 0;
    ++w.op_epoch;
  } else {
    wait_while(&w.op_epoch, epoch);
  }
  threadIdx = b.fibers[b.current].index;
  std::memcpy(out, w.op_out.data() + lane * out_bytes, out_bytes);
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || block.z > 64) {
    throw std::runtime_error("SIMT emulator: invalid launch configuration");
  }
  Block& b = g_block;
  b.threads = static_cast<int>(threads);
  if (b.fibers.size() < threads) {
    b.fibers.resize(threads);
  }
  b.warps.assign((threads + kWarpSize - 1) / kWarpSize, Warp{});
  b.body = &body;
  blockDim = block;
  gridDim = grid;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        run_block();
      }
    }
  }
}

}  // namespace simt
