"""Which heads to compensate: contrastive probing (the paper's) and the baselines of its ablations.

Every selector returns a HeadRanking whose ``scores`` are higher for heads more worth compensating:
``probe`` held-out probe accuracy (ties broken by lower held-out probe loss), ``norm`` the lost component's
norm, ``mse`` the mean squared norm of dz, ``kl`` a first-order (attribution-patching) estimate of how much
KL(dense || pruned) drops when the head's output is restored, ``random`` a seeded shuffle, ``all`` every head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor

from lcc_lens.components import LostComponents
from lcc_lens.diff import HeadDiff, hook_z_name, tokenize_prompts
from lcc_lens.errors import ConfigError
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.probing import ProbeResult, ProbeSample, probe_heads

logger = logging.getLogger(__name__)

Method = Literal["probe", "norm", "mse", "kl", "random", "all"]
METHODS: tuple[str, ...] = ("probe", "norm", "mse", "kl", "random", "all")


@dataclass(frozen=True)
class SelectConfig:
    """How many heads and by which score. ``n_heads`` (when set) overrides ``fraction``."""

    method: Method = "probe"
    fraction: float = 0.25
    n_heads: int | None = None
    seed: int = 0
    probe_steps: int = 300
    probe_train_fraction: float = 0.7

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown head selection {self.method!r}; choose one of {METHODS}.")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {self.fraction}.")
        if self.n_heads is not None and self.n_heads < 0:
            raise ConfigError(f"n_heads must be >= 0, got {self.n_heads}.")

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
    """Per-head scores and the selected set, [layer, head] indexed."""

    method: str
    scores: Tensor
    order: list[tuple[int, int]]
    selected: list[tuple[int, int]]
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to_json(self, geometry: HeadGeometry) -> dict:
        sel = set(self.selected)
        return {
            "method": self.method,
            "n_selected": len(self.selected),
            "n_heads_total": geometry.n_total_heads,
            "selected": [list(h) for h in self.selected],
            "ranking": [
                {
                    "layer": lay,
                    "head": h,
                    "name": geometry.head_name(lay, h),
                    "score": float(self.scores[lay, h]),
                    "selected": (lay, h) in sel,
                    **{k: float(v[lay, h]) for k, v in self.extra.items()},
                }
                for lay, h in self.order
            ],
        }

    def dumps(self, geometry: HeadGeometry) -> str:
        return json.dumps(self.to_json(geometry), indent=2)


def rank_from_scores(
    method: str, scores: Tensor, n: int, tiebreak: Tensor | None = None, extra: dict | None = None
) -> HeadRanking:
    """Order heads by descending score (then descending tiebreak), select the first ``n``."""
    n_layers, n_heads = scores.shape
    flat = scores.flatten().double()
    key = flat * 1e6 + (tiebreak.flatten().double() if tiebreak is not None else 0.0)
    idx = torch.argsort(key, descending=True, stable=True).tolist()
    order = [divmod(i, n_heads) for i in idx]
    return HeadRanking(method, scores.float(), order, sorted(order[:n]), extra or {})


def select_heads(
    pair: ModelPair,
    config: SelectConfig,
    *,
    components: LostComponents | None = None,
    diff: HeadDiff | None = None,
    probe_data: Sequence[ProbeSample] | None = None,
    kl_prompts: Sequence[str] | None = None,
) -> HeadRanking:
    """Rank heads with ``config.method`` and select ``config.count`` of them."""
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
        mse = diff.samples.square().sum(-1).mean(-1)
        return rank_from_scores("mse", mse, n)
    if m == "kl":
        if not kl_prompts:
            raise ConfigError("selection 'kl' needs prompts to measure the KL gap on.")
        return rank_from_scores("kl", kl_attribution(pair, kl_prompts), n)
    if components is None or not probe_data:
        raise ConfigError("selection 'probe' needs the lost components and probe samples.")
    res: ProbeResult = probe_heads(
        pair,
        probe_data,
        components.components,
        train_fraction=config.probe_train_fraction,
        steps=config.probe_steps,
        seed=config.seed,
    )
    return rank_from_scores(
        "probe",
        res.test_accuracy,
        n,
        tiebreak=-res.test_loss,
        extra={"train_accuracy": res.train_accuracy, "test_loss": res.test_loss},
    )


def kl_attribution(
    pair: ModelPair, prompts: Sequence[str], *, max_length: int = 128, batch_size: int = 4
) -> Tensor:
    """First-order estimate per head of the drop in KL(dense || pruned) from restoring its output.

    Attribution patching: -(dKL/dz_pruned) . (z_dense - z_pruned), summed over tokens, averaged over prompts.
    """
    g = pair.geometry
    L = g.n_layers
    total = torch.zeros(L, g.n_heads, dtype=torch.float64)
    device = pair.device
    for start in range(0, len(prompts), batch_size):
        ids, attn = tokenize_prompts(
            pair.tokenizer, prompts[start : start + batch_size], max_length, device
        )
        dense_z: list[Tensor | None] = [None] * L
        pruned_z: list[Tensor | None] = [None] * L

        def grab_dense(z: Tensor, *, hook, dense_z=dense_z) -> None:
            dense_z[int(hook.name.split(".")[1])] = z.detach()

        def keep_pruned(z: Tensor, *, hook, pruned_z=pruned_z) -> Tensor:
            z = z.detach().requires_grad_(True)
            pruned_z[int(hook.name.split(".")[1])] = z
            return z

        with (
            torch.no_grad(),
            pair.dense.hooks(fwd_hooks=[(hook_z_name(i), grab_dense) for i in range(L)]),
        ):
            teacher = pair.dense(ids, attention_mask=attn, return_type="logits").float()
        with (
            torch.enable_grad(),
            pair.pruned.hooks(fwd_hooks=[(hook_z_name(i), keep_pruned) for i in range(L)]),
        ):
            student = pair.pruned(ids, attention_mask=attn, return_type="logits").float()
            kl = torch.nn.functional.kl_div(
                student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none"
            ).sum(-1)
            kl = (kl * attn).sum() / attn.sum()
            grads = torch.autograd.grad(kl, pruned_z)  # type: ignore[arg-type]
        mask = attn[..., None, None].to(grads[0].dtype)
        for layer in range(L):
            dz = dense_z[layer] - pruned_z[layer].detach()  # type: ignore[operator]
            total[layer] += (-(grads[layer] * dz * mask).sum(dim=(0, 1, 3))).double().cpu()
    return (total / max(1, len(prompts))).float()


def config_dict(config: SelectConfig) -> dict:
    return asdict(config)
