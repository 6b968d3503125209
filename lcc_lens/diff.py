"""Per-head activation differences between a dense and a pruned model, captured at hook_z only.

For each batch of prompts both models run on the same tokens; :func:`lcc_lens.hooks.capture_z` gathers the
chosen positions of ``blocks.{l}.attn.hook_z`` and ``dz = z_dense - z_pruned`` goes into a
:class:`DiffAccumulator`: running sums for the statistics over every selected position, and a reservoir of
at most ``max_samples`` dz rows per head for the SVD. Memory is bounded by the reservoir, never by sequence
length times the number of hooks.

Batches are independent and each dz row has a global index (its rank among all selected positions in prompt
order), and the reservoir decides from that index alone, so accumulators built on disjoint shards of the
batches merge exactly into the single-process result (:meth:`DiffAccumulator.merge`); under
``torch.distributed`` :func:`head_diffs` shards the batches across ranks and merges on every rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.hooks import capture_z, last_token_positions
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.progress import progress

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Positions = Literal["last", "all", "mask"]
POSITIONS: tuple[str, ...] = ("last", "all", "mask")


@dataclass(frozen=True)
class DiffConfig:
    """How to sample activation differences (see the module docstring)."""

    positions: Positions = field(
        default="last",
        metadata={
            "help": "tokens compared: 'last' prompt token (the paper's), 'all' non-padding tokens, "
            "or 'mask' (caller-supplied token masks)"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "prompts per forward pass (count)"})
    max_length: int = field(default=256, metadata={"help": "prompt truncation length (tokens)"})
    max_samples: int = field(
        default=1024,
        metadata={
            "help": "dz rows kept per head for the SVD (count); further positions are "
            "reservoir-sampled while the statistics cover all of them"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the reservoir sample"})

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ConfigError(
                f"diff.positions={self.positions!r}; choose one of {', '.join(POSITIONS)}."
            )
        for name in ("batch_size", "max_length", "max_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"diff.{name} must be an integer >= 1, got {value!r}.")


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
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_length: int,
    device: torch.device | str,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
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


@dataclass(frozen=True)
class DiffBatch:
    """One tokenized batch and where its selected rows sit in the global order."""

    ids: Int[Tensor, "batch pos"]
    attn: Int[Tensor, "batch pos"]
    selected: Bool[Tensor, "batch pos"]
    row_start: int  # global index of the batch's first selected position

    @property
    def n_rows(self) -> int:
        return int(self.selected.sum())


def diff_batches(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: DiffConfig,
    device: torch.device | str,
    masks: Sequence[Sequence[int]] | None = None,
) -> list[DiffBatch]:
    """Tokenize every batch up front, so that every row's global index is known before any forward."""
    if not prompts:
        raise DataError("no prompts given: pass at least one non-empty prompt.")
    if config.positions == "mask" and (masks is None or len(masks) != len(prompts)):
        raise DataError("positions='mask' needs one token mask per prompt (masks=...).")
    out: list[DiffBatch] = []
    row = 0
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        ids, attn = tokenize_prompts(tokenizer, chunk, config.max_length, device)
        if config.positions == "last":
            sel = last_token_positions(attn)
        elif config.positions == "all":
            sel = attn.bool()
        else:
            mask_t = torch.zeros_like(attn)
            for i, m in enumerate(masks[start : start + config.batch_size]):  # type: ignore[index]
                m = list(m)[: ids.shape[1]]
                mask_t[i, : len(m)] = torch.tensor(m, dtype=attn.dtype)
            sel = mask_t.bool() & attn.bool()
        out.append(DiffBatch(ids, attn, sel, row))
        row += int(sel.sum())
    return out


def reservoir_slots(index: Int[Tensor, " n"], capacity: int, seed: int) -> Int[Tensor, " n"]:
    """Algorithm R with a counter-based random draw: the slot the row of global ``index`` goes to, or -1.

    Row t < capacity fills slot t; row t >= capacity replaces slot j = floor(u_t * (t + 1)) when j <
    capacity, with u_t uniform in [0, 1) computed from (seed, t) alone (splitmix64), so any shard of the
    stream decides its rows without seeing the others. The last row written to a slot is the one kept.
    """
    t = index.cpu().numpy().astype(np.uint64)
    golden = 0x9E3779B97F4A7C15
    x = t + np.uint64(((seed + 1) * golden) % (1 << 64))  # array arithmetic wraps modulo 2**64
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    j = np.floor(u * (t.astype(np.float64) + 1.0)).astype(np.int64)
    ti = t.astype(np.int64)
    slot = np.where(ti < capacity, ti, np.where(j < capacity, j, -1))
    return torch.from_numpy(slot)


