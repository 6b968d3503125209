"""Methods that restore by replacing some tensors of the pruned model: one mechanism for training and merge.

An :class:`OverrideMethod` owns its trainable tensors and says, for a frozen Hugging Face model, which of its
parameters it replaces and by what (:meth:`OverrideMethod.replaced`, a function of the frozen tensors). The
attached model runs the frozen model with those tensors standing in for its own during each forward
(``torch.func.functional_call``): the model object is never modified, so detaching has nothing to undo and
the pruned model the benchmark shares is used without a copy. The export writes exactly the same tensors
into a copy of the pruned model, so the attached model and the merged checkpoint compute the same function
by construction (the invariant tests check it to 1e-4 in fp32).

As peft's adapters (``peft_adapters``), these methods run on the clean HF pruned model, not on the bridge
(whose ``LinearBridge`` modules wrap the same weights); the training loop, data and objective are shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lcc_lens.errors import DivergedError, ExportError
from lcc_lens.methods.base import HFLogits, RestorationMethod, clean_copy

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext


def module_key(name: str) -> str:
    """A parameter or module name as a submodule / buffer key (``torch`` forbids dots in keys)."""
    return name.replace(".", ":")


def norm_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter of every normalisation module (RMSNorm gains, LayerNorm weight and bias), by name."""
    out: dict[str, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            for p_name, p in module.named_parameters(recurse=False):
                out[f"{mod_name}.{p_name}"] = p
    return out


def trainable_copies(tensors: Mapping[str, Tensor]) -> nn.ParameterDict:
    """fp32 trainable copies of ``tensors`` (keys made dot-free with :func:`module_key`)."""
    return nn.ParameterDict(
        {module_key(n): nn.Parameter(t.detach().float().clone()) for n, t in tensors.items()}
    )


class OverrideMethod(RestorationMethod):
    """Base of the tensor-replacing methods; subclasses implement ``build`` and ``replaced``."""

    def __init__(self) -> None:
        super().__init__()
        # the frozen model the tensors replace into: held outside the module tree (it is shared and
        # frozen, not this method's state), so parameters() and state_dict() are the method's own
        self._frozen: list[PreTrainedModel] = []

    # ---- what subclasses implement ------------------------------------------------------------
    def frozen_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """The model whose tensors are replaced, made from the clean pruned ``model`` without modifying
        it. Default: ``model`` itself (replacement never modifies it)."""
        return model

    def build(self, model: PreTrainedModel, ctx: MethodContext) -> None:
        """Create the trainable tensors (and fixed buffers) for ``model``, the frozen model."""
        raise NotImplementedError

    def replaced(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """New values of some of the frozen model's parameters (``params``: its parameters by name)."""
        raise NotImplementedError

    def check_fits(self, params: Mapping[str, Tensor]) -> None:
        """Refuse a model this method cannot merge into (default: anything with the replaced names)."""

    def settle(self) -> None:
        """Bring the trainable tensors to a valid state before use (default: nothing to do)."""

    # ---- the interface ------------------------------------------------------------------------
    def prepare(self, ctx: MethodContext) -> None:
        model = self.frozen_model(ctx.pruned_model())
        self.build(model, ctx)
        self.to(next(model.parameters()).device)
        self._frozen = [model]
        self._prepared = True

    def _substitutes(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``replaced(params)`` in each parameter's dtype, checked against the names and shapes."""
        out = {}
        for name, value in self.replaced(params).items():
            old = params.get(name)
            if old is None or old.shape != value.shape:
                raise ExportError(
                    f"{self.name}: the model has no parameter {name} of shape {tuple(value.shape)}; "
                    "merge into the pruned model this method was prepared on."
                )
            out[name] = value.to(device=old.device, dtype=old.dtype)
        return out

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        """Yield the frozen HF model run with this method's tensors (the bridge is not used)."""
        self.check_prepared()
        self.settle()
        model = self._frozen[0]
        params = dict(model.named_parameters())
        yield HFLogits(model, params=lambda: self._substitutes(params))

    @torch.no_grad()
    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        """A copy of ``model`` holding the replaced tensors (refused if any is NaN or inf)."""
        self.check_prepared()
        self.settle()
        out = self.frozen_model(model)
        if out is model:
            out = clean_copy(model)
        params = dict(out.named_parameters())
        self.check_fits(params)
        for name, value in self._substitutes(params).items():
            if not torch.isfinite(value).all():
                raise DivergedError(f"{self.name}: {name} holds NaN or inf after training.")
            params[name].copy_(value)
        return out.eval()
