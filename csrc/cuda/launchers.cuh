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

// A weight gradient, (C_out, C_in / groups, 5) contiguous in the weight's dtype, and where the
// kernels computed it alongside, the bias gradient (C_out,) (else undefined).
struct WeightGrads {
  at::Tensor weight, bias;
};

// ---- dense and grouped layers (dense_kernels.cu): any input layout, read through strides ------

// y = conv(x, w) + bias. y is NCHW- or channels_last-contiguous; w is (C_out, C_in / groups, 5);
// bias is undefined or (C_out,) contiguous.
void dense_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s);

// dx = gradient of the input. dx is NCHW- or channels_last-contiguous.
void dense_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Gradient of the weight, (C_out, C_in / groups, 5) contiguous in the weight's dtype, from a
// deterministic two-pass reduction (fp32 accumulation for the 16-bit types). So are all the
// weight_grad launchers below.
at::Tensor dense_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// ---- dense and grouped layers, tiled (tiled_kernels.cu): channels_last-contiguous x, y, dy, dx --

// Whether the tiled kernels handle this layer: sizes within their 32-bit coordinates and grid limits.
bool tiled_eligible(const ConvShape& s);

void tiled_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                   const ConvShape& s);

void tiled_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Deterministic: fixed pixel chunks, added in order by finish_weight_grad.
at::Tensor tiled_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// ---- depthwise layers (depthwise_kernels.cu): channels_last-contiguous x, y, dy, dx ------------

void depthwise_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                       const ConvShape& s);

void depthwise_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

// Gradient of the (C, 1, 5) weight, deterministic.
at::Tensor depthwise_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// The weight and the bias gradient in one pass over dy and x: the bias sums ride along in the
// weight gradient's partials, which saves a separate reduction that reads all of dy again.
WeightGrads depthwise_weight_and_bias_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

// The same passes on contiguous NCHW x, y, dy, dx, in place (depthwise_nchw_kernels.cu).
void depthwise_nchw_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                            const ConvShape& s);

void depthwise_nchw_input_grad(const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx, const ConvShape& s);

at::Tensor depthwise_nchw_weight_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

WeightGrads depthwise_nchw_weight_and_bias_grad(const at::Tensor& dy, const at::Tensor& x, const ConvShape& s);

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

// Deterministic: fixed pixel chunks, added in order by finish_weight_grad.
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

// The order of the weight elements in a partial-sum row: the weight's own (C_out, C_in/G, 5)
// (the direct and depthwise kernels), or tap-major [G][5][C_in/G][C_out/G] (the tiled and
// tensor-core kernels).
enum class PartialsOrder { kWeight, kTapMajor };

// The dtype of the per-chunk partial sums of a layer of `dtype`: float32 (the 16-bit types
// accumulate in it), or float64 for a float64 layer.
inline at::ScalarType partials_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Sums a contiguous (S, M) tensor of per-chunk partial sums (partials_dtype of the layer) over S, in order s = 0, 1, ..., S - 1, in one launch that also reorders and rounds: the
// first C_out * C_in/G * 5 columns, in `order`, become the weight gradient; with `with_bias`, the
// C_out columns after them the bias gradient. Both in `dtype` (the weight's).
WeightGrads finish_weight_grad(const at::Tensor& partials, const ConvShape& s, PartialsOrder order, bool with_bias,
                               at::ScalarType dtype);

// Host helpers.
inline Strides strides_of(const at::Tensor& t) {
  return Strides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// t contiguous in `format`, with data starting on an `alignment`-byte boundary (what cp.async of
// that size needs): t itself when it already is one, else a copy (fresh allocations are aligned).
// contiguous() alone can hand back a view at any offset: one already laid out in `format`.
inline at::Tensor aligned_contiguous(const at::Tensor& t, at::MemoryFormat format, uintptr_t alignment) {
  at::Tensor c = t.contiguous(format);
  if (reinterpret_cast<uintptr_t>(c.const_data_ptr()) % alignment != 0) {
    return c.clone(format);
  }
  return c;
}

}  // namespace gpu
}  // namespace skeleton_cuda
