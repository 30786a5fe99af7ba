"""Batching rules of the two ops for torch.vmap (and so for torch.func's per-sample gradients).

Without them, torch.func runs a vmapped op once per batch entry, in a Python loop, and warns
about it. A vmapped convolution is an ordinary one:
  - unbatched weight: the vmapped dimension joins the images (B x N images);
  - batched weight (or a backward, whose weight gradient must come out per entry): the B entries
    become B x groups groups of one convolution, each entry's channels side by side, so one call
    computes every entry with its own weight and sums each weight gradient over that entry's
    images only.
"""

import torch


def _entries_as_channels(t, bdim, batch):
    """(N, B * C, H, W) from a per-entry (N, C, H, W) tensor vmapped at `bdim` (or shared: None)."""
    t = t.movedim(bdim, 1) if bdim is not None else t.unsqueeze(1).expand(-1, batch, -1, -1, -1)
    return t.reshape(t.shape[0], batch * t.shape[2], *t.shape[3:])  # sizes spelled out: N may be 0


def _entries_as_rows(t, bdim, batch):
    """(B * R, ...) from a per-entry (R, ...) tensor vmapped at `bdim` (or shared: None)."""
    t = t.movedim(bdim, 0) if bdim is not None else t.unsqueeze(0).expand(batch, *t.shape)
    return t.reshape(batch * t.shape[1], *t.shape[2:])


def forward_rule(info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    op = torch.ops.skeleton_cuda.skeleton_conv2d
    input_dim, weight_dim, bias_dim = in_dims[:3]
    batch = info.batch_size
    if weight_dim is None:
        shared_bias = bias if bias_dim is None else None
        if input_dim is None:  # only the bias is vmapped
            out = op(input, weight, None, stride, padding, dilation, groups).unsqueeze(0)
        else:
            x = input.movedim(input_dim, 0)
            out = op(x.reshape(-1, *x.shape[2:]), weight, shared_bias, stride, padding, dilation, groups)
            out = out.reshape(batch, x.shape[1], *out.shape[1:])
        if bias_dim is not None:
            out = out + bias.movedim(bias_dim, 0).view(batch, 1, -1, 1, 1)
        return out, 0
    x = _entries_as_channels(input, input_dim, batch)
    w = _entries_as_rows(weight, weight_dim, batch)
    b = _entries_as_rows(bias, bias_dim, batch) if bias is not None else None
    out = op(x, w, b, stride, padding, dilation, groups * batch)
    return out.reshape(out.shape[0], batch, out.shape[1] // batch, *out.shape[2:]), 1


def backward_rule(info, in_dims, grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    grad_output_dim, input_dim, weight_dim = in_dims[:3]
    batch = info.batch_size
    grads = torch.ops.skeleton_cuda.skeleton_conv2d_backward(
        _entries_as_channels(grad_output, grad_output_dim, batch),
        _entries_as_channels(input, input_dim, batch),
        _entries_as_rows(weight, weight_dim, batch),
        stride, padding, dilation, groups * batch, output_mask,
    )
    grad_input, grad_weight, grad_bias = grads
    out, out_dims = [], []
    for wanted, grad, dim in zip(
        output_mask,
        (grad_input.reshape(grad_input.shape[0], batch, grad_input.shape[1] // batch, *grad_input.shape[2:])
         if output_mask[0] else grad_input,
         grad_weight.reshape(batch, grad_weight.shape[0] // batch, *grad_weight.shape[1:]) if output_mask[1] else grad_weight,
         grad_bias.reshape(batch, grad_bias.shape[0] // batch) if output_mask[2] else grad_bias),
        (1, 0, 0),
    ):
        out.append(grad)
        out_dims.append(dim if wanted else None)  # a masked-out gradient is one empty tensor for all
    return tuple(out), tuple(out_dims)


def register():
    torch.library.register_vmap("skeleton_cuda::skeleton_conv2d", forward_rule)
    torch.library.register_vmap("skeleton_cuda::skeleton_conv2d_backward", backward_rule)
