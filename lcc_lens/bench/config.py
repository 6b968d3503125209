"""The frozen configuration of a restoration benchmark run and its three pruning settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from lcc_lens.errors import ConfigError
from lcc_lens.methods import FAMILY_METHODS, METHOD_NAMES, ZERO_KEEPING_PEERS
from lcc_lens.pruning import PruneConfig

SETTINGS: dict[str, PruneConfig] = {
    "wanda_unstructured_50": PruneConfig(method="wanda", sparsity=0.5),
    "sparsegpt_2of4": PruneConfig(method="sparsegpt", sparsity=None, pattern="2:4"),
    "flap_structured_20": PruneConfig(method="flap", sparsity=0.2, structured_mode="mask"),
}
"""The paper's three settings: unstructured 50 % (Wanda), 2:4 (SparseGPT), structured 20 % (FLAP, mask)."""

ON_REQUEST: tuple[str, ...] = (*ZERO_KEEPING_PEERS, *FAMILY_METHODS)
"""Methods newer than the committed tables: they run when named in ``--methods`` (``--quick``: all)."""
DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in METHOD_NAMES if m not in ON_REQUEST)
"""The full run's methods: those of the committed tables."""
DEFAULT_OUT = "analysis/results/bench"
QUICK_SETTING = "magnitude_quick_50"
QUICK_SELF_TOKENS = 16
"""New tokens per self-written training sample in ``--quick`` runs (the fit's default is 128)."""
"""The setting of ``--quick``: 50 % magnitude pruning of a tiny random model (no calibration)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how; every method shares the data, steps, batch and objective."""

    dense: str = field(
        default="embedded", metadata=_help("dense model: 'embedded', a checkpoint dir or a hub id")
    )
    settings: tuple[str, ...] = field(
        default=tuple(SETTINGS), metadata=_help(f"pruning settings to run, from {list(SETTINGS)}")
    )
    pruned: str | None = field(
        default=None,
        metadata=_help("an already pruned checkpoint dir (then exactly one setting names it)"),
    )
    methods: tuple[str, ...] = field(
        default=DEFAULT_METHODS,
        metadata=_help(
            f"restoration methods, from {list(METHOD_NAMES)}; default: all but "
            f"{list(ON_REQUEST)} (--quick: all)"
        ),
    )
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_help("seeds (3 or more for sd)"))
    steps: int = field(default=16, metadata=_help("optimizer steps of every trained method"))
    batch_size: int = field(default=8, metadata=_help("examples per optimizer step"))
    max_length: int = field(default=128, metadata=_help("tokens per training example"))
    objective: str | None = field(
        default=None,
        metadata=_help("training loss of every method: lm, kl, mix; none = the fit's default"),
    )
    lr: float | None = field(
        default=None, metadata=_help("learning rate of every method; none = each method's default")
    )
    method_lrs: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "per-method learning rates as name=rate (e.g. lcc=0.005,lora_r8=0.003); they win over "
            "--lr and the methods' defaults"
        ),
    )
    n_train: int = field(default=256, metadata=_help("fit examples, shared by every method"))
    head_fraction: float | None = field(
        default=None,
        metadata=_help("fraction of heads the head-level methods compensate; none = the fit's"),
    )
    k: int | None = field(
        default=None, metadata=_help("rank K of the lost component; none = the fit's default")
    )
    probe_pairs: int | None = field(
        default=None,
        metadata=_help("contrastive pairs of LCC's probe selection; none = the fit's default"),
    )
    eval_windows: int = field(
        default=8, metadata=_help("perplexity windows scored per evaluation domain")
    )
    eval_context: int = field(default=256, metadata=_help("tokens per perplexity window"))
    task_items: int | None = field(
        default=None,
        metadata=_help(
            "items per held-out task (the short task sets of the test domain); none = their "
            "measured defaults; 0 = no task accuracy"
        ),
    )
    timing_repeats: int = field(
        default=5, metadata=_help("interleaved forward timings of merged vs pruned")
    )
    out: str = field(
        default=DEFAULT_OUT,
        metadata=_help("folder of <setting>.json/.md/.html (quick runs: <cache>/bench/quick)"),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_help(
            "where finished (method, seed) results and quick models are kept; none = <cache>/bench"
        ),
    )
    quick: bool = field(
        default=False,
        metadata=_help("tiny random model, every method end to end in well under a minute"),
    )
    device: str = field(default="auto", metadata=_help("cpu, cuda or auto"))
    dtype: str = field(default="float32", metadata=_help("model dtype: float32 or bfloat16"))

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown}; choose from {list(METHOD_NAMES)}.")
        if not self.methods:
            raise ConfigError("methods: give at least one method.")
        if not self.quick:
            bad = [s for s in self.settings if s not in SETTINGS and self.pruned is None]
            if bad:
                raise ConfigError(f"settings: unknown {bad}; choose from {list(SETTINGS)}.")
        if self.pruned is not None and len(self.settings) != 1:
            raise ConfigError(
                "pruned: with a given pruned checkpoint pass exactly one setting name."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: give distinct seeds, got {list(self.seeds)}.")
        if self.probe_pairs is not None and self.probe_pairs < 4:
            raise ConfigError(f"probe_pairs must be >= 4, got {self.probe_pairs}.")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}.")
        for name in ("steps", "batch_size", "max_length", "n_train", "eval_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_context", "timing_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.task_items is not None and (self.task_items < 0 or 0 < self.task_items < 4):
            raise ConfigError(
                f"task_items must be 0 (off) or >= 4 (a choice item needs 3 distractors), "
                f"got {self.task_items}."
            )
        if self.head_fraction is not None and not 0 < self.head_fraction <= 1:
            raise ConfigError(f"head_fraction must be in (0, 1], got {self.head_fraction}.")
        if self.objective is not None and self.objective not in ("lm", "kl", "mix"):
            raise ConfigError(f"objective must be lm, kl or mix, got {self.objective!r}.")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        self.method_rates()  # validates method_lrs
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be float32 or bfloat16, got {self.dtype!r}.")

    def resolved(self) -> BenchConfig:
        """Fields left at none take the fit's defaults (so ``lcc`` is the default LCC configuration)."""
        from lcc_lens.fit import FitConfig

        fit = FitConfig()
        return replace(
            self,
            objective=self.objective or fit.train.objective,
            head_fraction=self.head_fraction or fit.select.fraction,
            k=self.k or fit.compensation.k,
        )

    def method_rates(self) -> dict[str, float]:
        """``method_lrs`` as {method: rate}; ConfigError naming the entry when one is malformed."""
        rates: dict[str, float] = {}
        for entry in self.method_lrs:
            name, sep, text = entry.partition("=")
            try:
                rate = float(text) if sep else math.nan
            except ValueError:
                rate = math.nan
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(
                    f"method_lrs: {entry!r} is not name=rate with a positive rate, e.g. lcc=0.005."
                )
            if name not in self.methods or name in rates:
                raise ConfigError(
                    f"method_lrs: {name!r} must be one of the methods run ({list(self.methods)}), "
                    "named once."
                )
            rates[name] = rate
        return rates

    def lr_for(self, method: str, default: float) -> float:
        """The learning rate ``method`` trains at: its ``method_lrs`` entry, else ``lr``, else ``default``."""
        return self.method_rates().get(method, self.lr if self.lr is not None else default)

    def setting_names(self) -> tuple[str, ...]:
        return (QUICK_SETTING,) if self.quick else self.settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint_dict(self) -> dict[str, Any]:
        """The settings that change a (method, seed) result (not where it is written, not seeds)."""
        d = self.to_dict()
        drop = ("out", "cache_dir", "methods", "seeds", "settings", "device", "timing_repeats")
        for key in (*drop, "lr", "method_lrs"):  # a method's resolved rate is in its own cache key
            d.pop(key)
        return d


QUICK_VALUES: dict[str, Any] = {
    "methods": METHOD_NAMES,
    "seeds": (0, 1),
    "steps": 3,
    "batch_size": 4,
    "max_length": 64,
    "n_train": 24,
    "eval_windows": 2,
    "eval_context": 64,
    "task_items": 8,
    "probe_pairs": 24,
    "timing_repeats": 3,
}
"""What ``--quick`` changes, for every field left at its full-run default (two seeds give an sd)."""


def with_quick_defaults(cfg: BenchConfig) -> BenchConfig:
    """``cfg`` with the quick values for every field still at its full-run default (quick runs only)."""
    if not cfg.quick:
        return cfg
    defaults = {f.name: f.default for f in fields(BenchConfig)}
    changes = {k: v for k, v in QUICK_VALUES.items() if getattr(cfg, k) == defaults[k]}
    return replace(cfg, **changes)
