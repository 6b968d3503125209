"""Magnitude pruning: remove the weights of smallest absolute value (no calibration data)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from lcc_lens.pruning.masks import PruneMask, mask_from_scores


def magnitude_mask(
    weight: Float[Tensor, "out inp"], sparsity: float, nm: tuple[int, int] | None = None
) -> PruneMask:
    """Mask of the ``sparsity`` fraction of smallest |W| over the whole matrix, or N per M-group with N:M.

    The whole matrix is one comparison group, as in the Wanda paper's magnitude baseline.
    """
    return mask_from_scores(weight.detach().abs().float(), sparsity, nm, per_row=False)
