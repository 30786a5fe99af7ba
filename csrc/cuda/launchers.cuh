// Host launchers of the CUDA kernels, called by skeleton_conv2d_cuda.cu once it has checked the
// arguments, guarded the device and allocated the results. Each launcher dispatches on the dtype
// (float64, float32, float16, bfloat16; fp32 accumulation for the 16-bit types) and launches on the
// current stream.
#pragma once

#include <ATen/core/Tensor.h>

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

// ---- depthwise layers (depthwise_kernels.cu): channels_last-contiguous x, y, dy, dx ------------

void depthwise_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                       const ConvShape& s);

void depthwise_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Gradient of the (C, 1, 5) weight in the accumulation dtype, deterministic.
at::Tensor depthwise_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

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
