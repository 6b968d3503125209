"""LoRA and DoRA through the real ``peft`` library, on a clean Hugging Face copy of the pruned model.

peft cannot wrap a TransformerBridge: the bridge replaces every ``nn.Linear`` by a ``LinearBridge``,
which peft refuses ("Target module LinearBridge ... is not supported"). So the adapter lives on its own
clean copy of the pruned model, and ``attach`` yields that copy; the training loop, data and objective
are the benchmark's shared ones.

Two sizes: ``r8`` (rank 8 on q, k, v, o of every layer, the usual choice) and ``matched`` (rank 1 on
o_proj of evenly spaced layers, as many as make the trainable count closest to LCC's). Export merges with
peft's own ``merge_and_unload(safe_merge=True)``; the merge is dense, so it fills the pruned zeros.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from lcc_lens.errors import ConfigError, DivergedError, ExportError, MethodNotApplicable
from lcc_lens.methods.base import HFLogits, RestorationMethod, clean_copy

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)

Size = Literal["matched", "r8"]
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def lcc_trainable_count(ctx: MethodContext) -> int:
    """LCC's default trainable count: beta and b (2 x d_head) on each compensated head."""
    return ctx.n_heads() * 2 * ctx.geometry.d_head


def spaced_layers(n_layers: int, k: int) -> list[int]:
    """``k`` distinct layer indices spread evenly over ``n_layers`` (the middle one for k = 1)."""
    k = max(1, min(k, n_layers))
    if k == 1:
        return [n_layers // 2]
    return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})


def matched_shape(
    target: int, n_layers: int, d_in: int, d_out: int, *, dora: bool
) -> tuple[int, list[int]]:
    """(rank, layers) of an o_proj adapter whose trainable count is closest to ``target``.

    Per adapted layer the count is r * (d_in + d_out), plus d_out magnitudes for DoRA.
    """
    extra = d_out if dora else 0
    per_layer_r1 = d_in + d_out + extra
    if target <= per_layer_r1 * n_layers:
        k = max(1, min(n_layers, round(target / per_layer_r1)))
        return 1, spaced_layers(n_layers, k)
    rank = max(1, round((target / n_layers - extra) / (d_in + d_out)))
    return rank, list(range(n_layers))


def zero_row_modules(peft_model: torch.nn.Module) -> dict[str, int]:
    """DoRA-adapted modules whose frozen weight has all-zero output rows: module name -> row count."""
    found = {}
    for name, module in peft_model.named_modules():
        if not getattr(module, "lora_magnitude_vector", None):  # not a DoRA layer
            continue
        n = int((module.get_base_layer().weight == 0).all(dim=1).sum())
        if n:
            found[name.removeprefix("base_model.model.")] = n
    return found


def refuse_zero_rows(peft_model: torch.nn.Module, method: str) -> None:
    """DoRA divides each output row by its weight norm; an all-zero row (a removed head) gives 0/0."""
    found = zero_row_modules(peft_model)
    if found:
        first = ", ".join(f"{n} ({k} rows)" for n, k in list(found.items())[:2])
        raise MethodNotApplicable(
            f"{method}: {len(found)} adapted projections have all-zero output rows, e.g. {first}. "
            "DoRA rescales every row by magnitude / row norm, which is 0/0 (NaN) on such rows; "
            "structured pruning (FLAP) zeroes the q rows of every removed head (and the k/v rows "
            "of a removed group). Use lora_r8, or dora_matched (o_proj only, whose rows stay "
            "non-zero)."
        )


class PeftAdapter(RestorationMethod):
    """A LoRA or DoRA adapter trained through peft; subclasses fix the kind and size."""

    use_dora: ClassVar[bool] = False
    size: ClassVar[Size] = "r8"
    default_lr = 1e-3

    def __init__(self) -> None:
        super().__init__()
        self.peft_model: torch.nn.Module | None = None
        self.peft_config: Any = None
        self.target_count: int | None = None

    def _config(self, ctx: MethodContext, model: PreTrainedModel) -> Any:
        from peft import LoraConfig

        for name in QKVO:
            if not any(n.endswith(f".{name}") for n, _ in model.named_modules()):
                raise ConfigError(
                    f"{type(model).__name__} has no {name} modules; the LoRA/DoRA baselines support "
                    "Llama-style attention (q_proj, k_proj, v_proj, o_proj)."
                )
        common = {"lora_dropout": 0.0, "bias": "none", "use_dora": self.use_dora}
        if self.size == "r8":
            return LoraConfig(r=8, lora_alpha=16, target_modules=list(QKVO), **common)
        g = ctx.geometry
        self.target_count = lcc_trainable_count(ctx)
        d_in = g.n_heads * g.d_head
        rank, layers = matched_shape(
            self.target_count, g.n_layers, d_in, g.d_model, dora=self.use_dora
        )
        return LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["o_proj"],
            layers_to_transform=layers,
            layers_pattern="layers",
            **common,
        )

    def prepare(self, ctx: MethodContext) -> None:
        from peft import get_peft_model

        base = clean_copy(ctx.pruned_model())
        self.peft_config = self._config(ctx, base)
        torch.manual_seed(ctx.seed)  # LoRA's A is random; B (and DoRA's update) start at zero
        self.peft_model = get_peft_model(base, self.peft_config)
        if self.use_dora:
            refuse_zero_rows(self.peft_model, self.name)
        self._prepared = True

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        """Yield the adapter model (the bridge is not used: peft cannot wrap it, see module doc)."""
        self.check_prepared()
        assert self.peft_model is not None
        yield HFLogits(self.peft_model)

    @torch.no_grad()
    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        """peft's own safe merge of the trained adapter into a copy of ``model``."""
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        self.check_prepared()
        assert self.peft_model is not None
        state = get_peft_model_state_dict(self.peft_model)
        fresh = get_peft_model(clean_copy(model), self.peft_config)
        result = set_peft_model_state_dict(fresh, state)
        if getattr(result, "unexpected_keys", None):
            raise ExportError(f"adapter weights do not fit the model: {result.unexpected_keys[:4]}")
        try:
            merged = fresh.merge_and_unload(safe_merge=True)
        except ValueError as exc:  # peft's safe merge refuses NaN
            raise DivergedError(f"the {self.name} adapter diverged (NaN): {exc}") from exc
        return merged.eval()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.peft_config is not None:
            cfg = self.peft_config
            out.update(
                rank=int(cfg.r),
                lora_alpha=float(cfg.lora_alpha),
                target_modules=sorted(cfg.target_modules),
                layers=list(cfg.layers_to_transform) if cfg.layers_to_transform else "all",
                use_dora=self.use_dora,
                matched_to=self.target_count,
            )
        return out


class LoRAMatched(PeftAdapter):
    name = "lora_matched"
    size = "matched"


class LoRAR8(PeftAdapter):
    name = "lora_r8"
    size = "r8"


class DoRAMatched(PeftAdapter):
    name = "dora_matched"
    size = "matched"
    use_dora = True


class DoRAR8(PeftAdapter):
    name = "dora_r8"
    size = "r8"
    use_dora = True
