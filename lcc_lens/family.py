"""The LCC family: the head offsets plus other learned terms that fold exactly into a plain checkpoint.

Each component is switched on by name (``CompensationConfig.compensate`` / ``--compensate``):

* ``heads``: the per-head offsets of :class:`~lcc_lens.compensation.Compensation` at ``hook_z``
  (folded into the o_proj bias);
* ``mlp``: a d_model offset added to each layer's MLP output, folded into the down_proj bias. It needs a
  class that can hold that bias: Llama (``mlp_bias``), Mistral and Qwen2 (exported as Llama), GPT-2
  (``c_proj`` has one); Qwen3 and Gemma 3 have no MLP bias switch and are refused;
* ``norms``: a multiplicative delta on the gain of every RMSNorm / LayerNorm (g <- g (1 + d), with
  Gemma's g = 1 + w convention folded as w <- (1 + w)(1 + d) - 1);
* ``scales``: a per-head output scale (z_h <- (1 + s_h) z_h, folded into the o_proj columns of head h) and
  a per-channel scale of the down_proj input (folded into its columns).

Every term is an offset or a multiplication of an existing gain or column, so every zero of the pruned
weights stays zero, and a term starting at zero is a no-op. The head scale acts before the head offset:
z' = (1 + s) z + c. Terms act through torch hooks on the model's own modules (a bridge's wrappers run
them too, found by their Hugging Face names), so nothing is copied to train them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from lcc_lens.compensation import (
    COMPONENTS,
    FAMILY_KEY,
    Compensation,
    check_finite,
    read_compensation_file,
    write_compensation_file,
)
from lcc_lens.errors import CompensationFileError, ConfigError, ExportError
from lcc_lens.family_layout import MLP_ARCHITECTURES, FamilyLayout, by_hf_name, hf_model
from lcc_lens.hooks import per_layer_hooks, temporary_hooks
from lcc_lens.models import HeadGeometry
from lcc_lens.types import ZOffsets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.export import Route


class CompensationFamily(nn.Module):
    """The head offsets (``heads``, a :class:`Compensation`, possibly on no head) plus the other terms."""

    def __init__(
        self, heads: Compensation, layout: FamilyLayout, components: tuple[str, ...]
    ) -> None:
        super().__init__()
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown:
            raise ConfigError(f"unknown components {unknown}; choose from {list(COMPONENTS)}.")
        if "mlp" in components and not layout.mlp_bias:
            raise ConfigError(
                "--compensate mlp folds into a down_proj bias, which this architecture's class "
                f"cannot hold; it is available for {MLP_ARCHITECTURES}. Drop 'mlp' from --compensate."
            )
        self.heads = heads
        self.layout = layout
        self.components = tuple(components)
        g = heads.geometry
        n_l = g.n_layers

        def zeros(*shape: int, on: str) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape), requires_grad=on in components)

        self.head_scale = zeros(n_l, g.n_heads, on="scales")
        self.channel_scale = zeros(n_l, layout.d_mlp, on="scales")
        self.mlp_offset = zeros(n_l, layout.d_model, on="mlp")
        self.norm_gain = nn.ParameterDict(
            {_key(n): zeros(dim, on="norms") for n, _kind, dim in layout.norms}
        )
        if "heads" not in components:
            heads.requires_grad_(False)

    # ---- what the training loop and the fit read ---------------------------------------------
    @property
    def geometry(self) -> HeadGeometry:
        return self.heads.geometry

    @property
    def n_selected(self) -> int:
        return self.heads.n_selected

    def selected_heads(self) -> list[tuple[int, int]]:
        return self.heads.selected_heads()

    def z_offsets(self) -> ZOffsets:
        return self.heads.z_offsets()

    def check_finite(self) -> None:
        """Refuse NaN/inf in any term (a diverged fit) before it reaches a checkpoint."""
        check_finite(self.z_offsets().detach())
        for name, p in self.named_parameters():
            if not torch.isfinite(p.detach()).all():
                raise CompensationFileError(
                    f"compensation term {name} holds NaN or inf: the fit diverged. Lower the "
                    "learning rate or resume from an earlier checkpoint."
                )

    # ---- hooks --------------------------------------------------------------------------------
    def _module_hooks(self, model: Any) -> list[tuple[nn.Module, str, Callable[..., Any]]]:
        """(module, 'pre' or 'post', torch hook) for every term acting on a module of ``model``."""
        modules = by_hf_name(hf_model(model).named_modules())
        params = by_hf_name(hf_model(model).named_parameters())
        g, lay = self.geometry, self.layout
        out: list[tuple[nn.Module, str, Callable[..., Any]]] = []
        for layer in range(g.n_layers):
            down = _find(modules, lay.down(layer))
            if "scales" in self.components:
                out.append((down, "pre", _scale_input(lambda i=layer: self.channel_scale[i])))
            if "mlp" in self.components:
                out.append((down, "post", _add_output(lambda i=layer: self.mlp_offset[i])))
        if "norms" in self.components:
            for name, kind, _dim in lay.norms:
                bias = params.get(f"{name}.bias") if kind == "layernorm" else None
                gain = self.norm_gain[_key(name)]
                out.append((_find(modules, name), "post", _scale_norm(gain, bias)))
        return out

    def _head_scale(self, layer: int) -> Tensor:
        return self.head_scale[layer]

    @contextlib.contextmanager
    def _hooked(self, model: Any, *, plain: bool) -> Iterator[None]:
        """Every term on ``model``: the head terms at the o_proj input (plain) or at hook_z (bridge)."""
        handles = []
        self.to(next(hf_model(model).parameters()).device)
        try:
            hooks = self._module_hooks(model)
            if plain and "scales" in self.components:
                modules = by_hf_name(model.named_modules())
                d = self.geometry.d_head
                for layer in range(self.geometry.n_layers):
                    flat = _scale_input(lambda i=layer: self._head_scale(i).repeat_interleave(d))
                    hooks.insert(0, (_find(modules, self.layout.out_proj(layer)), "pre", flat))
            for module, when, fn in hooks:
                register = (
                    module.register_forward_pre_hook
                    if when == "pre"
                    else module.register_forward_hook
                )
                handles.append(register(fn))
            yield
        finally:
            for h in handles:
                h.remove()

    def _bridge_head_hooks(self) -> list[tuple[str, Any]]:
        if "scales" not in self.components:
            return []

        def make(layer: int) -> Callable[..., Tensor]:
            def scale(z: Tensor, *, hook: Any) -> Tensor:
                return _times(z, self._head_scale(layer)[:, None])

            return scale

        return per_layer_hooks(make, range(self.geometry.n_layers))

    @contextlib.contextmanager
    def attach(self, model: Any) -> Iterator[Any]:
        """Every term added to ``model`` for the block: a bridge (yields it, hook_z hooks for the head
        terms) or a plain HF model (yields a ``model(ids, return_type="logits")`` callable)."""
        from lcc_lens.twin import PlainLogits, output_pre_hooks

        if not hasattr(model, "original_model"):  # a plain Hugging Face model
            offsets = {
                lay: (lambda lay=lay: self.heads.layer_offset(lay).flatten())
                for lay in self.heads.layers()
            }
            with self._hooked(model, plain=True), output_pre_hooks(model, offsets):
                yield PlainLogits(model)
            return
        self.heads._check_model(model)
        hooks = self._bridge_head_hooks() + self.heads.fwd_hooks()
        with self._hooked(model, plain=False), temporary_hooks(model, fwd_hooks=hooks):
            yield model

    @contextlib.contextmanager
    def attach_for_training(self, bridge: Any) -> Iterator[Any]:
        """As :meth:`attach`, on the bridge's plain twin (shared weights) when it has one."""
        from lcc_lens.twin import plain_twin

        twin = plain_twin(bridge)
        with self.attach(bridge if twin is None else twin) as model:
            yield model

    @contextlib.contextmanager
    def without(self, component: str, layer: int | None = None) -> Iterator[None]:
        """Temporarily zero one component (in one layer, or everywhere): for attribution."""
        tensors = {
            "heads": [self.heads.beta, self.heads.bias],
            "mlp": [self.mlp_offset],
            "scales": [self.head_scale, self.channel_scale],
            "norms": list(self.norm_gain.values()),
        }[component]
        if component == "heads" and layer is not None:
            rows = (self.heads.heads[:, 0] == layer).nonzero().flatten()
            views = [(t, rows) for t in tensors]
        elif component == "norms" and layer is not None:
            names = [n for n, _k, _d in self.layout.norms if _layer_of(n) == layer]
            views = [(self.norm_gain[_key(n)], slice(None)) for n in names]
        else:
            views = [(t, slice(None) if layer is None else layer) for t in tensors]
        saved = [t.detach()[idx].clone() for t, idx in views]
        try:
            with torch.no_grad():
                for t, idx in views:
                    t[idx] = 0
            yield
        finally:
            with torch.no_grad():
                for (t, idx), old in zip(views, saved, strict=True):
                    t[idx] = old

    # ---- merge --------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, model: PreTrainedModel) -> tuple[PreTrainedModel, Route]:
        """A copy of the clean ``model`` with every term folded in (``model`` is not changed)."""
        from lcc_lens.export import bias_from_offsets, output_projections
        from lcc_lens.methods.bias_norm import biased_copy

        self.check_finite()
        out, route = biased_copy(model, mlp="mlp" in self.components)
        modules = by_hf_name(out.named_modules())
        offsets = self.z_offsets().detach().float().cpu()
        g, lay = self.geometry, self.layout
        for layer, proj in enumerate(output_projections(out)):
            # the offsets fold through the unscaled W_O: z' = (1 + s) z + c
            proj.module.bias.add_(bias_from_offsets(proj, offsets[layer].reshape(-1)))
            head = (1 + self.head_scale[layer].detach()).repeat_interleave(g.d_head)
            _scale_columns(proj.module.weight, head, conv1d=proj.layout == "conv1d")
            down = modules[lay.down(layer)]
            _scale_columns(down.weight, 1 + self.channel_scale[layer].detach(), conv1d=lay.gpt2)
            if "mlp" in self.components:
                if down.bias is None:
                    raise ExportError(f"{lay.down(layer)} has no bias to fold the MLP offset into.")
                down.bias.add_(self.mlp_offset[layer].detach().to(down.bias))
        for name, kind, _dim in lay.norms:
            w = modules[name].weight
            gain = 1 + self.norm_gain[_key(name)].detach().double()
            new = (1 + w.double()) * gain - 1 if kind == "one_plus" else w.double() * gain
            w.copy_(new.to(w.dtype))
        return out.eval(), route

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """One safetensors file: the head offsets as :meth:`Compensation.save` writes them, plus
        ``family.*`` tensors and the layout they act on."""
        self.check_finite()
        tensors, meta = self.heads.payload(metadata)
        meta[FAMILY_KEY] = json.dumps(list(self.components))
        meta["family_layout"] = json.dumps(asdict(self.layout))
        for name, p in self._family_tensors().items():
            tensors[name] = p.detach().float().cpu().contiguous()
        return write_compensation_file(path, tensors, meta)

    def _family_tensors(self) -> dict[str, Tensor]:
        out = {
            "family.head_scale": self.head_scale,
            "family.channel_scale": self.channel_scale,
            "family.mlp_offset": self.mlp_offset,
        }
        out.update({f"family.norm.{n}": self.norm_gain[_key(n)] for n, _k, _d in self.layout.norms})
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompensationFamily:
        """Read a file written by :meth:`save` (or a heads-only file), validating every shape."""
        tensors, meta = read_compensation_file(path)
        heads = Compensation.from_tensors(tensors, meta, path)
        if FAMILY_KEY not in meta:
            raise CompensationFileError(
                f"{path} holds head offsets only; load it with Compensation.load."
            )
        components, layout = _stored_family(meta, path)
        family = cls(heads, layout, components)
        expected = family._family_tensors()
        extra = sorted(k for k in tensors if k.startswith("family.") and k not in expected)
        for name, param in expected.items():
            stored = tensors.get(name)
            if stored is None or stored.shape != param.shape or stored.dtype != torch.float32:
                got = "missing" if stored is None else f"{tuple(stored.shape)} {stored.dtype}"
                raise CompensationFileError(
                    f"{path}: tensor {name!r} is {got}, expected float32 {tuple(param.shape)} "
                    "for the recorded layout; the file is inconsistent. Re-export it."
                )
            with torch.no_grad():
                param.copy_(stored)
        if extra:
            raise CompensationFileError(
                f"{path}: unexpected tensors {extra[:3]} for the recorded layout; re-export it."
            )
        family.check_finite()
        return family


