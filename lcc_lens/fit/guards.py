"""The fit's guards: a restored model clearly worse than the pruned one, or an export its dtype cannot hold.

Both raise :class:`FitDivergedError` (exit 1 from the CLI) unless ``allow_worse``; the benchmark runs the
same guards on every trained method, so a diverged row is reported as diverged, not scored.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from lcc_lens.errors import DivergedError

logger = logging.getLogger(__name__)


class FitDivergedError(DivergedError):
    """The trained compensation makes the pruned model worse, or its export cannot hold it."""


def check_not_diverged(
    val_loss_pruned: float, val_loss_restored: float, *, worse_margin: float, allow_worse: bool
) -> None:
    """Refuse a restored validation loss clearly worse (by ``worse_margin`` nats) than the pruned one."""
    before, after = val_loss_pruned, val_loss_restored
    if math.isnan(before) or math.isnan(after):
        logger.warning("no validation loss to check the fit against (val_fraction 0?)")
        return
    if math.isfinite(after) and after <= before + worse_margin:
        return
    message = (
        f"the fit diverged: restored validation loss {after:.4f} is worse than the pruned model's "
        f"{before:.4f} by more than worse_margin={worse_margin} nats/token"
    )
    if allow_worse:
        logger.warning("%s; exporting anyway (allow_worse).", message)
        return
    raise FitDivergedError(
        f"{message}. Nothing was exported. Lower the learning rate (train.lr) or the steps, or pass "
        "--allow-worse to export it anyway."
    )


def exported_abs_max(model_dir: Path) -> float:
    """The largest |value| of any tensor in the exported safetensors (inf if one overflowed)."""
    from safetensors import safe_open

    from lcc_lens.model_files import weight_files
    from lcc_lens.safe_paths import inside

    largest = 0.0
    for shard in sorted(set(weight_files(model_dir).values())):
        with safe_open(str(inside(model_dir, shard)), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                t = f.get_tensor(name)
                if t.is_floating_point() and t.numel():
                    largest = max(largest, float(t.float().abs().max()))
    return largest


def check_dtype_range(largest: float, target: torch.dtype, *, allow_worse: bool) -> None:
    """Refuse weights (e.g. merged o_proj biases) whose largest |value| ``largest`` is beyond the
    finite range of ``target``."""
    fp16_max = torch.finfo(torch.float16).max
    if target in (torch.float16, torch.bfloat16) and largest >= torch.finfo(target).max:
        message = (
            f"the exported weights reach |w| = {largest:.3g}, beyond the finite range of {target} "
            f"({torch.finfo(target).max:.3g}): a {target} load would overflow to inf"
        )
        if not allow_worse:
            raise FitDivergedError(
                f"{message}. Lower the learning rate (train.lr), or pass --allow-worse."
            )
        logger.warning("%s; kept (allow_worse).", message)
    elif largest >= fp16_max:
        logger.warning(
            "exported weights reach |w| = %.3g: loading the export in float16 would overflow.",
            largest,
        )
