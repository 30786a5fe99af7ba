// The direct, tiled, depthwise (both layouts) and (with SKELETON_SIMT_TENSOR_CORES) tensor-core CUDA kernel files,
// compiled as C++ for the SIMT runtime, and their host launchers exposed as torch.ops.skeleton_simt.*
// on CPU tensors (tests/test_cuda_kernels_on_cpu.py builds this with torch.utils.cpp_extension and
// checks them against the float64 oracle).
//
// The ATen headers come first, so that the runtime's keyword macros never touch them.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "simt_runtime.h"
#if defined(SKELETON_SIMT_TENSOR_CORES)
#include "tensor_core_arch.h"
#endif

#include "../../csrc/cuda/dense_kernels.cu"
#include "../../csrc/cuda/depthwise_kernels.cu"
#include "../../csrc/cuda/depthwise_nchw_kernels.cu"
#include "../../csrc/cuda/partial_sums.cu"
#include "../../csrc/cuda/tiled_kernels.cu"
#if defined(SKELETON_SIMT_TENSOR_CORES)  // needs cuda_bf16.h / cuda_fp16.h (a CUDA toolkit's headers)
#include "../../csrc/cuda/tensor_core_kernels.cu"
#endif

namespace {

using namespace skeleton_cuda::gpu;

// [batch, C_in, H, W, C_out, H_out, W_out, groups, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w]
ConvShape shape_of(c10::IntArrayRef v) {
  TORCH_CHECK(v.size() == 14, "shape: expected 14 values");
  return ConvShape{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]};
}

// The launchers of launchers.cuh as ops: one wrapper per pass, instantiated for both families.
template <void (*Launcher)(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, const ConvShape&)>
void forward_op(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias, at::Tensor y,
                c10::IntArrayRef shape) {
  Launcher(x, w, bias.has_value() ? *bias : at::Tensor(), y, shape_of(shape));
}

template <void (*Launcher)(const at::Tensor&, const at::Tensor&, at::Tensor&, const ConvShape&)>
void input_grad_op(const at::Tensor& dy, const at::Tensor& w, at::Tensor dx, c10::IntArrayRef shape) {
  Launcher(dy, w, dx, shape_of(shape));
}

template <at::Tensor (*Launcher)(const at::Tensor&, const at::Tensor&, const ConvShape&)>
at::Tensor weight_grad_op(const at::Tensor& dy, const at::Tensor& x, c10::IntArrayRef shape) {
  return Launcher(dy, x, shape_of(shape));
}

template <WeightGrads (*Launcher)(const at::Tensor&, const at::Tensor&, const ConvShape&)>
std::tuple<at::Tensor, at::Tensor> weight_and_bias_grad_op(const at::Tensor& dy, const at::Tensor& x,
                                                           c10::IntArrayRef shape) {
  WeightGrads grads = Launcher(dy, x, shape_of(shape));
  return {grads.weight, grads.bias};
}

bool tiled_eligible_op(c10::IntArrayRef shape) { return tiled_eligible(shape_of(shape)); }

#if defined(SKELETON_SIMT_TENSOR_CORES)
bool tensor_core_eligible_op(c10::IntArrayRef shape, at::ScalarType dtype) {
  return tensor_core_eligible(shape_of(shape), dtype, 0);
}

// The row tile the launchers pick for a gather GEMM of rows x n per group on `sms` SMs.
int64_t tensor_core_gather_rows_op(int64_t rows, int64_t groups, int64_t n, int64_t sms) {
  return gather_rows_for(rows, groups, n, sms);
}
#endif

// FastDivmod (index_division.cuh) against plain division: edge cases and `random_pairs` random
// (dividend, divisor) pairs below 2^31; returns how many quotients were wrong.
int64_t fast_division_mismatches(int64_t random_pairs) {
  int64_t wrong = 0;
  auto check = [&](uint32_t n, uint32_t d) { wrong += FastDivmod(d).div(n) != n / d; };
  const uint32_t kMax = 0x7fffffffu;
  std::vector<uint32_t> dividends = {0, 1, 2, 3, kMax, kMax - 1};
  for (int b = 1; b < 31; ++b) {
    for (int64_t delta = -2; delta <= 2; ++delta) {
      dividends.push_back(static_cast<uint32_t>((int64_t{1} << b) + delta));
    }
  }
  for (uint32_t d = 1; d <= 4096; ++d) {
    for (uint32_t n : dividends) check(n, d);
    for (uint32_t k = 1; k < 4; ++k) check(std::min<uint64_t>(uint64_t{d} * k * 1000 - 1, kMax), d);
  }
  for (uint32_t n : dividends) {
    for (uint32_t d : dividends) {
      if (d >= 1) check(n, d);
    }
  }
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state) & kMax;
  };
  for (int64_t i = 0; i < random_pairs; ++i) {
    const uint32_t d = next() >> (next() % 31);
    check(next(), d == 0 ? 1 : d);
  }
  return wrong;
}

