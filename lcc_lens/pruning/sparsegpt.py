"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with second-order weight reconstruction.

For one linear layer with inputs X, SparseGPT approximately solves min ||W X - W' X||^2 over W' with the
requested sparsity. With H = X X^T (+ damping), it walks the input columns in blocks; in each block it
chooses the mask by w^2 / [H^-1]_jj^2 (adaptively, from the already-updated weights), zeroes the pruned
weights one column at a time and spreads each column's error over the columns not yet processed through
the upper Cholesky factor of H^-1 (an exact sequence of OBS updates).
"""

from __future__ import annotations

import logging

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.errors import ConfigError
from lcc_lens.pruning.masks import PruneMask, check_nm_shape, n_to_prune

logger = logging.getLogger(__name__)


def _inverse_cholesky(h: Tensor, percdamp: float) -> Tensor:
    """Upper Cholesky factor of (H + damp I)^-1; retries with more damping if H is not definite."""
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    base = torch.mean(torch.diag(h)).clamp_min(1e-12)
    damp = percdamp
    for _ in range(6):
        try:
            lower = torch.linalg.cholesky(h + damp * base * eye)
            hinv = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(hinv, upper=True)
        except torch.linalg.LinAlgError:
            damp = max(damp * 10, 1e-4)
            logger.warning("Hessian not positive definite; raising damping to %g", damp)
    raise ConfigError(
        "SparseGPT could not factor the layer's Hessian even with strong damping; use more calibration "
        "samples (--n-samples) or a larger --percdamp."
    )


def sparsegpt_prune(
    weight: Float[Tensor, "out inp"],
    hessian: Float[Tensor, "inp inp"],
    sparsity: float,
    nm: tuple[int, int] | None = None,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[Float[Tensor, "out inp"], PruneMask]:
    """Return the pruned and reconstructed weight (float32) and its mask.

    Unstructured: each column block removes its share of the layer's weights (the shares add up to the
    exact layer-wise count). N:M: in every group of M inputs of every row the N weights with the smallest
    w^2 / [H^-1]_jj^2 are removed, chosen when the sweep reaches the group.
    """
    w = weight.detach().clone().float()
    h = hessian.detach().clone().float().to(w.device)
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise ConfigError(
            f"Hessian shape {tuple(h.shape)} does not match a weight with {cols} inputs."
        )
    if nm is not None:
        check_nm_shape(cols, *nm)
        if blocksize % nm[1]:
            raise ConfigError(f"blocksize {blocksize} must be a multiple of M={nm[1]}.")
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_cholesky(h, percdamp)
    del h

    mask = torch.zeros_like(w, dtype=torch.bool)
    total = n_to_prune(rows * cols, sparsity)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        diag = torch.diag(hinv1)
        if nm is None:
            k = round(total * i2 / cols) - round(total * i1 / cols)
            score = (w1.pow(2) / diag[None, :].pow(2)).reshape(-1)
            mask1 = torch.zeros_like(score, dtype=torch.bool)
            if k > 0:
                mask1[torch.topk(score, k, largest=False).indices] = True
            mask1 = mask1.view(rows, count)
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                score = w1[:, i : i + m].pow(2) / diag[None, i : i + m].pow(2)
                mask1.scatter_(1, i + torch.topk(score, n, dim=1, largest=False).indices, True)
            q = col.masked_fill(mask1[:, i], 0.0)
            q1[:, i] = q
            err = (col - q) / diag[i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i1:i2] = q1
        mask[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, mask
