"""The LCC fit: prune (or take a pruned model), find lost components, select heads, train, export.

``fit(FitConfig())`` runs the whole job on the embedded SmolLM2-135M-Instruct offline: Wanda 50 %
(cached), real text for calibration and fitting, held-out perplexity of dense / pruned / restored on a
domain never fitted on. It is the composition of the stages in :mod:`lcc_lens.fit.stages` and
:mod:`lcc_lens.fit.evaluate`, :mod:`lcc_lens.fit.guards` and :mod:`lcc_lens.fit.exporting`; what it
measured is a typed :class:`FitMetrics`; :mod:`lcc_lens.fit.run_dir` writes the run directory. From the shell:
``python -m lcc_lens.fit``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcc_lens import distributed
from lcc_lens.attribution import FamilyAttribution, family_attribution
from lcc_lens.compensation import COMPENSATION_FILE, Compensation
from lcc_lens.components import LostComponents
from lcc_lens.data import FitData
from lcc_lens.diff import HeadDiff
from lcc_lens.errors import ConfigError
from lcc_lens.family import CompensationFamily
from lcc_lens.fit import run_dir as rd
from lcc_lens.fit.clock import StageClock
from lcc_lens.fit.config import FitConfig
from lcc_lens.fit.evaluate import heldout_evaluation, restoration
from lcc_lens.fit.exporting import export, export_check, export_check_text, target_dtype
from lcc_lens.fit.guards import FitDivergedError, check_not_diverged
from lcc_lens.fit.metrics import FitMetrics, Headline, headline_metrics
from lcc_lens.fit.stages import (
    EncodedData,
    LostStage,
    ResolvedPair,
    build_compensation,
    choose_data,
    find_lost_components,
    no_heads,
    prepare_method,
    resolve_pair,
    run_identity,
    select,
    train_compensation,
)
from lcc_lens.fit.summary import summary_table
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.models import ModelPair, describe
from lcc_lens.placement import resolve_device
from lcc_lens.restoration import RestorationStats
from lcc_lens.selection import HeadRanking

__all__ = [
    "FitConfig",
    "FitDivergedError",
    "FitMetrics",
    "FitResult",
    "Headline",
    "fit",
    "summary_table",
]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit produced; ``metrics``: held-out perplexities, the gap closed, sizes and costs."""

    config: FitConfig
    pair: ModelPair
    compensation: Compensation | CompensationFamily | RestorationMethod
    ranking: HeadRanking
    components: LostComponents | None
    diff: HeadDiff | None
    history: list[dict[str, Any]]
    metrics: FitMetrics
    pruned_source: str = ""
    out_dir: Path | None = None
    restoration: RestorationStats | None = None
    data_description: dict[str, Any] = field(default_factory=dict)
    attribution: FamilyAttribution | None = None


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
    (only a directory lcc_lens wrote) once the new one is complete. ``out_dir`` must lie apart from the
    model folders read, and one fit at a time writes it. ``on_step(step, row)`` is called after every
    optimizer step.
    ``data`` hands over pre-chosen texts instead of drawing them from ``config.data``.
    With ``out_dir``, a diverged fit raises :class:`FitDivergedError` before anything is exported
    (unless ``config.allow_worse``); without it nothing is exported and the metrics tell.
    """
    t0 = time.perf_counter()
    if out_dir is None:
        if resume or overwrite:
            raise ConfigError("resume / overwrite need an out_dir.")
        return _fit_into(
            config, None, resume=False, overwrite=False, on_step=on_step, data=data, t0=t0
        )
    run = Path(out_dir)
    rd.check_out(run, inputs={"--dense": config.dense, "--pruned": config.pruned})
    # one fit writes a run at a time; under torchrun rank 0 writes, so it alone holds the lock
    with rd.run_lock(run) if distributed.launch_rank() == 0 else contextlib.nullcontext():
        rd.check_run_dir(run, resume=resume, overwrite=overwrite)
        return _fit_into(
            config, run, resume=resume, overwrite=overwrite, on_step=on_step, data=data, t0=t0
        )


def _fit_into(
    config: FitConfig,
    run: Path | None,
    *,
    resume: bool,
    overwrite: bool,
    on_step: Callable[[int, dict[str, Any]], None] | None,
    data: FitData | None,
    t0: float,
) -> FitResult:
    """:func:`fit` once ``run`` is checked (and locked): load, open the run directory, fit, finish."""
    existed = run is not None and run.exists()
    clock = StageClock(resolve_device(config.device))
    resolved = resolve_pair(config, clock)  # checks the lengths against the model's positions
    with clock.stage("data"):
        encoded = choose_data(config, resolved.pair, data)
    main = distributed.context().is_main  # under torchrun every rank computes, rank 0 writes
    distributed.barrier()  # every rank has checked --out before rank 0 creates anything
    work = run  # where this fit writes: run itself, or an overwrite's temporary sibling
    if run is not None and main:
        work = rd.start_run(run, resume=resume, overwrite=overwrite, config_dict=config.to_dict())
    distributed.barrier()
    try:
        result = _fit_from_data(config, resolved, encoded, work, resume, on_step, t0, clock)
        if run is not None and work is not None and main:
            rd.finish_run(run, work)
    except BaseException:
        if run is not None and work is not None and main:
            rd.abandon(run, work, existed=existed, resume=resume)
        raise
    result.out_dir = run
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
    comp: Compensation | CompensationFamily | RestorationMethod
    lost: LostStage | None = None
    if config.method == "lcc":
        with clock.stage("lost_components"):
            lost = find_lost_components(pair, encoded, config.diff, config.compensation.k)
        with clock.stage("selection"):
            ranking = select(pair, encoded, lost, config.select, config.probe)
        comp = build_compensation(pair, ranking.selected, lost.components, config.compensation)
    else:
        with clock.stage("prepare"):
            comp = prepare_method(config, resolved, encoded)
        ranking = no_heads(pair, config.method)
    with clock.stage("training"):
        trained = train_compensation(
            pair,
            comp,
            encoded,
            config.train,
            run_dir=run,
            resume=resume,
            identity=run_identity(config, resolved.pruned_source, ranking.selected),
            on_step=on_step,
        )
    if run is not None and resume and distributed.context().is_main:
        rd.accept_resume(run, config.to_dict())  # the checkpoint was accepted: now record the run
    with clock.stage("evaluation"):
        evaluation = heldout_evaluation(pair, comp, encoded, config.eval)
    metrics = FitMetrics(
        val_loss_pruned=trained.val_loss_pruned,
        val_loss_restored=trained.val_loss_restored,
        headline=headline_metrics(evaluation, encoded.texts.config.test_domain),
        n_selected_heads=getattr(comp, "n_selected", 0),
        n_trainable_parameters=sum(p.numel() for p in comp.parameters() if p.requires_grad),
        stages=clock.stages,  # filled in as the stages below finish
    )
    result = FitResult(
        config,
        pair,
        comp,
        ranking,
        None if lost is None else lost.components,
        None if lost is None else lost.diff,
        trained.history,
        metrics,
        resolved.pruned_source,
        run,
        data_description=encoded.texts.describe(),
    )
    if run is not None:
        check_not_diverged(  # before anything is exported (same on every rank)
            trained.val_loss_pruned,
            trained.val_loss_restored,
            worse_margin=config.worse_margin,
            allow_worse=config.allow_worse,
        )
    if run is not None and distributed.context().is_main:
        with clock.stage("restoration"):
            if lost is not None:  # a peer method has no head offsets to measure
                result.restoration = restoration(pair, comp, encoded, config.diff)
        if isinstance(comp, CompensationFamily) and encoded.validation:
            with clock.stage("attribution"):
                result.attribution = family_attribution(
                    pair, comp, encoded.validation, config.train
                )
        with clock.stage("export"):
            _export(result, encoded, run)
        metrics.wall_time_s = time.perf_counter() - t0
        rd.write_outputs(result, run)
        rd.mark_complete(run, metrics.to_dict())
    else:
        metrics.wall_time_s = time.perf_counter() - t0
    return result


def _export(result: FitResult, encoded: EncodedData, run: Path) -> None:
    """compensation.safetensors and model/ (merged), then the export checks; removed if they fail."""
    cfg = result.config
    meta = {
        "models": {"dense": describe(cfg.dense), "pruned": describe(result.pruned_source)},
        "method": cfg.method,
        "selection": result.ranking.method,
        "k": cfg.compensation.k,
        "objective": cfg.train.objective,
    }
    if not isinstance(result.compensation, RestorationMethod):
        result.compensation.save(run / COMPENSATION_FILE, metadata=meta)
    model_dir = export(result.pruned_source, result.compensation, run / "model", meta)
    check_text = export_check_text(encoded.texts)
    try:
        target = target_dtype(result.pruned_source, cfg.dtype)
        diff = export_check(
            result.pair,
            result.compensation,
            model_dir,
            check_text,
            allow_worse=cfg.allow_worse,
            target=target,
        )
    except FitDivergedError:
        shutil.rmtree(model_dir, ignore_errors=True)
        (run / COMPENSATION_FILE).unlink(missing_ok=True)
        raise
    result.metrics.export_max_abs_logit_diff = diff
