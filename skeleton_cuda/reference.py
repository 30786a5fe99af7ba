"""The pure-PyTorch skeleton convolution: a dense 3x3 convolution with zero corners.

It is the definition of the op (the tests' float64 oracle) and the fallback used when the
compiled kernels are missing. It costs as much as a full 3x3 convolution.
"""

import torch
import torch.nn.functional as F

from .taps import skeleton_to_dense_weight


def skeleton_conv2d_reference(input, weight, bias=None, stride=1, padding=1, dilation=1, groups=1):
    """Same arguments and result as ``skeleton_conv2d``, through ``F.conv2d``."""
    return F.conv2d(input, skeleton_to_dense_weight(weight), bias, stride, padding, dilation, groups)