class DiffAccumulator:
    """Running sums and the dz reservoir of one stream of batches; mergeable across shards."""

    def __init__(self, geometry: HeadGeometry, config: DiffConfig) -> None:
        g = geometry
        L, H, D = g.n_layers, g.n_heads, g.d_head
        self.geometry, self.config = geometry, config
        self.samples = torch.zeros(L, H, config.max_samples, D)
        self.sample_index = torch.full((config.max_samples,), -1, dtype=torch.int64)
        self.sum_dz = torch.zeros(L, H, dtype=torch.float64)
        self.sum_dense = torch.zeros(L, H, dtype=torch.float64)
        self.sum_cos = torch.zeros(L, H, dtype=torch.float64)
        self.sum_vec = torch.zeros(L, H, D, dtype=torch.float64)
        self.n_positions = 0

    def add(
        self,
        dense_z: Float[Tensor, "n_layers n_rows n_heads d_head"],
        pruned_z: Float[Tensor, "n_layers n_rows n_heads d_head"],
        row_start: int,
    ) -> None:
        """Account for ``n_rows`` selected positions whose global indices start at ``row_start``."""
        n = dense_z.shape[1]
        if n == 0:
            return
        # [L, n, H, D] -> [L, H, n, D]
        dz = (dense_z - pruned_z).permute(0, 2, 1, 3)
        zd = dense_z.permute(0, 2, 1, 3)
        zp = pruned_z.permute(0, 2, 1, 3)
        self.sum_dz += dz.norm(dim=-1).sum(-1).double().cpu()
        self.sum_dense += zd.norm(dim=-1).sum(-1).double().cpu()
        cos = torch.nn.functional.cosine_similarity(zd, zp, dim=-1, eps=1e-12)
        self.sum_cos += cos.sum(-1).double().cpu()
        self.sum_vec += dz.sum(2).double().cpu()
        self.n_positions += n
        index = torch.arange(row_start, row_start + n)
        slots = reservoir_slots(index, self.config.max_samples, self.config.seed)
        keep = (slots >= 0).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        # several rows of one batch can land in one slot: the latest (largest index) wins
        flipped = keep.flip(0)
        uniq, first = np.unique(slots[flipped].numpy(), return_index=True)
        rows = flipped[torch.from_numpy(first)]
        slot_t = torch.from_numpy(uniq)
        newer = index[rows] > self.sample_index[slot_t]
        rows, slot_t = rows[newer], slot_t[newer]
        self.samples[:, :, slot_t] = dz[:, :, rows.to(dz.device)].float().cpu()
        self.sample_index[slot_t] = index[rows]

    def merge(self, other: DiffAccumulator) -> None:
        """Fold in an accumulator built on a disjoint shard of the same stream (same config)."""
        if other.config != self.config or other.geometry != self.geometry:
            raise ConfigError("cannot merge head diffs computed with different settings.")
        self.sum_dz += other.sum_dz
        self.sum_dense += other.sum_dense
        self.sum_cos += other.sum_cos
        self.sum_vec += other.sum_vec
        self.n_positions += other.n_positions
        newer = other.sample_index > self.sample_index
        self.samples[:, :, newer] = other.samples[:, :, newer]
        self.sample_index[newer] = other.sample_index[newer]

    def result(self) -> HeadDiff:
        """The HeadDiff of everything accumulated."""
        n_total = self.n_positions
        if n_total == 0:
            raise DataError("no positions were selected: check the prompts and the position masks.")
        n_kept = min(n_total, self.config.max_samples)
        return HeadDiff(
            samples=self.samples[:, :, :n_kept].contiguous(),
            dz_norm=(self.sum_dz / n_total).float(),
            dense_norm=(self.sum_dense / n_total).float(),
            cosine=(self.sum_cos / n_total).float(),
            mean_dz=(self.sum_vec / n_total).float(),
            n_positions=n_total,
            geometry=self.geometry,
            config=self.config,
        )


@torch.no_grad()
def accumulate_diffs(
    pair: ModelPair, batches: Sequence[DiffBatch], config: DiffConfig, *, show_progress: bool = True
) -> DiffAccumulator:
    """Run both models on ``batches`` (hook_z only) and accumulate dz; one forward per model and batch."""
    acc = DiffAccumulator(pair.geometry, config)
    for batch in progress(
        batches, desc="head diffs", unit="batch", leave=False, enabled=show_progress
    ):
        dense = capture_z(pair.dense, batch.ids, batch.attn, batch.selected)
        pruned = capture_z(pair.pruned, batch.ids, batch.attn, batch.selected)
        acc.add(dense, pruned, batch.row_start)
    return acc


def head_diffs(
    pair: ModelPair,
    prompts: Sequence[str],
    config: DiffConfig = DiffConfig(),
    *,
    masks: Sequence[Sequence[int]] | None = None,
) -> HeadDiff:
    """Stream ``prompts`` through both models and collect per-head dz at the configured positions.

    masks: with ``positions="mask"``, one 0/1 list per prompt aligned with its tokens (truncated to
    ``max_length``); ignored otherwise. Under torch.distributed every rank runs its contiguous block of
    batches and all ranks merge the shards, so every rank returns the same HeadDiff.
    """
    from lcc_lens import distributed

    batches = diff_batches(pair.tokenizer, prompts, config, pair.device, masks)
    ctx = distributed.context()
    mine = [batches[i] for i in distributed.shard_range(len(batches), ctx)]
    acc = accumulate_diffs(pair, mine, config, show_progress=ctx.is_main)
    if ctx.distributed:
        shards = distributed.gather_objects(acc)
        acc = shards[0]
        for other in shards[1:]:
            acc.merge(other)
    diff = acc.result()
    logger.info(
        "head diffs: %d positions seen, %d samples kept per head",
        diff.n_positions,
        diff.samples.shape[2],
    )
    return diff
