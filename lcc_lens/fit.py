"""The LCC fit: prune (or take a pruned model), find lost components, select heads, train, export, report.

``fit(FitConfig())`` runs the whole job on the embedded SmolLM2-135M-Instruct offline: Wanda 50 % (cached),
real text for calibration and fitting, held-out perplexity for dense / pruned / restored at the end.
Run it from the shell as ``python -m lcc_lens.fit`` (argument parsing lives in ``lcc_lens.cli.fit``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch

from lcc_lens.atomic import ensure_writable_dir, write_json, write_text
from lcc_lens.compensation import COMPENSATION_FILE, Compensation
from lcc_lens.components import LostComponents, cached_lost_components
from lcc_lens.corpora import corpus_identity, split_text
from lcc_lens.data import Example, encode, load_examples, split_examples
from lcc_lens.diff import DiffConfig, HeadDiff
from lcc_lens.errors import ConfigError
from lcc_lens.models import ModelPair, describe, resolve_device
from lcc_lens.probing import probe_samples
from lcc_lens.selection import HeadRanking, SelectConfig, select_heads
from lcc_lens.training import TrainConfig, evaluate_loss, train

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class FitConfig:
    """Everything one fit run needs; flat so that it round-trips through YAML and CLI flags."""

    dense: str = "embedded"
    pruned: str | None = None
    prune_method: str = "wanda"
    prune_sparsity: float = 0.5
    prune_pattern: str | None = None
    data: str = "offline"
    n_train: int = 256
    val_fraction: float = 0.125
    max_length: int = 128
    objective: Literal["lm", "kl", "mix"] = "lm"
    kl_weight: float = 0.5
    lr: float = 1e-2
    warmup_fraction: float = 0.1
    epochs: int = 1
    steps: int | None = 48
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    checkpoint_every: int = 8
    heads: str = "probe"
    head_fraction: float = 0.25
    n_heads: int | None = None
    k: int = 1
    positions: Literal["last", "all"] = "last"
    n_diff_prompts: int = 128
    n_probe: int = 128
    use_directions: bool = True
    use_bias: bool = True
    init: Literal["zeros", "lost_component"] = "zeros"
    eval_windows: int = 40
    eval_context: int = 256
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype {self.dtype!r}; choose one of {sorted(_DTYPES)}.")
        if self.init not in ("zeros", "lost_component"):
            raise ConfigError(f"init {self.init!r}; choose 'zeros' or 'lost_component'.")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}.")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        for name in (
            "n_train",
            "n_diff_prompts",
            "n_probe",
            "max_length",
            "eval_windows",
            "eval_context",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        self.train_config()  # validates the optimisation settings
        self.select_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            objective=self.objective,
            kl_weight=self.kl_weight,
            lr=self.lr,
            warmup_fraction=self.warmup_fraction,
            epochs=self.epochs,
            steps=self.steps,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )

    def select_config(self) -> SelectConfig:
        return SelectConfig(
            method=self.heads,  # type: ignore[arg-type]
            fraction=self.head_fraction,
            n_heads=self.n_heads,
            seed=self.seed,
        )

    def diff_config(self) -> DiffConfig:
        return DiffConfig(positions=self.positions, max_length=self.max_length, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**values)


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


def resolve_pruned(config: FitConfig) -> str:
    """The pruned checkpoint: the given one, or the cached Wanda (by default) prune of the dense model."""
    if config.pruned:
        return config.pruned
    from lcc_lens.pruning import PruneConfig, cached_pruned_checkpoint

    pcfg = PruneConfig(
        method=config.prune_method, sparsity=config.prune_sparsity, pattern=config.prune_pattern
    )
    return str(cached_pruned_checkpoint(config.dense, pcfg))


def _data(config: FitConfig) -> tuple[list[Example], list[Example]]:
    if config.data == "offline":
        train = load_examples("offline", split="train", n=config.n_train, seed=config.seed)
        n_val = max(1, round(config.n_train * config.val_fraction))
        val = load_examples("offline", split="validation", n=n_val, seed=config.seed)
        return train, val
    examples = load_examples(config.data, n=config.n_train, seed=config.seed)
    return split_examples(examples, config.val_fraction, config.seed)


def _identity(config: FitConfig, pruned_source: str, ranking: HeadRanking) -> str:
    """What a resumable checkpoint must agree on besides the optimisation settings."""
    keep = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("device", "checkpoint_every", "eval_windows")
    }
    payload = json.dumps(
        {"config": keep, "pruned": pruned_source, "heads": ranking.selected}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def heldout_perplexities(
    pair: ModelPair, compensation: Compensation | None, config: FitConfig
) -> dict[str, Any]:
    """Perplexity of dense, pruned and (with ``compensation``) restored on the held-out test split."""
    from lcc_lens.evaluation.perplexity import perplexity
    from lcc_lens.evaluation.report import gap_closed

    text = split_text("test")
    kw = {"context_length": config.eval_context, "max_windows": config.eval_windows}
    out: dict[str, Any] = {"eval_text": corpus_identity("test")}
    dense = perplexity(pair.dense, pair.tokenizer, text, **kw)
    pruned = perplexity(pair.pruned, pair.tokenizer, text, **kw)
    out.update(ppl_dense=dense.ppl, ppl_pruned=pruned.ppl, eval_tokens=dense.n_tokens)
    if compensation is not None:
        with compensation.attach(pair.pruned):
            restored = perplexity(pair.pruned, pair.tokenizer, text, **kw)
        out["ppl_restored"] = restored.ppl
        # the perplexity gap (what the summary leads with) and the log-perplexity (NLL) gap, which is
        # what ``python -m lcc_lens.eval`` reports; undefined unless pruning made perplexity worse
        for key, log_scale in (("gap_closed", False), ("gap_closed_nll", True)):
            out[key] = (
                gap_closed(
                    dense.ppl, pruned.ppl, restored.ppl, higher_is_better=False, log_scale=log_scale
                )
                if pruned.ppl > dense.ppl
                else float("nan")
            )
    return out


def fit(
    config: FitConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Run the whole LCC job; with ``out_dir`` write the run directory (see the README for its layout).

    ``on_step(step, row)`` is called after every optimizer step (progress reporting, early stopping).
    """
    t0 = time.perf_counter()
    run = Path(out_dir) if out_dir is not None else None
    if run is not None:
        ensure_writable_dir(run / "x.tmp")
        if resume and not (run / "checkpoint.pt").is_file():
            raise ConfigError(f"--resume: {run} holds no checkpoint.pt; start without --resume.")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dtype = _DTYPES[config.dtype]
    pruned_source = resolve_pruned(config)
    pair = ModelPair.load(config.dense, pruned_source, dtype=dtype, device=device)
    g = pair.geometry
    logger.info(
        "pair: %s, %d layers x %d heads (d_head %d)",
        g.architecture,
        g.n_layers,
        g.n_heads,
        g.d_head,
    )

    train_ex, val_ex = _data(config)
    train_enc = encode(pair.tokenizer, train_ex, config.max_length)
    val_enc = encode(pair.tokenizer, val_ex, config.max_length) if val_ex else []

    diff_prompts = [e.prompt for e in train_ex[: config.n_diff_prompts]]
    components, diff = cached_lost_components(pair, diff_prompts, config.diff_config(), k=config.k)

    scfg = config.select_config()
    probe = None
    if scfg.method == "probe" and scfg.count(g) > 0:
        probe = probe_samples(train_ex[: config.n_probe])
    if scfg.method == "mse" and diff is None:
        from lcc_lens.diff import head_diffs

        diff = head_diffs(pair, diff_prompts, config.diff_config())
    ranking = select_heads(
        pair,
        scfg,
        components=components,
        diff=diff,
        probe_data=probe,
        kl_prompts=[e.prompt + e.response for e in train_ex[:16]],
    )
    logger.info(
        "selected %d of %d heads by %s", len(ranking.selected), g.n_total_heads, ranking.method
    )

    comp = Compensation(
        g,
        ranking.selected,
        components.directions,
        use_directions=config.use_directions,
        use_bias=config.use_bias,
    )
    if config.init == "lost_component" and comp.n_selected:
        comp.init_from(components.components)
    tcfg = config.train_config()
    val_before = evaluate_loss(pair, None, val_enc, tcfg)
    history = train(
        pair,
        comp,
        train_enc,
        val_enc,
        tcfg,
        run_dir=run,
        resume=resume,
        identity=_identity(config, pruned_source, ranking),
        on_step=on_step,
    )
    metrics: dict[str, Any] = {"val_loss_pruned": val_before}
    metrics["val_loss_restored"] = (
        evaluate_loss(pair, comp, val_enc, tcfg) if val_enc else float("nan")
    )
    metrics.update(heldout_perplexities(pair, comp, config))
    metrics["n_selected_heads"] = comp.n_selected
    metrics["n_trainable_parameters"] = sum(p.numel() for p in comp.parameters() if p.requires_grad)
    result = FitResult(
        config, pair, comp, ranking, components, diff, history, metrics, pruned_source, run
    )
    if run is not None:
        write_run(result, run)
    metrics["wall_time_s"] = time.perf_counter() - t0
    if run is not None:
        write_json(run / "metrics.json", _metrics_json(result))
    return result


