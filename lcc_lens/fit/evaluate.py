"""The fit's held-out evaluation and per-head restoration (the export and its guards live apart:
:mod:`lcc_lens.fit.exporting`, :mod:`lcc_lens.fit.guards`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from lcc_lens.compensation import Compensation
from lcc_lens.diff import DiffConfig
from lcc_lens.evaluation.protocol import ProtocolConfig, ProtocolResult, evaluate
from lcc_lens.family import CompensationFamily
from lcc_lens.fit.metrics import Headline, headline_metrics
from lcc_lens.fit.stages import EncodedData
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.models import ModelPair
from lcc_lens.restoration import RestorationStats, restoration_stats

__all__ = ["Headline", "headline_metrics", "heldout_evaluation", "restoration"]

logger = logging.getLogger(__name__)


def heldout_evaluation(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily | RestorationMethod | None,
    data: EncodedData,
    protocol: ProtocolConfig,
    *,
    baseline: ProtocolResult | None = None,
) -> ProtocolResult:
    """Dense, pruned and (with ``compensation``) restored on the same windows of every domain.

    ``baseline``: an earlier result of this function without a compensation (same data and protocol);
    only the restored model is then scored and merged into it (variants of one setting).
    """
    texts = data.texts
    models: dict[str, Any] = {}
    if baseline is None:
        models.update(dense=pair.dense, pruned=pair.pruned)
    if compensation is not None:
        models["restored"] = (pair.pruned, compensation)
    if not models:
        return baseline  # type: ignore[return-value]
    result = evaluate(
        models,
        pair.tokenizer,
        texts.eval_texts,
        protocol,
        roles=texts.eval_roles,
        cached=("dense", "pruned"),  # they do not depend on the fit: scored once per pair
    )
    if baseline is None:
        return result
    merged = {
        name: dataclasses.replace(d, nll_sums={**d.nll_sums, **result.domains[name].nll_sums})
        for name, d in baseline.domains.items()
    }
    return dataclasses.replace(baseline, domains=merged)


def restoration(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily | RestorationMethod,
    data: EncodedData,
    diff: DiffConfig,
    n_prompts: int = 32,
) -> RestorationStats:
    """Per-head restoration of the compensation on validation prompts never trained on."""
    prompts = [e.prompt for e in data.texts.validation] or list(data.texts.diff_prompts)
    return restoration_stats(pair, compensation, prompts[:n_prompts], diff)
