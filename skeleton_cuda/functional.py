"""skeleton_conv2d: the functional form, with nn.Conv2d's argument conventions."""

import collections.abc
import operator
import warnings

import torch

from . import ops, transforms
from .reference import skeleton_conv2d_reference


def int_pair(value, name, caller="skeleton_conv2d"):
    """[h, w] from an int or a sequence of one or two ints, as nn.Conv2d and F.conv2d take them.

    Any integer with ``__index__`` counts (numpy integers from a config file, for one), so every
    layer nn.Conv2d accepts converts; the results are Python ints, what the op's schema takes.
    """
    try:
        if isinstance(value, collections.abc.Iterable) and not isinstance(value, str):  # as nn.Conv2d's _pair
            items = [operator.index(v) for v in value]
            if len(items) in (1, 2):
                return items * (3 - len(items))  # one value: both sides
        else:
            index = operator.index(value)
            return [index, index]
    except TypeError:
        pass
    raise TypeError(f"{caller}: expected {name} to be an int or a pair of ints, got {value!r}")


def resolve_padding(padding, stride, dilation):
    """Padding as a pair of ints; "valid" is none, "same" keeps the size (stride 1 only)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0]
        if padding == "same":
            if list(stride) != [1, 1]:
                raise ValueError("skeleton_conv2d: padding='same' is not supported for strided convolutions")
            return list(dilation)  # a 3x3 kernel with dilation d needs d on each side
        raise ValueError(f"skeleton_conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    return int_pair(padding, "padding")


_warned_no_cuda_kernels = False


def _use_compiled(input):
    global _warned_no_cuda_kernels
    if not ops.HAS_COMPILED_OPS:
        return False
    if input.device.type == "cuda" and not ops.HAS_CUDA_KERNELS:
        if not _warned_no_cuda_kernels:
            warnings.warn(
                "skeleton_cuda was built without CUDA kernels; CUDA tensors use the dense 3x3 "
                "fallback. Rebuild with a CUDA toolkit (CUDA_HOME set, FORCE_CUDA=1).",
                stacklevel=3,
            )
            _warned_no_cuda_kernels = True
        return False
    return input.device.type in ("cpu", "cuda")


def skeleton_conv2d(input, weight, bias=None, stride=1, padding=1, dilation=1, groups=1):
    """2-D convolution with the five cross taps of a 3x3 kernel.

    Args:
        input: (N, C_in, H, W) or unbatched (C_in, H, W); NCHW or channels_last; float32,
            float16, bfloat16 (and float64 on the CPU).
        weight: (C_out, C_in / groups, 5), taps T, L, C, R, B.
        bias: optional (C_out,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int, (h, w) pair, "same" or "valid". Zero padding; other padding modes are
            SkeletonConv2d's padding_mode.
        groups: as nn.Conv2d (groups == C_in == C_out is depthwise).

    Returns the (N, C_out, H_out, W_out) output in the input's memory format, equal to
    ``F.conv2d`` with the dense 3x3 kernel whose corners are zero.
    """
    stride = int_pair(stride, "stride")
    dilation = int_pair(dilation, "dilation")
    padding = resolve_padding(padding, stride, dilation)
    try:
        groups = operator.index(groups)
    except TypeError:
        raise TypeError(f"skeleton_conv2d: expected groups to be an int, got {groups!r}") from None
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    route = transforms.route() if _use_compiled(input) else "reference"
    if route == "op":
        output = torch.ops.skeleton_cuda.skeleton_conv2d(input, weight, bias, stride, padding, dilation, groups)
    elif route == "function":  # torch.func's reverse mode and vmap: the ops, with their derivatives
        output = transforms.apply(input, weight, bias, stride, padding, dilation, groups)
    else:  # no compiled ops, or forward-mode AD (transforms.py says why)
        if weight.dim() != 3 or weight.shape[-1] != 5:
            raise ValueError(
                f"skeleton_conv2d: expected weight of shape (C_out, C_in / groups, 5), got {tuple(weight.shape)}"
            )
        output = skeleton_conv2d_reference(input, weight, bias, stride, padding, dilation, groups)
    return output.squeeze(0) if unbatched else output
