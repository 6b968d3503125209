"""The benchmark composition: for each pruning setting, every method x seed on the same data and budget.

Per (method, seed): prepare the method from the shared stages, train it through the fit's training stage
on the fit's own training and validation examples (half corpus, half self-written text; the same steps,
batch and objective for all), refuse it through the fit's divergence guard, export a merged plain HF model
and check it against the attached method (the fit's export check), measure the export (zeros kept, forward
time against the pruned model, interleaved), and score it with the evaluation protocol. Each finished (method, seed) is
stored on disk before the next starts (resume).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from lcc_lens import __version__
from lcc_lens.bench.cache import ResultCache
from lcc_lens.bench.config import (
    DEFAULT_OUT,
    QUICK_SELF_TOKENS,
    QUICK_SETTING,
    SETTINGS,
    BenchConfig,
    with_quick_defaults,
)
from lcc_lens.bench.measure import PeakMemory, forward_ratio, sparsity_kept
from lcc_lens.bench.outputs import write_outputs
from lcc_lens.bench.results import aggregate_rows
from lcc_lens.bench.scoring import TASKS, ScoringPlan, gaps, sampled_windows, score_model
from lcc_lens.data import DataConfig, fit_data
from lcc_lens.errors import DivergedError, MethodNotApplicable
from lcc_lens.evaluation.protocol import ProtocolConfig
from lcc_lens.evaluation.task_sets import TASK_SET_VERSION, TaskSetConfig
from lcc_lens.fit.exporting import export_check_text, merged_logit_diff
from lcc_lens.fit.guards import check_not_diverged
from lcc_lens.fit.stages import EncodedData, Trained, choose_data, train_compensation
from lcc_lens.methods import MethodContext, RestorationMethod, make_method
from lcc_lens.models import ModelPair, describe, load_causal_lm, resolve_device
from lcc_lens.progress import progress
from lcc_lens.training import TrainConfig, evaluate_loss

logger = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def quick_models(root: Path) -> tuple[str, str]:
    """A tiny random Llama and its 50 % magnitude prune (lcc_lens.pruning), written once under ``root``."""
    from lcc_lens.pruning import PruneConfig, prune_checkpoint
    from lcc_lens.tiny import save_tiny_checkpoint

    dense, pruned = root / "dense", root / "pruned"
    if not (dense / "config.json").is_file():
        save_tiny_checkpoint(dense, "llama", seed=1)
    if not (pruned / "config.json").is_file():
        prune_checkpoint(
            dense, pruned, PruneConfig(method="magnitude", sparsity=0.5), show_progress=False
        )
    return str(dense), str(pruned)


def resolve_models(cfg: BenchConfig, setting: str, work: Path) -> tuple[str, str]:
    """(dense, pruned) checkpoint sources of one setting: quick tiny models, a given prune, or cached."""
    if cfg.quick:
        return quick_models(work / "quick-models")
    if cfg.pruned is not None:
        return cfg.dense, cfg.pruned
    from lcc_lens.pruning import cached_pruned_checkpoint

    return cfg.dense, str(cached_pruned_checkpoint(cfg.dense, SETTINGS[setting]))


def _timing_ids(
    tokenizer: Any, plan: ScoringPlan, length: int, device: torch.device
) -> torch.Tensor:
    """Four rows of held-out tokens (the first domain's windows) for the forward-time comparison."""
    windows = next(iter(plan.windows.values()))
    rows = [list(w.input_ids[:length]) for w in windows[:4]]
    while len(rows) < 4:
        rows.append(rows[-1])
    return torch.tensor(rows).to(device)


def _reference(
    label: str,
    model: Any,
    pruned: Any,
    tokenizer: Any,
    plan: ScoringPlan,
    ids: torch.Tensor,
    reps: int,
) -> dict[str, Any]:
    return {
        "method": label,
        "trainable_params": 0,
        "fit_seconds": 0.0,
        "peak_memory_mb": 0.0,
        "sparsity_kept": sparsity_kept(pruned, model),
        "forward": forward_ratio(pruned, model, ids, reps),
        "scores": score_model(model, tokenizer, plan),
    }


def run_method(
    name: str,
    ctx: MethodContext,
    cfg: BenchConfig,
    plan: ScoringPlan,
    ids: torch.Tensor,
    data: EncodedData,
    val_loss_pruned: float | None = None,
) -> dict[str, Any]:
    """Prepare, train (with the fit's validation set and divergence guard), export, check the export,
    measure and score one method for one seed (``val_loss_pruned``: see ``train_compensation``)."""
    method = make_method(name)
    tcfg = replace(ctx.train_config, lr=method_lr(cfg, name) or method.default_lr)
    history: list[dict[str, Any]] = []
    trained: Trained | None = None
    mem = PeakMemory(device=str(ctx.device))
    t0 = time.perf_counter()
    fit_seconds = 0.0
    try:
        with mem.measure():
            torch.manual_seed(ctx.seed)
            method.prepare(ctx)
            if method.trains:
                trained = train_compensation(
                    ctx.pair, method, data, tcfg, val_loss_pruned=val_loss_pruned
                )
                history = trained.history
        fit_seconds = time.perf_counter() - t0
        if trained is not None:
            assert ctx.fit is not None
            check_not_diverged(
                trained.val_loss_pruned,
                trained.val_loss_restored,
                worse_margin=ctx.fit.worse_margin,
                allow_worse=False,
            )
        pruned = ctx.pruned_model()
        merged = method.export(pruned)
        export_diff = merged_logit_diff(ctx.pair, method, merged, export_check_text(data.texts))
    except (MethodNotApplicable, DivergedError) as exc:
        logger.warning("%s seed %d failed: %s", name, ctx.seed, exc)
        return failed_result(name, ctx.seed, method, exc, fit_seconds or time.perf_counter() - t0)
    result = {
        "method": name,
        "seed": ctx.seed,
        "trainable_params": method.n_trainable,
        "lr": tcfg.lr if method.trains else None,
        "steps": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "val_loss": None
        if trained is None
        else {"pruned": trained.val_loss_pruned, "restored": trained.val_loss_restored},
        "export_max_abs_logit_diff": export_diff,
        "fit_seconds": fit_seconds,
        "peak_memory_mb": mem.peak_mb,
        "peak_memory_kind": mem.kind,
        "sparsity_kept": sparsity_kept(pruned, merged),
        "forward": forward_ratio(pruned, merged, ids, cfg.timing_repeats),
        "scores": score_model(merged, ctx.pair.tokenizer, plan),
        "describe": method.describe(),
    }
    del merged, method
    return result


def method_lr(cfg: BenchConfig, name: str) -> float | None:
    """The rate ``name`` trains at in this run (None: a training-free method)."""
    method = make_method(name)
    return cfg.lr_for(name, method.default_lr) if method.trains else None


def failed_result(
    name: str, seed: int, method: RestorationMethod, exc: Exception, seconds: float
) -> dict[str, Any]:
    """The record of a (method, seed) that could not run (refused up front) or diverged: no scores."""
    return {
        "method": name,
        "seed": seed,
        "failed": {
            "kind": "not_applicable" if isinstance(exc, MethodNotApplicable) else "diverged",
            "reason": str(exc),
        },
        "trainable_params": method.n_trainable,
        "fit_seconds": seconds,
        "describe": method.describe(),
    }


def data_config(cfg: BenchConfig) -> DataConfig:
    """The fit's data defaults (corpus and self-written training text) at the benchmark's size."""
    from lcc_lens.fit import FitConfig

    dcfg = replace(FitConfig().data, n_train=cfg.n_train)
    return replace(dcfg, self_tokens=QUICK_SELF_TOKENS) if cfg.quick else dcfg


def _plan(cfg: BenchConfig, tokenizer: Any) -> tuple[ScoringPlan, DataConfig]:
    """The held-out windows (out of domain first) and the task items every model is scored on."""
    dcfg = data_config(cfg)
    data = fit_data(dcfg, seed=0)  # the held-out texts do not depend on the seed
    protocol = ProtocolConfig(
        context_length=cfg.eval_context, windows=cfg.eval_windows, seed=0, bootstrap=0
    )
    order = ("test", "validation", "in_domain")
    roles = dict(sorted(data.eval_roles.items(), key=lambda kv: (order.index(kv[1]), kv[0])))
    windows = sampled_windows(tokenizer, {d: data.eval_texts[d] for d in roles}, protocol)
    return ScoringPlan(protocol, windows, roles, tasks=task_sets(cfg, dcfg.test_domain)), dcfg


def task_sets(cfg: BenchConfig, domain: str) -> TaskSetConfig | None:
    """The short held-out task sets of ``domain`` at ``cfg.task_items`` each (None: their defaults)."""
    if cfg.task_items == 0:
        return None
    if cfg.task_items is None:
        return TaskSetConfig(domain=domain)
    return TaskSetConfig(next_passage=cfg.task_items, last_word=cfg.task_items, domain=domain)


def fit_config(cfg: BenchConfig, dcfg: DataConfig, seed: int) -> Any:
    """The fit configuration whose stages (diff, probe items, selection) the methods use for ``seed``."""
    from lcc_lens.fit import FitConfig

    fit = FitConfig(seed=seed, max_length=cfg.max_length, data=dcfg)
    if cfg.probe_pairs is not None:
        fit = replace(fit, probe=replace(fit.probe, n_pairs=cfg.probe_pairs))
    if cfg.quick:  # a smoke test: fewer probe splits and null shuffles
        fit = replace(fit, select=replace(fit.select, probe_splits=2, probe_permutations=5))
    return fit


def _prune_record(cfg: BenchConfig, setting: str, pruned_src: str) -> dict[str, Any]:
    """How the pruned model was made: the setting's PruneConfig, or the checkpoint's own report."""
    if setting in SETTINGS and cfg.pruned is None and not cfg.quick:
        return SETTINGS[setting].to_dict()
    report = Path(pruned_src) / "prune_report.json"
    if report.is_file():
        try:
            return {"report": json.loads(report.read_text(encoding="utf-8"))["config"]}
        except (ValueError, KeyError, TypeError):
            pass
    return {"source": pruned_src, "quick": setting == QUICK_SETTING}


def run_setting(cfg: BenchConfig, setting: str, work: Path, command: str = "") -> dict[str, Any]:
    """Run every (method, seed) of one setting (resuming from the cache) and write its outputs."""
    t_start = time.perf_counter()
    cfg = cfg.resolved()
    dense_src, pruned_src = resolve_models(cfg, setting, work)
    device = resolve_device(cfg.device)
    dtype = _DTYPES[cfg.dtype]
    plan_data = data_config(cfg)
    identity = {
        "bench": cfg.fingerprint_dict(),
        "data": asdict(plan_data),
        "dense": describe(dense_src)["fingerprint"],
        "pruned": describe(pruned_src)["fingerprint"],
        "version": __version__,
        "task_set": TASK_SET_VERSION,
    }
    cache = ResultCache(work, setting, identity)
    pair = ModelPair.load(dense_src, pruned_src, dtype=dtype, device=device)
    plan, dcfg = _plan(cfg, pair.tokenizer)
    dense_hf, _ = load_causal_lm(dense_src, dtype=dtype, device=device)
    pruned_hf, _ = load_causal_lm(pruned_src, dtype=dtype, device=device)
    for p in (*dense_hf.parameters(), *pruned_hf.parameters()):
        p.requires_grad_(False)
    ids = _timing_ids(pair.tokenizer, plan, min(128, cfg.eval_context), device)
    refs: dict[str, dict[str, Any]] = {}
    for label, model in (("dense", dense_hf), ("pruned", pruned_hf)):
        got = cache.get(label, 0)
        if got is None:
            got = _reference(label, model, pruned_hf, pair.tokenizer, plan, ids, cfg.timing_repeats)
            cache.put(label, 0, got)
        refs[label] = got
    results: list[dict[str, Any]] = []
    jobs = [(seed, name) for seed in cfg.seeds for name in cfg.methods]
    base_train = TrainConfig(
        objective=cfg.objective,  # type: ignore[arg-type]
        steps=cfg.steps,
        batch_size=cfg.batch_size,
    )
    data_by_seed: dict[int, EncodedData] = {}
    val_pruned: dict[
        int, float
    ] = {}  # the pruned model's validation loss per seed, for every method
    n_examples: dict[int, int] = {}
    for seed, name in progress(jobs, desc=f"bench {setting}", unit="run"):
        lr = method_lr(cfg, name)
        got = cache.get(name, seed, lr)
        if got is None:
            fit = fit_config(cfg, dcfg, seed)
            if seed not in data_by_seed:  # the fit's own training examples, shared by every method
                data_by_seed = {seed: choose_data(fit, pair)}
                n_examples[seed] = len(data_by_seed[seed].train)
                val_pruned = {
                    seed: evaluate_loss(pair, None, data_by_seed[seed].validation, base_train)
                }
            chosen = data_by_seed[seed]
            ctx = MethodContext(
                pair,
                dense_src,
                pruned_src,
                chosen.texts,
                chosen.train,
                replace(base_train, seed=seed),
                seed=seed,
                head_fraction=cfg.head_fraction,
                k=cfg.k,
                fit=fit,
                _cache={"pruned_hf": pruned_hf, "dense_hf": dense_hf},
            )
            got = run_method(name, ctx, cfg, plan, ids, chosen, val_pruned[seed])
            cache.put(name, seed, got, lr)
            if "failed" not in got:
                logger.info("%s seed %d done in %.1f s", name, seed, got["fit_seconds"])
        if "failed" not in got:
            got["gaps"] = gaps(refs["dense"]["scores"], refs["pruned"]["scores"], got["scores"])
        results.append(got)
    rows = aggregate_rows(refs, results, cfg.methods)
    payload = {
        "setting": setting,
        "prune": _prune_record(cfg, setting, pruned_src),
        "command": command,
        "config": cfg.to_dict(),
        "models": {"dense": describe(dense_src), "pruned": describe(pruned_src)},
        "data": fit_data(dcfg, seed=cfg.seeds[0]).describe(),
        "training_text": {
            "fit_text": dcfg.fit_text,
            "self_tokens": dcfg.self_tokens,
            "examples_per_seed_run_here": n_examples,
        },
        "protocol": {
            "windows": cfg.eval_windows,
            "context_length": cfg.eval_context,
            "domains": dict(plan.roles),
            "tasks": list(TASKS) if plan.tasks else [],
            "task_domain": plan.tasks.domain if plan.tasks else dcfg.test_domain,
            "task_items": cfg.task_items,
            **({"task_set": plan.tasks.to_dict()} if plan.tasks else {}),
        },
        "references": {k: v["scores"] for k, v in refs.items()},
        "rows": rows,
        "wall_seconds": time.perf_counter() - t_start,
        "device": str(device),
        "lcc_lens_version": __version__,
    }
    write_outputs(payload, Path(cfg.out))
    return payload


def run_bench(cfg: BenchConfig, command: str = "") -> list[dict[str, Any]]:
    """Run every configured setting; return their result payloads (also written under ``cfg.out``)."""
    from lcc_lens.cache import cache_root

    cfg = with_quick_defaults(cfg).resolved()
    work = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "bench"
    if (
        cfg.quick and cfg.out == DEFAULT_OUT
    ):  # quick figures are not results: keep them out of the repo
        cfg = replace(cfg, out=str(work / "quick"))
    return [run_setting(cfg, s, work, command) for s in cfg.setting_names()]
