"""A model checkpoint folder on disk, checked before and after transformers loads anything from it.

transformers trusts a checkpoint folder: it unpickles ``pytorch_model.bin``, offers to run the Python
code an ``auto_map`` names, follows the shard names of ``model.safetensors.index.json`` wherever they
lead, and builds whatever model ``config.json`` describes (a billion layers if it says so) before it
reads a weight. Here, before loading: links and shard names stay inside the folder
(:mod:`lcc_lens.safe_paths`), weights are safetensors only, and the config's layer count and tensor
shapes agree with the safetensors headers (read without loading a weight). After loading: no tensor is
missing or left over, and every weight is finite. Code named by ``auto_map`` is never run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open

from lcc_lens.errors import CheckpointError, ConfigError, shown
from lcc_lens.safe_paths import check_links, inside

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CODE_KEY = "auto_map"
"""The config / tokenizer_config key that names Python files to import: never honoured here."""
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_SHOWN = 5


def _convert_hint(directory: Path) -> str:
    return (
        "lcc_lens loads safetensors only, because unpickling a file can run arbitrary code. Convert "
        'the checkpoint once, in an environment you trust: python -c "from transformers import '
        f"AutoModelForCausalLM as M; M.from_pretrained('{directory}').save_pretrained("
        f"'{directory}-safetensors')\" (save_pretrained writes model.safetensors)."
    )


def weight_files(directory: Path) -> dict[str, str]:
    """Tensor name -> shard file of a safetensors checkpoint (single file or indexed shards).

    Every shard name of the index is checked to stay inside ``directory``; a folder with only pickle
    weights (``pytorch_model.bin``, ``*.pt``) is refused with the way to convert it.
    """
    index = directory / INDEX
    if index.is_file():
        return _indexed(directory, index)
    single = directory / SINGLE
    if single.is_file():
        names = header_shapes(directory, {"": SINGLE})
        return dict.fromkeys(names, SINGLE)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{directory} holds only pickle weights ({', '.join(pickles[:3])}). "
            + _convert_hint(directory)
        )
    raise CheckpointError(
        f"{directory} holds no safetensors weights ({SINGLE} or {INDEX}); pass a folder written by "
        "save_pretrained."
    )


def _indexed(directory: Path, index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{index} is not a readable JSON shard index ({exc}); re-save the checkpoint."
        ) from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index} has no 'weight_map' of tensor names to shard files; re-save the checkpoint."
        )
    checked: set[str] = set()
    for shard in weight_map.values():
        if isinstance(shard, str) and shard in checked:
            continue
        path = inside(directory, shard, what=f"shard name in {INDEX}")
        if not path.is_file() or path.suffix != ".safetensors":
            raise CheckpointError(
                f"{index} names the shard {shown(shard)}, which is not a safetensors file in "
                f"{directory}; the checkpoint is incomplete: re-save or re-download it."
            )
        checked.add(shard)
    return {str(k): str(v) for k, v in weight_map.items()}


def header_shapes(directory: Path, files: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of every tensor in the given shards, read from the headers alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(files.values())):
        path = inside(directory, shard, what="shard name")
        try:
            with safe_open(str(path), framework="pt") as fh:
                for name in fh.keys():  # noqa: SIM118 (safe_open has no iterator)
                    shapes[name] = tuple(fh.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"cannot load model {directory}: {shard} is not a readable safetensors file "
                f"({first}); the checkpoint looks corrupt or incomplete: re-save or re-download it."
            ) from exc
    return shapes


def load_config(source: str) -> PretrainedConfig:
    """The transformers config of ``source`` (a folder or hub id), never running code it names."""
    from transformers import AutoConfig

    local = Path(source).is_dir()
    try:
        return AutoConfig.from_pretrained(source, local_files_only=local, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a bad config.json
        if "trust_remote_code" in str(exc):
            raise needs_code(source) from exc
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"cannot read the config of model {source} ({type(exc).__name__}: {first}); its "
            "config.json is malformed or of another format."
        ) from exc


def needs_code(source: str) -> ConfigError:
    """The error for a checkpoint whose architecture exists only as Python code it ships."""
    return ConfigError(
        f"model {source} needs its own Python code to load ('{CODE_KEY}' in its config); lcc_lens "
        "never runs code from a checkpoint. Use a model whose architecture transformers implements "
        "itself (a known model_type such as llama, qwen2, mistral, gpt2)."
    )


def declared_code(directory: Path) -> list[str]:
    """The JSON files of ``directory`` that name Python code to import (an ``auto_map`` key)."""
    found = []
    for name in ("config.json", "tokenizer_config.json"):
        path = directory / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a malformed file is reported by whatever reads it
        if isinstance(data, dict) and CODE_KEY in data:
            found.append(name)
    return found


def checked_structure(directory: Path) -> PreTrainedModel:
    """Check the folder, then return its model on the ``meta`` device (no weight read or allocated).

    Refuses, before anything is built: links or shard names leading out of the folder, pickle-only
    weights, a config with more layers than the weights hold, and tensors whose shapes the config
    contradicts.
    """
    from transformers import AutoModelForCausalLM

    check_links(directory)
    shapes = header_shapes(directory, weight_files(directory))
    config = load_config(str(directory))
    _check_layer_count(directory, config, shapes)
    try:
        with torch.device("meta"):
            structure = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise needs_code(str(directory)) from exc
        raise ConfigError(f"cannot build the model {directory} describes: {exc}") from exc
    _check_shapes(directory, structure, shapes)
    return structure


def _check_layer_count(directory: Path, config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    declared = getattr(text, "num_hidden_layers", None)
    stored = {int(m.group(1)) for name in shapes for m in [_LAYER_INDEX.search(name)] if m}
    if not isinstance(declared, int) or not stored:
        return
    if declared > max(stored) + 1:
        raise CheckpointError(
            f"{directory}/config.json describes {declared} layers but the weights hold "
            f"{max(stored) + 1}; the config and the weights do not belong together. Re-save the "
            "checkpoint (or fix num_hidden_layers)."
        )


def _check_shapes(
    directory: Path, structure: PreTrainedModel, shapes: dict[str, tuple[int, ...]]
) -> None:
    wrong = [
        f"{name} is {list(shapes[name])} in the weights, {list(t.shape)} by the config"
        for name, t in structure.state_dict().items()
        if name in shapes and tuple(t.shape) != shapes[name]
    ]
    if wrong:
        more = f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""
        raise CheckpointError(
            f"{directory}: config.json does not match the weights: {'; '.join(wrong[:2])}{more}. "
            "Re-save the checkpoint (or fix its config.json)."
        )


def check_loaded(model: PreTrainedModel, info: dict[str, Any], source: str) -> None:
    """Refuse a loaded model with missing, unexpected or mismatched tensors, or non-finite weights."""
    problems = []
    for key, what in (
        ("missing_keys", "missing from the weights"),
        ("unexpected_keys", "in the weights but not in the model"),
        ("mismatched_keys", "of the wrong shape"),
    ):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            problems.append(f"{what}: {', '.join(names[:_SHOWN])}{more}")
    if problems:
        raise CheckpointError(
            f"the checkpoint {source} does not match its config.json ({'; '.join(problems)}); "
            "transformers would fill the gaps with random values. Re-save the checkpoint."
        )
    check_finite_weights(model, source)


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Refuse NaN or inf in any materialised weight, naming the first such tensor."""
    for name, param in model.named_parameters():
        if param.device.type != "meta" and not bool(torch.isfinite(param).all()):
            bad = int((~torch.isfinite(param)).sum())
            raise CheckpointError(
                f"the checkpoint {source} has {bad} NaN or inf value(s) in {name}; a diverged or "
                "damaged model cannot be pruned or evaluated. Use an earlier or re-downloaded copy."
            )


def forget_code(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """Drop the ``auto_map`` of a loaded config (and tokenizer), so that nothing written from them
    names code that lcc_lens neither ran nor copies."""
    if CODE_KEY in vars(config):
        delattr(config, CODE_KEY)
    if tokenizer is not None:
        if getattr(tokenizer, f"_{CODE_KEY}", None) is not None:
            setattr(tokenizer, f"_{CODE_KEY}", None)
        getattr(tokenizer, "init_kwargs", {}).pop(CODE_KEY, None)
