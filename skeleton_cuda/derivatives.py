"""The derivatives of the two ops, written with the ops themselves.

skeleton_conv2d F(x, w, b) and skeleton_conv2d_backward B(gy, x, w, mask) = (Bx(gy, w), Bw(gy, x),
sum(gy)) are linear in each argument, and Bx, Bw are the adjoints of F, so:

  reverse mode (vjp)
    of F:  (Bx(gy, w), Bw(gy, x), sum(gy))
    of B:  d<gi', Bx(gy, w)>/dgy = F(gi', w)      d<gi', Bx(gy, w)>/dw = Bw(gy, gi')
           d<gw', Bw(gy, x)>/dgy = F(x, gw')      d<gw', Bw(gy, x)>/dx = Bx(gy, gw')
           d<gb', sum(gy)>/dgy = gb' on every pixel
  forward mode (jvp)
    of F:  F(tx, w) + F(x, tw) + tb
    of B:  (Bx(tgy, w) + Bx(gy, tw), Bw(tgy, x) + Bw(gy, tx), sum(tgy))

`forward` and `backward` below are the ops (ops.py registers the reverse-mode formulas with
them), or the autograd.Functions of transforms.py, so that derivatives of derivatives work too.
"""

import torch
from torch._prims_common import suggest_memory_format


def save_forward_context(ctx, inputs, output=None):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv_args = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def forward_vjp(ctx, grad_output, backward):
    input, weight = ctx.saved_tensors
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    grads = backward(grad_output, input, weight, *ctx.conv_args, mask)
    grads = [g if wanted else None for g, wanted in zip(grads, mask)]
    return grads[0], grads[1], grads[2], None, None, None, None


def forward_jvp(input, weight, conv_args, input_t, weight_t, bias_t, forward):
    tangent = None
    if input_t is not None:
        tangent = forward(input_t, weight, None, *conv_args)
    if weight_t is not None:
        term = forward(input, weight_t, None, *conv_args)
        tangent = term if tangent is None else tangent + term
    if bias_t is not None:
        bias_term = bias_t.view(1, -1, 1, 1)
        if tangent is None:  # only the bias moves: the same on every pixel of the output
            from .ops import output_size

            stride, padding, dilation, _ = conv_args
            shape = (input.shape[0], weight.shape[0], *output_size(input.shape[2], input.shape[3], stride, padding, dilation))
            tangent = bias_term.expand(shape).contiguous(memory_format=suggest_memory_format(input))
        else:
            tangent = tangent + bias_term
    return tangent


def save_backward_context(ctx, inputs, output=None):
    grad_output, input, weight, stride, padding, dilation, groups, output_mask = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.conv_args = (stride, padding, dilation, groups)
    ctx.output_mask = output_mask


def backward_vjp(ctx, gg_input, gg_weight, gg_bias, forward, backward):
    grad_output, input, weight = ctx.saved_tensors
    args = ctx.conv_args
    # A masked-out gradient came back as a (0,)-shaped tensor; its incoming gradient is void.
    gg_input = gg_input if ctx.output_mask[0] and gg_input is not None and gg_input.numel() else None
    gg_weight = gg_weight if ctx.output_mask[1] and gg_weight is not None else None
    gg_bias = gg_bias if ctx.output_mask[2] and gg_bias is not None else None
    need_grad_output, need_input, need_weight = ctx.needs_input_grad[:3]

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


def backward_jvp(grad_output, input, weight, conv_args, output_mask, grad_output_t, input_t, weight_t, backward):
    tangents = [None, None, None]

    def add(i, term):
        tangents[i] = term if tangents[i] is None else tangents[i] + term

    if grad_output_t is not None:
        for i, term in enumerate(backward(grad_output_t, input, weight, *conv_args, output_mask)):
            if output_mask[i]:
                add(i, term)
    if weight_t is not None and output_mask[0]:
        add(0, backward(grad_output, input, weight_t, *conv_args, [True, False, False])[0])
    if input_t is not None and output_mask[1]:
        add(1, backward(grad_output, input_t, weight, *conv_args, [False, True, False])[1])
    # A gradient nothing moved is still an output: zeros of its shape ((0,) where masked out).
    likes = (
        lambda: torch.zeros_like(input, memory_format=suggest_memory_format(input)),
        lambda: torch.zeros_like(weight, memory_format=torch.contiguous_format),
        lambda: weight.new_zeros((weight.shape[0],)),
    )
    return tuple(
        t if t is not None else like() if wanted else input.new_empty((0,))
        for t, wanted, like in zip(tangents, output_mask, likes)
    )
