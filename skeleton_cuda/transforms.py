"""skeleton_conv2d under forward-mode AD and torch.func transforms.

The ops' autograd formulas (ops.py, torch.library.register_autograd) serve reverse mode in eager
code and under torch.compile. PyTorch gives such ops no forward-mode rule and does not refuse
them either: a tangent through them came out as zeros, silently (torch.func.jvp, jacfwd, hessian,
torch.autograd.forward_ad), and torch.func.grad / jacrev refused them. While forward AD or a
torch.func transform is active (outside torch.compile), functional.skeleton_conv2d runs the ops
through the two autograd.Functions here instead, which add the forward-mode formulas and work
under every torch.func transform; the ordinary path keeps the ops' own formulas and none of the
cost of an autograd.Function.

Both ops are linear in each argument, so every derivative is the ops again (the formulas are in
derivatives.py, shared with ops.py), here applied through these Functions so that derivatives of
derivatives, in either mode, work too.
"""

import torch

from . import derivatives


# PyTorch's own ways to tell (private, so looked up once; where a version lacks one, that check is
# skipped and such layers take the ops' plain path, as before this module).
_functorch_stack = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
_forward_ad = torch.autograd.forward_ad


def transforms_active() -> bool:
    """True while forward AD or a torch.func transform (grad, vmap, jvp, ...) is active, outside
    torch.compile (which traces the ops as they are)."""
    if torch.compiler.is_compiling():
        return False
    if _functorch_stack is not None and _functorch_stack() is not None:
        return True
    return getattr(_forward_ad, "_current_level", -1) >= 0


class Static:
    """Non-tensor arguments in one box: torch.func's generated vmap rules flatten the arguments of
    an autograd.Function as pytrees, and lists among them (stride, padding, ...) would not line up
    with the one tangent per argument that jvp gets."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def apply(input, weight, bias, stride, padding, dilation, groups):
    return SkeletonConv2dFunction.apply(input, weight, bias, Static((stride, padding, dilation, groups)))


def _backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return SkeletonConv2dBackwardFunction.apply(
        grad_output, input, weight, Static((stride, padding, dilation, groups, output_mask))
    )


class SkeletonConv2dFunction(torch.autograd.Function):
    """torch.ops.skeleton_cuda.skeleton_conv2d with its reverse- and forward-mode derivatives."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, static):
        return torch.ops.skeleton_cuda.skeleton_conv2d(input, weight, bias, *static.value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, static = inputs
        derivatives.save_forward_context(ctx, (input, weight, bias, *static.value))
        ctx.save_for_forward(input, weight)

    @staticmethod
    def backward(ctx, grad_output):
        return derivatives.forward_vjp(ctx, grad_output, _backward)[:3] + (None,)

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, _):
        input, weight = ctx.saved_tensors
        return derivatives.forward_jvp(input, weight, ctx.conv_args, input_t, weight_t, bias_t, apply)


class SkeletonConv2dBackwardFunction(torch.autograd.Function):
    """torch.ops.skeleton_cuda.skeleton_conv2d_backward with its reverse- and forward-mode
    derivatives (the first is double backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, input, weight, static):
        return torch.ops.skeleton_cuda.skeleton_conv2d_backward(grad_output, input, weight, *static.value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight, static = inputs
        derivatives.save_backward_context(ctx, (grad_output, input, weight, *static.value))
        ctx.save_for_forward(grad_output, input, weight)

    @staticmethod
    def backward(ctx, gg_input, gg_weight, gg_bias):
        return derivatives.backward_vjp(ctx, gg_input, gg_weight, gg_bias, apply, _backward)[:3] + (None,)

    @staticmethod
    def jvp(ctx, grad_output_t, input_t, weight_t, _):
        grad_output, input, weight = ctx.saved_tensors
        return derivatives.backward_jvp(
            grad_output, input, weight, ctx.conv_args, ctx.output_mask, grad_output_t, input_t, weight_t, _backward
        )
