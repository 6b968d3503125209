"""The frozen, nested configuration of one fit: run-level fields plus one section per stage.

Each section is the stage owner's own frozen config (pruning, data, diff, selection, compensation,
training, evaluation), so every knob of the library is reachable from one object. ``to_dict`` and
``from_dict`` round-trip it through YAML (nested mappings); ``from_dict`` type-checks every value and
names the offending ``section.field``. The run's ``seed`` is copied into every section's own ``seed``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from lcc_lens.compensation import CompensationConfig
from lcc_lens.data import DataConfig
from lcc_lens.diff import DiffConfig
from lcc_lens.errors import ConfigError
from lcc_lens.evaluation.protocol import ProtocolConfig
from lcc_lens.probe_data import ProbeDataConfig
from lcc_lens.pruning.config import PruneConfig
from lcc_lens.selection import SelectConfig
from lcc_lens.settings import build, check_value
from lcc_lens.training import TrainConfig

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")


# The fit's defaults, chosen on the out-of-domain validation domain (dialogue) over 3 seeds
# (analysis/results/ood/results.md): KL to the dense model at every position of half fit-domain text,
# half text the dense model writes itself, a free constant offset on every head. The section classes
# keep their own, more general defaults for other callers.


def _data_default() -> DataConfig:
    return DataConfig(targets="all", fit_text="corpus_self")


def _diff_default() -> DiffConfig:
    return DiffConfig(max_length=128)


def _select_default() -> SelectConfig:
    return SelectConfig(method="all")


def _compensation_default() -> CompensationConfig:
    return CompensationConfig(use_directions=False)


def _train_default() -> TrainConfig:
    # passes of 4 of the 8 examples: the same token-weighted gradient, and the default job's peak memory
    # falls from 4.5 to 3.05 GB in its training stage (measured on the embedded model, issue 11)
    return TrainConfig(objective="kl", lr=5e-3, steps=48, checkpoint_every=8, memory_chunk=4)


def _eval_default() -> ProtocolConfig:
    # 40 windows (10,240 tokens) on the out-of-domain test and validation domains; 16 in domain, whose
    # figures are secondary (their NLL gap interval widens from about +-2 to +-3.5 points)
    return ProtocolConfig(in_domain_windows=16)


@dataclass(frozen=True)
class FitConfig:
    """Everything one fit needs; nested by stage (see the module docstring)."""

    dense: str = field(
        default="embedded",
        metadata={"help": "dense model: Hugging Face id, local directory or 'embedded'"},
    )
    pruned: str | None = field(
        default=None,
        metadata={"help": "pruned model directory (default: the cached prune of dense by 'prune')"},
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', 'mps'"})
    device_map: str = field(
        default="none",
        metadata={
            "help": "spread models too large for one device: 'none', 'auto', 'balanced', "
            "'sequential', or a JSON file of {module: device}"
        },
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "dtype the models are loaded in"}
    )
    seed: int = field(
        default=0,
        metadata={"help": "the run's seed, used by every stage (data, diff, selection, training)"},
    )
    method: str = field(
        default="lcc",
        metadata={
            "help": "what the fit trains: lcc (the compensation, see --compensate) or a zero-keeping "
            "method (masked_lora_r8, masked_lora_r1, masked_lora_matched, spp_r8, perp_bias_norm, "
            "masked_full_ft, lcc_lowrank: lcc's head offsets with a rank-1 masked LoRA)"
        },
    )
    max_length: int = field(
        default=128,
        metadata={"help": "tokens per training / validation example (prompt + response)"},
    )
    allow_worse: bool = field(
        default=False,
        metadata={
            "help": "export even when the restored validation loss is clearly worse than the pruned "
            "model's (a diverged fit)"
        },
    )
    worse_margin: float = field(
        default=0.05,
        metadata={
            "help": "how much higher (nats/token) the restored validation loss may be than the "
            "pruned model's before the fit counts as diverged"
        },
    )
    prune: PruneConfig = field(
        default_factory=PruneConfig,
        metadata={"help": "how dense is pruned when 'pruned' is not given"},
    )
    data: DataConfig = field(
        default_factory=_data_default, metadata={"help": "the run's text for every role, and sizes"}
    )
    diff: DiffConfig = field(
        default_factory=_diff_default, metadata={"help": "activation differences"}
    )
    probe: ProbeDataConfig = field(
        default_factory=ProbeDataConfig,
        metadata={"help": "contrastive pairs for probe head selection (corpora data)"},
    )
    select: SelectConfig = field(
        default_factory=_select_default, metadata={"help": "which heads are compensated"}
    )
    compensation: CompensationConfig = field(
        default_factory=_compensation_default, metadata={"help": "the compensation's shape"}
    )
    train: TrainConfig = field(
        default_factory=_train_default, metadata={"help": "optimisation of the compensation"}
    )
    eval: ProtocolConfig = field(
        default_factory=_eval_default,
        metadata={"help": "held-out evaluation of dense, pruned and restored per domain"},
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            check_value(getattr(self, f.name), hints[f.name], f.name)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r}; choose one of {list(DTYPES)}.")
        from lcc_lens.placement import parse_device_map

        parse_device_map(self.device_map)
        check_fit_method(self.method)
        if self.method != "lcc" and self.compensation.compensate != ("heads",):
            raise ConfigError(
                f"--compensate chooses the LCC family's components; method {self.method!r} trains "
                "its own tensors. Drop --compensate, or use --method lcc."
            )
        if self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2 tokens, got {self.max_length}.")
        if not 0 <= self.worse_margin < math.inf:
            raise ConfigError(
                f"worse_margin must be a finite number >= 0 (nats/token), got {self.worse_margin}; "
                "to export a fit however much worse it is, pass --allow-worse instead."
            )
        for f in fields(self):  # the run's seed is the seed of every stage
            section = getattr(self, f.name)
            if (
                dataclasses.is_dataclass(section)
                and hasattr(section, "seed")
                and section.seed != self.seed
            ):
                object.__setattr__(self, f.name, dataclasses.replace(section, seed=self.seed))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML-ready); sections' own ``seed`` fields are implied by ``seed``."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitConfig:
        """Build from nested mappings (YAML, ``lcc fit``'s flags) through :func:`lcc_lens.settings.build`
        (unknown keys and wrong types raise ConfigError), after mapping the legacy flat keys; a
        section's own ``seed`` is refused (the run's ``seed`` is every section's)."""
        values = _nest_legacy(values)
        if isinstance(values, Mapping):
            for name, section in values.items():
                if isinstance(section, Mapping) and "seed" in section:
                    raise ConfigError(
                        f"unknown field {name + '.seed'!r}: a section's seed is the run's top-level "
                        f"'seed'; remove it from {name}."
                    )
        return build(cls, values)


# ---- (de)serialisation ------------------------------------------------------------------------


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            inner = _to_dict(value)
            inner.pop("seed", None)
            out[f.name] = inner
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


# The flat keys of the pre-package FitConfig, so that earlier config.yaml files still load.
LEGACY_KEYS: dict[str, str] = {
    "prune_method": "prune.method",
    "prune_sparsity": "prune.sparsity",
    "prune_pattern": "prune.pattern",
    "n_train": "data.n_train",
    "val_fraction": "data.val_fraction",
    "n_diff_prompts": "data.n_diff_prompts",
    "n_probe": "data.n_probe",
    "objective": "train.objective",
    "kl_weight": "train.kl_weight",
    "lr": "train.lr",
    "warmup_fraction": "train.warmup_fraction",
    "epochs": "train.epochs",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "checkpoint_every": "train.checkpoint_every",
    "heads": "select.method",
    "head_fraction": "select.fraction",
    "n_heads": "select.n_heads",
    "k": "compensation.k",
    "use_directions": "compensation.use_directions",
    "use_bias": "compensation.use_bias",
    "init": "compensation.init",
    "positions": "diff.positions",
    "eval_windows": "eval.windows",
    "eval_context": "eval.context_length",
}


def _nest_legacy(values: Any) -> Any:
    """Map the old flat keys (and ``data: <source string>``) onto their sections."""
    if not isinstance(values, Mapping):
        return values
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    if isinstance(out.get("data"), str):
        out["data"] = {"source": out["data"]}
    if "max_length" in out and "diff" not in out:  # the flat config used one length for both
        out["diff"] = {"max_length": out["max_length"]}
    for old, new in LEGACY_KEYS.items():
        if old in out:
            section, name = new.split(".")
            value = out.pop(old)
            target = out.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{section} must be a mapping of fields.")
            if name in target:
                raise ConfigError(f"both {old!r} and {new!r} are set; keep only {new!r}.")
            target[name] = value
    return out


def check_fit_method(name: str) -> None:
    """Refuse a method the fit cannot export without filling the pruned zeros, or an unknown one."""
    from lcc_lens.methods import FIT_METHODS, METHOD_NAMES

    if name in FIT_METHODS:
        return
    choices = ", ".join(FIT_METHODS)
    if name.startswith(("lora", "dora")):
        raise ConfigError(
            f"method {name!r} is benchmark-only: its merge fills the pruned zeros. "
            f"The fit trains one of: {choices}."
        )
    if name in METHOD_NAMES:
        raise ConfigError(
            f"method {name!r} is a benchmark variant (run it with lcc bench); the fit trains one of: "
            f"{choices} (lcc's variants through --select-method and --compensate)."
        )
    raise ConfigError(f"unknown method {name!r}; the fit trains one of: {choices}.")
