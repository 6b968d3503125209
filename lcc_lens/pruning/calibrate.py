"""The layer-by-layer calibration driver shared by Wanda, SparseGPT and FLAP.

The inputs of the first decoder layer are captured once (embeddings, positions, attention mask and any
other keyword the model passes; for models whose layers differ in kind, each layer's own arguments). Then for each decoder layer in order: hooks on its linear layers gather
input statistics while the calibration batches run through that layer only, the layer is pruned, and the
batches are run through the pruned layer again to become the next layer's inputs. Only one layer's
statistics live at a time, so peak memory is about one model copy plus one layer's activations.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from lcc_lens.errors import ConfigError
from lcc_lens.progress import progress
from lcc_lens.pruning.masks import is_prunable_linear

logger = logging.getLogger(__name__)

_LAYER_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "layers",
)


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(prefix, layers)`` of a causal LM's stack of decoder layers.

    Known layouts first (``model.layers`` for Llama/Qwen/Mistral, ``transformer.h`` for GPT-2), then any
    ModuleList whose length is the config's ``num_hidden_layers``.
    """
    for path in _LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path, obj
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and n_layers and len(module) == n_layers:
            return name, module
    raise ConfigError(
        f"cannot find the decoder layers of {type(model).__name__}: expected a list of blocks at "
        f"{' or '.join(_LAYER_PATHS[:2])}. Pass a Hugging Face causal LM with a standard decoder stack "
        "(Llama, Qwen, Mistral, GPT-2 layouts)."
    )


def select_linear_modules(
    layer: nn.Module, prefix: str, include: str, exclude: str | None
) -> dict[str, nn.Module]:
    """The linear layers of one decoder layer whose full names match ``include`` and not ``exclude``."""
    out: dict[str, nn.Module] = {}
    for name, module in layer.named_modules():
        if not name or not is_prunable_linear(module):
            continue
        full = f"{prefix}.{name}"
        if re.search(include, full) and not (exclude and re.search(exclude, full)):
            out[full] = module
    return out


class InputStats:
    """Running statistics of one linear layer's inputs over the calibration tokens (float32/64 sums)."""

    def __init__(self, dim: int, *, sq: bool = False, hessian: bool = False, moments: bool = False):
        self.dim = dim
        self.n_tokens = 0
        self.sq_sum: Tensor | None = None  # sum_t x_t^2 (Wanda's squared column norms)
        self.xxt: Tensor | None = None  # sum_t x_t x_t^T (SparseGPT's Hessian, unnormalised)
        self.sum: Tensor | None = None  # sum_t x_t (FLAP's means)
        self._want = (sq or moments, hessian, moments)

    def update(self, x: Float[Tensor, "... dim"]) -> None:
        x = x.detach().reshape(-1, self.dim)
        want_sq, want_h, want_mean = self._want
        self.n_tokens += x.shape[0]
        if want_sq:
            s = x.double().pow(2).sum(0)
            self.sq_sum = s if self.sq_sum is None else self.sq_sum + s
        if want_mean:
            m = x.double().sum(0)
            self.sum = m if self.sum is None else self.sum + m
        if want_h:
            xf = x.float()
            h = xf.t() @ xf
            self.xxt = h if self.xxt is None else self.xxt.add_(h)

    @property
    def column_norms(self) -> Float[Tensor, " dim"]:
        """||X_j||_2 over all calibration tokens."""
        assert self.sq_sum is not None
        return self.sq_sum.sqrt().float()

    @property
    def hessian(self) -> Float[Tensor, "dim dim"]:
        """X X^T / n_tokens (the scale does not change SparseGPT's solution, only its damping base)."""
        assert self.xxt is not None
        return self.xxt / max(self.n_tokens, 1)

    @property
    def mean(self) -> Float[Tensor, " dim"]:
        assert self.sum is not None
        return (self.sum / max(self.n_tokens, 1)).float()

    @property
    def variance(self) -> Float[Tensor, " dim"]:
        """Sample variance of each input channel (FLAP's fluctuation)."""
        assert self.sum is not None and self.sq_sum is not None
        n = max(self.n_tokens, 2)
        mean = self.sum / n
        return ((self.sq_sum - n * mean.pow(2)) / (n - 1)).clamp_min(0).float()


StatSpec = dict[str, bool]
"""Keyword flags for :class:`InputStats` (sq, hessian, moments)."""


