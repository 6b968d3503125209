"""Library entry points: prune a model in place, prune a checkpoint to disk, or fetch a cached pruned one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lcc_lens.atomic import atomic_dir, check_apart, check_replaceable, check_writable
from lcc_lens.errors import ConfigError
from lcc_lens.progress import progress
from lcc_lens.pruning.calibrate import (
    InputStats,
    StatSpec,
    capture_layer_inputs,
    find_decoder_layers,
    run_layerwise,
    select_linear_modules,
)
from lcc_lens.pruning.config import PruneConfig
from lcc_lens.pruning.data import (
    calibration_identity,
    calibration_tokens,
    load_calibration_texts,
    tokens_sha,
)
from lcc_lens.pruning.magnitude import magnitude_mask
from lcc_lens.pruning.masks import check_nm_shape, set_weight_matrix, weight_matrix
from lcc_lens.pruning.report import REPORT_FILE, ModuleSparsity, PruneReport, versions
from lcc_lens.pruning.sparsegpt import sparsegpt_prune
from lcc_lens.pruning.structured import (
    Block,
    adaptive_selection,
    apply_structure,
    block_of,
    channel_scores,
    enable_output_biases,
    head_scores,
    uniform_channels,
    uniform_heads,
    update_config_after_removal,
)
from lcc_lens.pruning.wanda import wanda_mask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1


def _calibration(
    tokenizer: PreTrainedTokenizerBase, config: PruneConfig, texts: Sequence[str] | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    if texts is None:
        identity: dict[str, Any] = {
            "source": config.calibration,
            **calibration_identity(config.calibration),
        }
        texts = load_calibration_texts(config.calibration)
    else:
        blob = "\0".join(texts).encode()
        identity = {
            "source": "texts",
            "n_texts": len(texts),
            "sha256": hashlib.sha256(blob).hexdigest()[:16],
        }
    tokens = calibration_tokens(tokenizer, texts, config.n_samples, config.seq_len, config.seed)
    identity.update(
        n_samples=config.n_samples,
        seq_len=config.seq_len,
        seed=config.seed,
        tokens_sha256=tokens_sha(tokens),
    )
    return tokens, identity


def _no_match(config: PruneConfig, layers: nn.ModuleList, prefix: str) -> ConfigError:
    names = [
        f"{prefix}.0.{n}" for n, m in layers[0].named_modules() if n and isinstance(m, nn.Linear)
    ]
    return ConfigError(
        f"the layer pattern include={config.include!r} exclude={config.exclude!r} matches no linear layer "
        f"of the decoder layers; names look like {names[:4]}. Fix --layers/--exclude."
    )


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_seq_len(max_positions: int | None, config: PruneConfig, name: str) -> None:
    if config.needs_calibration and max_positions is not None and config.seq_len > max_positions:
        raise ConfigError(
            f"seq_len {config.seq_len} exceeds the {max_positions} positions of {name}; pass "
            f"--seq-len {max_positions} or less."
        )


def check_positions(source: str | os.PathLike[str], config: PruneConfig) -> None:
    """Refuse a calibration ``seq_len`` beyond the model's positions, reading only its config."""
    from lcc_lens.model_files import load_config
    from lcc_lens.models import resolve_model_source

    model_config = load_config(resolve_model_source(source))
    _check_seq_len(_max_positions(model_config), config, str(source))


def _layer_device(config: PruneConfig) -> torch.device | None:
    """Where each decoder layer is calibrated (one at a time); None: where the model is."""
    return torch.device(config.device) if config.device is not None else None


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: PruneConfig,
    calibration_texts: Sequence[str] | None = None,
    *,
    show_progress: bool = True,
) -> PruneReport:
    """Prune a clean Hugging Face causal LM in place, layer by layer; return what was done.

    ``calibration_texts`` overrides ``config.calibration``. The model stays where it is; with
    ``config.device`` each decoder layer is moved there for its calibration and back (one at a
    time). Raises :class:`ConfigError` before touching the model when the layer pattern matches
    nothing or the model lacks the expected modules.
    """
    start = time.perf_counter()
    _check_seq_len(_max_positions(getattr(model, "config", None)), config, type(model).__name__)
    model.eval()
    prefix, layers = find_decoder_layers(model)
    params_before = _param_count(model)
    with torch.no_grad():
        if config.structured:
            modules, calib, structured = _prune_structured(
                model, tokenizer, config, calibration_texts, prefix, layers, show_progress
            )
        else:
            modules, calib = _prune_unstructured(
                model, tokenizer, config, calibration_texts, prefix, layers, show_progress
            )
            structured = None
    report = PruneReport(
        method=config.method,
        config=config.to_dict(),
        modules=tuple(ModuleSparsity.measure(name, mod) for name, mod in modules.items()),
        target_sparsity=config.target_sparsity,
        calibration=calib,
        seconds=time.perf_counter() - start,
        model={"architecture": type(model).__name__},
        structured=structured,
        parameters={"before": params_before, "after": _param_count(model)},
        versions=versions(),
    )
    logger.info(
        "%s pruning done in %.1f s: total sparsity %.4f over %d layers",
        config.method,
        report.seconds,
        report.total_sparsity,
        len(report.modules),
    )
    return report


