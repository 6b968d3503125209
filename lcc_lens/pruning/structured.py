"""Structured pruning of whole attention heads and MLP channels, FLAP-style (An et al., 2024).

Scores ("fluctuation"): an input channel j of o_proj / down_proj is scored by the sample variance of its
activation over the calibration tokens times the squared norm of the weight column it feeds,
``Var(x_j) * ||W[:, j]||^2``: the variance its removal would add to the layer output. A head's score is the
sum over its d_head channels. Removing a channel replaces it by its mean, so its mean contribution
``W[:, removed] @ E[x_removed]`` is added to the output bias (FLAP's training-free bias compensation).

Ratios: ``uniform`` removes the same fraction of heads and of channels in every layer (pruning each layer
as the calibration sweep reaches it); ``adaptive`` standardises head scores and channel scores across all
layers, as FLAP does, and removes the lowest units under one global threshold until the requested share of
the heads' and channels' parameters is gone (scored in one dense sweep, then applied).

Modes: ``mask`` zeroes the pruned heads' q rows and o_proj columns (and k/v rows of a fully pruned kv
group) and the pruned channels' gate/up rows and down_proj column: shapes stay, so the model pairs head by
head with its dense parent. ``remove`` slices them out; since a transformers config holds one head count and
one intermediate_size for all layers, it needs uniform ratios, and under grouped-query attention it removes
the same number of query heads from every kv group (keeping the grouping valid), so the achievable head
fraction is a multiple of 1/group_size.

Supported layouts: Llama-style decoder layers (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``):
Llama, Mistral, Qwen2, Qwen3. Bias compensation needs an output bias the config can express: Llama
(``attention_bias``/``mlp_bias``) and Qwen3 attention; elsewhere it is skipped with a warning.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from lcc_lens.errors import ConfigError
from lcc_lens.pruning.masks import n_to_prune

logger = logging.getLogger(__name__)


@dataclass
class Block:
    """The linear layers of one Llama-style decoder layer and its attention geometry."""

    prefix: str
    attn: nn.Module
    mlp: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    n_heads: int
    n_kv: int
    d_head: int

    @property
    def o_name(self) -> str:
        return f"{self.prefix}.self_attn.o_proj"

    @property
    def down_name(self) -> str:
        return f"{self.prefix}.mlp.down_proj"

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv


def block_of(layer: nn.Module, prefix: str) -> Block:
    """Find the Llama-style projections of a decoder layer or raise a clear error."""
    attn = getattr(layer, "self_attn", None)
    mlp = getattr(layer, "mlp", None)
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    mlp_names = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    found: dict[str, nn.Module] = {}
    if attn is not None and mlp is not None:
        for key, name in names.items():
            found[key] = getattr(attn, name, None)
        for key, name in mlp_names.items():
            found[key] = getattr(mlp, name, None)
    if attn is None or mlp is None or not all(isinstance(m, nn.Linear) for m in found.values()):
        raise ConfigError(
            f"structured pruning (flap) supports Llama-style decoder layers with self_attn.q/k/v/o_proj and "
            f"mlp.gate/up/down_proj (Llama, Mistral, Qwen2, Qwen3); {type(layer).__name__} at {prefix} has "
            "another layout. Use an unstructured method (magnitude, wanda, sparsegpt) for this model."
        )
    d_head = int(getattr(attn, "head_dim", 0) or 0)
    if d_head <= 0:
        raise ConfigError(
            f"cannot read head_dim of {prefix}.self_attn; structured pruning needs it."
        )
    n_heads = found["q"].out_features // d_head
    n_kv = found["k"].out_features // d_head
    return Block(prefix, attn, mlp, n_heads=n_heads, n_kv=n_kv, d_head=d_head, **found)  # type: ignore[arg-type]


def head_scores(
    o_weight: Float[Tensor, "d_model heads_x_dhead"],
    variance: Float[Tensor, " heads_x_dhead"],
    d_head: int,
) -> Float[Tensor, " n_heads"]:
    """FLAP fluctuation of each head: sum over its channels of Var(z_j) * ||W_O[:, j]||^2."""
    per_channel = variance.float() * o_weight.float().pow(2).sum(0)
    return per_channel.view(-1, d_head).sum(1)


def channel_scores(
    down_weight: Float[Tensor, "d_model d_mlp"], variance: Float[Tensor, " d_mlp"]
) -> Float[Tensor, " d_mlp"]:
    """FLAP fluctuation of each MLP channel: Var(a_j) * ||W_down[:, j]||^2."""
    return variance.float() * down_weight.float().pow(2).sum(0)


def uniform_heads(scores: Tensor, ratio: float, block: Block, remove: bool) -> list[int]:
    """Heads to prune in one layer: the lowest ``ratio`` of heads, at least one kept.

    In ``remove`` mode under grouped-query attention, the same number is taken from every kv group.
    """
    if remove and block.group_size > 1:
        per_group = min(n_to_prune(block.group_size, ratio), block.group_size - 1)
        out: list[int] = []
        for g in range(block.n_kv):
            ids = torch.arange(g * block.group_size, (g + 1) * block.group_size)
            order = torch.argsort(scores[ids], stable=True)[:per_group]
            out.extend(int(ids[j]) for j in order)
        return sorted(out)
    k = min(n_to_prune(block.n_heads, ratio), block.n_heads - 1)
    return sorted(int(j) for j in torch.argsort(scores, stable=True)[:k])


def uniform_channels(scores: Tensor, ratio: float) -> list[int]:
    """The lowest ``ratio`` of MLP channels, at least one kept."""
    k = min(n_to_prune(scores.numel(), ratio), scores.numel() - 1)
    return sorted(int(j) for j in torch.argsort(scores, stable=True)[:k])


def adaptive_selection(
    head_sc: list[Tensor | None],
    chan_sc: list[Tensor | None],
    ratio: float,
    head_cost: int,
    chan_cost: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """FLAP's global structure search: standardise each kind across layers, remove lowest first.

    Units are removed in increasing standardised score until ``ratio`` of the candidate parameters
    (heads' q rows + o columns, channels' gate/up rows + down column) is gone; a layer keeps at least
    one head and one channel.
    """

    def standardise(scores: list[Tensor | None]) -> list[Tensor | None]:
        present = [s for s in scores if s is not None]
        if not present:
            return scores
        cat = torch.cat(present)
        mean, std = cat.mean(), cat.std().clamp_min(1e-12)
        return [None if s is None else (s - mean) / std for s in scores]

    hz, cz = standardise(head_sc), standardise(chan_sc)
    units: list[tuple[float, int, int, int]] = []  # (z, kind, layer, index)
    total = 0
    for kind, zs, cost in ((0, hz, head_cost), (1, cz, chan_cost)):
        for layer, z in enumerate(zs):
            if z is None:
                continue
            total += cost * z.numel()
            units.extend((float(v), kind, layer, j) for j, v in enumerate(z.tolist()))
    units.sort()
    target = ratio * total
    heads: list[list[int]] = [[] for _ in head_sc]
    chans: list[list[int]] = [[] for _ in chan_sc]
    removed = 0
    for _z, kind, layer, j in units:
        if removed >= target:
            break
        bucket, scores, cost = (
            (heads, head_sc, head_cost) if kind == 0 else (chans, chan_sc, chan_cost)
        )
        size = scores[layer].numel()  # type: ignore[union-attr]
        if len(bucket[layer]) + 1 >= size:
            continue
        bucket[layer].append(j)
        removed += cost
    return [sorted(h) for h in heads], [sorted(c) for c in chans]


def enable_output_biases(model: nn.Module, layers: nn.ModuleList) -> tuple[bool, bool]:
    """Give o_proj / down_proj a bias where the architecture's config can express one.

    Sets ``attention_bias`` / ``mlp_bias`` on the config and adds zero biases to every linear layer the
    flag switches on (q/k/v/o or gate/up/down), so the output is unchanged and the checkpoint reloads.
    Returns whether attention and MLP compensation are possible.
    """
    first = layers[0]
    attn_has = first.self_attn.o_proj.bias is not None
    mlp_has = first.mlp.down_proj.bias is not None
    if attn_has and mlp_has:
        return True, True
    cfg = copy.deepcopy(model.config)
    flags = [f for f in ("attention_bias", "mlp_bias") if hasattr(cfg, f)]
    for flag in flags:
        setattr(cfg, flag, True)
    try:
        with torch.device("meta"):
            probe = type(first)(cfg, 0)
    except Exception as exc:  # an unusual constructor: fall back to what the model already has
        logger.warning("cannot probe %s for bias support (%s)", type(first).__name__, exc)
        return attn_has, mlp_has
    attn_can = probe.self_attn.o_proj.bias is not None
    mlp_can = probe.mlp.down_proj.bias is not None
    for part, can, has, flag in (
        ("self_attn", attn_can, attn_has, "attention_bias"),
        ("mlp", mlp_can, mlp_has, "mlp_bias"),
    ):
        if not can or has:
            continue
        setattr(model.config, flag, True)
        wanted = {
            n
            for n, m in getattr(probe, part).named_modules()
            if isinstance(m, nn.Linear) and m.bias is not None
        }
        for layer in layers:
            for name, module in getattr(layer, part).named_modules():
                if name in wanted and module.bias is None:
                    w = module.weight
                    module.bias = nn.Parameter(
                        torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
                    )
    return attn_can, mlp_can


def _head_cols(block: Block, heads: list[int]) -> Tensor:
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * block.d_head, (h + 1) * block.d_head) for h in heads])


def _dead_kv_groups(block: Block, heads: list[int]) -> list[int]:
    removed = set(heads)
    g = block.group_size
    return [k for k in range(block.n_kv) if all(h in removed for h in range(k * g, (k + 1) * g))]


def compensate(linear: nn.Linear, cols: Tensor, mean: Tensor) -> None:
    """Add the removed inputs' mean contribution W[:, cols] @ E[x_cols] to the layer's bias."""
    if linear.bias is None or cols.numel() == 0:
        return
    w = linear.weight.data
    delta = w[:, cols].float() @ mean[cols].float().to(w.device)
    linear.bias.data += delta.to(linear.bias.dtype)


def _zero_rows(linear: nn.Linear, rows: Tensor) -> None:
    linear.weight.data[rows] = 0
    if linear.bias is not None:
        linear.bias.data[rows] = 0


def mask_block(block: Block, heads: list[int], channels: list[int]) -> None:
    """Zero pruned heads (q rows, o columns, k/v rows of fully pruned groups) and channels in place."""
    cols = _head_cols(block, heads)
    if cols.numel():
        _zero_rows(block.q, cols)
        block.o.weight.data[:, cols] = 0
        for g in _dead_kv_groups(block, heads):
            kv = torch.arange(g * block.d_head, (g + 1) * block.d_head)
            _zero_rows(block.k, kv)
            _zero_rows(block.v, kv)
    if channels:
        ch = torch.tensor(channels, dtype=torch.long)
        _zero_rows(block.gate, ch)
        _zero_rows(block.up, ch)
        block.down.weight.data[:, ch] = 0


def _keep_rows(linear: nn.Linear, keep: Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[keep].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[keep].clone())
    linear.out_features = int(keep.numel())


def _keep_cols(linear: nn.Linear, keep: Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, keep].clone())
    linear.in_features = int(keep.numel())


def remove_block(block: Block, heads: list[int], channels: list[int]) -> None:
    """Slice pruned heads and channels out of the layer (shapes shrink)."""
    if heads:
        dead_groups = _dead_kv_groups(block, heads)
        cols = _head_cols(block, heads)
        keep = torch.tensor(
            [c for c in range(block.n_heads * block.d_head) if c not in set(cols.tolist())]
        )
        _keep_rows(block.q, keep)
        _keep_cols(block.o, keep)
        if dead_groups:
            kv_keep = torch.tensor(
                [
                    c
                    for c in range(block.n_kv * block.d_head)
                    if c // block.d_head not in dead_groups
                ]
            )
            _keep_rows(block.k, kv_keep)
            _keep_rows(block.v, kv_keep)
        new_heads = block.n_heads - len(heads)
        new_kv = block.n_kv - len(dead_groups)
        if hasattr(block.attn, "num_key_value_groups"):
            block.attn.num_key_value_groups = new_heads // new_kv
        for attr in ("num_heads", "num_attention_heads"):
            if hasattr(block.attn, attr):
                setattr(block.attn, attr, new_heads)
        if hasattr(block.attn, "num_key_value_heads"):
            block.attn.num_key_value_heads = new_kv
    if channels:
        removed = set(channels)
        keep = torch.tensor([c for c in range(block.down.in_features) if c not in removed])
        _keep_rows(block.gate, keep)
        _keep_rows(block.up, keep)
        _keep_cols(block.down, keep)
        if hasattr(block.mlp, "intermediate_size"):
            block.mlp.intermediate_size = int(keep.numel())


def apply_structure(
    block: Block,
    heads: list[int],
    channels: list[int],
    *,
    attn_mean: Tensor | None,
    mlp_mean: Tensor | None,
    mode: str,
) -> None:
    """Compensate the removed units' mean into the output biases (when given), then mask or remove them."""
    if attn_mean is not None:
        compensate(block.o, _head_cols(block, heads), attn_mean)
    if mlp_mean is not None and channels:
        compensate(block.down, torch.tensor(channels, dtype=torch.long), mlp_mean)
    if mode == "remove":
        remove_block(block, heads, channels)
    else:
        mask_block(block, heads, channels)


def update_config_after_removal(model: nn.Module, blocks: list[Block]) -> None:
    """Write the (uniform) new head counts and intermediate size into the model's config."""
    first = blocks[0]
    heads = {b.q.out_features // b.d_head for b in blocks}
    kvs = {b.k.out_features // b.d_head for b in blocks}
    inter = {b.down.in_features for b in blocks}
    if len(heads) != 1 or len(kvs) != 1 or len(inter) != 1:
        raise ConfigError(
            "structured removal left layers with different shapes, which a transformers config cannot "
            "express; use --structured-mode mask or prune every layer uniformly."
        )
    cfg = model.config
    cfg.head_dim = first.d_head
    cfg.num_attention_heads = heads.pop()
    cfg.num_key_value_heads = kvs.pop()
    cfg.intermediate_size = inter.pop()
