"""Scoring one model with the project's evaluation protocol, and its gap closed against the references.

Held-out NLL per domain comes from the protocol's own pieces (:func:`~lcc_lens.evaluation.protocol.
sample_windows` once per domain, :func:`~lcc_lens.evaluation.protocol.score_windows` per model), so every
model is scored on the same windows without re-tokenizing the held-out text each time. Task accuracy is
the short held-out task sets scored in process (:func:`lcc_lens.evaluation.heldout_tasks.
score_task_sets`, items from the out-of-domain test domain, version recorded with the scores); gaps come
from :mod:`lcc_lens.evaluation.gap` and :func:`~lcc_lens.evaluation.heldout_tasks.task_gap_closed`, the
accuracy gap with its paired bootstrap interval over items
(:func:`~lcc_lens.evaluation.gap.bootstrap_accuracy_gap`). Every model scored here is a plain Hugging
Face model (the merged export), so the figures are those of the checkpoint a user would deploy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lcc_lens.evaluation.gap import nll_gap_closed
from lcc_lens.evaluation.protocol import ProtocolConfig, Window, sample_windows, score_windows
from lcc_lens.evaluation.task_sets import TaskSetConfig

logger = logging.getLogger(__name__)

LABELS = ("dense", "pruned", "restored")
TASKS: tuple[str, ...] = ("next_passage", "last_word")
"""The held-out suite's tasks (HellaSwag-style choice, LAMBADA-style last word)."""


@dataclass(frozen=True)
class ScoringPlan:
    """What every model is scored on: held-out windows per domain with their roles, and tasks.

    ``tasks``: the short held-out task sets (:mod:`lcc_lens.evaluation.task_sets`; None: no task
    accuracy).
    """

    protocol: ProtocolConfig
    windows: Mapping[str, tuple[Window, ...]]
    roles: Mapping[str, str]
    tasks: TaskSetConfig | None = None
    batch_size: int = 8


def sampled_windows(
    tokenizer: Any, texts: Mapping[str, Sequence[str]], protocol: ProtocolConfig
) -> dict[str, tuple[Window, ...]]:
    """The protocol's windows of every domain, drawn once (the same for every model)."""
    return {d: tuple(sample_windows(tokenizer, docs, protocol)[0]) for d, docs in texts.items()}


def score_model(model: Any, tokenizer: Any, plan: ScoringPlan) -> dict[str, Any]:
    """Per-domain NLL (nats/token, with role and token count) and per-task accuracy of ``model``."""
    domains: dict[str, Any] = {}
    for name, windows in plan.windows.items():
        sums = score_windows(model, windows, plan.protocol.batch_size)
        n_tokens = sum(len(w.targets) for w in windows)
        domains[name] = {
            "role": plan.roles[name],
            "nll": sum(sums) / n_tokens,
            "nll_sum": sum(sums),
            "n_tokens": n_tokens,
        }
        logger.info("%s (%s): nll %.4f", name, plan.roles[name], sum(sums) / n_tokens)
    out: dict[str, Any] = {"domains": domains, "tasks": {}}
    if plan.tasks is not None:
        from lcc_lens.evaluation.heldout_tasks import score_task_sets

        suite = score_task_sets({"model": model}, tokenizer, plan.tasks, plan.batch_size)
        scored = [task for task in TASKS if task in suite]
        out["tasks"] = {
            task: {k: v for k, v in suite[task]["model"].items() if k != "correct"}
            for task in scored
        }
        # per-item outcomes (1 correct) as a compact string, for the paired bootstrap of the gap
        out["task_outcomes"] = {
            task: "".join(str(c) for c in suite[task]["model"]["correct"]) for task in scored
        }
        out["task_domain"] = plan.tasks.domain
        out["task_set"] = plan.tasks.to_dict()
    return out


def pooled_nll(scores: Mapping[str, Any], roles: Sequence[str]) -> float | None:
    """Token-weighted NLL over the domains whose role is in ``roles`` (None when there are none)."""
    picked = [d for d in scores["domains"].values() if d["role"] in roles]
    tokens = sum(d["n_tokens"] for d in picked)
    return sum(d["nll_sum"] for d in picked) / tokens if tokens else None


def gaps(
    dense: Mapping[str, Any], pruned: Mapping[str, Any], restored: Mapping[str, Any]
) -> dict[str, float | None]:
    """Gap closed by ``restored``: out of domain (test role; validation role), in domain, tasks."""
    out: dict[str, float | None] = {}
    for key, roles in (
        ("ood_nll_gap_closed", ("test",)),
        ("ood_validation_nll_gap_closed", ("validation",)),
        ("indomain_nll_gap_closed", ("in_domain",)),
    ):
        values = [pooled_nll(s, roles) for s in (dense, pruned, restored)]
        out[key] = None if None in values else nll_gap_closed(*values)  # type: ignore[arg-type]
    out["task_acc_gap_closed"] = None
    if all(s.get("tasks") for s in (dense, pruned, restored)):
        from lcc_lens.evaluation.heldout_tasks import task_gap_closed

        tasks = {
            task: {
                label: s["tasks"][task]
                for label, s in zip(LABELS, (dense, pruned, restored), strict=True)
            }
            for task in TASKS
        }
        out["task_acc_gap_closed"] = task_gap_closed(tasks, "restored")["mean_accuracy"]
    if all(s.get("task_outcomes") for s in (dense, pruned, restored)):
        interval = task_interval(dense, pruned, restored)
        out["task_acc_gap_closed"] = interval["closed"]  # None, with the reason, when undefined
        out["task_acc_gap_interval"] = interval
    return out


def task_interval(
    dense: Mapping[str, Any], pruned: Mapping[str, Any], restored: Mapping[str, Any]
) -> dict[str, Any]:
    """Paired bootstrap of the mean-accuracy gap closed over the tasks all three were scored on."""
    from lcc_lens.evaluation.gap import bootstrap_accuracy_gap

    scored = [t for t in TASKS if all(t in s["task_outcomes"] for s in (dense, pruned, restored))]
    outcomes = [
        tuple([int(c) for c in s["task_outcomes"][t]] for s in (dense, pruned, restored))
        for t in scored
    ]
    return bootstrap_accuracy_gap(outcomes).to_dict()  # type: ignore[arg-type]
