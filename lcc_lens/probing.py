"""Contrastive probing of heads: which heads carry the information that tells r+ from r-.

Each sample is (prompt q, correct response r+, wrong response r-) (see :mod:`lcc_lens.probe_data`). The
paper's probe reads m = [z_pruned(q) + c, z_dense(q + r)] at the last token. The first half is the same for
m+ and m- of one pair, so in the pairwise comparison the probe is asked to make ("does it score r+ above r-
for the same query?") it cancels exactly, and with it the lost component c: c is a per-head constant that
feature standardisation removes in any case, so K cannot change the paper's ranking. We therefore fit, per
head, the matched-pairs (conditional) linear probe on d = z_dense(q + r+) - z_dense(q + r-): a ridge
least-squares discriminant w with w . d ~ +1 on standardised features. Its closed form makes the label
permutation null exact and cheap: flipping the labels of a pair flips the sign of d, which leaves the Gram
matrix unchanged, so every permutation costs one matrix product.

Two ranking statistics (``ProbeConfig.mode``):

* ``paper``: held-out pairwise accuracy, P(w . d > 0) on the pairs not used to fit w (c has no effect);
* ``aligned``: |w . c| / mean |w . d|, how far the lost component moves the head's task readout, in units of
  the contrast it reads (c matters, K matters, and a head that pruning left unchanged scores exactly 0).

The choice: ``paper`` is the default because it is the paper's probe; ``aligned`` is offered as the variant
in which c matters (it finds a head whose only change is pruning, see tests/unit/test_selection.py, which
``paper`` cannot by construction). Which one selects heads that restore better out of domain is measured by
``python -m analysis.selectors`` (analysis/results/selection/selectors.md); change the default only on
that evidence.

Each statistic is averaged over ``n_splits`` random train/test splits (its spread over splits is kept) and
compared with the same statistic under ``n_permutations`` label shuffles (per head: null mean, sd, z and a
permutation p-value). Neither statistic needs z_pruned(q): the lost components already come from the diff
stage, so only the dense model runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.probe_data import ProbeSample, embed_texts, probe_samples
from lcc_lens.progress import progress

__all__ = [
    "ProbeConfig",
    "ProbeFeatures",
    "ProbeResult",
    "ProbeSample",
    "embed_texts",
    "probe_features",
    "probe_heads",
    "probe_samples",
    "score_probes",
]

logger = logging.getLogger(__name__)

ProbeMode = Literal["paper", "aligned"]
PROBE_MODES: tuple[str, ...] = ("paper", "aligned")


@dataclass(frozen=True)
class ProbeConfig:
    """How the per-head probes are fitted, scored and tested against their null."""

    mode: str = field(
        default="paper",
        metadata={"help": "ranking statistic: 'paper' (held-out pairwise accuracy) or 'aligned'"},
    )
    n_splits: int = field(
        default=5, metadata={"help": "random train/test splits averaged per head (count)"}
    )
    train_fraction: float = field(
        default=0.7, metadata={"help": "share of the pairs that fit each probe (0..1)"}
    )
    n_permutations: int = field(
        default=100, metadata={"help": "label shuffles of the per-head null (count)"}
    )
    ridge: float = field(
        default=0.1, metadata={"help": "ridge penalty on standardised features (>= 0)"}
    )
    max_length: int = field(
        default=128, metadata={"help": "tokens kept per q + r, cut from the left (count)"}
    )
    batch_size: int = field(default=8, metadata={"help": "texts per forward pass (count)"})
    seed: int = field(default=0, metadata={"help": "seed of the splits and permutations"})

    def __post_init__(self) -> None:
        if self.mode not in PROBE_MODES:
            raise ConfigError(f"probe mode {self.mode!r} is unknown; choose one of {PROBE_MODES}.")
        if self.n_splits < 1:
            raise ConfigError(f"n_splits must be >= 1 (got {self.n_splits}).")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1) (got {self.train_fraction}).")
        if self.n_permutations < 1:
            raise ConfigError(f"n_permutations must be >= 1 (got {self.n_permutations}).")
        if not self.ridge >= 0.0:
            raise ConfigError(f"ridge must be >= 0 (got {self.ridge}).")
        for name in ("max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)}).")


@dataclass(frozen=True)
class ProbeFeatures:
    """Per pair and head, d = z_dense(q + r+) - z_dense(q + r-) at the last token."""

    delta: Float[Tensor, "n n_layers n_heads d_head"]

    @property
    def n_pairs(self) -> int:
        return int(self.delta.shape[0])


@dataclass(frozen=True)
class ProbeResult:
    """Per-head probe statistics, [n_layers, n_heads] each, averaged over the splits.

    score: the ranking statistic of ``mode``; score_null_mean / score_null_sd / score_z / score_p: its
    permutation null. accuracy (+ accuracy_z, accuracy_p): held-out pairwise accuracy and its null, for
    either mode. split_scores: the statistic per split, [n_splits, n_layers, n_heads].
    """

    mode: str
    score: Tensor
    score_null_mean: Tensor
    score_null_sd: Tensor
    score_z: Tensor
    score_p: Tensor
    accuracy: Tensor
    accuracy_null_mean: Tensor
    accuracy_z: Tensor
    accuracy_p: Tensor
    split_scores: Tensor
    n_pairs: int
    n_train: int
    n_test: int
    n_permutations: int

    def stability(self, n: int) -> Tensor:
        """Per head, the share of splits whose own top-``n`` contains it."""
        s, n_layers, n_heads = self.split_scores.shape
        freq = torch.zeros(n_layers * n_heads)
        for row in self.split_scores.flatten(1):
            freq[rank_order(row)[:n]] += 1
        return (freq / s).view(n_layers, n_heads)

    def split_jaccard(self, n: int) -> float:
        """Mean Jaccard overlap of the per-split top-``n`` sets over all pairs of splits."""
        sets = [set(rank_order(r)[:n]) for r in self.split_scores.flatten(1)]
        pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
        if not pairs or n == 0:
            return 1.0
        return sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)


def rank_order(scores: Tensor) -> list[int]:
    """Flat indices by descending score; scores equal to 6 significant digits of the largest |score|
    are ties, kept in index (layer, head) order, so that noise of 1e-6 cannot reorder them."""
    flat = scores.detach().double().flatten()
    scale = float(flat.abs().max()) if flat.numel() else 0.0
    q = torch.round(flat / scale * 1e6) if scale > 0 else torch.zeros_like(flat)
    return torch.argsort(-q, stable=True).tolist()


def _tokenize_left(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids of texts cut from the LEFT, so that the last token is the response's."""
    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    enc = [ids[-max_length:] for ids in enc]
    if any(len(ids) == 0 for ids in enc):
        raise DataError("a probe text tokenizes to zero tokens; remove empty prompts.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids in enc)
    ids = torch.full((len(enc), width), int(pad), dtype=torch.long)
    attn = torch.zeros((len(enc), width), dtype=torch.long)
    for i, row in enumerate(enc):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
    return ids, attn


@torch.no_grad()
def _last_token_z(bridge, tokenizer, texts: Sequence[str], config: ProbeConfig) -> Tensor:
    """hook_z at the last token of each text: [n, n_layers, n_heads, d_head] (float32, CPU)."""
    from lcc_lens.hooks import capture_z, last_token_positions

    device = next(bridge.parameters()).device
    chunks = []
    for start in progress(
        range(0, len(texts), config.batch_size), desc="probe features", leave=False
    ):
        ids, attn = _tokenize_left(
            tokenizer, texts[start : start + config.batch_size], config.max_length
        )
        ids, attn = ids.to(device), attn.to(device)
        z = capture_z(bridge, ids, attn, last_token_positions(attn))  # [L, n, H, d]
        chunks.append(z.transpose(0, 1).float().cpu())
    return torch.cat(chunks)


def probe_features(
    dense, tokenizer, samples: Sequence[ProbeSample], config: ProbeConfig = ProbeConfig()
) -> ProbeFeatures:
    """Run the dense bridge on q + r+ and q + r- of every pair and keep d at the last token.

    Under torch.distributed each rank captures a contiguous block of the pairs and the blocks are
    gathered in rank order, so every rank holds the single-process tensor.
    """
    from lcc_lens.distributed import gather_rows, shard_range

    if len(samples) < 4:
        raise DataError(f"contrastive probing needs at least 4 pairs, got {len(samples)}.")
    mine = shard_range(len(samples))
    block = list(samples)[mine.start : mine.stop]
    if block:
        zpos = _last_token_z(dense, tokenizer, [s.prompt + s.positive for s in block], config)
        zneg = _last_token_z(dense, tokenizer, [s.prompt + s.negative for s in block], config)
        local = zpos - zneg
    else:
        cfg = dense.cfg
        local = torch.zeros(0, int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_head))
    return ProbeFeatures(gather_rows(local))


