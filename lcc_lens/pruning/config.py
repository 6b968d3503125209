"""The frozen configuration of one pruning run, validated on construction."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lcc_lens.errors import ConfigError

Method = Literal["magnitude", "wanda", "sparsegpt", "flap"]
METHODS: tuple[Method, ...] = ("magnitude", "wanda", "sparsegpt", "flap")
UNSTRUCTURED_METHODS: tuple[Method, ...] = ("magnitude", "wanda", "sparsegpt")
StructuredMode = Literal["mask", "remove"]
RatioMode = Literal["uniform", "adaptive"]

DEFAULT_SPARSITY = 0.5
"""The sparsity of a config that sets neither ``sparsity`` nor ``pattern``."""

DEFAULT_INCLUDE = r"(self_attn|attn|attention|mlp)\."
"""Default layer filter: every linear layer of the attention and MLP blocks of the decoder layers."""


def check_device(device: str | None, *, what: str = "device") -> None:
    """Raise ConfigError unless ``device`` names a torch device that exists here (None/auto pass)."""
    if device is None or device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} {device!r} is not a device name; use cpu, cuda, cuda:N, mps or auto."
        ) from exc
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{what} {device!r}: no CUDA device is available here; use cpu.")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"{what} {device!r}: only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})."
            )
        return
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"{what} {device!r}: MPS is not available here; use cpu.")
        return
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if not callable(available) or not available():
        raise ConfigError(f"{what} {device!r} is not available here; use cpu, cuda or auto.")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """Parse ``"N:M"`` into ``(N, M)``: N weights are zeroed in every group of M consecutive inputs.

    This is the convention of the Wanda and SparseGPT reference code; for the usual 2:4 and 4:8 it is the
    same as NVIDIA's "N non-zeros out of M".
    """
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise ConfigError(
            f"invalid N:M pattern {pattern!r}: write two integers separated by a colon, e.g. 2:4 or 4:8."
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ConfigError(
            f"invalid N:M pattern {pattern!r}: N (weights zeroed per group) must satisfy 0 < N < M, "
            "e.g. 2:4 or 4:8."
        )
    return n, m


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how.

    Attributes:
        method: ``magnitude``, ``wanda``, ``sparsegpt`` (unstructured or N:M) or ``flap`` (structured:
            whole attention heads and MLP channels).
        sparsity: fraction of weights to zero in (0, 1); for ``flap`` the fraction of heads and of MLP
            channels to remove. With ``pattern`` it may be omitted (it is then N/M) and must equal N/M.
        pattern: ``"N:M"`` semi-structured sparsity (N zeros in every group of M consecutive inputs), or None.
        include: regular expression searched in module names; only matching linear layers are pruned.
        exclude: optional regular expression; matching modules are left dense.
        calibration: ``"corpora"`` (lcc_lens.corpora split "calibration", offline), ``"c4"`` (allenai/c4 en
            through ``datasets``, online), a local ``.txt``/``.json``/``.jsonl`` file, or a ``datasets``
            name (``name`` or ``name:config``) with a ``text`` column.
        n_samples, seq_len, seed: calibration sequences (default 64 x 256 keeps a CPU run short; the papers
            use 128 x 2048).
        batch_size: calibration sequences per forward pass.
        blocksize, percdamp: SparseGPT's column block width and Hessian damping (fraction of mean diagonal).
        structured_mode: ``mask`` zeroes pruned heads/channels in place (shapes kept, LCC can pair the
            model with its dense parent); ``remove`` slices them out (smaller model, needs uniform ratios).
        ratio_mode: ``uniform`` (same ratio in every layer) or ``adaptive`` (FLAP's standardised scores
            and one global threshold over all layers).
        bias_compensation: FLAP's training-free compensation of removed channels' mean into output biases.
        device: where calibration runs (``None``: where the model is).
    """

    method: Method = field(
        default="wanda",
        metadata={"help": "pruning method: magnitude, wanda, sparsegpt (unstructured/N:M) or flap"},
    )
    sparsity: float | None = field(
        default=None,
        metadata={
            "help": "fraction in (0, 1) of weights to zero (flap: of heads and MLP channels)",
            "default_text": "0.5, or N/M with --pattern",
        },
    )
    pattern: str | None = field(
        default=None,
        metadata={"help": "N:M semi-structured sparsity, N zeros in every M inputs (e.g. 2:4)"},
    )
    include: str = field(
        default=DEFAULT_INCLUDE,
        metadata={"help": "regular expression of module names to prune", "aliases": ("--layers",)},
    )
    exclude: str | None = field(
        default=None, metadata={"help": "regular expression of module names to keep dense"}
    )
    calibration: str = field(
        default="corpora",
        metadata={
            "help": "calibration text: 'corpora' (offline real text; in lcc fit of "
            "--calibration-domains), 'corpora:python_docs,dialogue' (those domains), 'c4', a "
            ".txt/.json/.jsonl file, or a datasets name"
        },
    )
    n_samples: int = field(
        default=64, metadata={"help": "calibration sequences, count (papers: 128)"}
    )
    seq_len: int = field(
        default=256, metadata={"help": "tokens per calibration sequence (papers: 2048)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the calibration sample"})
    batch_size: int = field(default=8, metadata={"help": "calibration sequences per forward pass"})
    blocksize: int = field(default=128, metadata={"help": "SparseGPT column block width, columns"})
    percdamp: float = field(
        default=0.01,
        metadata={"help": "SparseGPT Hessian damping, fraction of the mean diagonal in [0, 1)"},
    )
    structured_mode: StructuredMode = field(
        default="mask",
        metadata={"help": "flap: 'mask' zeroes pruned heads/channels, 'remove' slices them out"},
    )
    ratio_mode: RatioMode = field(
        default="uniform",
        metadata={"help": "flap: 'uniform' ratio per layer or 'adaptive' (one global threshold)"},
    )
    bias_compensation: bool = field(
        default=True,
        metadata={"help": "flap: fold removed channels' mean into the output biases"},
    )
    device: str | None = field(
        default=None,
        metadata={"help": "where calibration runs: cpu, cuda, cuda:1, mps, ... (none: cpu)"},
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown pruning method {self.method!r}; choose one of {METHODS}.")
        if self.pattern is not None:
            if self.method == "flap":
                raise ConfigError(
                    "an N:M pattern applies to unstructured methods only; drop --pattern for flap "
                    "or choose magnitude, wanda or sparsegpt."
                )
            n, m = parse_pattern(self.pattern)
            object.__setattr__(self, "pattern", f"{n}:{m}")
            if self.sparsity is not None and abs(float(self.sparsity) - n / m) > 1e-9:
                raise ConfigError(
                    f"sparsity {self.sparsity} contradicts pattern {n}:{m} (which zeroes {n / m:g} of the "
                    f"weights); omit --sparsity or pass --sparsity {n / m:g}."
                )
            if self.blocksize % m:
                raise ConfigError(
                    f"blocksize {self.blocksize} must be a multiple of M={m} for an N:M pattern."
                )
        if self.sparsity is not None:
            s = float(self.sparsity)
            if not 0.0 < s < 1.0:
                raise ConfigError(
                    f"sparsity must lie strictly between 0 and 1 (a fraction of weights), got {self.sparsity}; "
                    "e.g. 0.5 for 50 %."
                )
            object.__setattr__(self, "sparsity", s)
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(
                    f"{name} pattern {value!r} is not a valid regular expression: {exc}."
                ) from exc
        for name in ("n_samples", "seq_len", "batch_size", "blocksize"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not 0.0 <= self.percdamp < 1.0:
            raise ConfigError(
                f"percdamp must lie in [0, 1), got {self.percdamp}; the usual value is 0.01."
            )
        if self.structured_mode not in ("mask", "remove"):
            raise ConfigError(
                f"structured_mode must be 'mask' or 'remove', got {self.structured_mode!r}."
            )
        if self.ratio_mode not in ("uniform", "adaptive"):
            raise ConfigError(
                f"ratio_mode must be 'uniform' or 'adaptive', got {self.ratio_mode!r}."
            )
        check_device(self.device)
        if (
            self.method == "flap"
            and self.structured_mode == "remove"
            and self.ratio_mode == "adaptive"
        ):
            raise ConfigError(
                "structured_mode='remove' needs ratio_mode='uniform': a transformers config holds one head "
                "count and one intermediate_size for all layers. Use --ratio-mode uniform, or "
                "--structured-mode mask to keep per-layer adaptive ratios."
            )

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` when a pattern is set."""
        return parse_pattern(self.pattern) if self.pattern else None

    @property
    def target_sparsity(self) -> float:
        """The fraction of weights (or heads/channels for flap) that the run removes."""
        if self.nm is not None:
            n, m = self.nm
            return n / m
        return DEFAULT_SPARSITY if self.sparsity is None else float(self.sparsity)

    @property
    def structured(self) -> bool:
        return self.method == "flap"

    @property
    def needs_calibration(self) -> bool:
        return self.method != "magnitude"

    def to_dict(self) -> dict[str, Any]:
        """The fields, with the effective sparsity filled in when no pattern is set."""
        d = asdict(self)
        if self.pattern is None:
            d["sparsity"] = self.target_sparsity
        return d

    def cache_dict(self) -> dict[str, Any]:
        """The settings that change the result (device and batch size do not)."""
        d = self.to_dict()
        d.pop("device")
        d.pop("batch_size")
        if not self.needs_calibration:
            for key in ("calibration", "n_samples", "seq_len", "seed"):
                d.pop(key)
        return d
