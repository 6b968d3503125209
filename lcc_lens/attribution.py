"""What each component of a trained LCC family restored: the objective's rise when it is taken out.

For every enabled component (heads, mlp, norms, scales), the validation objective of the restored model
is measured with that component zeroed everywhere, then zeroed in one layer at a time (the final norm
counts only in the everywhere row). ``rise = loss_without - loss_full``: positive means the component
lowered the objective by that much. Cost: (n_layers + 1) evaluations of at most ``n_examples``
validation examples per component, on the plain twin; nothing per head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lcc_lens.data import Encoded
from lcc_lens.family import CompensationFamily
from lcc_lens.models import ModelPair
from lcc_lens.progress import progress
from lcc_lens.training import TrainConfig, evaluate_loss

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyAttribution:
    """Objective rise (nats/token) when each component is removed, everywhere and per layer."""

    objective: str
    n_examples: int
    full_loss: float
    removed: dict[str, float]
    per_layer: dict[str, list[float]]

    def to_json(self) -> dict[str, Any]:
        """The ``family_attribution`` entry of heads.json: one row per (component, layer)."""
        rows = [
            {"component": c, "layer": layer, "loss_rise": rise}
            for c, rises in self.per_layer.items()
            for layer, rise in enumerate(rises)
        ]
        return {
            "objective": self.objective,
            "n_examples": self.n_examples,
            "val_loss_full": self.full_loss,
            "loss_rise_removed": dict(self.removed),
            "per_layer": rows,
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
    logger.info("family attribution (objective rise when removed): %s", removed)
    return FamilyAttribution(cfg.objective, len(chosen), full, removed, per_layer)
