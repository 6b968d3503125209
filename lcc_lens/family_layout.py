"""Where the LCC family's terms act in a model: module names, sizes and norm conventions.

Read from a plain Hugging Face causal LM or from a TransformerBridge around one (whose wrapper modules
carry the same names with ``._original_component`` inserted; the names here are the plain ones), and
recorded in the compensation file so that a loaded family knows its shapes without the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NormKind = Literal["gain", "one_plus", "layernorm"]
WRAPPED = "._original_component"
_AS_LLAMA_MLP = {"llama", "mistral", "qwen2"}
"""Model types whose export can carry a down_proj bias (Llama's ``mlp_bias``; the others as Llama)."""
MLP_ARCHITECTURES = "Llama, Mistral and Qwen2 (exported as Llama) and GPT-2"


@dataclass(frozen=True)
class FamilyLayout:
    """Where the family's terms act in a model: module names and sizes, recorded in the file."""

    gpt2: bool
    d_model: int
    d_mlp: int
    norms: tuple[tuple[str, NormKind, int], ...]
    mlp_bias: bool

    @classmethod
    def of(cls, model: Any) -> FamilyLayout:
        """The layout of a plain Hugging Face causal LM or of a bridge around one."""
        hf = hf_model(model)
        gpt2 = hf.config.model_type == "gpt2"
        modules = by_hf_name(hf.named_modules())
        down = modules[_down_name(gpt2, 0)]
        d_mlp, d_model = down.weight.shape if gpt2 else down.weight.shape[::-1]
        norms: dict[str, tuple[str, NormKind, int]] = {}
        for (
            raw,
            module,
        ) in hf.named_modules():  # a bridge's wrappers are not norms; their inner ones are
            kind, name = _norm_kind(module), raw.replace(WRAPPED, "")
            weight = getattr(module, "weight", None)
            if kind is not None and isinstance(weight, Tensor) and name not in norms:
                norms[name] = (name, kind, int(weight.shape[0]))
        mt = hf.config.model_type
        return cls(
            gpt2, int(d_model), int(d_mlp), tuple(norms.values()), gpt2 or mt in _AS_LLAMA_MLP
        )

    def down(self, layer: int) -> str:
        return _down_name(self.gpt2, layer)

    def out_proj(self, layer: int) -> str:
        return (
            f"transformer.h.{layer}.attn.c_proj"
            if self.gpt2
            else f"model.layers.{layer}.self_attn.o_proj"
        )


def _down_name(gpt2: bool, layer: int) -> str:
    return f"transformer.h.{layer}.mlp.c_proj" if gpt2 else f"model.layers.{layer}.mlp.down_proj"


def _norm_kind(module: nn.Module) -> NormKind | None:
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if name.endswith("RMSNorm"):
        return "one_plus" if name.startswith("Gemma") else "gain"
    return None


def hf_model(model: Any) -> PreTrainedModel:
    """The Hugging Face model inside a bridge, or the model itself."""
    return getattr(model, "original_model", model)


def by_hf_name(items: Iterator[tuple[str, Any]]) -> dict[str, Any]:
    """Items by their Hugging Face name (a bridge's wrapper names stripped); the outermost one wins."""
    out: dict[str, Any] = {}
    for name, item in items:
        out.setdefault(name.replace(WRAPPED, ""), item)
    return out
