"""The dense control: fit the same compensation on the DENSE model, to tell adaptation from restoration.

A compensation fitted on the pruned model lowers its loss for two reasons: it puts back what pruning took
(restoration) and it adapts the model to the fitting text (domain adaptation, which the dense model
would enjoy too). The control fits the same heads, data, objective and steps with the dense model as
the student (and, for KL objectives, as its own teacher) and reports how much that lowers the dense
model's NLL, in units of the pruning gap. With a pure KL objective the control starts at its optimum
(zero loss, zero gradient up to rounding), so KL to the dense model has no domain to adapt to; only
optimizer noise moves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcc_lens.compensation import Compensation
    from lcc_lens.data import Encoded
    from lcc_lens.evaluation.protocol import ProtocolResult
    from lcc_lens.models import ModelPair
    from lcc_lens.training import TrainConfig


def dense_pair(pair: ModelPair) -> ModelPair:
    """The pair (dense teacher, a copy of the dense model as student).

    The student must be another object than the teacher: the compensation's hooks sit on the student,
    and a hooked teacher would follow the student (zero loss, optimizer noise as the only update).
    """
    import copy

    return replace(pair, pruned=copy.deepcopy(pair.dense), pruned_source=pair.dense_source)


def fit_dense_control(
    pair: ModelPair,
    make_compensation: Callable[[], Compensation],
    train_data: Sequence[Encoded],
    val_data: Sequence[Encoded],
    cfg: TrainConfig,
) -> tuple[Compensation, list[dict[str, Any]]]:
    """Train a fresh compensation (same heads and form, from ``make_compensation``) on the dense model."""
    from lcc_lens.training import train

    comp = make_compensation()
    history = train(dense_pair(pair), comp, train_data, val_data, cfg)
    return comp, history


def dense_control_fraction(
    result: ProtocolResult,
    domain: str,
    *,
    control: str = "dense_control",
    dense: str = "dense",
    pruned: str = "pruned",
) -> float | None:
    """How much the control lowers the dense NLL on ``domain``, as a fraction of the pruning gap."""
    d = result.domains[domain]
    gap = d.nll(pruned) - d.nll(dense)
    if gap == 0:
        return None
    return (d.nll(dense) - d.nll(control)) / gap
