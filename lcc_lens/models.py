"""Loading models as TransformerBridges with Hugging Face numerics, model pairs and model identities.

TransformerLens 4.x wraps the unmodified Hugging Face modules, so logits equal the HF model's and
``blocks.{l}.attn.hook_z`` is [batch, pos, n_heads, d_head] (one slot per query head, also under
grouped-query attention). The shipped real models are converted in :mod:`lcc_lens.embedded`. Note that
booting a bridge rewires the HF model's submodules: code that needs a clean HF model (export, pruning)
loads one from the checkpoint directory instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError

from lcc_lens.cache import cache_root
from lcc_lens.embedded import EMBEDDED_MODEL, EMBEDDED_MODELS, embedded_model_dir, is_embedded
from lcc_lens.errors import ConfigError, IncompatibleModelsError, LccError
from lcc_lens.model_files import (
    check_loaded,
    checked_structure,
    declared_code,
    forget_code,
    needs_code,
)
from lcc_lens.placement import (
    DeviceMap,
    has_device_map,
    input_device,
    parse_device_map,
    resolve_device,
)
from lcc_lens.safe_paths import inside

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def resolve_model_source(source: str | os.PathLike[str]) -> str:
    """Map an embedded-model alias to its directory; check a local directory holds a checkpoint."""
    text = str(source)
    if is_embedded(text):
        return str(embedded_model_dir(text))
    if text.startswith(EMBEDDED_MODEL + ":"):
        raise ConfigError(
            f"unknown embedded model {text!r}; choose one of {sorted(EMBEDDED_MODELS)}."
        )
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"{path} is a file, not a model directory. Pass the checkpoint's folder."
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{path} is not a Hugging Face checkpoint (no config.json). Pass a directory written "
                "by save_pretrained, a hub id, or 'embedded'."
            )
        return str(path)
    if text.startswith((".", "/", "~")) or os.sep + os.sep in text:
        raise ConfigError(f"model directory {text} does not exist.")
    return text  # a hub id: transformers resolves it (needs network for users online)


def load_causal_lm(
    source: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = "cpu",
    device_map: str | DeviceMap | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a plain Hugging Face causal LM and its tokenizer, in eval mode.

    ``device_map`` (see :func:`lcc_lens.placement.parse_device_map`) spreads a model that does not fit
    one device over several, or offloads layers to CPU/disk (``offload_folder``, default a folder in
    the cache); ``device`` is then ignored. Safetensors weights only, no code from the checkpoint
    (``trust_remote_code=False``); a local folder is checked first and the loaded model after
    (:mod:`lcc_lens.model_files`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_source(source)
    local = Path(resolved).is_dir()
    if local:
        checked_structure(Path(resolved))
        code = declared_code(Path(resolved))
        if code:
            logger.warning(
                "%s names custom code (auto_map in %s); lcc_lens never runs it and loads the "
                "architecture with transformers' own class",
                source,
                ", ".join(code),
            )
    placement = parse_device_map(device_map)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "local_files_only": local,
        "use_safetensors": True,
        "trust_remote_code": False,
        "output_loading_info": True,
    }
    if placement is not None:
        kwargs["device_map"] = placement
        kwargs["offload_folder"] = str(offload_folder or _offload_folder(resolved))
    try:
        model, info = AutoModelForCausalLM.from_pretrained(resolved, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(
            resolved, local_files_only=local, trust_remote_code=False
        )
    except LccError:
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        RuntimeError,
        json.JSONDecodeError,
        SafetensorError,
    ) as exc:
        if "trust_remote_code" in str(exc):
            raise needs_code(str(source)) from exc
        if placement is not None and "device" in str(exc).lower():
            raise ConfigError(
                f"cannot place {source!r} with device_map {placement!r}: {exc}"
            ) from exc
        local_hint = (
            "; the checkpoint looks corrupt or incomplete: re-save or re-download it"
            if local
            else "; check the hub id and your network (or pass a local directory)"
        )
        raise ConfigError(f"cannot load model {source!r}: {_first_line(exc)}{local_hint}.") from exc
    check_loaded(model, info, str(source))
    forget_code(model.config, tokenizer)
    if placement is None:
        model.to(resolve_device(device))
    else:
        logger.info("placed %s with a device map: %s", source, model.hf_device_map)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _offload_folder(resolved: str) -> Path:
    """Where disk-offloaded weights of ``resolved`` go: one folder per model in the cache."""
    key = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return cache_root() / "offload" / key


def to_bridge(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str | None = None
) -> TransformerBridge:
    """Wrap an HF model as a TransformerBridge (no weight folding; logits equal the HF model's).

    A device-mapped model keeps its placement (the bridge is told the input embedding's device).
    """
    from transformer_lens.model_bridge import TransformerBridge

    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    try:
        with _quiet_transformers():
            bridge = TransformerBridge.boot_transformers(
                name or getattr(model.config, "_name_or_path", "model") or "model",
                hf_model=model,
                tokenizer=tokenizer,
                device=None if has_device_map(model) else str(input_device(model)),
                dtype=dtype,
            )
    except ValueError as exc:
        if not has_device_map(model):
            raise
        raise ConfigError(f"TransformerBridge refuses this device map: {exc}") from exc
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_bridge(
    source: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = "cpu",
    device_map: str | DeviceMap | None = None,
) -> tuple[TransformerBridge, PreTrainedTokenizerBase]:
    """Load a checkpoint and wrap it as a TransformerBridge; returns (bridge, HF tokenizer)."""
    model, tokenizer = load_causal_lm(source, dtype=dtype, device=device, device_map=device_map)
    return to_bridge(model, tokenizer, name=str(source)), tokenizer


@dataclass(frozen=True)
class HeadGeometry:
    """The shape facts that decide whether two models can be compared head by head."""

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int

    @classmethod
    def of(cls, bridge: TransformerBridge) -> HeadGeometry:
        cfg = bridge.cfg
        hf_cfg = bridge.original_model.config
        return cls(
            architecture=type(bridge.original_model).__name__,
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
            d_head=int(cfg.d_head),
            d_model=int(cfg.d_model),
            d_vocab=int(getattr(hf_cfg, "vocab_size", cfg.d_vocab)),
        )

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def head_name(self, layer: int, head: int) -> str:
        return f"L{layer}H{head}"

    def flat_index(self, layer: int, head: int) -> int:
        """Row-major index of (layer, head): layer * n_heads + head (never layer * n_layers)."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise LccError(
                f"head (layer={layer}, head={head}) is out of range for a model with "
                f"{self.n_layers} layers x {self.n_heads} heads."
            )
        return layer * self.n_heads + head

    def unflatten(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.n_total_heads:
            raise LccError(f"flat head index {index} outside [0, {self.n_total_heads}).")
        return divmod(index, self.n_heads)


def _tokenizer_signature(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_compatible(
    dense: TransformerBridge,
    pruned: TransformerBridge,
    dense_tokenizer: PreTrainedTokenizerBase,
    pruned_tokenizer: PreTrainedTokenizerBase,
) -> HeadGeometry:
    """Raise IncompatibleModelsError naming every mismatch; return the shared geometry."""
    a, b = HeadGeometry.of(dense), HeadGeometry.of(pruned)
    problems = [
        f"{field}: dense={getattr(a, field)} pruned={getattr(b, field)}"
        for field in (
            "architecture",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "d_head",
            "d_model",
            "d_vocab",
        )
        if getattr(a, field) != getattr(b, field)
    ]
    if _tokenizer_signature(dense_tokenizer) != _tokenizer_signature(pruned_tokenizer):
        problems.append("tokenizer: the two vocabularies differ")
    if problems:
        raise IncompatibleModelsError(
            "the dense and pruned models cannot be paired head by head: "
            + "; ".join(problems)
            + ". Pass the pruned model that was derived from this dense model "
            "(structured pruning that removes heads changes n_heads and cannot be compensated per head)."
        )
    return a


@dataclass
class ModelPair:
    """A dense and a pruned model, checked to be comparable head by head.

    Both sit on one device, or each is spread by the same device map (a model too large for one device).
    """

    dense: TransformerBridge
    pruned: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    geometry: HeadGeometry
    dense_source: str
    pruned_source: str

    @classmethod
    def load(
        cls,
        dense: str | os.PathLike[str],
        pruned: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = "cpu",
        device_map: str | DeviceMap | None = None,
    ) -> ModelPair:
        d_bridge, d_tok = load_bridge(dense, dtype=dtype, device=device, device_map=device_map)
        p_bridge, p_tok = load_bridge(pruned, dtype=dtype, device=device, device_map=device_map)
        return cls.from_bridges(d_bridge, p_bridge, d_tok, p_tok, str(dense), str(pruned))

    @classmethod
    def from_bridges(
        cls,
        dense: TransformerBridge,
        pruned: TransformerBridge,
        dense_tokenizer: PreTrainedTokenizerBase,
        pruned_tokenizer: PreTrainedTokenizerBase | None = None,
        dense_source: str = "dense",
        pruned_source: str = "pruned",
    ) -> ModelPair:
        geometry = check_compatible(
            dense, pruned, dense_tokenizer, pruned_tokenizer or dense_tokenizer
        )
        return cls(dense, pruned, dense_tokenizer, geometry, dense_source, pruned_source)

    @property
    def device(self) -> torch.device:
        """Where token ids go (the pruned model's input embedding; also under a device map)."""
        return input_device(self.pruned.original_model)


def model_fingerprint(source: str | os.PathLike[str]) -> str:
    """A content hash of a checkpoint directory (config and weight files), for cache keys.

    A hub id that is not a local directory is fingerprinted by its name only.
    """
    resolved = resolve_model_source(source)
    path = Path(resolved)
    if not path.is_dir():
        return hashlib.sha256(f"hub:{resolved}".encode()).hexdigest()[:20]
    return _dir_fingerprint(path)


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _dir_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"} and p.is_file()
    )
    for found in files:
        file = inside(path, found.name)  # a link out of the folder is refused, never read
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _FINGERPRINTS:
            h = hashlib.sha256()
            with file.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            _FINGERPRINTS[key] = h.hexdigest()
        digest.update(file.name.encode() + b"\0" + _FINGERPRINTS[key].encode())
    return digest.hexdigest()[:20]


def describe(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a model for metadata: the given source and its content fingerprint."""
    return {"source": str(source), "fingerprint": model_fingerprint(source)}
