"""skeleton_conv2d: the functional form, with nn.Conv2d's argument conventions."""

import warnings

import torch

from . import ops
from .reference import skeleton_conv2d_reference


def _pair(value, name):
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [int(value[0]), int(value[1])]
    raise TypeError(f"skeleton_conv2d: expected {name} to be an int or a pair of ints, got {value!r}")


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
    return _pair(padding, "padding")


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
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    padding = resolve_padding(padding, stride, dilation)
    if not isinstance(groups, int):
        raise TypeError(f"skeleton_conv2d: expected groups to be an int, got {groups!r}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if _use_compiled(input):
        output = torch.ops.skeleton_cuda.skeleton_conv2d(input, weight, bias, stride, padding, dilation, groups)
    else:
        if weight.dim() != 3 or weight.shape[-1] != 5:
            raise ValueError(
                f"skeleton_conv2d: expected weight of shape (C_out, C_in / groups, 5), got {tuple(weight.shape)}"
            )
        output = skeleton_conv2d_reference(input, weight, bias, stride, padding, dilation, groups)
    return output.squeeze(0) if unbatched else output
