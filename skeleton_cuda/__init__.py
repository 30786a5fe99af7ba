"""skeleton_cuda: the skeleton convolution (the five cross taps of a 3x3 kernel) for PyTorch.

Public names: skeleton_conv2d, SkeletonConv2d, convert_model, to_dense_model,
dense_to_skeleton_weight, skeleton_to_dense_weight.
"""

from .convert import convert_model, to_dense_model
from .functional import skeleton_conv2d
from .modules import SkeletonConv2d
from .ops import cpu_kernel_isa, has_compiled_ops, has_cuda_kernels
from .taps import dense_to_skeleton_weight, skeleton_to_dense_weight

__version__ = "0.1.0"

__all__ = [
    "SkeletonConv2d",
    "convert_model",
    "cpu_kernel_isa",
    "dense_to_skeleton_weight",
    "has_compiled_ops",
    "has_cuda_kernels",
    "skeleton_conv2d",
    "skeleton_to_dense_weight",
    "to_dense_model",
]
