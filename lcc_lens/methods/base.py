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
from collections.abc import Callable, Iterator
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
    """Wraps a plain HF causal LM so it is called like a bridge: ``m(ids, attention_mask=, return_type=)``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_type: str = "logits",
    ) -> torch.Tensor:
        if return_type != "logits":
            raise ConfigError(f"only return_type='logits' is supported, got {return_type!r}.")
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def clean_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A deep copy in eval mode with every parameter frozen (exports never touch the caller's model)."""
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
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
