// CUDA entry points of skeleton_conv2d and skeleton_conv2d_backward: the argument checks shared
// with the CPU backend, the device guard, layouts and allocation, and the choice of kernel family:
//   depthwise layers (groups == C_in == C_out)  -> depthwise_kernels.cu, channels_last packs
//   SKELETON_CUDA_TENSOR_CORES=1 and an eligible
//   layer (bf16/fp16 with channels per group % 8
//   == 0, or fp32 with % 4 == 0 when TF32 is
//   allowed for convolutions; sm_80+)           -> tensor_core_kernels.cu, implicit GEMMs (opt-in:
//                                                  not yet validated on a GPU), channels_last; NCHW
//                                                  inputs in NCHW (tensor_core_nchw.cuh)
//   every other layer                           -> tiled_kernels.cu, implicit GEMMs on CUDA cores,
//                                                  channels_last (the default)
//   layers beyond the tiled kernels' 32-bit
//   coordinates, or SKELETON_CUDA_DIRECT_KERNELS=1 -> dense_kernels.cu, direct kernels (any layout)
// Results follow the CPU backend: output and grad_input in input.suggest_memory_format(),
// grad_weight contiguous, masked-out gradients as empty (0,) tensors, every reduction deterministic.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "../skeleton_conv2d.h"
#include "launchers.cuh"
#include "tf32_policy.h"

