"""Per-window NLL sums of a fixed model, cached on disk by content.

The dense and pruned models' held-out scores do not depend on the fit, yet every fit of the same pair
scored them again (two thirds of the evaluation stage). The key is the model's weights (by content,
:func:`lcc_lens.components.weights_fingerprint`), the exact window tokens, the dtype, the device type
and the batch size, so an entry is reused only where it would be recomputed bit for bit; entries are
JSON, written atomically, and a malformed one is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lcc_lens.atomic import write_json
from lcc_lens.cache import cache_root

logger = logging.getLogger(__name__)

SCORE_CACHE_FORMAT = 1
"""Bumped when the scoring changes, so that sums of an older protocol are never read back."""


def _windows_digest(windows: Sequence[Any]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for w in windows:
        h.update(json.dumps([w.input_ids, w.targets]).encode())
    return h.hexdigest()


def model_weights_key(model: Any) -> str:
    """The content hash of ``model``'s weights (a bridge hashes as the HF model it wraps)."""
    from lcc_lens.components import weights_fingerprint

    return weights_fingerprint(getattr(model, "original_model", model))


def score_key(
    model: Any, windows: Sequence[Any], batch_size: int, weights: str | None = None
) -> str:
    """The content key of ``model``'s scores on ``windows`` (see the module doc); ``weights``: its
    :func:`model_weights_key`, when the caller hashed it already (once per model, not per domain)."""
    target = getattr(model, "original_model", model)
    first = next(target.parameters())
    payload = {
        "format": SCORE_CACHE_FORMAT,
        "weights": weights or model_weights_key(model),
        "windows": _windows_digest(windows),
        "dtype": str(first.dtype),
        "device": first.device.type,
        "batch_size": batch_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _path(key: str) -> Path:
    return cache_root() / "scores" / f"{key}.json"


def cached_scores(
    model: Any,
    windows: Sequence[Any],
    batch_size: int,
    compute: Callable[[], list[float]],
    weights: str | None = None,
) -> list[float]:
    """``compute()`` (the per-window NLL sums of ``model``), read from the cache when present."""
    from lcc_lens import distributed

    key = score_key(model, windows, batch_size, weights)
    path = _path(key)
    if path.is_file():
        try:
            sums = json.loads(path.read_text())
            if (
                isinstance(sums, list)
                and len(sums) == len(windows)
                and all(isinstance(v, float) for v in sums)
            ):
                logger.info("held-out scores read from cache %s", path.name)
                return sums
        except (OSError, ValueError):
            pass
        logger.warning("ignoring unreadable score cache entry %s", path)
    sums = compute()
    if distributed.context().is_main:
        write_json(path, sums)
    return sums
