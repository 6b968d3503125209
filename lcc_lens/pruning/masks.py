"""Pruning masks from importance scores, and the [out, in] view of a linear layer's weight.

A mask is a boolean tensor of the weight's [out, in] shape that is True where a weight is removed.
Scores are "higher = keep"; ties are broken by index (``torch.topk`` is deterministic on CPU).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from lcc_lens.errors import ConfigError

Scores = Float[Tensor, "out inp"]
PruneMask = Bool[Tensor, "out inp"]


def is_prunable_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or GPT-2's ``Conv1D`` (a linear layer with a transposed weight)."""
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def weight_matrix(module: nn.Module) -> Float[Tensor, "out inp"]:
    """The weight as [out_features, in_features] (a transposed view for Conv1D)."""
    w = module.weight
    return w if isinstance(module, nn.Linear) else w.t()


def set_weight_matrix(module: nn.Module, value: Float[Tensor, "out inp"]) -> None:
    """Write an [out, in] matrix back into the module's weight, in its own layout and dtype."""
    target = module.weight.data
    data = value if isinstance(module, nn.Linear) else value.t()
    target.copy_(data.to(dtype=target.dtype, device=target.device))


def n_to_prune(total: int, fraction: float) -> int:
    """How many of ``total`` items a ``fraction`` removes (nearest integer)."""
    return int(round(total * fraction))


def row_mask(scores: Scores, sparsity: float) -> PruneMask:
    """Remove the ``sparsity`` fraction of lowest scores in every output row (Wanda's comparison group)."""
    k = n_to_prune(scores.shape[1], sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, True)
    return mask


def matrix_mask(scores: Scores, sparsity: float) -> PruneMask:
    """Remove the ``sparsity`` fraction of lowest scores of the whole matrix (magnitude pruning)."""
    flat = scores.reshape(-1)
    k = n_to_prune(flat.numel(), sparsity)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(flat, k, largest=False).indices] = True
    return mask.view_as(scores)


def check_nm_shape(in_features: int, n: int, m: int, name: str = "layer") -> None:
    """N:M groups run along the input dimension, which must be a multiple of M."""
    if in_features % m:
        raise ConfigError(
            f"{name} has {in_features} inputs, not a multiple of M={m}: an {n}:{m} pattern cannot tile it. "
            "Exclude it with --exclude or pick an M that divides it."
        )


def nm_mask(scores: Scores, n: int, m: int) -> PruneMask:
    """Remove the N lowest scores in every group of M consecutive inputs of every row."""
    out, inp = scores.shape
    check_nm_shape(inp, n, m)
    groups = scores.reshape(out, inp // m, m)
    idx = torch.topk(groups, n, dim=2, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, idx, True)
    return mask.view(out, inp)


def mask_from_scores(
    scores: Scores, sparsity: float, nm: tuple[int, int] | None, *, per_row: bool
) -> PruneMask:
    """N:M when ``nm`` is set, else per-row (Wanda) or per-matrix (magnitude) unstructured."""
    if nm is not None:
        return nm_mask(scores, *nm)
    return row_mask(scores, sparsity) if per_row else matrix_mask(scores, sparsity)
