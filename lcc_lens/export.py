"""Fold compensation offsets into the attention output projection's bias and save a plain HF checkpoint.

o_proj(concat_h(z_h + c_h)) = W_O concat(z) + W_O concat(c): a d_model bias per layer; nothing else changes,
so the exported checkpoint keeps the pruned model's weights (and zero pattern) exactly.

Routes, by the architecture of the pruned model:

* ``same-class``: the HF class has an o_proj bias switch (Llama, Qwen3, Gemma 3: ``attention_bias=True``).
  The switch also adds q/k/v biases, which are set to zero (exact; in Gemma 3 the q/k biases would act
  before the q/k norms, so only zero is exact, and zero is what is written). Gemma 3's sliding-window and
  global layers, pre/post norms and tied embeddings are carried by its own class unchanged.
* ``as-llama``: the class has no switch (Mistral, Qwen2). The checkpoint is written as ``LlamaForCausalLM``
  with ``attention_bias=True``: Qwen2's q/k/v biases are carried over, Mistral's are zero. Exact when no
  sliding window is active (Mistral ``sliding_window=None``, Qwen2 ``use_sliding_window=False``); otherwise
  export is refused with an explanation.
* ``native``: the output projection already has a bias (GPT-2's ``c_proj``): the offsets are added to it.

The first two routes write a local safetensors checkpoint shard by shard (:mod:`lcc_lens.export_shards`);
otherwise the model is merged in memory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from lcc_lens import __version__
from lcc_lens.atomic import atomic_dir
from lcc_lens.compensation import COMPENSATION_FILE, Compensation, check_finite
from lcc_lens.errors import ExportError
from lcc_lens.family import CompensationFamily
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.model_files import INDEX, SINGLE, checked_structure
from lcc_lens.models import describe, load_causal_lm, resolve_model_source
from lcc_lens.types import ZOffsets

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Route = Literal["same-class", "as-llama", "native"]
_AS_LLAMA = {"mistral", "qwen2"}
_LLAMA_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_parameters",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
)


@dataclass(frozen=True)
class OutputProjection:
    """The module whose bias receives a layer's offsets, and how its weight is laid out."""

    module: nn.Module
    layout: Literal[
        "linear", "conv1d"
    ]  # linear: weight [out, in]; conv1d (GPT-2): weight [in, out]


def output_projections(model: PreTrainedModel) -> list[OutputProjection]:
    """One output projection per decoder layer of a clean (un-bridged) HF model."""
    mt = model.config.model_type
    if mt == "gpt2":
        return [OutputProjection(block.attn.c_proj, "conv1d") for block in model.transformer.h]
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not all(
        hasattr(getattr(lay, "self_attn", None), "o_proj") for lay in layers
    ):
        raise ExportError(
            f"cannot find self_attn.o_proj in every layer of a {type(model).__name__}; supported "
            "layouts: Llama, Mistral, Qwen2, Qwen3 (model.layers[i].self_attn.o_proj) and GPT-2."
        )
    return [OutputProjection(lay.self_attn.o_proj, "linear") for lay in layers]


def bias_from_offsets(proj: OutputProjection, flat: torch.Tensor) -> torch.Tensor:
    """W_O applied to the concatenated head offsets (head-major, as hook_z is flattened)."""
    w = proj.module.weight.detach().double()
    flat = flat.to(device=w.device, dtype=torch.float64)
    out = w @ flat if proj.layout == "linear" else flat @ w
    return out.to(proj.module.weight.dtype)


def _check_geometry(model: PreTrainedModel, offsets: ZOffsets) -> None:
    cfg = model.config
    n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    d_head = getattr(cfg, "head_dim", None) or hidden // n_heads
    if tuple(offsets.shape) != (n_layers, n_heads, d_head):
        raise ExportError(
            f"z_offsets shape {tuple(offsets.shape)} does not fit the model's "
            f"[n_layers, n_heads, d_head] = [{n_layers}, {n_heads}, {d_head}]."
        )


def route_for(model: PreTrainedModel) -> Route:
    """Which export route applies to this model (see the module docstring)."""
    mt = model.config.model_type
    if mt == "gpt2":
        return "native"
    projs = output_projections(model)
    if all(p.module.bias is not None for p in projs):
        return "native"
    if mt in _AS_LLAMA:
        return "as-llama"
    if hasattr(model.config, "attention_bias"):
        return "same-class"
    raise ExportError(
        f"{type(model).__name__} has no o_proj bias and no known export route; supported: Llama, "
        "Qwen3 (attention_bias), Mistral, Qwen2 (exported as Llama) and GPT-2."
    )


