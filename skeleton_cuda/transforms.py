"""skeleton_conv2d under forward-mode AD and torch.func transforms.

The ops' autograd formulas (ops.py, torch.library.register_autograd) serve reverse mode in eager
code and under torch.compile. PyTorch gives such ops no forward-mode rule and does not refuse
them either: a tangent through them came out as zeros, silently (torch.func.jvp, jacfwd, hessian,
torch.autograd.forward_ad), and torch.func.grad / jacrev refused them. So, while one is active
(outside torch.compile), functional.skeleton_conv2d takes another path (route()):
  - forward mode anywhere (forward AD, or a jvp level among the torch.func transforms): the
    reference implementation (a dense 3x3 convolution with zero corners, plain PyTorch), which
    every transform, and every nesting of them, differentiates correctly. An autograd.Function's
    jvp would not do: PyTorch does not pass the tangents of an outer forward level through it
    (jacfwd of jacfwd lost the input-weight cross term);
  - the other torch.func transforms (grad, jacrev, vmap, and their nestings): the ops, through
    the two autograd.Functions here, whose reverse-mode formulas are the ops again
    (derivatives.py, shared with ops.py) and whose vmap rules torch.func generates from the ops'
    own (batching.py).
The ordinary path keeps the ops' own formulas and none of the cost of an autograd.Function.
"""

import torch

from . import derivatives

# PyTorch's own ways to tell (private, so looked up once). A version without them keeps the ops'
# plain path under torch.func (forward AD is still told apart).
try:
    from torch._C._functorch import TransformType as _TransformType
    from torch._C._functorch import peek_interpreter_stack as _peek_interpreter_stack
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters as _interpreters
except ImportError:  # pragma: no cover - a PyTorch without them
    _TransformType = _peek_interpreter_stack = _interpreters = None


def route():
    """How functional.skeleton_conv2d runs now: "op" (the ordinary path; always under
    torch.compile, which traces the ops as they are), "reference" (forward mode is active) or
    "function" (another torch.func transform is)."""
    if torch.compiler.is_compiling():
        return "op"
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        return "reference"
    if _peek_interpreter_stack is None or _peek_interpreter_stack() is None:
        return "op"
    if any(interpreter.key() == _TransformType.Jvp for interpreter in _interpreters()):
        return "reference"
    return "function"


class SkeletonConv2dFunction(torch.autograd.Function):
    """torch.ops.skeleton_cuda.skeleton_conv2d with its reverse-mode derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, *conv_args):
        return torch.ops.skeleton_cuda.skeleton_conv2d(input, weight, bias, *conv_args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        derivatives.save_forward_context(ctx, inputs)

    @staticmethod
    def backward(ctx, grad_output):
        return derivatives.forward_vjp(ctx, grad_output, _backward)


class SkeletonConv2dBackwardFunction(torch.autograd.Function):
    """torch.ops.skeleton_cuda.skeleton_conv2d_backward with its reverse-mode derivative (double
    backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, input, weight, *conv_args):
        return torch.ops.skeleton_cuda.skeleton_conv2d_backward(grad_output, input, weight, *conv_args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        derivatives.save_backward_context(ctx, inputs)

    @staticmethod
    def backward(ctx, gg_input, gg_weight, gg_bias):
        return derivatives.backward_vjp(ctx, gg_input, gg_weight, gg_bias, apply, _backward)


# The ops' arguments as they are: apply(input, weight, bias, stride, padding, dilation, groups).
apply = SkeletonConv2dFunction.apply
_backward = SkeletonConv2dBackwardFunction.apply
