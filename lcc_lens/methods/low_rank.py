"""Low-rank updates that keep the pruned zeros: masked LoRA (LoSA / SQFT / PERP MaskLoRA) and SPP's form.

Both learn a rank-r factor ``s * B A`` (d_out x d_in) per adapted projection, LoRA's initialisation (A
uniform in +-1/sqrt(d_in) from the seed, B = 0, so the update starts at exactly 0) and scale s = alpha / r:

* ``masked_lora_*``: W' = W + where(M, s B A, 0), M the fixed nonzero mask of the pruned weight, in
  training and in the merge, so every zero survives the merge (LoSA, SQFT's SparsePEFT, PERP's MaskLoRA
  apply the mask the same way; PERP's weakest variant masks only at merge time);
* ``spp_r8``: W' = W + (s B A) * W elementwise, SPP's multiplicative form: zeros stay zero by construction.
  SPP's released code restricts B to one nonzero per row (row groups times a per-row scale, fewer
  parameters); here B is a full rank-8 factor, so the trainable count equals ``lora_r8``'s and
  ``masked_lora_r8``'s and the three differ only in how the update meets the pruned weight.

Why not peft: peft 0.21's LoRA forward computes ``lora_B(lora_A(x)) * scaling`` without ever forming B A,
so there is no place for an elementwise mask; its merge (``get_delta_weight``) is the dense B A; no
``LoraConfig`` option masks either (its only hook is the experimental ``_register_custom_module`` for
layer types peft does not support, which would mean re-implementing its Linear layer anyway). So these
methods form the updated weight themselves and run it through :class:`~lcc_lens.methods.overrides.OverrideMethod`.

Cost: the masked product needs B A itself, d_out x d_in per adapted layer on every forward (memory and
r * d_out * d_in multiply-adds, as in LoSA), and its gradient is a full d_out x d_in matrix before it
reaches B and A; on SmolLM2-135M (q, k, v, o of 30 layers) that is 26.5 M values per forward, a quarter
of the decoder's linear weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from lcc_lens.errors import ConfigError, ExportError
from lcc_lens.methods.base import decoder_linears
from lcc_lens.methods.overrides import OverrideMethod, module_key
from lcc_lens.methods.peft_adapters import QKVO, matched_shape

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)

MLP = ("gate_proj", "up_proj", "down_proj")
"""Llama-style MLP projections, for ``targets=QKVO + MLP``."""


class LowRankFactor(nn.Module):
    """s * B A for one projection (A: r x d_in, B: d_out x r), with an optional fixed bool mask."""

    def __init__(
        self,
        d_out: int,
        d_in: int,
        rank: int,
        scale: float,
        generator: torch.Generator,
        mask: Bool[Tensor, "d_out d_in"] | None = None,
    ) -> None:
        super().__init__()
        bound = 1.0 / d_in**0.5  # LoRA's A init (kaiming-uniform with a = sqrt(5))
        self.A = nn.Parameter((torch.rand(rank, d_in, generator=generator) * 2 - 1) * bound)
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        self.scale = scale
        self.register_buffer("mask", None if mask is None else mask.detach().bool().clone())

    def product(self) -> Float[Tensor, "d_out d_in"]:
        """s * B A (d_out x d_in), fp32."""
        return (self.B @ self.A) * self.scale


class LowRankUpdate(OverrideMethod):
    """A rank-r factor per adapted projection (``targets`` of ``layers``); subclasses combine it with W."""

    rank: ClassVar[int] = 8
    masked: ClassVar[bool] = False

    def __init__(
        self,
        *,
        targets: Sequence[str] = QKVO,
        rank: int | None = None,
        alpha: float | None = None,
        layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.targets = tuple(targets)
        self.rank = self.rank if rank is None else rank  # type: ignore[misc]
        self.alpha = float(2 * self.rank if alpha is None else alpha)
        self.layers = None if layers is None else sorted(set(layers))
        if self.rank < 1 or not self.targets:
            raise ConfigError(f"{self.name}: rank must be >= 1 and targets non-empty.")
        self.factors = nn.ModuleDict()
        self.weight_names: list[str] = []

    def size_for(self, ctx: MethodContext) -> None:
        """Fix rank / targets / layers from the context before building (default: as constructed)."""

    def build(self, model: PreTrainedModel, ctx: MethodContext) -> None:
        self.size_for(ctx)
        self.factors = nn.ModuleDict()
        self.weight_names = []
        found = decoder_linears(model, layers=self.layers, names=self.targets)
        missing = [t for t in self.targets if not any(n.endswith(f".{t}") for n in found)]
        if missing:
            raise ConfigError(
                f"{type(model).__name__} has no {missing} projections in its decoder layers; "
                f"{self.name} adapts Llama-style q/k/v/o_proj (and gate/up/down_proj) linear layers."
            )
        gen = torch.Generator().manual_seed(ctx.seed)
        for name, module in found.items():
            w = module.weight
            mask = (w != 0) if self.masked else None
            factor = LowRankFactor(
                w.shape[0], w.shape[1], self.rank, self.alpha / self.rank, gen, mask
            )
            self.factors[module_key(name)] = factor
            self.weight_names.append(f"{name}.weight")
        logger.info("%s: rank %d on %d projections", self.name, self.rank, len(found))

    def combine(
        self, w: Float[Tensor, "d_out d_in"], factor: LowRankFactor
    ) -> Float[Tensor, "d_out d_in"]:
        """The updated weight from the frozen one and its factor."""
        raise NotImplementedError

    def replaced(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {
            n: self.combine(params[n].float(), self.factors[module_key(n.removesuffix(".weight"))])
            for n in self.weight_names
        }

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            rank=self.rank,
            alpha=self.alpha,
            targets=list(self.targets),
            layers=self.layers if self.layers is not None else "all",
            n_projections=len(self.weight_names),
        )
        return out


class MaskedLoRA(LowRankUpdate):
    """W' = W + where(M, s B A, 0): the LoRA update restricted to the pruned weight's nonzeros."""

    name = "masked_lora"
    masked = True
    default_lr = 3e-3
    """Untuned: the rate ``analysis.bench_lr`` chose for the unmasked ``lora_r8`` on the validation domain."""

    def combine(
        self, w: Float[Tensor, "d_out d_in"], factor: LowRankFactor
    ) -> Float[Tensor, "d_out d_in"]:
        return w + torch.where(factor.mask, factor.product(), 0.0)

    def check_fits(self, params: Mapping[str, Tensor]) -> None:
        """The mask must sit inside the model's nonzeros, or the merge would fill a zero."""
        for n in self.weight_names:
            mask = self.factors[module_key(n.removesuffix(".weight"))].mask
            if bool((mask & (params[n] == 0).to(mask.device)).any()):
                raise ExportError(
                    f"{self.name}: {n} of this model is zero where the method's mask is not; merge into "
                    "the pruned model the method was prepared on."
                )


