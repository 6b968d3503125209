"""Which heads to compensate: contrastive probing (the paper's) and the baselines of its ablations.

Every selector returns a HeadRanking whose ``scores`` are higher for heads more worth compensating:
``probe`` the probe statistic of :mod:`lcc_lens.probing` (held-out pairwise accuracy, or the lost
component's alignment with the task readout), ``norm`` the lost component's norm, ``mse`` the mean squared
norm of dz, ``kl`` a first-order (attribution-patching) estimate of how much KL(dense || pruned) drops when
the head's output is restored, ``random`` a seeded shuffle, ``all`` every head. Scores equal to six
significant digits are ties, ordered by (layer, head): no selector's order depends on noise of 1e-6.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.components import LostComponents
from lcc_lens.diff import HeadDiff, tokenize_prompts
from lcc_lens.errors import ConfigError
from lcc_lens.hooks import HookFn, per_layer_hooks, temporary_hooks
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.probing import (
    PROBE_MODES,
    ProbeConfig,
    ProbeFeatures,
    ProbeResult,
    ProbeSample,
    probe_features,
    rank_order,
    score_probes,
)
from lcc_lens.progress import progress

logger = logging.getLogger(__name__)

Method = Literal["probe", "norm", "mse", "kl", "random", "all"]
METHODS: tuple[str, ...] = ("probe", "norm", "mse", "kl", "random", "all")


@dataclass(frozen=True)
class SelectConfig:
    """How many heads and by which score. ``n_heads`` (when set) overrides ``fraction``."""

    method: str = field(
        default="probe", metadata={"help": f"head selector, one of {', '.join(METHODS)}"}
    )
    fraction: float = field(
        default=0.25, metadata={"help": "share of all heads to compensate (0..1)"}
    )
    n_heads: int | None = field(
        default=None, metadata={"help": "number of heads to compensate; overrides fraction"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the random selector and probe splits"})
    probe_mode: str = field(
        default="aligned",
        metadata={
            "help": "probe statistic: 'aligned' (|w.c| / contrast, lets the lost component matter; "
            "selected heads that restore more out of domain, analysis/results/selection) or 'paper' "
            "(held-out pairwise accuracy, the lost component absorbed)"
        },
    )
    probe_splits: int = field(
        default=5, metadata={"help": "probe train/test splits averaged per head (count)"}
    )
    probe_permutations: int = field(
        default=100, metadata={"help": "label shuffles of the probe's per-head null (count)"}
    )
    probe_train_fraction: float = field(
        default=0.7, metadata={"help": "share of the probe pairs that fit each probe (0..1)"}
    )
    probe_ridge: float = field(
        default=0.1, metadata={"help": "ridge penalty of the probes on standardised features"}
    )
    probe_max_length: int = field(
        default=128, metadata={"help": "tokens kept per probe text, cut from the left (count)"}
    )
    n_kl_prompts: int = field(
        default=16, metadata={"help": "texts the KL attribution is measured on (count)"}
    )
    kl_max_length: int = field(
        default=128, metadata={"help": "tokens per KL-attribution prompt (count)"}
    )
    batch_size: int = field(default=8, metadata={"help": "texts per forward pass (count)"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown head selection {self.method!r}; choose one of {METHODS}.")
        if isinstance(self.fraction, bool) or not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {self.fraction!r}.")
        if self.n_heads is not None and (
            isinstance(self.n_heads, bool) or not isinstance(self.n_heads, int) or self.n_heads < 0
        ):
            raise ConfigError(f"n_heads must be a whole number >= 0, got {self.n_heads!r}.")
        if self.probe_mode not in PROBE_MODES:
            raise ConfigError(f"probe_mode {self.probe_mode!r}; choose one of {PROBE_MODES}.")
        for name in ("n_kl_prompts", "kl_max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        self.probe_config()  # validates the probe_* fields

    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(
            mode=self.probe_mode,  # type: ignore[arg-type]
            n_splits=self.probe_splits,
            train_fraction=self.probe_train_fraction,
            n_permutations=self.probe_permutations,
            ridge=self.probe_ridge,
            max_length=self.probe_max_length,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def count(self, geometry: HeadGeometry) -> int:
        total = geometry.n_total_heads
        n = self.n_heads if self.n_heads is not None else round(self.fraction * total)
        if n > total:
            raise ConfigError(
                f"asked for {n} heads but the model has only {total} ({geometry.n_layers}x{geometry.n_heads})."
            )
        return int(n)


@dataclass
class HeadRanking:
    """Per-head scores and the selected set, [layer, head] indexed.

    extra: further per-head maps written beside the score (probe: null mean and sd, z, p, stability);
    info: run-level facts (probe: pairs, splits, permutations, top-k Jaccard across splits).
    """

    method: str
    scores: Tensor
    order: list[tuple[int, int]]
    selected: list[tuple[int, int]]
    extra: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self, geometry: HeadGeometry) -> dict:
        sel = set(self.selected)
        return {
            "method": self.method,
            "n_selected": len(self.selected),
            "n_heads_total": geometry.n_total_heads,
            "info": self.info,
            "selected": [list(h) for h in self.selected],
            "ranking": [
                {
                    "layer": lay,
                    "head": h,
                    "name": geometry.head_name(lay, h),
                    "rank": i,
                    "score": float(self.scores[lay, h]),
                    "selected": (lay, h) in sel,
                    **{k: float(v[lay, h]) for k, v in self.extra.items()},
                }
                for i, (lay, h) in enumerate(self.order)
            ],
        }

    def dumps(self, geometry: HeadGeometry) -> str:
        return json.dumps(self.to_json(geometry), indent=2)

    def top(self, n: int) -> HeadRanking:
        """The same ranking with its first ``n`` heads selected."""
        return HeadRanking(
            self.method, self.scores, self.order, sorted(self.order[:n]), self.extra, self.info
        )


def rank_from_scores(
    method: str,
    scores: Float[Tensor, "n_layers n_heads"],
    n: int,
    extra: dict | None = None,
    info: dict | None = None,
) -> HeadRanking:
    """Order heads by descending score (ties to 6 significant digits in (layer, head) order)."""
    n_heads = scores.shape[1]
    order = [divmod(i, n_heads) for i in rank_order(scores)]
    return HeadRanking(method, scores.float(), order, sorted(order[:n]), extra or {}, info or {})


def probe_ranking(result: ProbeResult, n: int) -> HeadRanking:
    """A HeadRanking from probe statistics, with each head's null, z, p and top-n stability."""
    extra = {
        "null_mean": result.score_null_mean,
        "null_sd": result.score_null_sd,
        "z": result.score_z,
        "p_value": result.score_p,
        "score_sd_over_splits": result.split_scores.std(0)
        if result.split_scores.shape[0] > 1
        else torch.zeros_like(result.score),
        "stability": result.stability(n),
        "accuracy": result.accuracy,
        "accuracy_null_mean": result.accuracy_null_mean,
        "accuracy_z": result.accuracy_z,
        "accuracy_p": result.accuracy_p,
    }
    info = {
        "probe_mode": result.mode,
        "n_pairs": result.n_pairs,
        "n_train": result.n_train,
        "n_test": result.n_test,
        "n_splits": int(result.split_scores.shape[0]),
        "n_permutations": result.n_permutations,
        "top_n_jaccard_across_splits": result.split_jaccard(n),
        "heads_accuracy_p_below_0.01": int((result.accuracy_p < 0.01).sum()),
        "mean_accuracy": float(result.accuracy.mean()),
    }
    return rank_from_scores("probe", result.score, n, extra, info)


