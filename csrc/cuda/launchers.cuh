// Host launchers of the CUDA kernels, called by skeleton_conv2d_cuda.cu once it has checked the
// arguments, guarded the device and allocated the results. Each launcher dispatches on the dtype
// (float64, float32, float16, bfloat16; fp32 accumulation for the 16-bit types) and launches on the
// current stream.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "common.cuh"

namespace skeleton_cuda {
namespace gpu {

// ---- dense and grouped layers (dense_kernels.cu): any input layout, read through strides ------

// y = conv(x, w) + bias. y is NCHW- or channels_last-contiguous; w is (C_out, C_in / groups, 5);
// bias is undefined or (C_out,) contiguous.
void dense_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s);

// dx = gradient of the input. dx is NCHW- or channels_last-contiguous.
void dense_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Gradient of the weight, (C_out, C_in / groups, 5) in the accumulation dtype (float32, or
// float64 for float64), from a deterministic two-pass reduction.
at::Tensor dense_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// ---- dense and grouped layers, tiled (tiled_kernels.cu): channels_last-contiguous x, y, dy, dx --

// Whether the tiled kernels handle this layer: sizes within their 32-bit coordinates and grid limits.
bool tiled_eligible(const ConvShape& s);

void tiled_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s);

void tiled_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// (C_out, C_in / groups, 5) in the accumulation dtype, deterministic (fixed pixel chunks, sum_partials).
at::Tensor tiled_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// ---- depthwise layers (depthwise_kernels.cu): channels_last-contiguous x, y, dy, dx ------------

void depthwise_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                       const ConvShape& s);

void depthwise_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Gradient of the (C, 1, 5) weight in the accumulation dtype, deterministic.
at::Tensor depthwise_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// ---- tensor cores (tensor_core_kernels.cu): opt-in, bfloat16 / float16 / float32 as TF32, sm_80+ --
// Activations are channels_last-contiguous and 16-byte aligned (checked); w as given to the op.

// Whether the tensor-core kernels handle this layer on `device` (the current device): dtype,
// channels per group multiples of 8 (16-bit types) or 4 (float32), sizes within their 32-bit
// coordinates, compute capability 8.0+ and kernels compiled for it. Says nothing about
// SKELETON_CUDA_TENSOR_CORES or the TF32 flag (tf32_policy.h).
bool tensor_core_eligible(const ConvShape& s, at::ScalarType dtype, c10::DeviceIndex device);

void tensor_core_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                         const ConvShape& s);

void tensor_core_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// (C_out, C_in / groups, 5) in float32, deterministic (fixed pixel chunks, sum_partials).
at::Tensor tensor_core_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// The same passes for activations in contiguous NCHW memory (y, dx, x, dy all NCHW-contiguous,
// element-aligned), read and written in place: no conversion to channels_last (tensor_core_nchw.cuh).
void tensor_core_forward_nchw(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                              const ConvShape& s);

void tensor_core_input_grad_nchw(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

at::Tensor tensor_core_weight_grad_nchw(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// How many calls took the tensor-core path since the library was loaded: forward, input gradient,
// weight gradient (exposed as torch.ops.skeleton_cuda.tensor_core_calls for the tests).
std::vector<int64_t> tensor_core_calls();

// Of those, the calls that ran the NCHW kernels (torch.ops.skeleton_cuda.tensor_core_nchw_calls).
std::vector<int64_t> tensor_core_nchw_calls();

// Gather-GEMM kernel launches (forward, and each residue class of an input gradient) with 128-row
// and with 64-row tiles (torch.ops.skeleton_cuda.tensor_core_gather_launches).
std::vector<int64_t> tensor_core_gather_launches();

// ---- shared second pass (partial_sums.cu) -----------------------------------------------------

// Sums a contiguous (S, M) float32 / float64 tensor of per-block partial sums over S, in order
// s = 0, 1, ..., S - 1: returns (M,).
at::Tensor sum_partials(const at::Tensor& partials);

// Host helpers.
inline Strides strides_of(const at::Tensor& t) {
  return Strides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

}  // namespace gpu
}  // namespace skeleton_cuda