// Kernels with the bugs the runtime must report, for its own test.
__global__ void barrier_not_reached_by_all(int* out) {
  if (threadIdx.x == 0) {
    return;  // thread 0 skips the barrier: a deadlock (undefined behaviour on a GPU)
  }
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_of_diverged_lanes(float* out) {
  const float v = threadIdx.x % 2 ? __shfl_down_sync(0xffffffffu, 1.0f, 1) : __shfl_down_sync(0xffffffffu, 1.0f, 2);
  out[threadIdx.x] = v;
}

void runtime_self_test(c10::string_view which) {
  std::vector<int> ints(64);
  std::vector<float> floats(64);
  if (which == "barrier") {
    launch(barrier_not_reached_by_all, dim3(1), dim3(64), ints.data());
  } else if (which == "shuffle") {
    launch(shuffle_of_diverged_lanes, dim3(1), dim3(64), floats.data());
  } else {
    TORCH_CHECK(false, "runtime_self_test: unknown case ", which);
  }
}

}  // namespace

TORCH_LIBRARY(skeleton_simt, m) {
  m.def("runtime_self_test(str which) -> ()", &runtime_self_test);
  m.def("fast_division_mismatches(int random_pairs) -> int", &fast_division_mismatches);
  m.def("dense_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()", &forward_op<dense_forward>);
  m.def("dense_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()", &input_grad_op<dense_input_grad>);
  m.def("dense_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor", &weight_grad_op<dense_weight_grad>);
  m.def("tiled_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()", &forward_op<tiled_forward>);
  m.def("tiled_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()", &input_grad_op<tiled_input_grad>);
  m.def("tiled_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor", &weight_grad_op<tiled_weight_grad>);
  m.def("tiled_eligible(int[] shape) -> bool", &tiled_eligible_op);
#if defined(SKELETON_SIMT_TENSOR_CORES)
  m.def("tensor_core_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()",
        &forward_op<tensor_core_forward>);
  m.def("tensor_core_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()",
        &input_grad_op<tensor_core_input_grad>);
  m.def("tensor_core_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor",
        &weight_grad_op<tensor_core_weight_grad>);
  m.def("tensor_core_nchw_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()",
        &forward_op<tensor_core_forward_nchw>);
  m.def("tensor_core_nchw_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()",
        &input_grad_op<tensor_core_input_grad_nchw>);
  m.def("tensor_core_nchw_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor",
        &weight_grad_op<tensor_core_weight_grad_nchw>);
  m.def("tensor_core_eligible(int[] shape, ScalarType dtype) -> bool", &tensor_core_eligible_op);
  m.def("tensor_core_gather_rows(int rows, int groups, int n, int sms) -> int", &tensor_core_gather_rows_op);
  m.def("tensor_core_gather_launches() -> int[]", &tensor_core_gather_launches);
#endif
  m.def("depthwise_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()",
        &forward_op<depthwise_forward>);
  m.def("depthwise_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()",
        &input_grad_op<depthwise_input_grad>);
  m.def("depthwise_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor", &weight_grad_op<depthwise_weight_grad>);
  m.def("depthwise_weight_and_bias_grad(Tensor dy, Tensor x, int[] shape) -> (Tensor, Tensor)",
        &weight_and_bias_grad_op<depthwise_weight_and_bias_grad>);
  m.def("depthwise_nchw_forward(Tensor x, Tensor w, Tensor? bias, Tensor(a!) y, int[] shape) -> ()",
        &forward_op<depthwise_nchw_forward>);
  m.def("depthwise_nchw_input_grad(Tensor dy, Tensor w, Tensor(a!) dx, int[] shape) -> ()",
        &input_grad_op<depthwise_nchw_input_grad>);
  m.def("depthwise_nchw_weight_grad(Tensor dy, Tensor x, int[] shape) -> Tensor",
        &weight_grad_op<depthwise_nchw_weight_grad>);
  m.def("depthwise_nchw_weight_and_bias_grad(Tensor dy, Tensor x, int[] shape) -> (Tensor, Tensor)",
        &weight_and_bias_grad_op<depthwise_nchw_weight_and_bias_grad>);
}
