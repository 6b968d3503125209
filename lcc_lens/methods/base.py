"""The one interface every restoration method of the benchmark implements.

A method is an ``nn.Module`` whose trainable tensors are its parameters with ``requires_grad`` set:

* :meth:`RestorationMethod.prepare` builds those parameters (and computes training-free corrections)
  from a :class:`MethodContext` (the shared stages: lost components, head rankings, calibration data);
* :meth:`RestorationMethod.attach` is a context manager that yields a model computing the restored
  logits as ``model(ids, attention_mask=..., return_type="logits")`` and always cleans up (hooks
  removed); head-level methods add hooks to the pruned TransformerBridge, weight adapters yield their
  own adapter model;
* :meth:`RestorationMethod.export` merges the method into a copy of the clean pruned Hugging Face model,
  giving a plain checkpoint (the input model is never modified).

The training loop (lcc_lens.training) only sees ``parameters()`` and ``attach``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lcc_lens.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext


class RestorationMethod(nn.Module):
    """Base class: subclasses set ``name``, ``trains`` and implement the four hooks of the interface."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    default_lr: ClassVar[float] = 1e-2
    """Learning rate used when the benchmark config gives none for this method."""

    def __init__(self) -> None:
        super().__init__()
        self._prepared = False

    # ---- interface ----------------------------------------------------------------------------
    def prepare(self, ctx: MethodContext) -> None:
        """Build the parameters (or the training-free correction) from the shared stages."""
        raise NotImplementedError

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        """Yield a model with this method applied; undo everything on exit."""
        raise NotImplementedError
        yield  # pragma: no cover

    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        """A merged plain Hugging Face model; ``model`` (the clean pruned one) is left unchanged."""
        raise NotImplementedError

    # ---- shared helpers -----------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def n_trainable(self) -> int:
        """Number of trained scalars (0 for training-free methods)."""
        return sum(p.numel() for p in self.trainable_parameters()) if self.trains else 0

    def check_prepared(self) -> None:
        if not self._prepared:
            raise ConfigError(
                f"method {self.name!r} is used before prepare(ctx); call prepare first."
            )

    def describe(self) -> dict[str, Any]:
        """What the results file records about this method's configuration."""
        return {"name": self.name, "trains": self.trains}


class HFLogits:
    """Wraps a plain HF causal LM so it is called like a bridge: ``m(ids, attention_mask=, return_type=)``.

    ``params``, when given, is called on every forward for tensors that stand in for some of the model's
    parameters (by name) during that forward only (``torch.func.functional_call``): the model object is
    never changed, so there is nothing to undo.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        self.model = model
        self.params = params

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_type: str = "logits",
    ) -> torch.Tensor:
        if return_type != "logits":
            raise ConfigError(f"only return_type='logits' is supported, got {return_type!r}.")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.params is None:
            return self.model(**inputs).logits
        return torch.func.functional_call(self.model, dict(self.params()), (), inputs).logits


def clean_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A deep copy in eval mode with every parameter frozen (exports never touch the caller's model)."""
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def decoder_linears(
    model: nn.Module,
    *,
    layers: Sequence[int] | None = None,
    names: Collection[str] | None = None,
) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules inside the decoder layers of a clean HF model, by full module name.

    ``layers``: only those layer indices; ``names``: only modules whose last name part is listed
    (``q_proj``, ``down_proj``, ...). Default: every linear layer of every decoder layer.
    """
    from lcc_lens.pruning import find_decoder_layers

    prefix, blocks = find_decoder_layers(model)
    chosen = range(len(blocks)) if layers is None else layers
    out: dict[str, nn.Linear] = {}
    for i in chosen:
        for name, module in blocks[i].named_modules():
            if isinstance(module, nn.Linear) and (names is None or name.rsplit(".")[-1] in names):
                out[f"{prefix}.{i}.{name}"] = module
    return out


def forward_hook_context(
    hooks: list[tuple[nn.Module, Callable[..., Any]]],
) -> contextlib.AbstractContextManager[None]:
    """Register torch forward hooks for the block and always remove them."""

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        handles = []
        try:
            for module, fn in hooks:
                handles.append(module.register_forward_hook(fn))
            yield
        finally:
            for h in handles:
                h.remove()

    return ctx()
