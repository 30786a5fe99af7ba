"""Shared helpers for the CIFAR model zoo."""

from torch import nn

from ..convert import convert_model


def finish(model: nn.Module, skeleton: bool) -> nn.Module:
    """Returns ``model``, with every 3x3 nn.Conv2d swapped for a SkeletonConv2d when ``skeleton``."""
    if skeleton:
        return convert_model(model, inplace=True)
    return model