def _prune_unstructured(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: PruneConfig,
    texts: Sequence[str] | None,
    prefix: str,
    layers: nn.ModuleList,
    show_progress: bool,
) -> tuple[dict[str, nn.Module], dict[str, Any] | None]:
    per_layer = [
        select_linear_modules(layer, f"{prefix}.{i}", config.include, config.exclude)
        for i, layer in enumerate(layers)
    ]
    everything = {n: m for mods in per_layer for n, m in mods.items()}
    if not everything:
        raise _no_match(config, layers, prefix)
    nm = config.nm
    if nm is not None:
        for name, module in everything.items():
            check_nm_shape(weight_matrix(module).shape[1], *nm, name=name)
    sparsity = config.target_sparsity

    if config.method == "magnitude":
        for mods in progress(per_layer, desc="magnitude", unit="layer", enabled=show_progress):
            for module in mods.values():
                w = weight_matrix(module)
                w[magnitude_mask(w, sparsity, nm)] = 0
        return everything, None

    tokens, calib = _calibration(tokenizer, config, texts)
    inputs = capture_layer_inputs(model, layers[0], tokens, config.batch_size, layers)
    spec: StatSpec = {"sq": True} if config.method == "wanda" else {"hessian": True}

    def specs_of(i: int, mods: dict[str, nn.Module]) -> dict[str, StatSpec]:
        return dict.fromkeys(mods, spec)

    def process(i: int, mods: dict[str, nn.Module], stats: dict[str, InputStats]) -> None:
        for name, module in mods.items():
            w = weight_matrix(module)
            if config.method == "wanda":
                w[wanda_mask(w, stats[name].column_norms, sparsity, nm)] = 0
            else:
                new, _mask = sparsegpt_prune(
                    w,
                    stats[name].hessian,
                    sparsity,
                    nm,
                    blocksize=config.blocksize,
                    percdamp=config.percdamp,
                )
                set_weight_matrix(module, new)

    run_layerwise(
        layers,
        inputs,
        lambda i: per_layer[i],
        specs_of,
        process,
        desc=config.method,
        show_progress=show_progress,
        device=_layer_device(config),
    )
    return everything, calib


