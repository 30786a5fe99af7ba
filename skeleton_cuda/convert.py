"""Swapping the 3x3 convolutions of a model for skeleton ones, and back."""

import copy

from torch import nn
from torch.nn.parameter import UninitializedParameter

from .modules import SkeletonConv2d


def _is_convertible_conv(module):
    # Exact nn.Conv2d behaviour only: a subclass that overrides forward (weight standardisation,
    # quantisation stubs, ...) computes something SkeletonConv2d would not.
    return (
        isinstance(module, nn.Conv2d)
        and type(module).forward is nn.Conv2d.forward
        and not isinstance(module.weight, UninitializedParameter)
        and tuple(module.kernel_size) == (3, 3)
    )


def _replace(model, convert, memo):
    if id(model) in memo:
        return memo[id(model)]
    replacement = convert(model)
    if replacement is not None:
        memo[id(model)] = replacement
        return replacement
    memo[id(model)] = model
    # Not named_children(): it yields a shared module only once, and every reference must change.
    for name, child in list(model._modules.items()):
        if child is None:
            continue
        new_child = _replace(child, convert, memo)
        if new_child is not child:
            setattr(model, name, new_child)
    return model


def convert_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replaces every nn.Conv2d with a 3x3 kernel by a SkeletonConv2d holding its cross taps.

    Other layers are untouched, shared layers stay shared, and the given model is left as it was
    unless ``inplace=True``. Returns the converted model (a model that is itself a 3x3
    nn.Conv2d comes back as a SkeletonConv2d).
    """
    if not inplace:
        model = copy.deepcopy(model)
    return _replace(model, lambda m: SkeletonConv2d.from_conv2d(m) if _is_convertible_conv(m) else None, {})


def to_dense_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replaces every SkeletonConv2d by the equivalent dense nn.Conv2d (zero corners), for export
    to ONNX, TensorRT or mobile runtimes that only know nn.Conv2d."""
    if not inplace:
        model = copy.deepcopy(model)
    return _replace(model, lambda m: m.to_conv2d() if isinstance(m, SkeletonConv2d) else None, {})
