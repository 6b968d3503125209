"""The fit's export: the merged plain Hugging Face checkpoint and its checks against the hooked model.

The benchmark merges the same way in memory and runs :func:`merged_logit_diff` on its merged model, so
both report the same export check.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.data import FitData
from lcc_lens.family import CompensationFamily
from lcc_lens.fit.guards import check_dtype_range, exported_abs_max
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.models import ModelPair

logger = logging.getLogger(__name__)

Restorer = Compensation | CompensationFamily | RestorationMethod


def export(
    pruned_source: str, compensation: Restorer, model_dir: Path, meta: dict[str, Any]
) -> Path:
    """The plain Hugging Face checkpoint with the compensation merged (the pruned zeros untouched)."""
    from lcc_lens.export import export_checkpoint

    return export_checkpoint(pruned_source, compensation, model_dir, metadata=meta)


def export_check_text(texts: FitData) -> str:
    """The text of the export check: the validation examples (the fit passages when there are none)."""
    return "\n\n".join(
        [e.prompt + e.response for e in texts.validation] or list(texts.fit_passages)
    )


@torch.no_grad()
def merged_logit_diff(pair: ModelPair, compensation: Restorer, merged: Any, text: str) -> float:
    """Max |logit| difference between the hooked pruned model and ``merged`` on one 64-token batch."""
    ids = pair.tokenizer(text[:2000], return_tensors="pt")["input_ids"][:, :64].to(pair.device)
    with compensation.attach(pair.pruned) as restored:
        hooked = restored(ids, return_type="logits")
    return float((merged(ids).logits.float() - hooked.float()).abs().max())


@torch.no_grad()
def export_check(
    pair: ModelPair,
    compensation: Restorer,
    model_dir: Path,
    text: str,
    *,
    allow_worse: bool,
    target: torch.dtype = torch.float32,
) -> float:
    """:func:`merged_logit_diff` of the export reloaded by plain transformers.

    First refuses an export whose weights (the merged biases) overflow the dtype it will be used in.
    """
    from lcc_lens.models import load_causal_lm

    largest = exported_abs_max(model_dir)
    check_dtype_range(largest, target, allow_worse=allow_worse)  # before the loader's own checks
    if not math.isfinite(largest):  # kept under allow_worse: no loader takes it back
        logger.warning(
            "the export holds inf values (kept: allow_worse); its logits are not checked."
        )
        return float("nan")
    merged, _tok = load_causal_lm(model_dir, device=pair.device)
    diff = merged_logit_diff(pair, compensation, merged, text)
    del merged
    return diff


def target_dtype(pruned_source: str, dtype: str) -> torch.dtype:
    """The dtype the export is meant to run in: the fit's ``dtype``, else the pruned checkpoint's own."""
    from lcc_lens.fit.stages import DTYPES
    from lcc_lens.model_files import load_config
    from lcc_lens.models import resolve_model_source

    if dtype != "float32":
        return DTYPES[dtype]
    hf = load_config(resolve_model_source(pruned_source))
    declared = getattr(hf, "dtype", None) or getattr(hf, "torch_dtype", None)
    if isinstance(declared, str):
        declared = DTYPES.get(declared, torch.float32)
    return declared if isinstance(declared, torch.dtype) else torch.float32
