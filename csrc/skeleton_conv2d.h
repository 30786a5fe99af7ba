// Argument handling shared by the CPU, CUDA and registration code.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <cstdint>
#include <optional>

namespace skeleton_cuda {

// Stride, padding and dilation as (height, width) pairs, already validated.
struct ConvParams {
  std::array<int64_t, 2> stride;
  std::array<int64_t, 2> padding;
  std::array<int64_t, 2> dilation;
  int64_t groups;
};

// Checks the scalar arguments (lengths, ranges) and packs them.
ConvParams make_params(
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups);

// Output spatial size of the 3x3-extent convolution, as nn.Conv2d computes it.
std::array<int64_t, 2> output_size(int64_t height, int64_t width, const ConvParams& p);

// Checks input, weight and bias of the forward op; returns (H_out, W_out).
std::array<int64_t, 2> check_forward_args(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    const ConvParams& p);

// Checks the tensors of the backward op against each other.
void check_backward_args(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    const ConvParams& p);

}  // namespace skeleton_cuda