def exported_config(model: PreTrainedModel) -> tuple[Any, type, Route]:
    """The config and class of the export of ``model`` (a real or ``meta`` model), and its route."""
    route = route_for(model)
    if route == "native":
        return model.config, type(model), route
    cfg_dict = model.config.to_dict()
    if route == "same-class":
        new_cfg = type(model.config).from_dict({**cfg_dict, "attention_bias": True})
        cls: type = type(model)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        _refuse_sliding_window(model.config)
        kw = {k: cfg_dict[k] for k in _LLAMA_KEYS if k in cfg_dict}
        kw.setdefault("head_dim", cfg_dict["hidden_size"] // cfg_dict["num_attention_heads"])
        new_cfg = LlamaConfig(**kw, attention_bias=True, mlp_bias=False)
        cls = LlamaForCausalLM
    new_cfg.architectures = [cls.__name__]
    return new_cfg, cls, route


def with_output_bias(model: PreTrainedModel) -> tuple[PreTrainedModel, Route]:
    """A model computing exactly the same function whose output projections have a bias parameter."""
    new_cfg, cls, route = exported_config(model)
    if route == "native":
        return model, route
    with torch.device("meta"):
        fresh = cls(new_cfg)
    state = model.state_dict()
    fresh_keys = set(fresh.state_dict().keys())
    missing = fresh_keys - set(state)
    unexpected = set(state) - fresh_keys
    bias_missing = {k for k in missing if k.endswith("_proj.bias")}
    other_missing = missing - bias_missing - {"lm_head.weight"}
    if other_missing or unexpected:
        raise ExportError(
            f"cannot re-express {type(model).__name__} as {cls.__name__}: missing {sorted(other_missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    fresh = fresh.to_empty(device=next(model.parameters()).device)
    dtype = next(model.parameters()).dtype
    fresh = fresh.to(dtype)
    with torch.no_grad():
        full = dict(state)
        for k in bias_missing:
            shape = fresh.get_parameter(k).shape
            full[k] = torch.zeros(shape, dtype=dtype, device=next(model.parameters()).device)
        fresh.load_state_dict(full, strict=False, assign=False)
        if getattr(new_cfg, "tie_word_embeddings", False):
            fresh.tie_weights()
        elif "lm_head.weight" in state:
            fresh.lm_head.weight.copy_(state["lm_head.weight"])
    _init_buffers_like(fresh, model)
    return fresh.eval(), route


def _init_buffers_like(fresh: nn.Module, source: nn.Module) -> None:
    """Recompute non-persistent buffers (rotary inverse frequencies) that to_empty left uninitialised."""
    src = dict(source.named_buffers())
    for name, buf in fresh.named_buffers():
        if name in src and src[name].shape == buf.shape:
            buf.copy_(src[name])
        else:
            raise ExportError(f"cannot initialise buffer {name} of the exported model.")


def _refuse_sliding_window(cfg: Any) -> None:
    window = getattr(cfg, "sliding_window", None)
    max_pos = getattr(cfg, "max_position_embeddings", None)
    active = window is not None and (max_pos is None or window < max_pos)
    if cfg.model_type == "qwen2":
        active = active and bool(getattr(cfg, "use_sliding_window", False))
    if active:
        raise ExportError(
            f"{cfg.model_type} with an active sliding window ({window} < {max_pos} positions) cannot be "
            "re-expressed as Llama exactly; no plain-transformers class of this layout has an o_proj bias. "
            "Export the compensation file alone (compensation.safetensors) or use a model without sliding window."
        )


@torch.no_grad()
def merge(model: PreTrainedModel, z_offsets: ZOffsets) -> tuple[PreTrainedModel, Route]:
    """Return a model with the offsets folded into output-projection biases (a new object unless native).

    Refuses NaN/inf offsets (safe merge).
    """
    check_finite(z_offsets)
    _check_geometry(model, z_offsets)
    merged, route = with_output_bias(model)
    for layer, proj in enumerate(output_projections(merged)):
        proj.module.bias.add_(bias_from_offsets(proj, z_offsets[layer].reshape(-1)))
    return merged, route


@torch.no_grad()
def unmerge(model: PreTrainedModel, z_offsets: ZOffsets) -> PreTrainedModel:
    """Subtract previously merged offsets from the output-projection biases, in place."""
    check_finite(z_offsets)
    _check_geometry(model, z_offsets)
    for layer, proj in enumerate(output_projections(model)):
        if proj.module.bias is None:
            raise ExportError(
                "this model has no output-projection bias: nothing was merged into it."
            )
        proj.module.bias.sub_(bias_from_offsets(proj, z_offsets[layer].reshape(-1)))
    return model


def _streamable(source: str | os.PathLike[str]) -> Path | None:
    """The local safetensors checkpoint directory of ``source``, if the shard-level export applies."""
    path = Path(resolve_model_source(source))
    if not path.is_dir() or not ((path / SINGLE).is_file() or (path / INDEX).is_file()):
        return None
    return path


def export_checkpoint(
    pruned_source: str | os.PathLike[str],
    compensation: Compensation | CompensationFamily | RestorationMethod,
    out_dir: str | os.PathLike[str],
    *,
    dense_source: str | os.PathLike[str] | None = None,
    metadata: dict[str, Any] | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Merge ``compensation`` into a copy of the pruned checkpoint and save a plain HF directory.

    An LCC family (:class:`~lcc_lens.family.CompensationFamily`) is merged in memory with every term
    folded in (:meth:`~lcc_lens.family.CompensationFamily.merge`); a zero-keeping peer method
    (``lcc fit --method``) by its own :meth:`~lcc_lens.methods.base.RestorationMethod.export`, without a
    compensation file.

    The directory holds the merged model (safetensors), config, tokenizer, ``compensation.safetensors``
    and ``lcc_export.json`` (route, identities, version). Written atomically: on any error nothing remains.
    A local safetensors checkpoint on the ``same-class`` / ``as-llama`` routes is exported shard by shard
    (:mod:`lcc_lens.export_shards`: weights copied byte for byte, peak memory one o_proj weight);
    otherwise the model is loaded in fp32 and merged in memory. ``model``/``tokenizer`` may pass an
    already-loaded clean (never bridged) copy of the pruned model (forces the in-memory export).
    """
    peer = isinstance(compensation, RestorationMethod)
    offsets = None if peer else compensation.z_offsets().detach().float().cpu()
    if offsets is not None:
        check_finite(offsets)
    family = isinstance(compensation, CompensationFamily)
    stream = _streamable(pruned_source) if model is None and not (family or peer) else None
    identities = {"pruned": describe(pruned_source)}
    if dense_source is not None:
        identities["dense"] = describe(dense_source)
    if stream is not None:
        structure = checked_structure(stream)  # the folder checked; no weight read
        _check_geometry(structure, offsets)
        new_cfg, cls, route = exported_config(structure)
    if stream is not None and route != "native":
        new_cfg.dtype = getattr(structure.config, "dtype", None) or new_cfg.dtype
        names = (type(structure).__name__, cls.__name__)
        write = _shard_writer(stream, offsets, new_cfg)
    else:
        if model is None or tokenizer is None:
            model, tokenizer = load_causal_lm(pruned_source, dtype=torch.float32, device="cpu")
        if peer:
            merged = compensation.export(model)
            route = route_for(merged)
        else:
            merged, route = compensation.merge(model) if family else merge(model, offsets)
        names = (type(model).__name__, type(merged).__name__)
        write = _memory_writer(merged, tokenizer)
    info = {
        "lcc_lens_version": __version__,
        "route": route,
        "writer": "shards" if stream is not None and route != "native" else "in-memory",
        "source_architecture": names[0],
        "exported_architecture": names[1],
        "method": compensation.name if peer else "lcc",
        "n_selected_heads": getattr(compensation, "n_selected", 0),
        "models": identities,
        **(metadata or {}),
    }
    with atomic_dir(out_dir) as tmp:
        write(tmp)
        if not peer:  # a peer method's trained tensors live in the merged weights only
            compensation.save(
                tmp / COMPENSATION_FILE, metadata={"models": identities, **(metadata or {})}
            )
        (tmp / "lcc_export.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    logger.info("exported merged checkpoint (%s route, %s) to %s", route, info["writer"], out_dir)
    return Path(out_dir)


def _shard_writer(source: Path, offsets: ZOffsets, config: Any) -> Callable[[Path], None]:
    from lcc_lens.export_shards import write_sharded_export

    return lambda tmp: write_sharded_export(source, tmp, offsets, config)


def _memory_writer(
    merged: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write
