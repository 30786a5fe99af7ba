"""The reverse-mode derivatives of the two ops, written with the ops themselves.

skeleton_conv2d F(x, w, b) and skeleton_conv2d_backward B(gy, x, w, mask) = (Bx(gy, w), Bw(gy, x),
sum(gy)) are linear in each argument, and Bx, Bw are the adjoints of F, so:
  vjp of F:  (Bx(gy, w), Bw(gy, x), sum(gy))
  vjp of B:  d<gi', Bx(gy, w)>/dgy = F(gi', w)      d<gi', Bx(gy, w)>/dw = Bw(gy, gi')
             d<gw', Bw(gy, x)>/dgy = F(x, gw')      d<gw', Bw(gy, x)>/dx = Bx(gy, gw')
             d<gb', sum(gy)>/dgy = gb' on every pixel
`forward` and `backward` below are the ops (ops.py registers the formulas with them), or the
autograd.Functions of transforms.py that wrap them, so that derivatives of derivatives work too.
Forward mode goes through the reference implementation (transforms.py says why).
"""


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
