"""Every surviving weight retrained with the pruning mask fixed: the ceiling of zero-keeping restoration.

Shin et al. (EMNLP 2024) retrain all surviving weights of a pruned LLaMA this way; it is the reference the
cheaper zero-keeping methods (LCC, biases and norms, masked adapters) are read against, reported as such and
not as a product default (at a small budget and an untuned rate it need not beat them). Trained: an fp32
copy of every linear weight of the decoder layers and every normalisation parameter (embeddings and the LM
head stay frozen). The zeros stay exactly zero three ways: a gradient hook zeroes the gradient at every
pruned position (so AdamW's moments and update there are exactly zero), the weights are re-masked whenever
the method is attached (that is after every optimizer step, before the next forward) or exported, and the
export refuses a model whose zeros are not the mask's.

``n_trainable`` counts the free scalars (surviving weights plus norm parameters); the optimizer holds the
full matrices (``stored_params`` in ``describe``): on SmolLM2-135M, 106 M weights of which about half are
free after a 50 % prune.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lcc_lens.errors import ConfigError, ExportError
from lcc_lens.methods.base import decoder_linears
from lcc_lens.methods.overrides import OverrideMethod, module_key, norm_parameters, trainable_copies

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)


class MaskedFullFT(OverrideMethod):
    """All decoder linear weights (masked by the pruning) and all norms trained."""

    name = "masked_full_ft"
    default_lr = 1e-4
    """Untuned: a usual full fine-tuning rate for a model of this size."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = trainable_copies({})
        self.norms = trainable_copies({})
        self.masks = nn.Module()
        self.weight_names: list[str] = []
        self.norm_names: list[str] = []

    def build(self, model: PreTrainedModel, ctx: MethodContext) -> None:
        linears = {f"{n}.weight": m.weight for n, m in decoder_linears(model).items()}
        if not linears:
            raise ConfigError(
                f"{type(model).__name__} has no nn.Linear in its decoder layers (GPT-2's Conv1D is not "
                f"supported); {self.name} retrains Llama-style linear projections."
            )
        norms = norm_parameters(model)
        self.weight_names, self.norm_names = list(linears), list(norms)
        self.weights = trainable_copies(linears)
        self.norms = trainable_copies(norms)
        self.masks = nn.Module()
        for name, w in linears.items():
            key = module_key(name)
            self.masks.register_buffer(key, w != 0)
            self.weights[key].register_hook(self._mask_gradient(key))
        logger.info(
            "%s: %d weight matrices (%d free scalars), %d norm tensors",
            self.name,
            len(linears),
            self.n_trainable,
            len(norms),
        )

    def _mask(self, key: str) -> Tensor:
        return self.masks.get_buffer(key)

    def _mask_gradient(self, key: str) -> Any:
        def hook(grad: Tensor) -> Tensor:
            return grad.masked_fill(~self._mask(key).to(grad.device), 0.0)

        return hook

    @torch.no_grad()
    def settle(self) -> None:
        """Re-mask the stored weights (written only when a pruned position is not zero)."""
        for key, w in self.weights.items():
            pruned = ~self._mask(key)
            if bool(w[pruned].any()):
                w.masked_fill_(pruned, 0.0)

    def replaced(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {n: self.weights[module_key(n)] for n in self.weight_names}
        out.update({n: self.norms[module_key(n)] for n in self.norm_names})
        return out

    def check_fits(self, params: Mapping[str, Tensor]) -> None:
        for n in self.weight_names:
            if bool((self._mask(module_key(n)) & (params[n] == 0)).any()):
                raise ExportError(
                    f"{self.name}: {n} of this model is zero where the method's mask is not; merge into "
                    "the pruned model the method was prepared on."
                )

    @property
    def n_trainable(self) -> int:
        """Free scalars: the surviving weights and every norm parameter."""
        free = sum(int(m.sum()) for m in self.masks.buffers())
        return free + sum(p.numel() for p in self.norms.values())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            weight_matrices=len(self.weight_names),
            norm_tensors=len(self.norm_names),
            stored_params=sum(p.numel() for p in self.trainable_parameters()),
        )
        return out