def load_compensation(path: str | os.PathLike[str]) -> Compensation | CompensationFamily:
    """A compensation file of either kind: head offsets only, or the LCC family."""
    _tensors, meta = read_compensation_file(path)
    return CompensationFamily.load(path) if FAMILY_KEY in meta else Compensation.load(path)


def _stored_family(
    meta: dict[str, str], path: str | os.PathLike[str]
) -> tuple[tuple[str, ...], FamilyLayout]:
    try:
        components = tuple(json.loads(meta[FAMILY_KEY]))
        raw = json.loads(meta["family_layout"])
        norms = tuple((str(n), k, int(d)) for n, k, d in raw["norms"])
        layout = FamilyLayout(
            bool(raw["gpt2"]), int(raw["d_model"]), int(raw["d_mlp"]), norms, bool(raw["mlp_bias"])
        )
        if not all(isinstance(c, str) for c in components):
            raise TypeError("component names must be strings")
        if any(k not in ("gain", "one_plus", "layernorm") or d < 1 for _n, k, d in norms):
            raise ValueError("unknown norm kind or size")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CompensationFileError(
            f"{path}: corrupt LCC family metadata ({exc}); re-export the compensation."
        ) from None
    return components, layout


def _find(modules: dict[str, nn.Module], name: str) -> nn.Module:
    module = modules.get(name)
    if module is None:
        raise ConfigError(
            f"the model has no module {name}; this compensation was fitted on another layout."
        )
    return module