def _metrics_json(result: FitResult) -> dict[str, Any]:
    return {"summary": result.metrics, "history": result.history}


def write_run(result: FitResult, run: Path) -> None:
    """Write config.yaml, compensation.safetensors, model/, heads.json, metrics.json and plots/."""
    import yaml

    from lcc_lens.export import export_checkpoint

    cfg = result.config
    identities = {"dense": describe(cfg.dense), "pruned": describe(result.pruned_source)}
    write_text(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    meta = {
        "models": identities,
        "selection": result.ranking.method,
        "k": cfg.k,
        "objective": cfg.objective,
    }
    result.compensation.save(run / COMPENSATION_FILE, metadata=meta)
    export_checkpoint(result.pruned_source, result.compensation, run / "model", metadata=meta)
    result.metrics["export_max_abs_logit_diff"] = export_check(result, run / "model")
    write_json(run / "heads.json", result.ranking.to_json(result.pair.geometry))
    write_json(run / "metrics.json", _metrics_json(result))
    write_plots(result, run / "plots")


@torch.no_grad()
def export_check(result: FitResult, model_dir: Path) -> float:
    """Max |logit| difference between the hooked pruned model and the exported checkpoint on one batch."""
    from lcc_lens.models import load_causal_lm

    merged, tok = load_causal_lm(model_dir, device=result.pair.device)
    ids = tok(split_text("validation")[:2000], return_tensors="pt")["input_ids"][:, :64].to(
        result.pair.device
    )
    with result.compensation.attach(result.pair.pruned):
        hooked = result.pair.pruned(ids, return_type="logits")
    diff = float((merged(ids).logits.float() - hooked.float()).abs().max())
    del merged
    return diff


def write_plots(result: FitResult, folder: Path) -> None:
    """Training curves, the dense/pruned/restored comparison and per-head restoration, as HTML."""
    from lcc_lens import plots
    from lcc_lens.restoration import restoration_stats

    folder.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    if result.history:  # nothing trained (zero heads or zero steps): no curve to draw
        plots.save_figure(plots.training_curves(result.history), folder / "training_curves")
    ppl = {k: m[f"ppl_{k}"] for k in ("dense", "pruned", "restored") if f"ppl_{k}" in m}
    plots.save_figure(plots.comparison_bar(ppl, "held-out perplexity"), folder / "perplexity")
    prompts = [
        e.prompt
        for e in load_examples("offline", split="validation", n=32, seed=result.config.seed + 1)
    ]
    stats = restoration_stats(result.pair, result.compensation, prompts)
    fig = plots.restoration_heatmap(
        stats, result.pair.geometry, result.compensation.selected_heads()
    )
    plots.save_figure(fig, folder / "restoration")


def with_overrides(config: FitConfig, **overrides: Any) -> FitConfig:
    """A copy of ``config`` with some fields replaced (validated)."""
    return replace(config, **overrides)


if __name__ == "__main__":  # python -m lcc_lens.fit
    from lcc_lens.cli.fit import main

    raise SystemExit(main())
