"""The end stages of a fit: held-out evaluation, the divergence guard, export and the export checks."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.data import FitData
from lcc_lens.errors import DivergedError
from lcc_lens.evaluation.protocol import ProtocolResult, evaluate
from lcc_lens.family import CompensationFamily
from lcc_lens.fit.config import FitConfig
from lcc_lens.fit.stages import EncodedData, Trained
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.models import ModelPair
from lcc_lens.restoration import RestorationStats, restoration_stats

logger = logging.getLogger(__name__)


class FitDivergedError(DivergedError):
    """The trained compensation makes the pruned model worse, or its export cannot hold it."""


def heldout_evaluation(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily | RestorationMethod | None,
    data: EncodedData,
    config: FitConfig,
    *,
    baseline: ProtocolResult | None = None,
) -> ProtocolResult:
    """Dense, pruned and (with ``compensation``) restored on the same windows of every domain.

    ``baseline``: an earlier result of this function without a compensation (same data and config);
    only the restored model is then scored and merged into it (variants of one setting).
    """
    texts = data.texts
    models: dict[str, Any] = {}
    if baseline is None:
        models.update(dense=pair.dense, pruned=pair.pruned)
    if compensation is not None:
        models["restored"] = (pair.pruned, compensation)
    if not models:
        return baseline  # type: ignore[return-value]
    result = evaluate(
        models,
        pair.tokenizer,
        texts.eval_texts,
        config.eval,
        roles=texts.eval_roles,
        cached=("dense", "pruned"),  # they do not depend on the fit: scored once per pair
    )
    if baseline is None:
        return result
    merged = {
        name: dataclasses.replace(d, nll_sums={**d.nll_sums, **result.domains[name].nll_sums})
        for name, d in baseline.domains.items()
    }
    return dataclasses.replace(baseline, domains=merged)


def headline_metrics(result: ProtocolResult, test_domain: str) -> dict[str, Any]:
    """The summary keys of the out-of-domain test domain, then every domain under ``evaluation``.

    ``gap_closed_nll`` is the headline (NLL scale); ``gap_closed`` is the perplexity-scale figure.
    Gaps are NaN when pruning did not make the domain worse.
    """
    d = result.domains[test_domain]
    out: dict[str, Any] = {"eval_domain": test_domain, "eval_tokens": d.n_tokens}
    for label in d.nll_sums:
        out[f"nll_{label}"] = d.nll(label)
        out[f"ppl_{label}"] = d.ppl(label)
    if "restored" in d.nll_sums:
        worse = d.nll("pruned") > d.nll("dense")
        gap = result.gap("restored", test_domain)
        out["gap_closed_nll"] = gap.nll if worse and gap.nll is not None else float("nan")
        out["gap_closed_nll_ci"] = [gap.nll_low, gap.nll_high]
        out["gap_closed"] = gap.ppl if worse and gap.ppl is not None else float("nan")
    out["evaluation"] = result.to_dict()
    return out


def restoration(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily | RestorationMethod,
    data: EncodedData,
    config: FitConfig,
    n_prompts: int = 32,
) -> RestorationStats:
    """Per-head restoration of the compensation on validation prompts never trained on."""
    prompts = [e.prompt for e in data.texts.validation] or list(data.texts.diff_prompts)
    return restoration_stats(pair, compensation, prompts[:n_prompts], config.diff)


def check_not_diverged(trained: Trained, config: FitConfig) -> None:
    """Refuse a compensation whose validation loss is clearly worse than the pruned model's."""
    before, after = trained.val_loss_pruned, trained.val_loss_restored
    if math.isnan(before) or math.isnan(after):
        logger.warning("no validation loss to check the fit against (val_fraction 0?)")
        return
    if math.isfinite(after) and after <= before + config.worse_margin:
        return
    message = (
        f"the fit diverged: restored validation loss {after:.4f} is worse than the pruned model's "
        f"{before:.4f} by more than worse_margin={config.worse_margin} nats/token"
    )
    if config.allow_worse:
        logger.warning("%s; exporting anyway (allow_worse).", message)
        return
    raise FitDivergedError(
        f"{message}. Nothing was exported. Lower the learning rate (train.lr) or the steps, or pass "
        "--allow-worse to export it anyway."
    )


def export(
    pruned_source: str,
    compensation: Compensation | CompensationFamily | RestorationMethod,
    model_dir: Path,
    meta: dict[str, Any],
) -> Path:
    """The plain Hugging Face checkpoint with the compensation merged into the o_proj biases."""
    from lcc_lens.export import export_checkpoint

    return export_checkpoint(pruned_source, compensation, model_dir, metadata=meta)


def export_check_text(texts: FitData) -> str:
    """The text of the export check: the validation examples (the fit passages when there are none)."""
    return "\n\n".join(
        [e.prompt + e.response for e in texts.validation] or list(texts.fit_passages)
    )


@torch.no_grad()
def export_check(
    pair: ModelPair,
    compensation: Compensation | CompensationFamily | RestorationMethod,
    model_dir: Path,
    text: str,
    config: FitConfig,
    target: torch.dtype = torch.float32,
) -> float:
    """Max |logit| difference between the hooked pruned model and the export, on one batch.

    Also refuses an export whose weights (the merged biases) overflow the dtype it will be used in.
    """
    from lcc_lens.models import load_causal_lm

    largest = exported_abs_max(model_dir)
    check_dtype_range(largest, target, config)  # before the loader's own checks refuse an overflow
    if not math.isfinite(largest):  # kept under allow_worse: no loader takes it back
        logger.warning(
            "the export holds inf values (kept: allow_worse); its logits are not checked."
        )
        return float("nan")
    merged, tok = load_causal_lm(model_dir, device=pair.device)
    ids = tok(text[:2000], return_tensors="pt")["input_ids"][:, :64].to(pair.device)
    with compensation.attach(pair.pruned) as restored:
        hooked = restored(ids, return_type="logits")
    diff = float((merged(ids).logits.float() - hooked.float()).abs().max())
    del merged
    return diff


def target_dtype(pruned_source: str, config: FitConfig) -> torch.dtype:
    """The dtype the export is meant to run in: the fit's dtype, else the pruned checkpoint's own."""
    from lcc_lens.fit.stages import DTYPES
    from lcc_lens.model_files import load_config
    from lcc_lens.models import resolve_model_source

    if config.dtype != "float32":
        return DTYPES[config.dtype]
    hf = load_config(resolve_model_source(pruned_source))
    declared = getattr(hf, "dtype", None) or getattr(hf, "torch_dtype", None)
    if isinstance(declared, str):
        declared = DTYPES.get(declared, torch.float32)
    return declared if isinstance(declared, torch.dtype) else torch.float32


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


def check_dtype_range(largest: float, target: torch.dtype, config: FitConfig) -> None:
    """Refuse weights (e.g. merged o_proj biases) whose largest |value| ``largest`` is beyond the
    finite range of ``target``."""
    fp16_max = torch.finfo(torch.float16).max
    if target in (torch.float16, torch.bfloat16) and largest >= torch.finfo(target).max:
        message = (
            f"the exported weights reach |w| = {largest:.3g}, beyond the finite range of {target} "
            f"({torch.finfo(target).max:.3g}): a {target} load would overflow to inf"
        )
        if not config.allow_worse:
            raise FitDivergedError(
                f"{message}. Lower the learning rate (train.lr), or pass --allow-worse."
            )
        logger.warning("%s; kept (allow_worse).", message)
    elif largest >= fp16_max:
        logger.warning(
            "exported weights reach |w| = %.3g: loading the export in float16 would overflow.",
            largest,
        )
