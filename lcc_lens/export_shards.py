"""Export without loading the model: copy the weight shards, add the bias tensors in one new shard.

For a 70B model the in-memory export would hold the model (twice, in fp32) on the host. Here the pruned
checkpoint's safetensors shards are copied byte for byte (so every weight and the zero pattern are kept
by construction), each layer's o_proj weight is read alone to compute its bias ``W_O c`` (in float64,
stored in the checkpoint's dtype), the zero q/k/v biases the ``attention_bias`` switch adds are written
next to it in ``lcc-biases.safetensors``, and the shard index and config are rewritten. Peak memory: one
o_proj weight. Used for the ``same-class`` and ``as-llama`` routes of :mod:`lcc_lens.export`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lcc_lens.errors import ExportError
from lcc_lens.model_files import CODE_KEY, INDEX, SINGLE, forget_code, weight_files
from lcc_lens.safe_paths import check_links, inside
from lcc_lens.types import ZOffsets

logger = logging.getLogger(__name__)

BIAS_SHARD = "lcc-biases.safetensors"
_RENAMED_SINGLE = (
    "model-00001-of-00001.safetensors"  # transformers would ignore the index next to it
)
_SKIP = {"config.json", INDEX, BIAS_SHARD, "compensation.safetensors", "lcc_export.json"}
_COPIED = {".json", ".txt", ".model", ".jinja", ".tiktoken", ".md"}
"""Suffixes of the side files copied along (tokenizer, generation config, chat template, notes):
never code (``*.py``) or pickles, which lcc_lens neither runs nor vouches for."""


def _read(directory: Path, files: dict[str, str], name: str) -> torch.Tensor:
    if name not in files:
        raise ExportError(f"tensor {name} is missing from the checkpoint in {directory}.")
    with safe_open(str(inside(directory, files[name], what="shard name")), framework="pt") as fh:
        return fh.get_tensor(name)


def bias_tensors(
    directory: Path, files: dict[str, str], z_offsets: ZOffsets, *, prefix: str = "model.layers"
) -> dict[str, torch.Tensor]:
    """Per layer: o_proj bias = W_O c (float64, cast to W_O's dtype); zero q/k/v biases if absent."""
    out: dict[str, torch.Tensor] = {}
    for layer in range(z_offsets.shape[0]):
        attn = f"{prefix}.{layer}.self_attn"
        w = _read(directory, files, f"{attn}.o_proj.weight")
        flat = z_offsets[layer].reshape(-1).to(torch.float64)
        if w.shape[1] != flat.numel():
            raise ExportError(
                f"{attn}.o_proj takes {w.shape[1]} inputs but the offsets hold {flat.numel()}."
            )
        out[f"{attn}.o_proj.bias"] = (w.to(torch.float64) @ flat).to(w.dtype)
        for proj in ("q_proj", "k_proj", "v_proj"):
            name = f"{attn}.{proj}.bias"
            if name not in files:
                rows = _read(directory, files, f"{attn}.{proj}.weight").shape[0]
                out[name] = torch.zeros(rows, dtype=w.dtype)
        del w
    return out


def write_sharded_export(source: Path, target: Path, z_offsets: ZOffsets, config: Any) -> None:
    """Write the merged checkpoint into the (empty, temporary) ``target`` directory.

    ``config``: the exported model's PretrainedConfig (``attention_bias=True``), saved as config.json.
    """
    check_links(source)
    files = weight_files(source)
    if any(name.endswith("o_proj.bias") for name in files):
        raise ExportError("the checkpoint already has o_proj biases: use the in-memory export.")
    biases = bias_tensors(source, files, z_offsets)
    renamed = {SINGLE: _RENAMED_SINGLE}
    for name in sorted(set(files.values())):
        shutil.copyfile(inside(source, name, what="shard name"), target / renamed.get(name, name))
    for item in sorted(source.iterdir()):  # side files; never our own outputs
        if item.name in _SKIP or item.name.startswith(".") or not item.is_file():
            continue
        if item.suffix in _COPIED:
            _copy_side_file(inside(source, item.name), target / item.name)
        elif item.suffix != ".safetensors":
            logger.warning("not copying %s into the export (not a tokenizer or text file)", item)
    forget_code(config)
    save_file(biases, str(target / BIAS_SHARD), metadata={"format": "pt"})
    weight_map = {k: renamed.get(v, v) for k, v in files.items()}
    weight_map.update(dict.fromkeys(biases, BIAS_SHARD))
    total = sum(os.path.getsize(target / f) for f in set(weight_map.values()))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (target / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    config.save_pretrained(target)
    logger.info("wrote %d bias tensors next to %d copied shard(s)", len(biases), len(set(files)))


def _copy_side_file(source: Path, target: Path) -> None:
    """Copy a side file byte for byte; a JSON file naming custom code loses that ``auto_map``."""
    if source.suffix == ".json":
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict) and CODE_KEY in data:
            del data[CODE_KEY]
            target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            return
    shutil.copyfile(source, target)