def _fit_split(
    x_tr: Tensor, x_te: Tensor, signs: Tensor, comp: Tensor | None, ridge: float
) -> tuple[Tensor, Tensor | None]:
    """Fit the ridge discriminant of every head for the real labels and every permutation.

    x_tr [H, n_tr, d], x_te [H, n_te, d], signs [n_tr, P+1] (column 0: the real labels, all +1),
    comp [H, d] or None -> (held-out pairwise accuracy [H, P+1], alignment |w.c| / mean|w.d| [H, P+1]
    or None). Float32 products, float64 solves.
    """
    n_tr, d = x_tr.shape[1], x_tr.shape[2]
    sd = x_tr.square().mean(1, keepdim=True).sqrt().clamp_min(1e-12)  # [H, 1, d]
    xs = x_tr / sd
    eye = torch.eye(d, dtype=torch.float64)
    gram = (xs.transpose(1, 2) @ xs).double() / n_tr + (ridge + 1e-9) * eye  # 1e-9: constant heads
    rhs = (xs.transpose(1, 2) @ signs.to(xs.dtype)).double() / n_tr  # [H, d, P+1]
    w = (torch.linalg.solve(gram, rhs) / sd.transpose(1, 2).double()).to(xs.dtype)  # raw space
    s_te = x_te @ w  # [H, n_te, P+1]
    acc = ((s_te > 0).double() + 0.5 * (s_te == 0).double()).mean(1)
    if comp is None:
        return acc, None
    margin = (x_tr @ w).abs().double().mean(1).clamp_min(1e-12)
    align = (comp.unsqueeze(1).to(xs.dtype) @ w).squeeze(1).abs().double() / margin
    return acc, align