class MaskedLoRAR8(MaskedLoRA):
    name = "masked_lora_r8"


class MaskedLoRAR1(MaskedLoRA):
    """Rank 1 on q, k, v, o: an eighth of ``masked_lora_r8``, within a fifth of ``lora_r8``'s parameters."""

    name = "masked_lora_r1"
    rank = 1


class MaskedLoRAMatched(MaskedLoRA):
    """Masked LoRA on o_proj of evenly spaced layers, rank and count closest to ``lcc``'s trainable count."""

    name = "masked_lora_matched"

    def __init__(self) -> None:
        super().__init__(targets=("o_proj",), rank=1)
        self.target_count: int | None = None

    def size_for(self, ctx: MethodContext) -> None:
        from lcc_lens.methods.head_offsets import LCC

        g = ctx.geometry
        self.target_count = LCC().planned_trainable(ctx)
        rank, layers = matched_shape(
            self.target_count, g.n_layers, g.n_heads * g.d_head, g.d_model, dora=False
        )
        self.rank, self.alpha, self.layers = rank, float(2 * rank), layers  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "matched_to": self.target_count}


class SPPR8(LowRankUpdate):
    """W' = W + (s B A) * W (SPP's multiplicative form), rank 8 on q, k, v, o."""

    name = "spp_r8"
    default_lr = 1e-2
    """Untuned: the update is relative to |W|, whose entries are far below 1 in a trained model, so it
    takes a larger step than the additive LoRA's to move the weights as far (the largest existing default)."""

    def combine(
        self, w: Float[Tensor, "d_out d_in"], factor: LowRankFactor
    ) -> Float[Tensor, "d_out d_in"]:
        return w + factor.product() * w
