"""The LCC fit: prune (or take a pruned model), find lost components, select heads, train, export.

``fit(FitConfig())`` runs the whole job on the embedded SmolLM2-135M-Instruct offline: Wanda 50 %
(cached), real text for calibration and fitting, held-out perplexity of dense / pruned / restored on a
domain never fitted on. It is the composition of the stages in :mod:`lcc_lens.fit.stages` and
:mod:`lcc_lens.fit.evaluate`; :mod:`lcc_lens.fit.run_dir` writes the run directory. From the shell:
``python -m lcc_lens.fit``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcc_lens import distributed
from lcc_lens.compensation import COMPENSATION_FILE, Compensation
from lcc_lens.components import LostComponents
from lcc_lens.data import FitData
from lcc_lens.diff import HeadDiff
from lcc_lens.errors import ConfigError
from lcc_lens.fit import run_dir as rd
from lcc_lens.fit.clock import StageClock
from lcc_lens.fit.config import FitConfig
from lcc_lens.fit.evaluate import (
    FitDivergedError,
    check_not_diverged,
    export,
    export_check,
    export_check_text,
    headline_metrics,
    heldout_evaluation,
    restoration,
    target_dtype,
)
from lcc_lens.fit.stages import (
    EncodedData,
    ResolvedPair,
    build_compensation,
    choose_data,
    find_lost_components,
    resolve_pair,
    run_identity,
    select,
    train_compensation,
)
from lcc_lens.fit.summary import summary_table
from lcc_lens.models import ModelPair, describe
from lcc_lens.placement import resolve_device
from lcc_lens.restoration import RestorationStats
from lcc_lens.selection import HeadRanking
from lcc_lens.training import has_checkpoint

__all__ = [
    "FitConfig",
    "FitDivergedError",
    "FitResult",
    "fit",
    "summary_table",
]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit produced; ``metrics`` holds held-out perplexities and the fraction of the gap closed."""

    config: FitConfig
    pair: ModelPair
    compensation: Compensation
    ranking: HeadRanking
    components: LostComponents
    diff: HeadDiff | None
    history: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    pruned_source: str = ""
    out_dir: Path | None = None
    restoration: RestorationStats | None = None
    data_description: dict[str, Any] = field(default_factory=dict)


def fit(
    config: FitConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    data: FitData | None = None,
) -> FitResult:
    """Run the whole LCC job; with ``out_dir`` write the run directory (see the README for its layout).

    ``resume`` finishes an interrupted run in ``out_dir``; ``overwrite`` replaces an earlier run there
    (only a directory lcc_lens wrote). ``on_step(step, row)`` is called after every optimizer step.
    ``data`` hands over pre-chosen texts instead of drawing them from ``config.data``.
    With ``out_dir``, a diverged fit raises :class:`FitDivergedError` before anything is exported
    (unless ``config.allow_worse``); without it nothing is exported and the metrics tell.
    """
    t0 = time.perf_counter()
    run = Path(out_dir) if out_dir is not None else None
    if run is None and (resume or overwrite):
        raise ConfigError("resume / overwrite need an out_dir.")
    existed = run is not None and run.exists()
    if run is not None:
        rd.check_run_dir(run, resume=resume, overwrite=overwrite)
    clock = StageClock(resolve_device(config.device))
    with clock.stage("load"):
        resolved = resolve_pair(config)  # checks the lengths against the model's positions
    pair = resolved.pair
    with clock.stage("data"):
        encoded = choose_data(config, pair, data)
    main = distributed.context().is_main  # under torchrun every rank computes, rank 0 writes
    distributed.barrier()  # every rank has checked --out before rank 0 creates anything
    if run is not None and main:
        rd.open_run_dir(run, resume=resume)
        rd.write_config(run, config.to_dict())
    distributed.barrier()
    try:
        result = _fit_from_data(config, resolved, encoded, run, resume, on_step, t0, clock)
    except BaseException:
        # a run that never reached its first checkpoint leaves nothing behind
        if run is not None and main and not resume and not has_checkpoint(run):
            rd.discard(run, existed=existed)
        raise
    distributed.barrier()
    return result


def _fit_from_data(
    config: FitConfig,
    resolved: ResolvedPair,
    encoded: EncodedData,
    run: Path | None,
    resume: bool,
    on_step: Callable[[int, dict[str, Any]], None] | None,
    t0: float,
    clock: StageClock,
) -> FitResult:
    """The stages after the data is chosen (see :func:`fit`); ``clock`` times each one."""
    pair = resolved.pair
    with clock.stage("lost_components"):
        lost = find_lost_components(pair, encoded, config)
    with clock.stage("selection"):
        ranking = select(pair, encoded, lost, config)
        comp = build_compensation(pair, ranking.selected, lost.components, config)
    with clock.stage("training"):
        trained = train_compensation(
            pair,
            comp,
            encoded,
            config,
            run_dir=run,
            resume=resume,
            identity=run_identity(config, resolved.pruned_source, ranking.selected),
            on_step=on_step,
        )
    metrics: dict[str, Any] = {
        "val_loss_pruned": trained.val_loss_pruned,
        "val_loss_restored": trained.val_loss_restored,
        "stages": clock.stages,  # filled in as the stages below finish
    }
    with clock.stage("evaluation"):
        evaluation = heldout_evaluation(pair, comp, encoded, config)
    metrics.update(headline_metrics(evaluation, encoded.texts.config.test_domain))
    metrics["n_selected_heads"] = comp.n_selected
    metrics["n_trainable_parameters"] = sum(p.numel() for p in comp.parameters() if p.requires_grad)
    result = FitResult(
        config,
        pair,
        comp,
        ranking,
        lost.components,
        lost.diff,
        trained.history,
        metrics,
        resolved.pruned_source,
        run,
        data_description=encoded.texts.describe(),
    )
    if run is not None:
        check_not_diverged(trained, config)  # before anything is exported (same on every rank)
    if run is not None and distributed.context().is_main:
        with clock.stage("restoration"):
            result.restoration = restoration(pair, comp, encoded, config)
        with clock.stage("export"):
            _export(result, encoded, run)
        metrics["wall_time_s"] = time.perf_counter() - t0
        rd.write_outputs(result, run)
        rd.mark_complete(run, metrics)
    else:
        metrics["wall_time_s"] = time.perf_counter() - t0
    return result


def _export(result: FitResult, encoded: EncodedData, run: Path) -> None:
    """compensation.safetensors and model/ (merged), then the export checks; removed if they fail."""
    cfg = result.config
    meta = {
        "models": {"dense": describe(cfg.dense), "pruned": describe(result.pruned_source)},
        "selection": result.ranking.method,
        "k": cfg.compensation.k,
        "objective": cfg.train.objective,
    }
    result.compensation.save(run / COMPENSATION_FILE, metadata=meta)
    model_dir = export(result.pruned_source, result.compensation, run / "model", meta)
    check_text = export_check_text(encoded.texts)
    try:
        target = target_dtype(result.pruned_source, cfg)
        diff = export_check(result.pair, result.compensation, model_dir, check_text, cfg, target)
    except FitDivergedError:
        shutil.rmtree(model_dir, ignore_errors=True)
        (run / COMPENSATION_FILE).unlink(missing_ok=True)
        raise
    result.metrics["export_max_abs_logit_diff"] = diff
