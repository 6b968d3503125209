"""The fraction of the dense-minus-pruned gap a restored model closes: the one definition of the project.

    gap_closed = (t(R) - t(P)) / (t(D) - t(P))

for a restored model R, the dense D and the pruned P, where ``t`` orients the metric so that higher is
better: ``t(x) = x`` for accuracies, ``-x`` for lower-is-better metrics, ``-log(x)`` for perplexities.
The headline is the NLL (log-perplexity) scale: mean negative log-likelihood is additive over tokens and
one very large pruned perplexity cannot dominate it. The perplexity-scale figure ``(P - R) / (P - D)`` on
raw perplexities is reported only as a secondary column (it flatters: perplexity is convex in NLL).
1.0 means fully restored, 0.0 no better than pruned, negative worse; None when dense and pruned tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lcc_lens.errors import ConfigError


def oriented(value: float, higher_is_better: bool, log_scale: bool) -> float:
    """``value`` turned so that higher is better (log first for perplexities)."""
    if log_scale:
        if value <= 0:
            raise ConfigError(f"a perplexity must be positive, got {value}.")
        value = math.log(value)
    return value if higher_is_better else -value


def gap_closed(
    dense: float, pruned: float, restored: float, *, higher_is_better: bool, log_scale: bool = False
) -> float | None:
    """Fraction of the dense-minus-pruned gap that ``restored`` closes (see module doc).

    ``log_scale=True`` compares perplexities in log-perplexity (mean NLL), the headline scale.
    """
    d, p, r = (oriented(v, higher_is_better, log_scale) for v in (dense, pruned, restored))
    if d == p:
        return None
    return (r - p) / (d - p)


def nll_gap_closed(dense_nll: float, pruned_nll: float, restored_nll: float) -> float | None:
    """Gap closed on the NLL scale (nats per token; lower is better): the headline figure."""
    return gap_closed(dense_nll, pruned_nll, restored_nll, higher_is_better=False)


def ppl_gap_closed(dense_nll: float, pruned_nll: float, restored_nll: float) -> float | None:
    """Gap closed on the raw perplexity scale, from NLLs: the secondary (flattering) column."""
    return gap_closed(
        math.exp(dense_nll), math.exp(pruned_nll), math.exp(restored_nll), higher_is_better=False
    )


def bootstrap_nll_gap(
    dense_sums: Sequence[float],
    pruned_sums: Sequence[float],
    restored_sums: Sequence[float],
    counts: Sequence[int],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the NLL gap closed, resampling scored units (windows).

    The three models are scored on the same units, so one resample draws the same units for all of
    them (a paired bootstrap). ``*_sums`` are per-unit NLL sums, ``counts`` the tokens per unit.
    """
    n = len(counts)
    if not (len(dense_sums) == len(pruned_sums) == len(restored_sums) == n):
        raise ConfigError("bootstrap needs the same units for dense, pruned and restored.")
    if n < 2 or n_boot < 1:
        return None
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    sums = torch.tensor(
        [list(dense_sums), list(pruned_sums), list(restored_sums)], dtype=torch.float64
    )
    tok = torch.tensor(list(counts), dtype=torch.float64)[idx].sum(1)
    d, p, r = ((sums[k][idx].sum(1) / tok).tolist() for k in range(3))
    closed = (nll_gap_closed(*nlls) for nlls in zip(d, p, r, strict=True))
    gaps = torch.tensor([g for g in closed if g is not None], dtype=torch.float64)
    if not len(gaps):  # dense and pruned tie on every resample
        return None
    alpha = (1 - confidence) / 2
    q = torch.quantile(gaps, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


@dataclass(frozen=True)
class AccuracyGap:
    """Mean-accuracy gap closed by a restored model, its paired bootstrap interval, or why there is none.

    ``closed``/``low``/``high`` are None with a ``reason`` when dense and pruned tie or their accuracy
    gap is not told apart from zero (its own interval reaches 0): a ratio over a gap that small swings
    by any amount and says nothing. ``dense_minus_pruned`` and its interval are always given.
    """

    closed: float | None
    low: float | None
    high: float | None
    dense_minus_pruned: float
    dense_minus_pruned_low: float
    dense_minus_pruned_high: float
    n_items: tuple[int, ...]
    confidence: float
    reason: str | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_items": list(self.n_items), "half_width": self.half_width}


def bootstrap_accuracy_gap(
    tasks: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> AccuracyGap:
    """Gap closed on the mean accuracy over ``tasks``, with a paired percentile bootstrap interval.

    Each task is ``(dense, pruned, restored)`` per-item outcomes (1 correct, 0 not) on the same items;
    one resample draws the same items of every task for all three models, and the mean accuracy is the
    unweighted mean of the task accuracies, as the point estimate's.
    """
    if not tasks:
        raise ConfigError("an accuracy gap needs at least one task.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}.")
    g = torch.Generator().manual_seed(seed)
    point = torch.zeros(3, dtype=torch.float64)
    boot = torch.zeros(3, n_boot, dtype=torch.float64)
    for outcomes in tasks:
        if len(outcomes) != 3 or len({len(o) for o in outcomes}) != 1 or len(outcomes[0]) < 2:
            raise ConfigError(
                "each task needs dense, pruned and restored outcomes on the same 2+ items."
            )
        table = torch.tensor([list(o) for o in outcomes], dtype=torch.float64)  # 3 x items
        idx = torch.randint(0, table.shape[1], (n_boot, table.shape[1]), generator=g)
        point += table.mean(1) / len(tasks)
        boot += table[:, idx].mean(2) / len(tasks)
    alpha = (1 - confidence) / 2
    probs = torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
    dp_low, dp_high = torch.quantile(boot[0] - boot[1], probs).tolist()
    d, p, r = point.tolist()
    common = {
        "dense_minus_pruned": d - p,
        "dense_minus_pruned_low": dp_low,
        "dense_minus_pruned_high": dp_high,
        "n_items": tuple(len(o[0]) for o in tasks),
        "confidence": confidence,
    }
    closed = gap_closed(d, p, r, higher_is_better=True)
    if closed is None or dp_low <= 0 <= dp_high:
        reason = (
            f"the dense-pruned accuracy gap ({100 * (d - p):+.1f} points, {confidence:.0%} interval "
            f"[{100 * dp_low:+.1f}, {100 * dp_high:+.1f}]) is not told apart from zero, so the gap "
            "closed is undefined"
        )
        return AccuracyGap(None, None, None, reason=reason, **common)
    gaps = [gap_closed(*v, higher_is_better=True) for v in boot.T.tolist()]
    kept = torch.tensor([v for v in gaps if v is not None], dtype=torch.float64)
    low, high = torch.quantile(kept, probs).tolist()
    return AccuracyGap(closed, low, high, **common)
