"""Side-by-side tables of dense / pruned / restored results, with the fraction of the gap each restores.

Gap closed, per metric, for a restored model R given the dense D and the pruned P:

    gap_closed = (t(R) - t(P)) / (t(D) - t(P))

where ``t`` orients the metric so that higher is better: ``t(x) = x`` for accuracies, ``t(x) = -x``
for lower-is-better metrics such as bits per byte, and ``t(x) = -log(x)`` for perplexities (the gap is
measured in log-perplexity, i.e. in mean negative log-likelihood, which is additive over tokens and does
not let one very large pruned perplexity dominate). 1.0 means fully restored, 0.0 no better than pruned,
negative worse than pruned; undefined (None) when dense and pruned tie.

The dense-minus-pruned separation is also reported in units of its standard error,
``z = (t(D) - t(P)) / sqrt(se_D^2 + se_P^2)`` when lm-eval gives both stderrs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lcc_lens.errors import ConfigError
from lcc_lens.evaluation.gap import gap_closed, oriented

Role = Literal["dense", "pruned", "restored"]
_NOT_METRICS = {"higher_is_better", "n_samples", "seconds"}


@dataclass(frozen=True)
class ModelResult:
    """One model's results: lm-eval tasks (``{task: {metric: v, metric_stderr: s}}``) and perplexity."""

    label: str
    role: Role
    source: str
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    perplexity: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "role": self.role,
            "source": self.source,
            "tasks": {t: dict(v) for t, v in self.tasks.items()},
            "perplexity": dict(self.perplexity) if self.perplexity else None,
        }


def is_log_scale(metric: str) -> bool:
    """Perplexity-type metrics compare on log scale."""
    return "perplexity" in metric or metric == "ppl"


@dataclass(frozen=True)
class Row:
    """One (task, metric) line of the comparison."""

    task: str
    metric: str
    higher_is_better: bool
    values: dict[str, float | None]
    stderrs: dict[str, float | None]
    separation_z: float | None
    gap: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "values": self.values,
            "stderr": self.stderrs,
            "dense_minus_pruned_z": self.separation_z,
            "gap_closed": self.gap,
        }


def _check_roles(results: Sequence[ModelResult]) -> None:
    if not results:
        raise ConfigError("no model results to compare.")
    labels = [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"model labels must be unique, got {labels}.")
    if sum(r.role == "dense" for r in results) > 1 or sum(r.role == "pruned" for r in results) > 1:
        raise ConfigError("at most one dense and one pruned model can be compared.")


def _metric_names(task_result: Mapping[str, Any]) -> list[str]:
    return [
        k
        for k in task_result
        if k not in _NOT_METRICS
        and not k.endswith("_stderr")
        and not isinstance(task_result[k], dict)
    ]


def _tables(results: Sequence[ModelResult]) -> list[tuple[str, str, bool, dict[str, Any]]]:
    """(task, metric, higher_is_better, {label: (value, stderr)}) in first-seen order."""
    order: list[tuple[str, str]] = []
    hib: dict[tuple[str, str], bool] = {}
    cells: dict[tuple[str, str], dict[str, tuple[float | None, float | None]]] = {}
    for res in results:
        for task, entry in res.tasks.items():
            flags = entry.get("higher_is_better", {}) or {}
            for metric in _metric_names(entry):
                key = (task, metric)
                if key not in cells:
                    order.append(key)
                    cells[key] = {}
                    hib[key] = bool(flags.get(metric, not is_log_scale(metric)))
                cells[key][res.label] = (entry.get(metric), entry.get(f"{metric}_stderr"))
        if res.perplexity:
            key = ("perplexity", "ppl")
            if key not in cells:
                order.append(key)
                cells[key] = {}
                hib[key] = False
            cells[key][res.label] = (res.perplexity.get("ppl"), None)
    return [(t, m, hib[(t, m)], cells[(t, m)]) for t, m in order]


def comparison_rows(results: Sequence[ModelResult]) -> list[Row]:
    """Rows of the side-by-side comparison, with separation and gap-closed figures."""
    _check_roles(results)
    dense = next((r.label for r in results if r.role == "dense"), None)
    pruned = next((r.label for r in results if r.role == "pruned"), None)
    restored = [r.label for r in results if r.role == "restored"]
    rows = []
    for task, metric, hib, cell in _tables(results):
        values = {r.label: cell.get(r.label, (None, None))[0] for r in results}
        stderrs = {r.label: cell.get(r.label, (None, None))[1] for r in results}
        log_scale = is_log_scale(metric)
        z = None
        gap: dict[str, float | None] = {}
        if dense and pruned and values[dense] is not None and values[pruned] is not None:
            d, p = values[dense], values[pruned]
            sd, sp = stderrs[dense], stderrs[pruned]
            if sd is not None and sp is not None and not log_scale and (sd > 0 or sp > 0):
                z = (oriented(d, hib, False) - oriented(p, hib, False)) / math.hypot(sd, sp)
            for label in restored:
                r = values[label]
                gap[label] = (
                    None
                    if r is None
                    else gap_closed(d, p, r, higher_is_better=hib, log_scale=log_scale)
                )
        rows.append(Row(task, metric, hib, values, stderrs, z, gap))
    return rows


def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}" if abs(value) >= 100 else f"{value:.4f}"
    return f"{text} ± {stderr:.4f}" if stderr is not None else text


def markdown_table(results: Sequence[ModelResult]) -> str:
    """A markdown table: one row per (task, metric), one column per model, then z and gap closed."""
    rows = comparison_rows(results)
    labels = [r.label for r in results]
    has_pair = any(r.role == "dense" for r in results) and any(r.role == "pruned" for r in results)
    restored = [r.label for r in results if r.role == "restored"] if has_pair else []
    head = ["task", "metric", *[f"{r.label} ({r.role})" for r in results]]
    if has_pair:
        head.append("dense-pruned z")
    head += [f"gap closed ({label})" for label in restored]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        arrow = "↑" if row.higher_is_better else "↓"
        cells = [row.task, f"{row.metric} {arrow}"]
        cells += [_fmt(row.values[lb], row.stderrs[lb]) for lb in labels]
        if has_pair:
            cells.append("-" if row.separation_z is None else f"{row.separation_z:.1f}")
        cells += ["-" if row.gap.get(lb) is None else f"{row.gap[lb]:.1%}" for lb in restored]
        lines.append("| " + " | ".join(cells) + " |")
    if restored:
        lines += [
            "",
            "Gap closed = (restored - pruned) / (dense - pruned), oriented so that higher is better; "
            "perplexities are compared in log-perplexity (mean NLL).",
        ]
    return "\n".join(lines) + "\n"


def report_dict(results: Sequence[ModelResult], **extra: Any) -> dict[str, Any]:
    """The JSON report: models, full results, comparison rows, plus ``extra`` (config, corpus...)."""
    return {
        "models": [r.as_dict() for r in results],
        "comparison": [row.as_dict() for row in comparison_rows(results)],
        **extra,
    }
