"""What the real-model analyses share: their fit setting, the fit's first stages run once, reporting.

The scripts build one :class:`~lcc_lens.fit.FitConfig` (smaller than the fit's defaults so that a
2-core CPU finishes) and call the fit's own stages (:mod:`lcc_lens.fit.stages`); nothing here
re-implements a stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcc_lens.compensation import Compensation
from lcc_lens.evaluation.protocol import ProtocolResult
from lcc_lens.fit import FitConfig, stages
from lcc_lens.fit.evaluate import headline_metrics, heldout_evaluation
from lcc_lens.models import HeadGeometry, describe

RESULTS = Path(__file__).resolve().parent / "results"

# The analyses' setting: the fit's defaults with smaller sizes (each can be changed from the CLI).
ANALYSIS_SIZES: dict[str, Any] = {
    "data": {"n_train": 128, "n_diff_prompts": 128, "n_probe": 128},
    "probe": {"n_pairs": 256},
    "train": {"steps": 16, "batch_size": 8},
    "eval": {"windows": 24, "context_length": 256},
}


def analysis_config(
    *,
    dense: str = "embedded",
    prune_method: str = "wanda",
    n_train: int = 128,
    max_length: int = 128,
    eval_windows: int = 24,
    steps: int = 16,
    lr: float = 1e-2,
    batch_size: int = 8,
    objective: str = "lm",
    seed: int = 0,
) -> FitConfig:
    """The analyses' FitConfig: the fit's stages and defaults at the analyses' sizes."""
    sizes = {key: dict(value) for key, value in ANALYSIS_SIZES.items()}
    sizes["data"].update(
        n_train=n_train, n_diff_prompts=min(128, n_train), n_probe=min(128, n_train)
    )
    sizes["train"].update(steps=steps, lr=lr, batch_size=batch_size, objective=objective)
    sizes["eval"]["windows"] = eval_windows
    return FitConfig.from_dict(
        {
            "dense": dense,
            "device": "cpu",
            "seed": seed,
            "max_length": max_length,
            "prune": {"method": prune_method},
            **sizes,
        }
    )


@dataclass
class Shared:
    """The stages every variant of one setting shares, run once: pair, data, diffs, baseline scores."""

    config: FitConfig
    resolved: stages.ResolvedPair
    data: stages.EncodedData
    lost: stages.LostStage
    baseline: ProtocolResult

    @property
    def pair(self):
        return self.resolved.pair

    @property
    def test_domain(self) -> str:
        return self.data.texts.config.test_domain

    def lost_of_rank(self, k: int) -> stages.LostStage:
        return stages.LostStage(stages.components_of_rank(self.lost, k), self.lost.diff)

    def scores(self, comp: Compensation | None) -> dict[str, Any]:
        """Headline metrics (test domain) of the pruned model, with ``comp`` attached when given."""
        result = heldout_evaluation(
            self.pair, comp, self.data, self.config.eval, baseline=self.baseline
        )
        return headline_metrics(result, self.test_domain).to_dict()

    def identity(self) -> dict[str, Any]:
        return {
            "dense": describe(self.config.dense),
            "pruned": describe(self.resolved.pruned_source),
            "data": self.data.texts.describe(),
            "config": self.config.to_dict(),
        }


def run_shared_stages(config: FitConfig) -> Shared:
    """Resolve the pair, choose the data, take the diffs and score dense / pruned: once per setting."""
    resolved = stages.resolve_pair(config)
    data = stages.choose_data(config, resolved.pair)
    lost = stages.find_lost_components(resolved.pair, data, config.diff, config.compensation.k)
    baseline = heldout_evaluation(resolved.pair, None, data, config.eval)
    return Shared(config, resolved, data, lost, baseline)


def fit_record(config: FitConfig, **extra: Any) -> dict[str, Any]:
    """How a compensation was trained, stored beside a fit and quoted by the reports that reuse it."""
    t = config.train
    return {
        "objective": t.objective,
        "steps": t.steps,
        "batch_size": t.batch_size,
        "lr": t.lr,
        **extra,
        "n_train": config.data.n_train,
        "max_length": config.max_length,
        "config": config.to_dict(),
    }


def describe_fit(fit: dict[str, Any]) -> str:
    """One line for a report: objective, steps, batch, lr and training data size."""
    return (
        f"objective {fit['objective']}, {fit['steps']} steps of batch {fit['batch_size']}, lr "
        f"{fit['lr']}, {fit.get('n_train', '?')} training examples of at most "
        f"{fit.get('max_length', '?')} tokens"
    )


def top_heads(
    values: Any, geometry: HeadGeometry, n: int, *, descending: bool = True
) -> list[tuple[str, float, tuple[int, int]]]:
    """The ``n`` (name, value, (layer, head)) triples of a [n_layers, n_heads] map, largest first."""
    flat = values.flatten()
    order = flat.argsort(descending=descending)[:n].tolist()
    out = []
    for i in order:
        layer, head = geometry.unflatten(int(i))
        out.append((geometry.head_name(layer, head), float(flat[i]), (layer, head)))
    return out


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` (floats to 4 significant digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
