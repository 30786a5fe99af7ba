"""The five taps of the skeleton kernel and conversions to and from dense 3x3 weights.

     .  T  .      a skeleton weight has shape (C_out, C_in / groups, 5), taps in raster order
     L  C  R      T, L, C, R, B: the flat 3x3 indices 1, 3, 4, 5, 7.
     .  B  .
"""

import torch

TAP_NAMES = ("T", "L", "C", "R", "B")
TAP_ROWS = (0, 1, 1, 1, 2)
TAP_COLS = (1, 0, 1, 2, 1)
FLAT_3X3_INDEX = (1, 3, 4, 5, 7)


def dense_to_skeleton_weight(weight: torch.Tensor) -> torch.Tensor:
    """Keeps the cross of a dense (..., 3, 3) weight: returns (..., 5), taps T, L, C, R, B.

    The four corners are dropped, so a model whose corners are not zero computes something
    different afterwards; ``convert_model`` is meant for training skeleton models, or for
    fine-tuning after conversion.
    """
    if weight.dim() < 2 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(
            f"dense_to_skeleton_weight: expected a weight of shape (..., 3, 3), got {tuple(weight.shape)}"
        )
    return weight.flatten(-2)[..., list(FLAT_3X3_INDEX)]


def skeleton_to_dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """Places the five taps of a (..., 5) weight in a dense (..., 3, 3) kernel with zero corners.

    Differentiable; this dense kernel is the definition the tests check every backend against.
    """
    if weight.dim() < 1 or weight.shape[-1] != 5:
        raise ValueError(
            f"skeleton_to_dense_weight: expected a weight of shape (..., 5), got {tuple(weight.shape)}"
        )
    index = torch.tensor(FLAT_3X3_INDEX, device=weight.device)
    dense = weight.new_zeros(*weight.shape[:-1], 9).index_copy(-1, index, weight)
    return dense.unflatten(-1, (3, 3))