namespace skeleton_cuda {
namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

bool is_depthwise(const at::Tensor& weight, int64_t groups) {
  return weight.size(1) == 1 && weight.size(0) == groups;
}

gpu::ConvShape make_shape(const at::Tensor& input, const at::Tensor& weight,
                          const std::array<int64_t, 2>& out_hw, const ConvParams& p) {
  gpu::ConvShape s{};
  s.batch = input.size(0);
  s.in_channels = input.size(1);
  s.in_h = input.size(2);
  s.in_w = input.size(3);
  s.out_channels = weight.size(0);
  s.out_h = out_hw[0];
  s.out_w = out_hw[1];
  s.groups = p.groups;
  s.stride_h = p.stride[0];
  s.stride_w = p.stride[1];
  s.pad_h = p.padding[0];
  s.pad_w = p.padding[1];
  s.dil_h = p.dilation[0];
  s.dil_w = p.dilation[1];
  return s;
}

at::Tensor empty_in_format(c10::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  return at::empty(sizes, options.memory_format(format));
}

// The tensor-core kernels are opt-in until they have been validated on a GPU: they run only when the
// environment variable SKELETON_CUDA_TENSOR_CORES is "1" (read at every call, so tests can toggle
// it) and the layer qualifies; float32 layers also need TF32 allowed for convolutions, the flag
// nn.Conv2d obeys (on by default), since TF32 keeps 10 of float32's 23 mantissa bits. Call under the
// device guard: eligibility queries the current device.
bool use_tensor_cores(const at::Tensor& input, const gpu::ConvShape& s) {
  const char* flag = std::getenv("SKELETON_CUDA_TENSOR_CORES");
  if (flag == nullptr || std::strcmp(flag, "1") != 0) {
    return false;
  }
  if (input.scalar_type() == at::kFloat && !gpu::conv_allows_tf32()) {
    return false;
  }
  return gpu::tensor_core_eligible(s, input.scalar_type(), input.device().index());
}

// Whether a tensor-core layer runs the NCHW kernels on the caller's NCHW memory rather than
// converting to channels_last and back. By default float32 does (its NCHW kernels copy with
// cp.async like the channels_last ones) and the 16-bit types do not: having no 2-byte cp.async,
// their NCHW kernels gather with plain loads that each warp waits for before its MMA, so whether
// they beat the conversion is for a GPU to say. SKELETON_CUDA_TENSOR_CORES_NCHW=1 sends every type
// to the NCHW kernels, =0 none, so that a benchmark can compare (read at every call).
bool tensor_cores_in_nchw(const at::Tensor& input) {
  if (input.suggest_memory_format() != at::MemoryFormat::Contiguous) {
    return false;
  }
  const char* flag = std::getenv("SKELETON_CUDA_TENSOR_CORES_NCHW");
  if (flag != nullptr && std::strcmp(flag, "0") == 0) {
    return false;
  }
  if (flag != nullptr && std::strcmp(flag, "1") == 0) {
    return true;
  }
  return input.scalar_type() == at::kFloat;
}

// The dense path without tensor cores: the tiled kernels unless the layer exceeds them, or
// SKELETON_CUDA_DIRECT_KERNELS=1 asks for the direct kernels (read at every call: tests and
// benchmarks compare the two).
bool use_tiled(const gpu::ConvShape& s) {
  const char* flag = std::getenv("SKELETON_CUDA_DIRECT_KERNELS");
  if (flag != nullptr && std::strcmp(flag, "1") == 0) {
    return false;
  }
  return gpu::tiled_eligible(s);
}

// The kernel families, of which one runs a layer (all three passes), and their launchers.
enum class Family { kDepthwise, kDepthwiseNchw, kTensorCores, kTensorCoresNchw, kTiled, kDirect };

struct FamilyKernels {
  void (*forward)(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                  const gpu::ConvShape& s);
  void (*input_grad)(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const gpu::ConvShape& s);
  at::Tensor (*weight_grad)(const at::Tensor& dy, const at::Tensor& x, const gpu::ConvShape& s);
  // Weight and bias gradient in one pass, for the families whose weight-gradient kernels read every
  // element of dy anyway (the depthwise ones); nullptr for the others, whose bias gradient is a sum.
  gpu::WeightGrads (*weight_and_bias_grad)(const at::Tensor& dy, const at::Tensor& x, const gpu::ConvShape& s);
};

const FamilyKernels& kernels_of(Family family) {
  static const FamilyKernels table[] = {  // in the order of Family
      {gpu::depthwise_forward, gpu::depthwise_input_grad, gpu::depthwise_weight_grad,
       gpu::depthwise_weight_and_bias_grad},
      {gpu::depthwise_nchw_forward, gpu::depthwise_nchw_input_grad, gpu::depthwise_nchw_weight_grad,
       gpu::depthwise_nchw_weight_and_bias_grad},
      {gpu::tensor_core_forward, gpu::tensor_core_input_grad, gpu::tensor_core_weight_grad, nullptr},
      {gpu::tensor_core_forward_nchw, gpu::tensor_core_input_grad_nchw, gpu::tensor_core_weight_grad_nchw, nullptr},
      {gpu::tiled_forward, gpu::tiled_input_grad, gpu::tiled_weight_grad, nullptr},
      {gpu::dense_forward, gpu::dense_input_grad, gpu::dense_weight_grad, nullptr},
  };
  return table[static_cast<int>(family)];
}

// The family of a layer, by preference. Call under the device guard (tensor-core eligibility
// queries the current device).
Family choose_family(const at::Tensor& input, const at::Tensor& weight, const gpu::ConvShape& s, int64_t groups) {
  if (is_depthwise(weight, groups)) {
    // Memory-bound: NCHW activations are read and written in place rather than converted.
    return input.suggest_memory_format() == at::MemoryFormat::Contiguous ? Family::kDepthwiseNchw
                                                                          : Family::kDepthwise;
  }
  if (use_tensor_cores(input, s)) {
    return tensor_cores_in_nchw(input) ? Family::kTensorCoresNchw : Family::kTensorCores;
  }
  return use_tiled(s) ? Family::kTiled : Family::kDirect;
}

// An activation as the family reads it: the direct kernels read any strides; the NCHW tensor cores
// contiguous NCHW data, element-aligned (their element-wise copies); the others channels_last-
// contiguous data (the tensor cores' 16-byte cp.async also 16-byte aligned).
at::Tensor as_read_by(Family family, const at::Tensor& t) {
  switch (family) {
    case Family::kDirect:
      return t;
    case Family::kTensorCores:
      return gpu::aligned_contiguous(t, kChannelsLast, 16);
    case Family::kTensorCoresNchw:
      return gpu::aligned_contiguous(t, at::MemoryFormat::Contiguous, static_cast<uintptr_t>(t.element_size()));
    case Family::kDepthwiseNchw:
      return t.contiguous();
    default:
      return t.contiguous(kChannelsLast);
  }
}

// The layout of the buffers a family's kernels write (the direct kernels write any layout).
at::MemoryFormat written_format(Family family) {
  return family == Family::kTensorCoresNchw || family == Family::kDepthwiseNchw ? at::MemoryFormat::Contiguous
                                                                                : kChannelsLast;
}

// Runs a kernel of `family` that writes `result`, which has the caller's memory format: in place
// when it already has the layout the family writes, else through a buffer in that layout.
template <typename Kernel>
void into_format(Family family, at::Tensor& result, Kernel kernel) {
  if (family == Family::kDirect || result.is_contiguous(written_format(family))) {
    kernel(result);
  } else {
    at::Tensor buffer = empty_in_format(result.sizes(), result.options(), written_format(family));
    kernel(buffer);
    result.copy_(buffer);
  }
}

at::Tensor skeleton_conv2d_cuda(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  const ConvParams p = make_params(stride, padding, dilation, groups);
  const auto out_hw = check_forward_args(input, weight, bias, p);
  const c10::cuda::CUDAGuard device_guard(input.device());

  at::Tensor output = empty_in_format({input.size(0), weight.size(0), out_hw[0], out_hw[1]}, input.options(),
                                      input.suggest_memory_format());
  if (output.numel() == 0) {
    return output;
  }
  const gpu::ConvShape s = make_shape(input, weight, out_hw, p);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const Family family = choose_family(input, weight, s, p.groups);
  const at::Tensor x = as_read_by(family, input);
  into_format(family, output, [&](at::Tensor& y) { kernels_of(family).forward(x, weight, b, y, s); });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> skeleton_conv2d_backward_cuda(
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
  const c10::cuda::CUDAGuard device_guard(input.device());
  const gpu::ConvShape s = make_shape(input, weight, output_size(input.size(2), input.size(3), p), p);
  const Family family = choose_family(input, weight, s, p.groups);
  const FamilyKernels& kernels = kernels_of(family);
  const at::Tensor dy = output_mask[0] || output_mask[1] ? as_read_by(family, grad_output) : at::Tensor();

  at::Tensor grad_input = at::empty({0}, input.options());
  if (output_mask[0]) {
    grad_input = empty_in_format(input.sizes(), input.options(), input.suggest_memory_format());
    if (grad_input.numel() > 0) {
      into_format(family, grad_input, [&](at::Tensor& dx) { kernels.input_grad(dy, weight, dx, s); });
    }
  }

  at::Tensor grad_weight = at::empty({0}, input.options());
  at::Tensor grad_bias = at::empty({0}, input.options());
  const bool bias_with_weight = output_mask[1] && output_mask[2] && kernels.weight_and_bias_grad != nullptr;
  if (output_mask[1]) {
    if (bias_with_weight) {
      gpu::WeightGrads grads = kernels.weight_and_bias_grad(dy, as_read_by(family, input), s);
      grad_weight = std::move(grads.weight);
      grad_bias = std::move(grads.bias);
    } else {
      grad_weight = kernels.weight_grad(dy, as_read_by(family, input), s);
    }
    TORCH_INTERNAL_ASSERT(grad_weight.scalar_type() == weight.scalar_type() && grad_weight.is_contiguous(),
                          "skeleton_conv2d_backward: a weight-gradient launcher broke its contract");
  }

  if (output_mask[2] && !bias_with_weight) {
    // ATen's CUDA sum is deterministic run to run: blocks stage partials that the last block adds
    // in a fixed order (ATen/native/cuda/Reduce.cuh), no atomics on the values. Asked for the
    // weight's dtype it still accumulates 16-bit types in float32 (reduce_dispatch), in one launch.
    grad_bias = grad_output.sum(at::IntArrayRef{0, 2, 3}, /*keepdim=*/false, weight.scalar_type());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

// Calls that took the tensor-core path (forward, input gradient, weight gradient), and those of them
// that ran the NCHW kernels: lets tests check that SKELETON_CUDA_TENSOR_CORES=1 (and
// SKELETON_CUDA_TENSOR_CORES_NCHW) really route there; the gather-GEMM launches by row tile (128 or
// 64 rows, SKELETON_CUDA_GATHER_ROWS). Exist only in builds with CUDA kernels.
// And whether float32 layers may take it (TF32 allowed for convolutions), as the op reads it.
TORCH_LIBRARY_FRAGMENT(skeleton_cuda, m) {
  m.def("tensor_core_calls() -> int[]", &gpu::tensor_core_calls);
  m.def("tensor_core_nchw_calls() -> int[]", &gpu::tensor_core_nchw_calls);
  m.def("tensor_core_gather_launches() -> int[]", &gpu::tensor_core_gather_launches);
  m.def("conv_allows_tf32() -> bool", &gpu::conv_allows_tf32);
}

TORCH_LIBRARY_IMPL(skeleton_cuda, CUDA, m) {
  m.impl("skeleton_conv2d", &skeleton_conv2d_cuda);
  m.impl("skeleton_conv2d_backward", &skeleton_conv2d_backward_cuda);
}

}  // namespace skeleton_cuda