@dataclass
class LayerInput:
    """One calibration batch as the decoder layers receive it.

    ``args``/``kwargs`` are the first layer's call arguments besides the hidden states. Models whose
    layers differ in kind (``config.layer_types``: sliding-window and global attention, each with its
    own mask and rotary embeddings, as in Gemma 2/3) also carry ``per_layer[i] = (args, kwargs)``;
    :func:`layer_forward` uses layer ``i``'s own arguments then.
    """

    hidden: Tensor
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    per_layer: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    def call_args(self, index: int | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of layer ``index`` (the first layer's when not recorded per layer)."""
        if index is not None and index in self.per_layer:
            return self.per_layer[index]
        return self.args, self.kwargs


class _Captured(Exception):
    pass


def _split_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, tuple, dict]:
    kwargs = dict(kwargs)
    if args:
        return args[0], tuple(args[1:]), kwargs
    return kwargs.pop("hidden_states"), (), kwargs


def layers_differ(model: nn.Module) -> bool:
    """Whether the model's decoder layers are called with different arguments by kind."""
    kinds = getattr(getattr(model, "config", None), "layer_types", None)
    return bool(kinds) and len(set(kinds)) > 1


def capture_layer_inputs(
    model: nn.Module,
    first_layer: nn.Module,
    tokens: Int[Tensor, "n seq"],
    batch_size: int,
    layers: nn.ModuleList | None = None,
) -> list[LayerInput]:
    """Run the model up to its first decoder layer on every batch; keep that layer's call arguments.

    With ``layers`` given and layers of several kinds (:func:`layers_differ`), the model runs up to its
    last layer instead and every layer's own call arguments are kept (tensors shared, not copied).
    """
    device = next(model.parameters()).device
    captured: list[LayerInput] = []
    per_layer = layers is not None and layers_differ(model)
    hooked = list(layers) if per_layer and layers is not None else [first_layer]
    current: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def make_hook(index: int) -> Callable[..., None]:
        def pre_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden, rest, kw = _split_call(args, kwargs)
            if index == 0:
                captured.append(LayerInput(hidden.detach(), rest, kw))
            if per_layer:
                current[index] = (rest, kw)
            if index == len(hooked) - 1:
                raise _Captured

        return pre_hook

    handles = [
        layer.register_forward_pre_hook(make_hook(i), with_kwargs=True)
        for i, layer in enumerate(hooked)
    ]
    try:
        for i in range(0, tokens.shape[0], batch_size):
            ids = tokens[i : i + batch_size].to(device)
            current = {}
            with contextlib.suppress(_Captured):
                model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            if per_layer and captured:
                captured[-1].per_layer = dict(current)
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != (tokens.shape[0] + batch_size - 1) // batch_size:
        raise ConfigError(
            f"{type(model).__name__} did not call its first decoder layer on every batch; this layout "
            "is not supported for calibrated pruning."
        )
    return captured


def layer_forward(layer: nn.Module, inp: LayerInput, index: int | None = None) -> Tensor:
    """Run decoder layer ``index`` on one captured batch; return its hidden-state output."""
    args, kwargs = inp.call_args(index)
    out = layer(inp.hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple | list) else out


@contextlib.contextmanager
def collect_input_stats(
    modules: dict[str, nn.Module], specs: dict[str, StatSpec]
) -> Iterator[dict[str, InputStats]]:
    """Hook ``modules`` and accumulate their input statistics; hooks are always removed.

    Modules fed the very same tensor (q/k/v, gate/up) share one statistics object, computed once.
    """
    stats: dict[str, InputStats] = {}
    followers: set[str] = set()
    seen: dict[int, tuple[Tensor, str]] = {}  # id(input) -> (input kept alive, leading module)
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
            x = inputs[0]
            if name not in stats:
                hit = seen.get(id(x))
                if hit is not None and hit[0] is x and specs[hit[1]] == specs[name]:
                    stats[name] = stats[hit[1]]
                    followers.add(name)
                    return
                stats[name] = InputStats(x.shape[-1], **specs[name])
                seen[id(x)] = (x, name)
            if name in followers:
                return
            stats[name].update(x)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield stats
    finally:
        for h in handles:
            h.remove()
        seen.clear()


def move_inputs(inputs: list[LayerInput], device: torch.device) -> None:
    """Move every tensor of the captured batches to ``device`` (shared tensors stay shared)."""
    moved: dict[int, Any] = {}

    def to(obj: Any) -> Any:
        if isinstance(obj, Tensor):
            if id(obj) not in moved:
                moved[id(obj)] = obj.to(device)
            return moved[id(obj)]
        if isinstance(obj, tuple):
            return tuple(to(o) for o in obj)
        if isinstance(obj, list):
            return [to(o) for o in obj]
        if isinstance(obj, dict):
            return {k: to(v) for k, v in obj.items()}
        return obj

    for inp in inputs:
        inp.hidden = to(inp.hidden)
        inp.args, inp.kwargs = to(inp.args), to(inp.kwargs)
        inp.per_layer = {i: (to(a), to(k)) for i, (a, k) in inp.per_layer.items()}


def run_layerwise(
    layers: nn.ModuleList,
    inputs: list[LayerInput],
    modules_of: Callable[[int], dict[str, nn.Module]],
    specs_of: Callable[[int, dict[str, nn.Module]], dict[str, StatSpec]],
    process: Callable[[int, dict[str, nn.Module], dict[str, InputStats]], None],
    *,
    desc: str = "pruning",
    show_progress: bool = True,
    device: torch.device | None = None,
) -> None:
    """Calibrate and process each decoder layer in order, feeding it the already-processed layers' outputs.

    ``modules_of(i)`` names the modules to hook in layer ``i``; ``specs_of`` says which statistics each
    needs; ``process(i, modules, stats)`` prunes the layer in place. ``inputs`` is consumed. With
    ``device``, the inputs live there and each layer is moved there for its turn and back afterwards,
    so only one decoder layer occupies the device at a time.
    """
    if device is not None:
        move_inputs(inputs, device)
    bar = progress(range(len(layers)), desc=desc, unit="layer", enabled=show_progress)
    for i in bar:
        layer = layers[i]
        home = _device_of(layer)
        if device is not None:
            layer.to(device)
        modules = modules_of(i)
        specs = specs_of(i, modules)
        if specs:
            with collect_input_stats({n: modules[n] for n in specs}, specs) as stats:
                for inp in inputs:
                    layer_forward(layer, inp, i)
            process(i, modules, stats)
            del stats
        else:
            process(i, modules, {})
        if i + 1 < len(layers):
            for inp in inputs:
                inp.hidden = layer_forward(layer, inp, i)
        if device is not None and home is not None:
            layer.to(home)
    bar.close()


def _device_of(module: nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    return None