def select_heads(
    pair: ModelPair,
    config: SelectConfig,
    *,
    components: LostComponents | None = None,
    diff: HeadDiff | None = None,
    probe_data: Sequence[ProbeSample] | None = None,
    features: ProbeFeatures | None = None,
    kl_prompts: Sequence[str] | None = None,
) -> HeadRanking:
    """Rank heads with ``config.method`` and select ``config.count`` of them.

    probe needs ``components`` and either ``probe_data`` (pairs, e.g. ``probe_data.fit_probe_items``)
    or precomputed ``features``; norm needs ``components``; mse ``diff``; kl ``kl_prompts``.
    """
    g = pair.geometry
    n = config.count(g)
    m = config.method
    if m == "all":
        return rank_from_scores("all", torch.ones(g.n_layers, g.n_heads), g.n_total_heads)
    if m == "random":
        gen = torch.Generator().manual_seed(config.seed)
        return rank_from_scores("random", torch.rand(g.n_layers, g.n_heads, generator=gen), n)
    if m == "norm":
        if components is None:
            raise ConfigError("selection 'norm' needs the lost components.")
        return rank_from_scores("norm", components.norms, n)
    if m == "mse":
        if diff is None:
            raise ConfigError("selection 'mse' needs the head diffs (HeadDiff).")
        return rank_from_scores("mse", diff.samples.square().sum(-1).mean(-1), n)
    if m == "kl":
        if not kl_prompts:
            raise ConfigError("selection 'kl' needs prompts to measure the KL gap on.")
        scores = kl_attribution(
            pair,
            list(kl_prompts)[: config.n_kl_prompts],
            max_length=config.kl_max_length,
            batch_size=config.batch_size,
        )
        return rank_from_scores("kl", scores, n)
    pcfg = config.probe_config()
    if features is None:
        if not probe_data:
            raise ConfigError(
                "selection 'probe' needs contrastive pairs (lcc_lens.probe_data.fit_probe_items)."
            )
        features = probe_features(pair.dense, pair.tokenizer, probe_data, pcfg)
    if components is None and pcfg.mode == "aligned":
        raise ConfigError("probe mode 'aligned' needs the lost components.")
    comp = components.components if components is not None else None
    return probe_ranking(score_probes(features, comp, pcfg), n)


