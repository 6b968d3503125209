"""Where a model's weights live: one device, or a device map over several (accelerate).

A model too large for one device is loaded with a Hugging Face device map: accelerate puts each decoder
layer on a GPU, the CPU or disk and moves activations between them in forward hooks, so the numerics do
not change. TransformerLens 4.3's bridge accepts maps over GPUs only, or over CPU and disk only; it
refuses a map mixing GPUs with CPU/disk offload, and ``meta`` targets (no data to compute with).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lcc_lens.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

DeviceMap = str | dict[str, Any]
"""An accelerate strategy name or an explicit ``{module prefix: device}`` mapping."""
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_OFFLOAD = ("cpu", "disk")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_device_map(spec: str | dict[str, Any] | None) -> DeviceMap | None:
    """``None``/``""``/``"none"``: one device. A strategy name, a JSON object, or a ``.json`` file.

    Raises ConfigError naming the problem: an unknown strategy, unreadable JSON, ``meta`` targets, or a
    map that mixes GPUs with CPU/disk offload (which TransformerBridge refuses).
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if text in STRATEGIES:
            return text
        if text.startswith("{"):
            mapping = _json(text, "device_map")
        elif text.endswith(".json"):
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(f"device_map file {path} does not exist.")
            mapping = _json(path.read_text(), str(path))
        else:
            raise ConfigError(
                f"device_map {spec!r}: use one of {STRATEGIES}, 'none', a JSON object or a .json "
                'file mapping module prefixes to devices (e.g. {"model.layers.0": 0, "lm_head": 1}).'
            )
    else:
        mapping = dict(spec)
    return _check_mapping(mapping)


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"device_map {where}: invalid JSON ({exc}).") from exc
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"device_map {where}: expected a non-empty JSON object.")
    return value


def _check_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    targets = {str(v).lower() for v in mapping.values()}
    if "meta" in targets:
        raise ConfigError(
            "device_map targets 'meta' hold no data and cannot compute; use 'cpu' or 'disk' offload."
        )
    gpu = any(isinstance(v, int) or str(v).lower().startswith("cuda") for v in mapping.values())
    if gpu and targets & set(_OFFLOAD):
        raise ConfigError(
            "device_map mixes GPUs with CPU/disk offload, which TransformerBridge (TransformerLens "
            "4.3) refuses; map every layer to a GPU (several GPUs), or everything to cpu/disk."
        )
    return mapping


def input_device(model: nn.Module) -> torch.device:
    """The device the token ids go to: that of the input embedding (also under a device map).

    Offloaded ("cpu"/"disk") modules compute on the CPU; their parameters may sit on ``meta``.
    """
    placement = getattr(model, "hf_device_map", None)
    if placement:
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        names = [n for n, m in model.named_modules() if m is embed]
        for prefix, target in placement.items():
            if prefix == "" or any(n == prefix or n.startswith(prefix + ".") for n in names):
                return _execution_device(target)
        return _execution_device(next(iter(placement.values())))
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _execution_device(target: Any) -> torch.device:
    if isinstance(target, int):
        return torch.device("cuda", target)
    text = str(target)
    return torch.device("cpu") if text in _OFFLOAD else torch.device(text)


def has_device_map(model: nn.Module) -> bool:
    """True when accelerate dispatched ``model`` (its weights may span devices or sit on disk)."""
    return bool(getattr(model, "hf_device_map", None))
