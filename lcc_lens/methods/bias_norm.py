"""PERP-style restoration: train only the output biases and every normalisation gain of the pruned model.

PERP reports that retraining just the biases and norm parameters of a pruned model recovers much of what
full retraining does. Here: the o_proj bias of every layer (added, zero, through the export's own
o_proj-bias routes, :func:`lcc_lens.export.with_output_bias`: ``attention_bias`` for Llama / Qwen3, Mistral
and Qwen2 re-expressed as Llama), the down_proj bias (``mlp_bias``, where the class has the switch, as
``mean_bias`` does) and every RMSNorm (or LayerNorm) parameter. The other biases those switches add (q, k,
v, gate, up) stay zero and frozen. No weight matrix changes, so the export keeps every zero; the merge
copies the trained tensors into a model of the same (biased) layout, so it is exact.

An existing bias (a FLAP prune's compensation) is the starting value, so an untrained method is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lcc_lens.methods.base import clean_copy
from lcc_lens.methods.overrides import OverrideMethod, module_key, norm_parameters, trainable_copies

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.export import Route
    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)


def output_bias_names(model: PreTrainedModel) -> dict[str, list[str]]:
    """Names of the o_proj biases and (where they exist) the down_proj biases, per kind."""
    from lcc_lens.export import output_projections
    from lcc_lens.pruning import find_decoder_layers

    names = {id(m): n for n, m in model.named_modules()}
    _prefix, layers = find_decoder_layers(model)
    downs = [getattr(getattr(layer, "mlp", None), "down_proj", None) for layer in layers]
    return {
        "o_proj": [
            f"{names[id(p.module)]}.bias"
            for p in output_projections(model)
            if p.module.bias is not None
        ],
        "down_proj": [
            f"{names[id(d)]}.bias" for d in downs if getattr(d, "bias", None) is not None
        ],
    }


def biased_copy(model: PreTrainedModel, *, mlp: bool = True) -> tuple[PreTrainedModel, Route]:
    """A frozen copy of ``model`` computing the same function with a (zero where new) o_proj bias and,
    with ``mlp``, a down_proj bias where the class can hold one (``mlp_bias``); and its export route."""
    from lcc_lens.export import with_output_bias
    from lcc_lens.pruning import find_decoder_layers
    from lcc_lens.pruning.structured import enable_output_biases

    out, route = with_output_bias(clean_copy(model))
    _prefix, layers = find_decoder_layers(out)
    if (
        mlp
        and hasattr(layers[0], "self_attn")
        and hasattr(getattr(layers[0], "mlp", None), "down_proj")
    ):
        enable_output_biases(out, layers)  # Llama-style layers: a down_proj bias where it can be
    return out, route


class BiasNorm(OverrideMethod):
    """o_proj bias + down_proj bias + every norm parameter, trained; weights untouched."""

    name = "perp_bias_norm"
    default_lr = 5e-3
    """Untuned: the fit's rate for ``lcc``, whose offsets also fold into the o_proj bias."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors = trainable_copies({})
        self.names: list[str] = []
        self.kinds: dict[str, int] = {}

    def frozen_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """A frozen copy of ``model`` with (zero) o_proj and, where possible, down_proj biases."""
        out, _route = biased_copy(model)
        out.requires_grad_(False)
        return out.eval()

    def build(self, model: PreTrainedModel, ctx: MethodContext) -> None:
        params = dict(model.named_parameters())
        biases = output_bias_names(model)
        norms = list(norm_parameters(model))
        self.names = [*biases["o_proj"], *biases["down_proj"], *norms]
        self.kinds = {k: len(v) for k, v in biases.items()} | {"norm": len(norms)}
        self.tensors = trainable_copies({n: params[n] for n in self.names})
        if not biases["down_proj"]:
            logger.warning("%s: %s has no down_proj bias switch", self.name, type(model).__name__)
        logger.info("%s: %s", self.name, self.kinds)

    def replaced(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {n: self.tensors[module_key(n)] for n in self.names}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tensors": dict(self.kinds)}
