"""Wanda (Sun et al., 2023): prune by |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from lcc_lens.pruning.masks import PruneMask, mask_from_scores


def wanda_scores(
    weight: Float[Tensor, "out inp"], input_norms: Float[Tensor, " inp"]
) -> Float[Tensor, "out inp"]:
    """Importance of every weight: its magnitude times the L2 norm of its input feature over all tokens."""
    return weight.detach().abs().float() * input_norms.float().to(weight.device)[None, :]


def wanda_mask(
    weight: Float[Tensor, "out inp"],
    input_norms: Float[Tensor, " inp"],
    sparsity: float,
    nm: tuple[int, int] | None = None,
) -> PruneMask:
    """Remove the lowest-scoring ``sparsity`` fraction of every output row (or N of every M inputs)."""
    return mask_from_scores(wanda_scores(weight, input_norms), sparsity, nm, per_row=True)
