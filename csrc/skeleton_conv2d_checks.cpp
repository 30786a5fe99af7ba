// Every argument check of the op lives here, so CPU and CUDA kernels reject the same inputs with the
// same words. The Python fake kernels (skeleton_cuda/ops.py) mirror these messages for torch.compile.
#include "skeleton_conv2d.h"

#include <c10/util/Exception.h>

#include "taps.h"

namespace skeleton_cuda {
namespace {

void check_pair(c10::IntArrayRef value, const char* name, int64_t minimum, const char* expected) {
  TORCH_CHECK(
      value.size() == 2,
      "skeleton_conv2d: expected ", name, " to have 2 values (height, width), got ", value.size());
  TORCH_CHECK(
      value[0] >= minimum && value[1] >= minimum,
      "skeleton_conv2d: expected ", name, " ", expected, ", got ", value);
}

}  // namespace

ConvParams make_params(
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  check_pair(stride, "stride", 1, ">= 1");
  check_pair(padding, "padding", 0, ">= 0");
  check_pair(dilation, "dilation", 1, ">= 1");
  TORCH_CHECK(groups >= 1, "skeleton_conv2d: expected groups >= 1, got ", groups);
  return ConvParams{
      {stride[0], stride[1]}, {padding[0], padding[1]}, {dilation[0], dilation[1]}, groups};
}

std::array<int64_t, 2> output_size(int64_t height, int64_t width, const ConvParams& p) {
  std::array<int64_t, 2> in{height, width};
  std::array<int64_t, 2> out{};
  for (int d = 0; d < 2; ++d) {
    // A 3x3 kernel with dilation spans 2 * dilation + 1 input pixels.
    const int64_t span = 2 * p.dilation[d] + 1;
    out[d] = (in[d] + 2 * p.padding[d] - span) / p.stride[d] + 1;
    if (in[d] + 2 * p.padding[d] < span) {
      out[d] = 0;
    }
  }
  return out;
}

std::array<int64_t, 2> check_forward_args(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    const ConvParams& p) {
  TORCH_CHECK(
      input.dim() == 4,
      "skeleton_conv2d: expected input to be 4-D (N, C, H, W), got a ", input.dim(),
      "-D tensor of shape ", input.sizes());
  TORCH_CHECK(
      !(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3) &&
          !(weight.dim() == 3 && weight.size(2) == 9),
      "skeleton_conv2d: expected weight of shape (C_out, C_in / groups, 5) holding the taps "
      "T, L, C, R, B; got a dense 3x3 weight of shape ", weight.sizes(),
      ". Keep its cross with skeleton_cuda.dense_to_skeleton_weight(weight) or "
      "SkeletonConv2d.from_conv2d(conv)");
  TORCH_CHECK(
      weight.dim() == 3 && weight.size(2) == kTaps,
      "skeleton_conv2d: expected weight of shape (C_out, C_in / groups, 5), got ", weight.sizes());
  TORCH_CHECK(
      at::isFloatingType(input.scalar_type()),
      "skeleton_conv2d: expected a floating-point input (float32, float64, float16 or bfloat16), "
      "got ", input.scalar_type());
  TORCH_CHECK(
      weight.scalar_type() == input.scalar_type(),
      "skeleton_conv2d: expected weight to have the input's dtype ", input.scalar_type(), ", got ",
      weight.scalar_type());
  TORCH_CHECK(
      weight.device() == input.device(),
      "skeleton_conv2d: expected weight on the input's device ", input.device(), ", got ",
      weight.device());

  const int64_t in_channels = input.size(1);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(
      in_channels % p.groups == 0,
      "skeleton_conv2d: expected input channels (", in_channels, ") to be divisible by groups (",
      p.groups, ")");
  TORCH_CHECK(
      out_channels % p.groups == 0,
      "skeleton_conv2d: expected weight.size(0) = C_out (", out_channels,
      ") to be divisible by groups (", p.groups, ")");
  TORCH_CHECK(
      weight.size(1) * p.groups == in_channels,
      "skeleton_conv2d: expected weight.size(1) = C_in / groups = ", in_channels / p.groups,
      " for an input with ", in_channels, " channels and groups=", p.groups, ", got ",
      weight.size(1));

  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(
        bias->dim() == 1 && bias->size(0) == out_channels,
        "skeleton_conv2d: expected bias of shape (", out_channels, "), got ", bias->sizes());
    TORCH_CHECK(
        bias->scalar_type() == input.scalar_type(),
        "skeleton_conv2d: expected bias to have the input's dtype ", input.scalar_type(),
        ", got ", bias->scalar_type());
    TORCH_CHECK(
        bias->device() == input.device(),
        "skeleton_conv2d: expected bias on the input's device ", input.device(), ", got ",
        bias->device());
  }

  const auto out = output_size(input.size(2), input.size(3), p);
  TORCH_CHECK(
      out[0] > 0 && out[1] > 0,
      "skeleton_conv2d: the output would be empty: input of size ", input.size(2), "x",
      input.size(3), " with padding ", c10::IntArrayRef(p.padding), ", dilation ",
      c10::IntArrayRef(p.dilation), " and stride ", c10::IntArrayRef(p.stride), " gives ",
      out[0], "x", out[1], "; the padded input must be at least 2 * dilation + 1 pixels high and "
      "wide");
  return out;
}

void check_backward_args(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    const ConvParams& p) {
  const auto out = check_forward_args(input, weight, std::nullopt, p);
  TORCH_CHECK(
      grad_output.dim() == 4 && grad_output.size(0) == input.size(0) &&
          grad_output.size(1) == weight.size(0) && grad_output.size(2) == out[0] &&
          grad_output.size(3) == out[1],
      "skeleton_conv2d_backward: expected grad_output of shape (", input.size(0), ", ",
      weight.size(0), ", ", out[0], ", ", out[1], "), got ", grad_output.sizes());
  TORCH_CHECK(
      grad_output.scalar_type() == input.scalar_type(),
      "skeleton_conv2d_backward: expected grad_output to have the input's dtype ",
      input.scalar_type(), ", got ", grad_output.scalar_type());
  TORCH_CHECK(
      grad_output.device() == input.device(),
      "skeleton_conv2d_backward: expected grad_output on the input's device ", input.device(),
      ", got ", grad_output.device());
}

}  // namespace skeleton_cuda