def _prune_structured(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: PruneConfig,
    texts: Sequence[str] | None,
    prefix: str,
    layers: nn.ModuleList,
    show_progress: bool,
) -> tuple[dict[str, nn.Module], dict[str, Any], dict[str, Any]]:
    blocks = [block_of(layer, f"{prefix}.{i}") for i, layer in enumerate(layers)]

    def wanted(name: str) -> bool:
        return bool(re.search(config.include, name)) and not (
            config.exclude and re.search(config.exclude, name)
        )

    heads_on = [wanted(b.o_name) for b in blocks]
    chans_on = [wanted(b.down_name) for b in blocks]
    if not any(heads_on) and not any(chans_on):
        raise _no_match(config, layers, prefix)
    remove = config.structured_mode == "remove"
    if remove and (len(set(heads_on)) > 1 or len(set(chans_on)) > 1):
        raise ConfigError(
            "structured_mode='remove' must prune every layer alike (a transformers config holds one shape "
            "for all layers); widen --layers to all layers or use --structured-mode mask."
        )
    attn_comp = mlp_comp = False
    if config.bias_compensation:
        attn_comp, mlp_comp = enable_output_biases(model, layers)
        if not (attn_comp and mlp_comp):
            logger.warning(
                "%s cannot hold an output bias for %s: bias compensation skipped there",
                type(model).__name__,
                " and ".join(
                    p for p, ok in (("attention", attn_comp), ("mlp", mlp_comp)) if not ok
                ),
            )
    tokens, calib = _calibration(tokenizer, config, texts)
    inputs = capture_layer_inputs(model, layers[0], tokens, config.batch_size, layers)
    ratio = config.target_sparsity
    n = len(blocks)
    removed_heads: list[list[int]] = [[] for _ in range(n)]
    removed_chans: list[list[int]] = [[] for _ in range(n)]
    head_sc: list[torch.Tensor | None] = [None] * n
    chan_sc: list[torch.Tensor | None] = [None] * n
    means: list[tuple[torch.Tensor | None, torch.Tensor | None]] = [(None, None)] * n

    def modules_of(i: int) -> dict[str, nn.Module]:
        b = blocks[i]
        mods: dict[str, nn.Module] = {}
        if heads_on[i]:
            mods[b.o_name] = b.o
        if chans_on[i]:
            mods[b.down_name] = b.down
        return mods

    def specs_of(i: int, mods: dict[str, nn.Module]) -> dict[str, StatSpec]:
        return dict.fromkeys(mods, {"moments": True})

    def process(i: int, mods: dict[str, nn.Module], stats: dict[str, InputStats]) -> None:
        b = blocks[i]
        a_mean = d_mean = None
        if heads_on[i]:
            st = stats[b.o_name]
            head_sc[i] = head_scores(b.o.weight.data, st.variance, b.d_head)
            a_mean = st.mean if attn_comp else None
        if chans_on[i]:
            st = stats[b.down_name]
            chan_sc[i] = channel_scores(b.down.weight.data, st.variance)
            d_mean = st.mean if mlp_comp else None
        means[i] = (a_mean, d_mean)
        if config.ratio_mode == "uniform":
            if head_sc[i] is not None:
                removed_heads[i] = uniform_heads(head_sc[i], ratio, b, remove)
            if chan_sc[i] is not None:
                removed_chans[i] = uniform_channels(chan_sc[i], ratio)
            _apply(b, i)

    def _apply(b: Block, i: int) -> None:
        a_mean, d_mean = means[i]
        apply_structure(
            b,
            removed_heads[i],
            removed_chans[i],
            attn_mean=a_mean,
            mlp_mean=d_mean,
            mode=config.structured_mode,
        )

    run_layerwise(
        layers,
        inputs,
        modules_of,
        specs_of,
        process,
        desc="flap",
        show_progress=show_progress,
        device=_layer_device(config),
    )
    if config.ratio_mode == "adaptive":
        b0 = blocks[0]
        d_model = b0.o.out_features
        removed_heads, removed_chans = adaptive_selection(
            head_sc, chan_sc, ratio, head_cost=2 * b0.d_head * d_model, chan_cost=3 * d_model
        )
        for i, b in enumerate(blocks):
            _apply(b, i)
    if remove:
        update_config_after_removal(model, blocks)

    modules: dict[str, nn.Module] = {}
    for b in blocks:
        for part in ("q", "k", "v", "o"):
            modules[f"{b.prefix}.self_attn.{part}_proj"] = getattr(b, part)
        for part in ("gate", "up", "down"):
            modules[f"{b.prefix}.mlp.{part}_proj"] = getattr(b, part)
    total_heads = sum(b.n_heads for b, on in zip(blocks, heads_on, strict=True) if on)
    total_chans = sum(int(s.numel()) for s in chan_sc if s is not None)
    structured = {
        "mode": config.structured_mode,
        "ratio_mode": config.ratio_mode,
        "bias_compensation": {"attention": attn_comp, "mlp": mlp_comp},
        "heads_removed": {b.prefix: h for b, h in zip(blocks, removed_heads, strict=True)},
        "channels_removed": {b.prefix: len(c) for b, c in zip(blocks, removed_chans, strict=True)},
        "head_fraction_removed": sum(map(len, removed_heads)) / total_heads if total_heads else 0.0,
        "channel_fraction_removed": sum(map(len, removed_chans)) / total_chans
        if total_chans
        else 0.0,
    }
    return modules, calib, structured


def prune_checkpoint(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PruneConfig,
    *,
    calibration_texts: Sequence[str] | None = None,
    show_progress: bool = True,
) -> PruneReport:
    """Load ``source``, prune it, and write a Hugging Face checkpoint plus ``prune_report.json`` atomically.

    Nothing is written unless pruning succeeds.
    """
    from lcc_lens.models import describe, load_causal_lm

    out = Path(out_dir)
    check_apart(out, {"the model to prune": source}, what="output directory")
    check_writable(out, what="output directory")  # checks only: nothing is created before success
    check_replaceable(out, what="output directory")
    check_positions(source, config)
    identity = describe(source)
    # the model stays on the CPU; with config.device its layers visit the device one at a time
    model, tokenizer = load_causal_lm(source, device="cpu")
    report = prune_model(model, tokenizer, config, calibration_texts, show_progress=show_progress)
    report = report.with_model(identity)
    with atomic_dir(out, kind="prune") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        report.save(tmp / REPORT_FILE)
    logger.info("pruned checkpoint written to %s", out)
    return report


def pruned_cache_key(source: str | os.PathLike[str], config: PruneConfig) -> str:
    """Content key of a pruned checkpoint: the source's fingerprint, the settings and the calibration data."""
    from lcc_lens.models import model_fingerprint

    blob = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(source),
        "config": config.cache_dict(),
        "calibration": calibration_identity(config.calibration)
        if config.needs_calibration
        else None,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_pruned_checkpoint(
    source: str | os.PathLike[str], config: PruneConfig, *, show_progress: bool = True
) -> Path:
    """Directory of ``source`` pruned with ``config`` under ``cache_root()/pruned/<key>``, pruning only once."""
    from lcc_lens.cache import cache_root

    target = cache_root() / "pruned" / pruned_cache_key(source, config)
    if (target / REPORT_FILE).is_file() and (target / "config.json").is_file():
        logger.info("using cached pruned checkpoint %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    prune_checkpoint(source, target, config, show_progress=show_progress)
    return target
