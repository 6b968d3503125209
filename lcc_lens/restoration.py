"""How much of each head's lost activation a learned compensation gives back.

For every head (l, h), with dz = z_dense - z_pruned at the diff positions of held-out prompts:

* ``rel_residual``: mean ||z_dense - z_restored|| / mean ||z_dense - z_pruned||, measured in the restored
  model (the compensation attached to the pruned model, so upstream compensations count too);
  1 means nothing was given back, 0 means the dense activation is matched exactly.
* ``static_rel_residual``: mean_n ||dz_n - c|| / mean_n ||dz_n|| over the pruned model's own dz samples:
  the head's constant offset alone, ignoring how upstream compensations move this head's input.
* ``cosine``: cosine between c_learned and the mean dz (does the offset point where the loss is?).
* ``norm_ratio``: ||c_learned|| / ||mean dz||.

Unselected heads have c = 0: their static residual is exactly 1 and cosine 0, while their restored
residual can still move below 1 when compensated heads upstream repair their inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.compensation import Compensation
from lcc_lens.diff import DiffAccumulator, DiffConfig, HeadDiff, diff_batches
from lcc_lens.errors import ConfigError
from lcc_lens.family import CompensationFamily
from lcc_lens.hooks import capture_z
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.progress import progress

logger = logging.getLogger(__name__)

HeadMap = Float[Tensor, "n_layers n_heads"]


@dataclass(frozen=True)
class RestorationStats:
    """Per-head restoration measures, each [n_layers, n_heads]; see the module docstring."""

    rel_residual: HeadMap
    static_rel_residual: HeadMap
    cosine: HeadMap
    norm_ratio: HeadMap
    dz_norm: HeadMap
    restored_dz_norm: HeadMap
    selected: tuple[tuple[int, int], ...]
    geometry: HeadGeometry
    n_positions: int

    @property
    def restored_fraction(self) -> HeadMap:
        """1 - rel_residual: the share of the lost activation norm given back (can be negative)."""
        return 1.0 - self.rel_residual

    def summary(self) -> dict[str, Any]:
        """Means over selected and unselected heads, for reports and metrics files."""
        mask = torch.zeros(self.geometry.n_layers, self.geometry.n_heads, dtype=torch.bool)
        for layer, head in self.selected:
            mask[layer, head] = True
        out: dict[str, Any] = {"n_selected": len(self.selected), "n_positions": self.n_positions}
        for name in ("rel_residual", "static_rel_residual", "cosine", "norm_ratio"):
            t = getattr(self, name)
            out[f"{name}_selected"] = float(t[mask].mean()) if mask.any() else float("nan")
            out[f"{name}_unselected"] = float(t[~mask].mean()) if (~mask).any() else float("nan")
        return out


@torch.no_grad()
def restoration_stats(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily,
    prompts: Sequence[str],
    diff_config: DiffConfig | None = None,
    *,
    base: HeadDiff | None = None,
) -> RestorationStats:
    """Measure per-head restoration of ``compensation`` on held-out ``prompts``.

    One pass: per batch the dense model, the pruned model and the restored model (pruned with the
    compensation attached) each run once. base: the uncompensated HeadDiff on the same prompts and config,
    when already computed; then the pruned model's pass is skipped.
    """
    g = pair.geometry
    cg = compensation.geometry
    if (cg.n_layers, cg.n_heads, cg.d_head) != (g.n_layers, g.n_heads, g.d_head):
        raise ConfigError(
            f"the compensation is for {cg.n_layers}x{cg.n_heads} heads (d_head {cg.d_head}) but the "
            f"pair has {g.n_layers}x{g.n_heads} (d_head {g.d_head}); pass the compensation fitted on this pair."
        )
    config = diff_config or DiffConfig()
    batches = diff_batches(pair.tokenizer, prompts, config, pair.device)
    base_acc = None if base is not None else DiffAccumulator(g, config)
    restored_acc = DiffAccumulator(g, config)
    for batch in progress(batches, desc="restoration", unit="batch", leave=False):
        dense = capture_z(pair.dense, batch.ids, batch.attn, batch.selected)
        if base_acc is not None:
            pruned = capture_z(pair.pruned, batch.ids, batch.attn, batch.selected)
            base_acc.add(dense, pruned, batch.row_start)
        with compensation.attach(pair.pruned):
            restored_z = capture_z(pair.pruned, batch.ids, batch.attn, batch.selected)
        restored_acc.add(dense, restored_z, batch.row_start)
    if base_acc is not None:
        base = base_acc.result()
    restored = restored_acc.result()
    c = compensation.z_offsets().detach().float().cpu()  # [L, H, d]
    eps = 1e-12
    rel = restored.dz_norm / base.dz_norm.clamp_min(eps)
    samples = base.samples  # [L, H, N, d]
    static_num = (samples - c[:, :, None, :]).norm(dim=-1).mean(-1)
    static = static_num / samples.norm(dim=-1).mean(-1).clamp_min(eps)
    mean_dz = base.mean_dz
    cos = torch.nn.functional.cosine_similarity(c, mean_dz, dim=-1, eps=eps)
    ratio = c.norm(dim=-1) / mean_dz.norm(dim=-1).clamp_min(eps)
    stats = RestorationStats(
        rel_residual=rel,
        static_rel_residual=static,
        cosine=cos,
        norm_ratio=ratio,
        dz_norm=base.dz_norm,
        restored_dz_norm=restored.dz_norm,
        selected=tuple(compensation.selected_heads()),
        geometry=g,
        n_positions=base.n_positions,
    )
    logger.info("restoration: %s", stats.summary())
    return stats
