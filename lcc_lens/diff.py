"""Per-head activation differences between a dense and a pruned model, streamed at hook_z only.

For each prompt both models run on the same tokens; at ``blocks.{l}.attn.hook_z`` the chosen positions are
gathered and ``dz = z_dense - z_pruned`` is kept per (layer, head). Memory is bounded by the number of samples
kept (``max_samples``), never by sequence length times the number of hooks: each hook copies only the
selected rows, and running sums give the summary statistics over every selected position.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.models import HeadGeometry, ModelPair

logger = logging.getLogger(__name__)

Positions = Literal["last", "all", "mask"]
HOOK_Z = "blocks.{layer}.attn.hook_z"


def hook_z_name(layer: int) -> str:
    """The TransformerLens hook name of head outputs before W_O in ``layer``."""
    return HOOK_Z.format(layer=layer)


@dataclass(frozen=True)
class DiffConfig:
    """How to sample activation differences.

    positions: ``last`` (the last prompt token, the paper's choice), ``all`` (every non-padding token) or
    ``mask`` (the tokens flagged by caller-supplied masks, e.g. response tokens).
    max_samples: the most dz rows kept per head for the SVD; further positions are reservoir-sampled
    (deterministic in ``seed``) while statistics still cover every selected position.
    """

    positions: Positions = "last"
    batch_size: int = 8
    max_length: int = 256
    max_samples: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.positions not in ("last", "all", "mask"):
            raise ConfigError(f"positions={self.positions!r}; choose 'last', 'all' or 'mask'.")
        for name in ("batch_size", "max_length", "max_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


@dataclass
class HeadDiff:
    """Activation differences and their statistics, indexed [layer, head].

    samples: kept dz rows, [n_layers, n_heads, n_samples, d_head].
    dz_norm: mean ||dz|| over all selected positions.
    dense_norm: mean ||z_dense||; ``rel_dz_norm`` = dz_norm / dense_norm.
    cosine: mean cosine similarity between z_dense and z_pruned.
    """

    samples: Float[Tensor, "n_layers n_heads n_samples d_head"]
    dz_norm: Float[Tensor, "n_layers n_heads"]
    dense_norm: Float[Tensor, "n_layers n_heads"]
    cosine: Float[Tensor, "n_layers n_heads"]
    mean_dz: Float[Tensor, "n_layers n_heads d_head"]
    n_positions: int
    geometry: HeadGeometry
    config: DiffConfig

    @property
    def rel_dz_norm(self) -> Float[Tensor, "n_layers n_heads"]:
        return self.dz_norm / self.dense_norm.clamp_min(1e-12)


def prompts_fingerprint(
    prompts: Sequence[str], masks: Sequence[Sequence[int]] | None = None
) -> str:
    """Content hash of the prompts (and masks) for cache keys."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode() + b"\0")
    if masks is not None:
        h.update(json.dumps([list(map(int, m)) for m in masks]).encode())
    return h.hexdigest()[:20]


def tokenize_prompts(
    tokenizer, prompts: Sequence[str], max_length: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-padded token ids and attention mask (causal attention never reads right padding)."""
    if not prompts:
        raise DataError("no prompts given: pass at least one non-empty prompt.")
    enc = tokenizer(
        list(prompts),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_length,
        padding_side="right",
    )
    ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    if (attn.sum(dim=1) == 0).any():
        raise DataError("a prompt tokenizes to zero tokens; remove empty prompts.")
    return ids, attn


def _select_positions(
    attn: Tensor, positions: Positions, mask: Tensor | None
) -> Bool[Tensor, "batch pos"]:
    if positions == "last":
        sel = torch.zeros_like(attn, dtype=torch.bool)
        last = attn.sum(dim=1) - 1
        sel[torch.arange(attn.shape[0], device=attn.device), last] = True
        return sel
    if positions == "all":
        return attn.bool()
    assert mask is not None
    return mask.bool() & attn.bool()


class _Reservoir:
    """Uniform sample of at most ``capacity`` items from a stream (algorithm R), seeded."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.seen = 0
        self.gen = torch.Generator().manual_seed(seed)

    def plan(self, n_new: int) -> tuple[list[int], list[int]]:
        """For ``n_new`` incoming items: (indices into the batch to keep, slots they go to)."""
        keep, slots = [], []
        for i in range(n_new):
            t = self.seen + i
            if t < self.capacity:
                keep.append(i)
                slots.append(t)
            else:
                j = int(torch.randint(0, t + 1, (1,), generator=self.gen))
                if j < self.capacity:
                    keep.append(i)
                    slots.append(j)
        self.seen += n_new
        return keep, slots


@torch.no_grad()
def head_diffs(
    pair: ModelPair,
    prompts: Sequence[str],
    config: DiffConfig = DiffConfig(),
    *,
    masks: Sequence[Sequence[int]] | None = None,
) -> HeadDiff:
    """Stream ``prompts`` through both models and collect per-head dz at the configured positions.

    masks: with ``positions="mask"``, one 0/1 list per prompt aligned with its tokens (truncated to
    ``max_length``); ignored otherwise.
    """
    g = pair.geometry
    if not prompts:
        raise DataError("no prompts given: pass at least one non-empty prompt.")
    if config.positions == "mask" and (masks is None or len(masks) != len(prompts)):
        raise DataError("positions='mask' needs one token mask per prompt (masks=...).")
    device = pair.device
    L, H, D = g.n_layers, g.n_heads, g.d_head
    store = torch.zeros(L, H, config.max_samples, D)
    sum_dz = torch.zeros(L, H, dtype=torch.float64)
    sum_dense = torch.zeros(L, H, dtype=torch.float64)
    sum_cos = torch.zeros(L, H, dtype=torch.float64)
    sum_vec = torch.zeros(L, H, D, dtype=torch.float64)
    reservoir = _Reservoir(config.max_samples, config.seed)
    n_total = 0

    batches = range(0, len(prompts), config.batch_size)
    for start in tqdm(batches, desc="head diffs", unit="batch", leave=False):
        chunk = prompts[start : start + config.batch_size]
        ids, attn = tokenize_prompts(pair.tokenizer, chunk, config.max_length, device)
        mask_t = None
        if config.positions == "mask":
            mask_t = torch.zeros_like(attn)
            for row, m in enumerate(masks[start : start + config.batch_size]):  # type: ignore[index]
                m = list(m)[: ids.shape[1]]
                mask_t[row, : len(m)] = torch.tensor(m, dtype=attn.dtype)
        sel = _select_positions(attn, config.positions, mask_t)
        n_sel = int(sel.sum())
        if n_sel == 0:
            continue
        dense_z = _capture_z(pair.dense, ids, attn, sel, L)
        pruned_z = _capture_z(pair.pruned, ids, attn, sel, L)
        # [L, n_sel, H, D] -> [L, H, n_sel, D]
        dz = (dense_z - pruned_z).permute(0, 2, 1, 3)
        zd = dense_z.permute(0, 2, 1, 3)
        zp = pruned_z.permute(0, 2, 1, 3)
        sum_dz += dz.norm(dim=-1).sum(-1).double()
        sum_dense += zd.norm(dim=-1).sum(-1).double()
        sum_cos += torch.nn.functional.cosine_similarity(zd, zp, dim=-1, eps=1e-12).sum(-1).double()
        sum_vec += dz.sum(2).double()
        keep, slots = reservoir.plan(n_sel)
        if keep:
            store[:, :, slots] = dz[:, :, keep].float()
        n_total += n_sel

    if n_total == 0:
        raise DataError("no positions were selected: check the prompts and the position masks.")
    n_kept = min(n_total, config.max_samples)
    logger.info("head diffs: %d positions seen, %d samples kept per head", n_total, n_kept)
    return HeadDiff(
        samples=store[:, :, :n_kept].contiguous(),
        dz_norm=(sum_dz / n_total).float(),
        dense_norm=(sum_dense / n_total).float(),
        cosine=(sum_cos / n_total).float(),
        mean_dz=(sum_vec / n_total).float(),
        n_positions=n_total,
        geometry=g,
        config=config,
    )


def _capture_z(bridge, ids: Tensor, attn: Tensor, sel: Tensor, n_layers: int) -> Tensor:
    """hook_z rows at the selected positions for every layer: [n_layers, n_sel, n_heads, d_head]."""
    rows: list[Tensor | None] = [None] * n_layers

    def grab(z: Tensor, *, hook) -> None:
        layer = int(hook.name.split(".")[1])
        rows[layer] = z[sel].detach().float().cpu()

    hooks = [(hook_z_name(layer), grab) for layer in range(n_layers)]
    with bridge.hooks(fwd_hooks=hooks):
        bridge(ids, attention_mask=attn, return_type=None)
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise RuntimeError(f"hook_z did not fire for layers {missing}")
    return torch.stack(rows)  # type: ignore[arg-type]


def config_dict(config: DiffConfig) -> dict[str, object]:
    return asdict(config)
