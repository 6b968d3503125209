"""``lcc_lowrank``: LCC's head offsets plus the LCC family's masked low-rank term, merged exactly.

The head offsets are ``lcc``'s own (the fit's default heads and form, built by :class:`LCC`); the
low-rank term is ``masked_lora_r1``'s (rank 1 on q, k, v, o, the update restricted to the pruned
weight's nonzeros). Attached, every o_proj input gets its layer's offsets added (a forward pre-hook)
while the masked update stands in for q/k/v/o (``functional_call``); merged, the masked update is written
into the weights first and the offsets are folded into o_proj's bias through those updated weights, so
merged == attached exactly and every zero of the pruned model survives (a bias is added, no weight is
filled). 132,480 trainable parameters on SmolLM2-135M: within a fifth of ``lora_r8``'s 921,600.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from lcc_lens.compensation import Compensation
from lcc_lens.methods.low_rank import MaskedLoRA

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext


class LCCLowRank(MaskedLoRA):
    """``lcc`` (head offsets at hook_z) and a rank-1 masked LoRA on q, k, v, o, trained together."""

    name = "lcc_lowrank"
    rank = 1
    default_lr = 1e-2
    """The low-rank term's rate: ``masked_lora_r1``'s, chosen on the validation domain."""
    offset_lr_scale: ClassVar[float] = 0.5
    """The head offsets train at half the rate: 5e-3 at the default, ``lcc``'s own chosen rate (one rate
    for both diverged on validation at 1e-2 in the race, seed 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets: Compensation | None = None

    def build(self, model: PreTrainedModel, ctx: MethodContext) -> None:
        from lcc_lens.methods.head_offsets import LCC

        super().build(model, ctx)
        lcc = LCC()
        lcc.prepare(ctx)
        self.offsets = lcc.compensation

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The low-rank factors at ``lr``, the head offsets at ``offset_lr_scale`` times it."""
        assert self.offsets is not None
        offsets = [p for p in self.offsets.parameters() if p.requires_grad]
        mine = {id(p) for p in offsets}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in mine]
        return [{"params": rest, "lr": lr}, {"params": offsets, "lr": lr * self.offset_lr_scale}]

    def _o_projs(self, model: nn.Module) -> list[nn.Module]:
        from lcc_lens.export import output_projections

        return [p.module for p in output_projections(model)]

    @contextlib.contextmanager
    def _offset_hooks(self, model: nn.Module) -> Iterator[None]:
        """Add each layer's head offsets to its o_proj input (the heads' z, concatenated)."""
        assert self.offsets is not None
        offsets = self.offsets

        def hook_for(layer: int):
            def add(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                z = offsets.z_offsets()[layer].reshape(-1)
                return (args[0] + z.to(args[0].dtype), *args[1:])

            return add

        handles = [
            proj.register_forward_pre_hook(hook_for(layer))
            for layer, proj in enumerate(self._o_projs(model))
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        self.check_prepared()
        with self._offset_hooks(self._frozen[0]), super().attach(bridge) as model:
            yield model

    @torch.no_grad()
    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        from lcc_lens.export import merge

        assert self.offsets is not None
        updated = super().export(model)
        merged, _route = merge(updated, self.offsets.z_offsets().detach().float().cpu())
        return merged

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.offsets is not None:
            out.update(
                n_heads=self.offsets.n_selected,
                use_directions=self.offsets.use_directions,
                use_bias=self.offsets.use_bias,
            )
        return out
