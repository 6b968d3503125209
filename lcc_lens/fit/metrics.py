"""What a fit measured, typed: the held-out headline of the test domain and the run's own figures.

``FitMetrics.to_dict()`` is the ``summary`` of ``metrics.json`` (and of ``complete.json``); its keys are
the stable record layout (``nll_pruned``, ``gap_closed_nll``, ...), the attributes are what code reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lcc_lens.evaluation.protocol import ProtocolResult


@dataclass(frozen=True)
class Headline:
    """The out-of-domain test domain's figures and every domain's protocol result.

    ``gap_closed_nll`` is the headline (NLL scale), ``gap_closed`` the perplexity-scale figure; both are
    NaN when pruning did not make the test domain worse, and absent (None) without a restored model.
    """

    eval_domain: str
    eval_tokens: int
    nll: dict[str, float]
    ppl: dict[str, float]
    gap_closed_nll: float | None
    gap_closed_nll_ci: tuple[float | None, float | None] | None
    gap_closed: float | None
    evaluation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eval_domain": self.eval_domain, "eval_tokens": self.eval_tokens}
        for label in self.nll:
            out[f"nll_{label}"] = self.nll[label]
            out[f"ppl_{label}"] = self.ppl[label]
        if self.gap_closed_nll is not None:
            out["gap_closed_nll"] = self.gap_closed_nll
            out["gap_closed_nll_ci"] = list(self.gap_closed_nll_ci or (None, None))
            out["gap_closed"] = self.gap_closed
        out["evaluation"] = self.evaluation
        return out


def headline_metrics(result: ProtocolResult, test_domain: str) -> Headline:
    """The test domain's headline from a protocol result (restored figures when it scored one)."""
    d = result.domains[test_domain]
    labels = list(d.nll_sums)
    gap_nll: float | None = None
    gap_ppl: float | None = None
    ci: tuple[float | None, float | None] | None = None
    if "restored" in d.nll_sums:
        worse = d.nll("pruned") > d.nll("dense")
        gap = result.gap("restored", test_domain)
        gap_nll = gap.nll if worse and gap.nll is not None else math.nan
        gap_ppl = gap.ppl if worse and gap.ppl is not None else math.nan
        ci = (gap.nll_low, gap.nll_high)
    return Headline(
        eval_domain=test_domain,
        eval_tokens=d.n_tokens,
        nll={label: d.nll(label) for label in labels},
        ppl={label: d.ppl(label) for label in labels},
        gap_closed_nll=gap_nll,
        gap_closed_nll_ci=ci,
        gap_closed=gap_ppl,
        evaluation=result.to_dict(),
    )


@dataclass
class FitMetrics:
    """Validation losses, the held-out headline, sizes, per-stage costs and the export check.

    ``stages`` is filled in as the stages finish (seconds and peak memory each); ``wall_time_s`` and
    ``export_max_abs_logit_diff`` once the run ends and its export is checked.
    """

    val_loss_pruned: float
    val_loss_restored: float
    headline: Headline
    n_selected_heads: int
    n_trainable_parameters: int
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_time_s: float | None = None
    export_max_abs_logit_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` summary (flat keys, the record layout of every earlier run)."""
        out: dict[str, Any] = {
            "val_loss_pruned": self.val_loss_pruned,
            "val_loss_restored": self.val_loss_restored,
            "stages": self.stages,
            **self.headline.to_dict(),
            "n_selected_heads": self.n_selected_heads,
            "n_trainable_parameters": self.n_trainable_parameters,
        }
        if self.wall_time_s is not None:
            out["wall_time_s"] = self.wall_time_s
        if self.export_max_abs_logit_diff is not None:
            out["export_max_abs_logit_diff"] = self.export_max_abs_logit_diff
        return out
