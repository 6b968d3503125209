"""A plain transformers twin of a TransformerBridge: the same weight tensors, none of the bridge's wrappers.

The bridge wraps every submodule of the Hugging Face model it boots from, runs attention eagerly and calls
a hook point per activation; that is what analysis needs, and what made a training step cost about 1.2x a
plain forward + backward. The training loop needs only the logits with the compensation added at
``hook_z``, which is exactly the input of each layer's output projection. So training runs this twin (a
model of the same class rebuilt around the bridge's own parameter tensors, no copy, with eager attention
like the bridge's: the same logits bit for bit) with a forward pre-hook on the output projections, and
everything else keeps using the bridge.

No twin is built (``plain_twin`` returns None and callers use the bridge) for device-mapped models, whose
accelerate dispatch hooks cannot be shared, or when the bridge's tensors do not map one to one onto the
plain model's (GPT-2, whose bridge splits and renames its attention projections).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from lcc_lens.placement import has_device_map

logger = logging.getLogger(__name__)

_WRAPPED = "._original_component"
_TWINS: weakref.WeakKeyDictionary[nn.Module, PreTrainedModel | None] = weakref.WeakKeyDictionary()


def plain_twin(bridge: Any) -> PreTrainedModel | None:
    """The plain model sharing ``bridge``'s weights (built once per bridge), or None (see module doc)."""
    if bridge in _TWINS:
        return _TWINS[bridge]
    twin = _build(bridge)
    _TWINS[bridge] = twin
    return twin


def _build(bridge: Any) -> PreTrainedModel | None:
    original = getattr(bridge, "original_model", None)
    if not isinstance(original, PreTrainedModel) or has_device_map(original):
        return None
    config = copy.deepcopy(original.config)
    config._attn_implementation = "eager"
    with torch.device("meta"):
        twin = type(original)(config)
    ours = {
        n.replace(_WRAPPED, ""): t
        for n, t in (*original.named_parameters(), *original.named_buffers())
    }
    for name, tensor in (*twin.named_parameters(), *twin.named_buffers()):
        source = ours.get(name)
        if source is None or source.shape != tensor.shape:
            if _tied(twin, name):
                continue
            logger.info("no plain twin for %s: %s does not map", type(original).__name__, name)
            return None
        _assign(twin, name, source)
    if twin.config.tie_word_embeddings:
        twin.tie_weights()
    if any(t.is_meta for t in (*twin.parameters(), *twin.buffers())):
        logger.info("no plain twin for %s: tensors left unmapped", type(original).__name__)
        return None
    twin.eval()
    twin.requires_grad_(False)
    return twin


def _tied(model: PreTrainedModel, name: str) -> bool:
    """The output embedding when it is tied to the input embedding (assigned by ``tie_weights``)."""
    return bool(model.config.tie_word_embeddings) and name == "lm_head.weight"


def _assign(model: nn.Module, name: str, tensor: Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if leaf in owner._parameters:  # the bridge's own Parameter object: shared, never copied
        owner._parameters[leaf] = (
            tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, False)
        )
    else:
        owner._buffers[leaf] = tensor


class PlainLogits:
    """Calls a plain HF model the way the training loop calls a bridge: ``m(ids, attention_mask=...,
    return_type="logits")``."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def __call__(
        self,
        ids: Int[Tensor, "batch pos"],
        *,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        return_type: str = "logits",
    ) -> Float[Tensor, "batch pos vocab"]:
        if return_type != "logits":
            raise ValueError(f"a plain twin returns logits only, not {return_type!r}")
        return self.model(ids, attention_mask=attention_mask, use_cache=False).logits


@contextlib.contextmanager
def output_pre_hooks(model: PreTrainedModel, offsets: dict[int, Any]) -> Iterator[PreTrainedModel]:
    """Add ``offsets[layer]()`` (a [n_heads * d_head] vector) to the input of each listed layer's
    output projection for the duration of the block: the same point as ``hook_z``, flattened head-major.
    The hooks are removed on exit, also on an exception."""
    from lcc_lens.export import output_projections

    projections = output_projections(model)
    handles = []
    try:
        for layer, offset in offsets.items():

            def add(module: nn.Module, args: tuple[Tensor, ...], offset: Any = offset) -> Any:
                x = args[0]
                return (x + offset().to(device=x.device, dtype=x.dtype), *args[1:])

            handles.append(projections[layer].module.register_forward_pre_hook(add))
        yield model
    finally:
        for h in handles:
            h.remove()