def kl_attribution(
    pair: ModelPair, prompts: Sequence[str], *, max_length: int = 128, batch_size: int = 4
) -> Float[Tensor, "n_layers n_heads"]:
    """First-order estimate per head of the drop in KL(dense || pruned) from restoring its output.

    Attribution patching: -(dKL/dz_pruned) . (z_dense - z_pruned), with KL the mean over every token of
    every prompt: the score is the first-order change of that mean KL. The gradient is taken through the full graph (a zero offset is added at every hook_z and
    differentiated), so a head's effect through later attention layers counts.
    """
    g = pair.geometry
    L = g.n_layers
    total = torch.zeros(L, g.n_heads, dtype=torch.float64)
    n_tokens = 0
    device = pair.device
    for start in progress(range(0, len(prompts), batch_size), desc="kl attribution", leave=False):
        ids, attn = tokenize_prompts(
            pair.tokenizer, prompts[start : start + batch_size], max_length, device
        )
        dense_z: list[Tensor | None] = [None] * L
        pruned_z: list[Tensor | None] = [None] * L
        offsets: list[Tensor | None] = [None] * L

        def grab_dense(layer: int, dense_z=dense_z) -> HookFn:
            def hook_fn(z: Tensor, *, hook) -> None:
                dense_z[layer] = z.detach()

            return hook_fn

        def add_offset(layer: int, pruned_z=pruned_z, offsets=offsets) -> HookFn:
            def hook_fn(z: Tensor, *, hook) -> Tensor:
                pruned_z[layer] = z.detach()
                delta = torch.zeros_like(z, requires_grad=True)
                offsets[layer] = delta
                return z + delta

            return hook_fn

        with torch.no_grad(), temporary_hooks(pair.dense, per_layer_hooks(grab_dense, range(L))):
            teacher = pair.dense(ids, attention_mask=attn, return_type="logits").float()
        with (
            torch.enable_grad(),
            temporary_hooks(pair.pruned, per_layer_hooks(add_offset, range(L))),
        ):
            student = pair.pruned(ids, attention_mask=attn, return_type="logits").float()
            kl = torch.nn.functional.kl_div(
                student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none"
            ).sum(-1)
            kl = (kl * attn).sum()  # summed over tokens; divided by all tokens below
            grads = torch.autograd.grad(kl, offsets)  # type: ignore[arg-type]
        mask = attn[..., None, None].to(grads[0].dtype)
        for layer in range(L):
            dz = dense_z[layer] - pruned_z[layer]  # type: ignore[operator]
            total[layer] += (-(grads[layer] * dz * mask).sum(dim=(0, 1, 3))).double().cpu()
        n_tokens += int(attn.sum())
    return (total / max(1, n_tokens)).float()