def _key(name: str) -> str:
    return name.replace(".", ":")


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def _scale_input(scale: Callable[[], Tensor]) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> Any:
        x = args[0]
        return (_times(x, scale()), *args[1:])

    return hook


def _times(x: Tensor, delta: Tensor) -> Tensor:
    """x (1 + delta), computed in fp32 (a small delta would vanish in 1 + delta in bf16) and cast back."""
    return (x.float() * (1 + delta.float().to(x.device))).to(x.dtype)


def _add_output(offset: Callable[[], Tensor]) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        return out + offset().to(device=out.device, dtype=out.dtype)

    return hook


def _scale_norm(gain: Tensor, bias: Tensor | None) -> Callable[..., Any]:
    """g -> g (1 + d) on a norm's output: out (1 + d), less the bias's share for a LayerNorm."""

    def hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        if bias is None:
            return _times(out, gain)
        b = bias.to(out)
        return b + _times(out - b, gain)

    return hook


def _scale_columns(
    weight: Float[Tensor, "..."], factor: Float[Tensor, " n_in"], *, conv1d: bool
) -> None:
    """weight <- weight scaled along its input axis (columns of a Linear, rows of a Conv1D), in fp64."""
    f = factor.double().to(weight.device)
    new = weight.double() * (f[:, None] if conv1d else f[None, :])
    weight.copy_(new.to(weight.dtype))
