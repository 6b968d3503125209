"""The frozen, nested configuration of one fit: run-level fields plus one section per stage.

Each section is the stage owner's own frozen config (pruning, data, diff, selection, compensation,
training, evaluation), so every knob of the library is reachable from one object. ``to_dict`` and
``from_dict`` round-trip it through YAML (nested mappings); ``from_dict`` type-checks every value and
names the offending ``section.field``. The run's ``seed`` is copied into every section's own ``seed``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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
            "peer method (masked_lora_r8, masked_lora_matched, spp_r8, perp_bias_norm, masked_full_ft)"
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
        default_factory=ProtocolConfig,
        metadata={"help": "held-out evaluation of dense, pruned and restored per domain"},
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            want = _hints(type(self))[f.name]
            _check_type(getattr(self, f.name), want, f.name)
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
        if not self.worse_margin >= 0:
            raise ConfigError(f"worse_margin must be >= 0 (nats/token), got {self.worse_margin}.")
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
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        """Build from nested mappings (e.g. YAML); unknown keys and wrong types raise ConfigError."""
        return _from_dict(cls, _nest_legacy(values), "")


# ---- (de)serialisation ------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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


def _from_dict(cls: type, values: Any, prefix: str, base: Any = None) -> Any:
    """``cls`` from a mapping; fields not given keep their value in ``base`` (else the default)."""
    where = prefix.rstrip(".") or "the fit configuration"
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of fields, got {type(values).__name__}.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config keys {[prefix + k for k in unknown]}; valid keys of {where}: "
            f"{sorted(known)}."
        )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    if base is not None:
        kwargs = {f.name: getattr(base, f.name) for f in fields(base) if f.init}
    for name, value in values.items():
        want = hints[name]
        path = prefix + name
        if dataclasses.is_dataclass(want):
            if prefix == "" and isinstance(value, dict) and "seed" in value:
                raise ConfigError(
                    f"{path}.seed is set by the run's top-level 'seed'; remove it from {path}."
                )
            section_base = _field_default(known[name])
            kwargs[name] = _from_dict(
                want, value if value is not None else {}, path + ".", section_base
            )
        else:
            kwargs[name] = _coerce(value, want, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where}: {exc}") from exc


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _coerce(value: Any, want: Any, path: str) -> Any:
    """``value`` checked against the annotation ``want`` (int -> float allowed, nothing else)."""
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(want) is tuple and isinstance(value, list):
        value = tuple(value)
        args = typing.get_args(want)
        if args and args[-1] is Ellipsis:
            for i, item in enumerate(value):
                _check_type(item, args[0], f"{path}[{i}]")
    optional_float = _is_optional(want) and float in typing.get_args(want)
    if optional_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    _check_type(value, want, path)
    return value


def _is_optional(want: Any) -> bool:
    return type(None) in typing.get_args(want)


def _check_type(value: Any, want: Any, path: str) -> None:
    if not _matches(value, want):
        raise ConfigError(
            f"{path} must be {_describe(want)}, got {value!r} ({type(value).__name__})."
        )


def _matches(value: Any, want: Any) -> bool:
    origin = typing.get_origin(want)
    if want is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(want)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(want))
    if want is type(None):
        return value is None
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if dataclasses.is_dataclass(want):
        return isinstance(value, want)
    if origin in (tuple, list):
        return isinstance(value, origin)
    return isinstance(value, want) if isinstance(want, type) else True


def _describe(want: Any) -> str:
    origin = typing.get_origin(want)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(want))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(want))
    if want is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        want, getattr(want, "__name__", str(want))
    )


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
    if not isinstance(values, dict):
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
    from lcc_lens.methods import METHOD_NAMES, ZERO_KEEPING_PEERS

    if name == "lcc" or name in ZERO_KEEPING_PEERS:
        return
    choices = ", ".join(("lcc", *ZERO_KEEPING_PEERS))
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
