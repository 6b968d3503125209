"""What each component of a trained LCC family restored: the objective's rise when it is taken out.

For every enabled component (heads, mlp, norms, scales), the validation objective of the restored model
is measured with that component zeroed everywhere, then zeroed in one layer at a time (the final norm
counts only in the everywhere row). ``rise = loss_without - loss_full``: positive means the component
lowered the objective by that much. Cost: (n_layers + 1) evaluations of at most ``n_examples``
validation examples per component, on the plain twin.

Per head (the head offsets and the head scales), removing each head in turn would cost a pass per head;
instead one backward pass gives the first-order estimate of the same rise, ``-grad . theta_h`` over that
head's parameters (exact for a loss linear in them; labelled ``first_order`` in the output).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lcc_lens.data import Encoded
from lcc_lens.family import CompensationFamily
from lcc_lens.models import ModelPair
from lcc_lens.progress import progress
from lcc_lens.training import TrainConfig, evaluate_loss, step_gradients

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyAttribution:
    """Objective rise (nats/token) when each component is removed, everywhere and per layer."""

    objective: str
    n_examples: int
    full_loss: float
    removed: dict[str, float]
    per_layer: dict[str, list[float]]
    per_head: dict[str, Tensor]
    """component -> [n_layers, n_heads] first-order rise (heads: the selected heads; scales: all)."""

    def to_json(self) -> dict[str, Any]:
        """The ``family_attribution`` entry of heads.json: one row per (component, layer)."""
        rows = [
            {"component": c, "layer": layer, "loss_rise": rise}
            for c, rises in self.per_layer.items()
            for layer, rise in enumerate(rises)
        ]
        heads = [
            {"component": c, "layer": layer, "head": head, "loss_rise_first_order": float(v)}
            for c, grid in self.per_head.items()
            for (layer, head), v in zip(_cells(grid), grid.flatten().tolist(), strict=True)
            if v != 0
        ]
        return {
            "objective": self.objective,
            "n_examples": self.n_examples,
            "val_loss_full": self.full_loss,
            "loss_rise_removed": dict(self.removed),
            "per_layer": rows,
            "per_head": heads,
        }


def family_attribution(
    pair: ModelPair,
    family: CompensationFamily,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    n_examples: int = 16,
) -> FamilyAttribution:
    """Remove each component of ``family`` in turn (see the module docstring); ``family`` is unchanged."""
    chosen = list(data[:n_examples])

    def loss() -> float:
        return evaluate_loss(pair, family, chosen, cfg)

    full = loss()
    removed: dict[str, float] = {}
    per_layer: dict[str, list[float]] = {}
    layers = range(family.geometry.n_layers)
    for component in progress(family.components, desc="attribution", unit="component"):
        with family.without(component):
            removed[component] = loss() - full
        rises = []
        for layer in layers:
            with family.without(component, layer):
                rises.append(loss() - full)
        per_layer[component] = rises
    per_head = _first_order_heads(pair, family, chosen, cfg)
    logger.info("family attribution (objective rise when removed): %s", removed)
    return FamilyAttribution(cfg.objective, len(chosen), full, removed, per_layer, per_head)


def _first_order_heads(
    pair: ModelPair, family: CompensationFamily, data: list[Encoded], cfg: TrainConfig
) -> dict[str, Tensor]:
    """-grad . theta_h per head for the enabled head components, from one backward pass on ``data``."""
    g = family.geometry
    one_batch = dataclasses.replace(cfg, batch_size=len(data), grad_accum=1)
    step_gradients(pair, family, data, one_batch, 0)
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        if "heads" in family.components:
            comp = family.heads
            rise = torch.zeros(comp.n_selected, device=comp.bias.device)
            for p in (comp.beta, comp.bias):
                if p.grad is not None:
                    rise -= (p.grad * p).sum(-1)
            grid = torch.zeros(g.n_layers, g.n_heads, device=rise.device)
            out["heads"] = grid.index_put((comp.heads[:, 0], comp.heads[:, 1]), rise).cpu()
        s = family.head_scale
        if "scales" in family.components and s.grad is not None:
            out["scales"] = (-(s.grad * s)).detach().cpu()
    family.zero_grad(set_to_none=True)
    return out


def _cells(grid: Tensor) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(grid.shape[0]) for head in range(grid.shape[1])]
