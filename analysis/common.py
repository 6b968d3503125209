"""Shared setup of the real-model analyses: one pruned pair, data, lost components and evaluation.

Everything expensive is computed once per process and shared by the variants (the pruned model, the
activation differences, the lost components, the probe samples, the dense and pruned perplexities).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.components import LostComponents, lost_components
from lcc_lens.corpora import corpus_identity, split_text
from lcc_lens.data import Encoded, Example, encode, load_examples
from lcc_lens.diff import DiffConfig, HeadDiff, head_diffs
from lcc_lens.evaluation.perplexity import perplexity
from lcc_lens.fit import FitConfig, resolve_pruned
from lcc_lens.models import ModelPair, describe
from lcc_lens.probing import ProbeSample, probe_samples
from lcc_lens.training import TrainConfig, train

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Setup:
    """Sizes of the shared real-model setting (kept small for a 2-core CPU)."""

    dense: str = "embedded"
    prune_method: str = "wanda"
    sparsity: float = 0.5
    n_train: int = 128
    n_val: int = 16
    n_diff: int = 128
    n_probe: int = 128
    max_length: int = 128
    eval_windows: int = 24
    eval_context: int = 256
    seed: int = 0


@dataclass
class Context:
    """The shared objects: pair, encoded data, diffs and components per K, probe samples, baselines."""

    setup: Setup
    pair: ModelPair
    pruned_source: str
    train_ex: list[Example]
    train_enc: list[Encoded]
    val_enc: list[Encoded]
    diff: HeadDiff
    probe: list[ProbeSample]
    eval_text: str
    ppl_dense: float
    ppl_pruned: float
    components: dict[int, LostComponents] = field(default_factory=dict)

    def lost(self, k: int) -> LostComponents:
        if k not in self.components:
            self.components[k] = lost_components(self.diff.samples, k)
        return self.components[k]

    def ppl(self, comp: Compensation | None) -> float:
        """Held-out perplexity of the pruned model, with ``comp`` attached when given."""
        kw = {"context_length": self.setup.eval_context, "max_windows": self.setup.eval_windows}
        if comp is None:
            return perplexity(self.pair.pruned, self.pair.tokenizer, self.eval_text, **kw).ppl
        with comp.attach(self.pair.pruned):
            return perplexity(self.pair.pruned, self.pair.tokenizer, self.eval_text, **kw).ppl

    def gap_closed(self, ppl_restored: float) -> float:
        gap = self.ppl_pruned - self.ppl_dense
        return (self.ppl_pruned - ppl_restored) / gap if gap > 0 else math.nan

    def identity(self) -> dict[str, Any]:
        return {
            "dense": describe(self.setup.dense),
            "pruned": describe(self.pruned_source),
            "eval_text": corpus_identity("test"),
            "setup": self.setup.__dict__,
        }


def prepare(setup: Setup, *, with_probe: bool = True) -> Context:
    """Prune (cached), load the pair, encode data, take the diffs once, and score dense and pruned."""
    t0 = time.perf_counter()
    fcfg = FitConfig(
        dense=setup.dense, prune_method=setup.prune_method, prune_sparsity=setup.sparsity
    )
    pruned_source = resolve_pruned(fcfg)
    pair = ModelPair.load(setup.dense, pruned_source, device="cpu")
    train_ex = load_examples("offline", split="train", n=setup.n_train, seed=setup.seed)
    val_ex = load_examples("offline", split="validation", n=setup.n_val, seed=setup.seed)
    train_enc = encode(pair.tokenizer, train_ex, setup.max_length)
    val_enc = encode(pair.tokenizer, val_ex, setup.max_length)
    diff = head_diffs(
        pair,
        [e.prompt for e in train_ex[: setup.n_diff]],
        DiffConfig(positions="last", max_length=setup.max_length, seed=setup.seed),
    )
    probe = probe_samples(train_ex[: setup.n_probe]) if with_probe else []
    eval_text = split_text("test")
    kw = {"context_length": setup.eval_context, "max_windows": setup.eval_windows}
    ppl_dense = perplexity(pair.dense, pair.tokenizer, eval_text, **kw).ppl
    ppl_pruned = perplexity(pair.pruned, pair.tokenizer, eval_text, **kw).ppl
    logger.info(
        "prepared in %.0f s: ppl dense %.3f, pruned %.3f",
        time.perf_counter() - t0,
        ppl_dense,
        ppl_pruned,
    )
    return Context(
        setup,
        pair,
        pruned_source,
        train_ex,
        train_enc,
        val_enc,
        diff,
        probe,
        eval_text,
        ppl_dense,
        ppl_pruned,
    )


def train_compensation(
    ctx: Context,
    heads: list[tuple[int, int]],
    k: int,
    tcfg: TrainConfig,
    *,
    use_directions: bool = True,
    use_bias: bool = True,
) -> tuple[Compensation, list[dict[str, Any]]]:
    """A fresh compensation on ``heads`` (zero init), trained with ``tcfg`` on the shared data."""
    torch.manual_seed(tcfg.seed)
    comp = Compensation(
        ctx.pair.geometry,
        heads,
        ctx.lost(k).directions,
        use_directions=use_directions,
        use_bias=use_bias,
    )
    history = train(ctx.pair, comp, ctx.train_enc, ctx.val_enc, tcfg)
    return comp, history


def fit_record(tcfg: TrainConfig, setup: Setup, **extra: Any) -> dict[str, Any]:
    """How a compensation was trained, stored beside a fit and quoted by the reports that reuse it."""
    return {
        "objective": tcfg.objective,
        "steps": tcfg.steps,
        "batch_size": tcfg.batch_size,
        "lr": tcfg.lr,
        **extra,
        "setup": asdict(setup),
    }


def describe_fit(fit: dict[str, Any]) -> str:
    """One line for a report: objective, steps, batch, lr and training data size."""
    setup = fit.get("setup", {})
    return (
        f"objective {fit['objective']}, {fit['steps']} steps of batch {fit['batch_size']}, lr {fit['lr']}, "
        f"{setup.get('n_train', '?')} training examples of at most {setup.get('max_length', '?')} tokens"
    )


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` (floats to 4 significant digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
