"""Hook names and the one way lcc_lens reads head outputs: capturing hook_z at chosen positions.

TransformerLens names the per-head attention output before W_O ``blocks.{layer}.attn.hook_z``, shaped
[batch, pos, n_heads, d_head] (one slot per query head, also under grouped-query attention). Every module that
reads or writes head outputs (diff, probing, selection, compensation, logit lens) takes the names from here,
binds the layer when it builds a hook (no parsing of ``hook.name``), and adds hooks only through
:func:`temporary_hooks`, which always removes them, also when the forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lcc_lens.errors import ConfigError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HOOK_Z = "blocks.{layer}.attn.hook_z"
"""Template of the head-output hook name; ``HOOK_Z.format(layer=l)``."""
FINAL_NORM_IN = "ln_final.hook_in"
"""The residual stream entering the final norm."""

HookFn = Callable[..., Tensor | None]
"""A TransformerLens hook: ``fn(tensor, *, hook) -> tensor or None``."""


def hook_z_name(layer: int) -> str:
    """The hook name of head outputs before W_O in ``layer``."""
    return HOOK_Z.format(layer=layer)


def per_layer_hooks(
    make: Callable[[int], HookFn], layers: Sequence[int], name: Callable[[int], str] = hook_z_name
) -> list[tuple[str, HookFn]]:
    """``(name(layer), make(layer))`` for each layer: the hook knows its layer without parsing names."""
    return [(name(layer), make(layer)) for layer in layers]


@contextlib.contextmanager
def temporary_hooks(
    bridge: TransformerBridge,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    bwd_hooks: Sequence[tuple[str, HookFn]] = (),
) -> Iterator[TransformerBridge]:
    """Add hooks for the duration of the block; they are removed on exit, also on an exception."""
    known = bridge.hook_dict
    missing = [n for n, _ in (*fwd_hooks, *bwd_hooks) if n not in known]
    if missing:
        raise ConfigError(
            f"the model has no hook point(s) {missing}; lcc_lens reads attention heads at "
            f"{HOOK_Z!r}, which TransformerLens provides for supported architectures."
        )
    with bridge.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks)):
        yield bridge


def last_token_positions(attn: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """The last non-padding token of each right-padded row."""
    sel = torch.zeros(attn.shape, dtype=torch.bool, device=attn.device)
    last = attn.sum(dim=1) - 1
    sel[torch.arange(attn.shape[0], device=attn.device), last] = True
    return sel


class _StopForward(Exception):
    """Raised by the last capturing hook: nothing after the last hooked layer's hook_z is needed."""


@torch.no_grad()
def capture_z(
    bridge: TransformerBridge,
    ids: Int[Tensor, "batch pos"],
    attn: Int[Tensor, "batch pos"],
    positions: Bool[Tensor, "batch pos"],
    *,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "n_layers n_sel n_heads d_head"]:
    """hook_z of the chosen layers (default: all) at the selected positions, from one partial forward.

    Rows follow ``positions.nonzero()`` order (prompt by prompt, then token by token), so
    ``positions.sum(1)`` splits them per prompt; the result is fp32 on the model's device. Each hook copies
    only the selected rows straight into one preallocated output, and the forward stops at the last
    chosen layer's hook_z: the rest of that layer, later layers, the final norm and the unembedding (a
    large share of a small model's compute) never run. Hooks already attached (e.g. a compensation)
    apply as usual.
    """
    cfg = bridge.cfg
    chosen = list(range(int(cfg.n_layers))) if layers is None else sorted(set(layers))
    if not chosen:
        raise ConfigError("capture_z needs at least one layer.")
    flat = positions.reshape(-1).nonzero().squeeze(1).to(ids.device)
    out = torch.empty(
        len(chosen), flat.numel(), int(cfg.n_heads), int(cfg.d_head), device=ids.device
    )
    fired = [False] * len(chosen)
    last_slot = len(chosen) - 1

    def make(slot: int) -> HookFn:
        def grab(z: Tensor, *, hook: Any) -> None:
            rows = z.reshape(-1, z.shape[-2], z.shape[-1])
            if rows.dtype == out.dtype:
                torch.index_select(rows, 0, flat, out=out[slot])
            else:
                out[slot].copy_(rows.index_select(0, flat))
            fired[slot] = True
            if slot == last_slot:
                raise _StopForward

        return grab

    hooks = [(hook_z_name(layer), make(slot)) for slot, layer in enumerate(chosen)]
    with contextlib.suppress(_StopForward), temporary_hooks(bridge, hooks):
        bridge(ids, attention_mask=attn, return_type=None)
    if not all(fired):
        missing = [chosen[s] for s, ok in enumerate(fired) if not ok]
        raise RuntimeError(f"hook_z did not fire for layers {missing}")
    return out


__all__ = [
    "FINAL_NORM_IN",
    "HOOK_Z",
    "HookFn",
    "capture_z",
    "hook_z_name",
    "last_token_positions",
    "per_layer_hooks",
    "temporary_hooks",
]
