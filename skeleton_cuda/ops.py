"""Python side of the compiled op: loading it, fake kernels, autograd.

The schemas and the CPU/CUDA kernels are C++ (csrc/). Registering the fake kernels, the
autograd formulas (derivatives.py) and the vmap rules (batching.py) here makes
``torch.ops.skeleton_cuda.skeleton_conv2d`` a single opaque node for torch.compile (fullgraph), a
differentiable op in eager mode, and a batched one under torch.vmap.
"""

import warnings

import torch
from torch._prims_common import suggest_memory_format

from . import batching, derivatives

try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.skeleton_cuda)

    HAS_COMPILED_OPS = True
    _LOAD_ERROR = None
except ImportError as error:  # not built, or built against another PyTorch
    HAS_COMPILED_OPS = False
    _LOAD_ERROR = error
    warnings.warn(
        "skeleton_cuda: the compiled kernels could not be loaded "
        f"({error}); using the pure-PyTorch fallback, which computes a dense 3x3 convolution with "
        "zero corners: correct, but no faster than nn.Conv2d. Build them with "
        "`pip install --no-build-isolation .` from the source tree.",
        stacklevel=2,
    )

_TAPS = 5

# Asked once here: torch.compile cannot trace a dispatcher query inside the model's code.
HAS_CUDA_KERNELS = HAS_COMPILED_OPS and torch._C._dispatch_has_kernel_for_dispatch_key(
    "skeleton_cuda::skeleton_conv2d", "CUDA"
)


def has_compiled_ops() -> bool:
    """True when the C++/CUDA kernels are loaded (otherwise the reference path runs)."""
    return HAS_COMPILED_OPS


def has_cuda_kernels() -> bool:
    """True when the loaded library has CUDA kernels (it was built with a CUDA toolkit)."""
    return HAS_CUDA_KERNELS


def cpu_kernel_isa() -> str:
    """Instruction set of the float32 CPU kernels: "avx512", "avx2" or "generic".

    The environment variable SKELETON_CUDA_CPU_ISA can select a lower one.
    """
    if not HAS_COMPILED_OPS:
        return "none (reference fallback)"
    return torch.ops.skeleton_cuda.cpu_kernel_isa()


def output_size(height, width, stride, padding, dilation):
    """Output (H, W) of the op, as nn.Conv2d computes it for a 3x3 kernel."""
    size = []
    for extent, s, p, d in zip((height, width), stride, padding, dilation):
        span = 2 * d + 1
        size.append((extent + 2 * p - span) // s + 1 if extent + 2 * p >= span else 0)
    return size


def check_args(input, weight, bias, stride, padding, dilation, groups):
    """The C++ checks (csrc/skeleton_conv2d_checks.cpp), for fake tensors; returns (H_out, W_out)."""
    op = "skeleton_conv2d"
    for name, value, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        torch._check(len(value) == 2, lambda: f"{op}: expected {name} to have 2 values, got {len(value)}")
        torch._check(
            value[0] >= low and value[1] >= low,
            lambda: f"{op}: expected {name} >= {low}, got {list(value)}",
        )
    torch._check(groups >= 1, lambda: f"{op}: expected groups >= 1, got {groups}")
    torch._check(
        input.dim() == 4,
        lambda: f"{op}: expected input to be 4-D (N, C, H, W), got a {input.dim()}-D tensor of shape {list(input.shape)}",
    )
    torch._check(
        weight.dim() == 3 and weight.shape[2] == _TAPS,
        lambda: f"{op}: expected weight of shape (C_out, C_in / groups, 5), got {list(weight.shape)}",
    )
    torch._check(
        input.dtype.is_floating_point,
        lambda: f"{op}: expected a floating-point input (float32, float64, float16 or bfloat16), got {input.dtype}",
    )
    torch._check(
        weight.dtype == input.dtype,
        lambda: f"{op}: expected weight to have the input's dtype {input.dtype}, got {weight.dtype}",
    )
    channels, out_channels = input.shape[1], weight.shape[0]
    torch._check(
        channels % groups == 0,
        lambda: f"{op}: expected input channels ({channels}) to be divisible by groups ({groups})",
    )
    torch._check(
        out_channels % groups == 0,
        lambda: f"{op}: expected weight.size(0) = C_out ({out_channels}) to be divisible by groups ({groups})",
    )
    torch._check(
        weight.shape[1] * groups == channels,
        lambda: f"{op}: expected weight.size(1) = C_in / groups = {channels // groups}, got {weight.shape[1]}",
    )
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == out_channels,
            lambda: f"{op}: expected bias of shape ({out_channels}), got {list(bias.shape)}",
        )
        torch._check(
            bias.dtype == input.dtype,
            lambda: f"{op}: expected bias to have the input's dtype {input.dtype}, got {bias.dtype}",
        )
    out_h, out_w = output_size(input.shape[2], input.shape[3], stride, padding, dilation)
    torch._check(
        out_h > 0 and out_w > 0,
        lambda: f"{op}: the output would be empty: input of size {input.shape[2]}x{input.shape[3]} "
        f"gives {out_h}x{out_w}",
    )
    return out_h, out_w


if HAS_COMPILED_OPS:

    @torch.library.register_fake("skeleton_cuda::skeleton_conv2d")
    def _skeleton_conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
        out_h, out_w = check_args(input, weight, bias, stride, padding, dilation, groups)
        shape = (input.shape[0], weight.shape[0], out_h, out_w)
        return input.new_empty(shape).contiguous(memory_format=suggest_memory_format(input))

    @torch.library.register_fake("skeleton_cuda::skeleton_conv2d_backward")
    def _skeleton_conv2d_backward_fake(
        grad_output, input, weight, stride, padding, dilation, groups, output_mask
    ):
        check_args(input, weight, None, stride, padding, dilation, groups)
        def none():  # each masked-out gradient is its own empty tensor: outputs must not alias
            return input.new_empty((0,))

        grad_input = (
            torch.empty_like(input, memory_format=suggest_memory_format(input)) if output_mask[0] else none()
        )
        grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else none()
        grad_bias = weight.new_empty((weight.shape[0],)) if output_mask[2] else none()
        return grad_input, grad_weight, grad_bias

    # Reverse mode, with the ops themselves (derivatives.py), so higher orders work too. Forward
    # mode and the torch.func transforms: transforms.py.
    _forward_op = torch.ops.skeleton_cuda.skeleton_conv2d
    _backward_op = torch.ops.skeleton_cuda.skeleton_conv2d_backward

    def _backward(ctx, grad_output):
        return derivatives.forward_vjp(ctx, grad_output, _backward_op)

    def _double_backward(ctx, gg_input, gg_weight, gg_bias):
        return derivatives.backward_vjp(ctx, gg_input, gg_weight, gg_bias, _forward_op, _backward_op)

    torch.library.register_autograd(
        "skeleton_cuda::skeleton_conv2d", _backward, setup_context=derivatives.save_forward_context
    )
    torch.library.register_autograd(
        "skeleton_cuda::skeleton_conv2d_backward", _double_backward, setup_context=derivatives.save_backward_context
    )

    batching.register()  # torch.vmap without a per-entry loop
