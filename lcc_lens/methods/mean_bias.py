"""Training-free mean-activation bias compensation (FLAP's idea applied to any pruning).

For every linear layer of the decoder that pruning changed, the expected output lost is
(W_dense - W_pruned) E[x], with E[x] the mean input of that layer in the pruned model over the fit data
(non-padding tokens). Adding it to the layer's bias restores the output's mean. The pruned weights are
untouched, so the export keeps their zeros; it needs a model class whose config can switch on biases
for the attention and MLP projections (Llama: ``attention_bias``, ``mlp_bias``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lcc_lens.errors import ExportError
from lcc_lens.methods.base import (
    RestorationMethod,
    clean_copy,
    decoder_linears,
    forward_hook_context,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)
_BRIDGE_WRAP = "._original_component"


@torch.no_grad()
def mean_inputs(
    model: nn.Module, modules: dict[str, nn.Linear], ctx: MethodContext, n_examples: int
) -> dict[str, Tensor]:
    """Mean input vector of each module over the non-padding tokens of the first ``n_examples``."""
    from lcc_lens.data import collate

    sums: dict[str, Tensor] = {}
    count = 0
    mask_box: list[Tensor] = []

    def grab(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].float()
            m = mask_box[0].to(x.device, x.dtype)[..., None]
            total = (x * m).sum(dim=(0, 1)).double()
            sums[name] = sums[name] + total if name in sums else total

        return hook

    handles = [m.register_forward_pre_hook(grab(n)) for n, m in modules.items()]
    data = list(ctx.train_encoded[:n_examples])
    pad = ctx.pair.tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    try:
        for start in range(0, len(data), ctx.train_config.batch_size):
            ids, attn, _ = collate(data[start : start + ctx.train_config.batch_size], pad)
            mask_box[:] = [attn]
            model(input_ids=ids.to(device), attention_mask=attn.to(device))
            count += int(attn.sum())
    finally:
        for h in handles:
            h.remove()
    return {n: (s / max(1, count)).float() for n, s in sums.items()}


class MeanBias(RestorationMethod):
    """Bias += (W_dense - W_pruned) E[x] in every pruned linear layer; no training."""

    name = "mean_bias"
    trains = False

    def __init__(self, *, n_examples: int = 128) -> None:
        super().__init__()
        self.n_examples = n_examples
        self.deltas: dict[str, Tensor] = {}

    @torch.no_grad()
    def prepare(self, ctx: MethodContext) -> None:
        pruned = ctx.pruned_model()
        dense_params = dict(ctx.dense_model().named_parameters())
        changed: dict[str, nn.Linear] = {}
        for name, module in decoder_linears(pruned).items():
            w_dense = dense_params.get(f"{name}.weight")
            if w_dense is None or w_dense.shape != module.weight.shape:
                raise ExportError(
                    f"the dense model has no weight {name}.weight of shape "
                    f"{tuple(module.weight.shape)}; pass the dense parent of this pruned model."
                )
            if not torch.equal(w_dense, module.weight):
                changed[name] = module
        means = mean_inputs(pruned, changed, ctx, self.n_examples)
        self.deltas = {
            name: ((dense_params[f"{name}.weight"].float() - m.weight.float()) @ means[name]).cpu()
            for name, m in changed.items()
        }
        logger.info("mean_bias: %d pruned linear layers corrected", len(self.deltas))
        self._prepared = True

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        """Add each correction to its linear layer's output inside the bridge (torch forward hooks)."""
        self.check_prepared()
        found: dict[str, nn.Module] = {}
        for name, module in bridge.original_model.named_modules():
            if isinstance(module, nn.Linear):
                found[name.replace(_BRIDGE_WRAP, "")] = module
        missing = sorted(set(self.deltas) - set(found))
        if missing:
            raise ExportError(f"the model lacks the corrected layers {missing[:3]}.")

        def add(delta: Tensor):
            def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
                return output + delta.to(device=output.device, dtype=output.dtype)

            return hook

        with forward_hook_context([(found[n], add(d)) for n, d in self.deltas.items()]):
            yield bridge

    @torch.no_grad()
    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        from lcc_lens.pruning import find_decoder_layers
        from lcc_lens.pruning.structured import enable_output_biases

        self.check_prepared()
        out = clean_copy(model)
        _prefix, layers = find_decoder_layers(out)
        enable_output_biases(out, layers)
        modules = decoder_linears(out)
        for name, delta in self.deltas.items():
            module = modules[name]
            if module.bias is None:
                raise ExportError(
                    f"{type(out).__name__} cannot hold a bias on {name}; mean_bias needs a model "
                    "class with attention_bias and mlp_bias switches (Llama layout)."
                )
            module.bias.add_(delta.to(module.bias))
        return out

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(n_examples=self.n_examples, n_layers_corrected=len(self.deltas))
        return out