def score_probes(
    features: ProbeFeatures,
    components: Float[Tensor, "n_layers n_heads d_head"] | None,
    config: ProbeConfig = ProbeConfig(),
) -> ProbeResult:
    """Fit and score the per-head probes over ``n_splits`` splits, with a permutation null each."""
    x = features.delta.float()
    n, n_layers, n_heads, d = x.shape
    n_train = max(2, min(n - 2, round(n * config.train_fraction)))
    if n < 4:
        raise DataError(f"contrastive probing needs at least 4 pairs, got {n}.")
    if config.mode == "aligned" and components is None:
        raise ConfigError("probe mode 'aligned' needs the lost components.")
    comp = (
        components.detach().float().cpu().reshape(n_layers * n_heads, d)
        if config.mode == "aligned" and components is not None
        else None
    )
    flat = x.reshape(n, n_layers * n_heads, d).transpose(0, 1)  # [H, n, d]
    gen = torch.Generator().manual_seed(config.seed)
    accs, aligns = [], []
    for _ in progress(range(config.n_splits), desc="probe splits", leave=False):
        perm = torch.randperm(n, generator=gen)
        tr, te = perm[:n_train], perm[n_train:]
        flips = torch.randint(0, 2, (n_train, config.n_permutations), generator=gen) * 2 - 1
        signs = torch.cat([torch.ones(n_train, 1, dtype=torch.long), flips], dim=1)
        acc, align = _fit_split(flat[:, tr], flat[:, te], signs, comp, config.ridge)
        accs.append(acc)
        if align is not None:
            aligns.append(align)
    acc_all = torch.stack(accs)  # [S, H, P+1]
    stat_all = acc_all if config.mode == "paper" else torch.stack(aligns)

    def summary(t: Tensor) -> tuple[Tensor, ...]:
        mean = t.mean(0)  # [H, P+1]: each column one draw of the split-averaged statistic
        obs, null = mean[:, 0], mean[:, 1:]
        mu, sd = null.mean(1), null.std(1).clamp_min(1e-12)
        p = (1 + (null >= obs[:, None] - 1e-12).sum(1)) / (1 + null.shape[1])
        return obs, mu, sd, (obs - mu) / sd, p.double()

    def grid(t: Tensor) -> Tensor:
        return t.float().reshape(n_layers, n_heads)

    s_obs, s_mu, s_sd, s_z, s_p = summary(stat_all)
    a_obs, a_mu, _, a_z, a_p = summary(acc_all)
    result = ProbeResult(
        mode=config.mode,
        score=grid(s_obs),
        score_null_mean=grid(s_mu),
        score_null_sd=grid(s_sd),
        score_z=grid(s_z),
        score_p=grid(s_p),
        accuracy=grid(a_obs),
        accuracy_null_mean=grid(a_mu),
        accuracy_z=grid(a_z),
        accuracy_p=grid(a_p),
        split_scores=stat_all[..., 0].float().reshape(-1, n_layers, n_heads),
        n_pairs=n,
        n_train=n_train,
        n_test=n - n_train,
        n_permutations=config.n_permutations,
    )
    logger.info(
        "probes (%s): held-out pairwise accuracy mean %.3f, max %.3f; %d of %d heads with p < 0.01 "
        "(%d pairs, %d splits, %d permutations)",
        config.mode,
        float(result.accuracy.mean()),
        float(result.accuracy.max()),
        int((result.accuracy_p < 0.01).sum()),
        n_layers * n_heads,
        n,
        config.n_splits,
        config.n_permutations,
    )
    return result


def probe_heads(
    dense,
    tokenizer,
    samples: Sequence[ProbeSample],
    components: Float[Tensor, "n_layers n_heads d_head"] | None,
    config: ProbeConfig = ProbeConfig(),
) -> ProbeResult:
    """Features from the dense bridge, then :func:`score_probes`."""
    return score_probes(probe_features(dense, tokenizer, samples, config), components, config)
