"""SkeletonConv2d: a drop-in nn.Conv2d(kernel_size=3) that stores and computes only the cross."""

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from .functional import int_pair, resolve_padding, skeleton_conv2d
from .taps import dense_to_skeleton_weight, skeleton_to_dense_weight

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value, name):
    return tuple(int_pair(value, name, "SkeletonConv2d"))


def _int(value, name):
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"SkeletonConv2d: expected {name} to be an int, got {value!r}") from None


def _take_parameters(target, source, weight):
    """Gives `target` the weight `weight` and `source`'s bias, with `source`'s requires_grad
    flags and training mode (the two conversions between SkeletonConv2d and nn.Conv2d)."""
    with torch.no_grad():
        target.weight.copy_(weight)
        if source.bias is not None:
            target.bias.copy_(source.bias)
    target.weight.requires_grad_(source.weight.requires_grad)
    if source.bias is not None:
        target.bias.requires_grad_(source.bias.requires_grad)
    target.train(source.training)
    return target


class SkeletonConv2d(nn.Module):
    """A 3x3 convolution that keeps only its five cross taps (centre, up, down, left, right).

    Arguments and behaviour follow ``nn.Conv2d`` with ``kernel_size=3``; the weight has shape
    ``(out_channels, in_channels // groups, 5)``, taps T, L, C, R, B. It has 5/9 of the weights
    and multiply-adds of the 3x3 layer it replaces.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        padding=1,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if _pair(kernel_size, "kernel_size") != (3, 3):
            raise ValueError(
                f"SkeletonConv2d: kernel_size must be 3 (the skeleton of a 3x3 kernel), got {kernel_size!r}"
            )
        in_channels, out_channels = _int(in_channels, "in_channels"), _int(out_channels, "out_channels")
        groups = _int(groups, "groups")
        if groups <= 0:
            raise ValueError(f"SkeletonConv2d: groups must be a positive integer, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(f"SkeletonConv2d: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"SkeletonConv2d: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"SkeletonConv2d: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (3, 3)
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, str):
            resolve_padding(padding, self.stride, self.dilation)  # raises on a bad string
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        self.groups = groups
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_channels, in_channels // groups, 5), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's initialisation, with the fan-in of the five taps that exist.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _padding_pair(self):
        return tuple(resolve_padding(self.padding, self.stride, self.dilation))

    def forward(self, input):
        if self.padding_mode != "zeros":
            pad_h, pad_w = self._padding_pair()
            input = F.pad(input, (pad_w, pad_w, pad_h, pad_h), mode=self.padding_mode)
            return skeleton_conv2d(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return skeleton_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3) skeleton, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A dense nn.Conv2d checkpoint loads too: its 3x3 weight keeps its cross.
        key = prefix + "weight"
        weight = state_dict.get(key)
        if weight is not None and weight.dim() == 4 and tuple(weight.shape[-2:]) == (3, 3):
            state_dict[key] = dense_to_skeleton_weight(weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> "SkeletonConv2d":
        """A SkeletonConv2d with ``conv``'s arguments and the cross taps of its weight.

        The four corner weights are dropped. Device, dtype, requires_grad and training mode are kept.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"SkeletonConv2d.from_conv2d: expected an nn.Conv2d, got {type(conv).__name__}")
        if tuple(conv.kernel_size) != (3, 3):
            raise ValueError(
                f"SkeletonConv2d.from_conv2d: only 3x3 convolutions have a skeleton, got kernel_size={conv.kernel_size}"
            )
        skeleton = cls(
            conv.in_channels,
            conv.out_channels,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        return _take_parameters(skeleton, conv, dense_to_skeleton_weight(conv.weight))

    def to_conv2d(self) -> nn.Conv2d:
        """The equivalent dense nn.Conv2d (zero corners), e.g. for ONNX or TensorRT export."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            3,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        return _take_parameters(conv, self, skeleton_to_dense_weight(self.weight))
