"""Python side of the compiled op: loading it, fake kernels, autograd.

The schemas and the CPU/CUDA kernels are C++ (csrc/). Registering the fake kernels and the
autograd formula here makes ``torch.ops.skeleton_cuda.skeleton_conv2d`` a single opaque node for
torch.compile (fullgraph) and a differentiable op in eager mode.
"""

import warnings

import torch
from torch._prims_common import suggest_memory_format

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

    def _setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    def _backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        mask = [
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2],
        ]
        grads = torch.ops.skeleton_cuda.skeleton_conv2d_backward(
            grad_output, input, weight, *ctx.conv_args, mask
        )
        grads = [g if wanted else None for g, wanted in zip(grads, mask)]
        return grads[0], grads[1], grads[2], None, None, None, None

    torch.library.register_autograd(
        "skeleton_cuda::skeleton_conv2d", _backward, setup_context=_setup_context
    )

    # Double backward. The backward op is linear in each argument:
    #   grad_input = Bx(grad_output, weight), grad_weight = Bw(grad_output, input),
    #   grad_bias = sum(grad_output), and Bx, Bw are the adjoints of the forward op F, so
    #   d<gi', Bx(gy, w)>/dgy = F(gi', w)      d<gi', Bx(gy, w)>/dw = Bw(gy, gi')
    #   d<gw', Bw(gy, x)>/dgy = F(x, gw')      d<gw', Bw(gy, x)>/dx = Bx(gy, gw')
    # Expressed with the ops themselves, so higher orders work too.
    def _setup_backward_context(ctx, inputs, output):
        grad_output, input, weight, stride, padding, dilation, groups, output_mask = inputs
        ctx.save_for_backward(grad_output, input, weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.output_mask = output_mask

    def _double_backward(ctx, gg_input, gg_weight, gg_bias):
        grad_output, input, weight = ctx.saved_tensors
        args = ctx.conv_args
        # A masked-out gradient came back as a (0,)-shaped tensor; its incoming gradient is void.
        gg_input = gg_input if ctx.output_mask[0] and gg_input is not None and gg_input.numel() else None
        gg_weight = gg_weight if ctx.output_mask[1] and gg_weight is not None else None
        gg_bias = gg_bias if ctx.output_mask[2] and gg_bias is not None else None
        need_grad_output, need_input, need_weight = ctx.needs_input_grad[:3]
        forward = torch.ops.skeleton_cuda.skeleton_conv2d
        backward = torch.ops.skeleton_cuda.skeleton_conv2d_backward

        grad_grad_output = None
        if need_grad_output:
            terms = []
            if gg_input is not None:
                terms.append(forward(gg_input, weight, None, *args))
            if gg_weight is not None:
                terms.append(forward(input, gg_weight, None, *args))
            if gg_bias is not None:
                terms.append(gg_bias.view(1, -1, 1, 1).expand_as(grad_output))
            grad_grad_output = sum(terms) if terms else None
        grad_input = None
        if need_input and gg_weight is not None:
            grad_input = backward(grad_output, input, gg_weight, *args, [True, False, False])[0]
        grad_weight = None
        if need_weight and gg_input is not None:
            grad_weight = backward(grad_output, gg_input, weight, *args, [False, True, False])[1]
        return grad_grad_output, grad_input, grad_weight, None, None, None, None, None

    torch.library.register_autograd(
        "skeleton_cuda::skeleton_conv2d_backward", _double_backward, setup_context=_setup_backward_context
    )
