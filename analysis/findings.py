"""The paper's analyses on the embedded real model (SmolLM2-135M-Instruct, Wanda 50 %), with figures.

* what pruning lost per head (norm of the lost component, relative ||dz||, dense/pruned cosine);
* spectra of dZ and leading versus minor components (Finding 3): inject only the i-th singular
  component of each selected head's dZ, training-free, and measure held-out perplexity and a task's
  correct-minus-wrong logit difference (Finding 1 is the same measurement for the leading components);
* a short fit (reused from analysis/ablations.py's base variant when present): training curves, dense /
  pruned / restored perplexity, head selection, per-head restoration on held-out prompts;
* the logit lens of each compensation (Figure 5) and each head's logit gain on the task (Finding 2).

    python analysis/findings.py     # writes analysis/results/findings.md and figures/ (about 10 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (  # noqa: E402
    RESULTS,
    Context,
    Setup,
    describe_fit,
    fit_record,
    markdown_table,
    prepare,
    train_compensation,
)
from lcc_lens import plots  # noqa: E402
from lcc_lens.atomic import write_text  # noqa: E402
from lcc_lens.compensation import Compensation  # noqa: E402
from lcc_lens.corpora import passages  # noqa: E402
from lcc_lens.diff import DiffConfig  # noqa: E402
from lcc_lens.evaluation.suite import next_passage_items  # noqa: E402
from lcc_lens.logit_lens import AnswerPair, answer_pairs_from_choices, logit_gain, logit_lens  # noqa: E402
from lcc_lens.plots._common import ranked  # noqa: E402
from lcc_lens.selection import SelectConfig, select_heads  # noqa: E402
from lcc_lens.training import TrainConfig  # noqa: E402

logger = logging.getLogger("analysis.findings")

COMPONENT_INDICES = (1, 2, 5, 20, 50)


@dataclass(frozen=True)
class FindingsConfig:
    setup: Setup
    fraction: float = 0.1
    steps: int = 16
    batch_size: int = 8
    lr: float = 1e-2
    objective: str = "lm"
    n_task: int = 48
    n_heldout: int = 32
    component_windows: int = 12
    reuse: Path | None = RESULTS / "base_fit"
    out: Path = RESULTS


def parse_args(argv: list[str] | None = None) -> FindingsConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dense", default="embedded")
    p.add_argument("--prune-method", default="wanda")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--objective", default="lm", choices=["lm", "kl", "mix"])
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--n-task", type=int, default=48)
    p.add_argument("--n-heldout", type=int, default=32)
    p.add_argument("--eval-windows", type=int, default=24)
    p.add_argument("--component-windows", type=int, default=12)
    p.add_argument(
        "--no-reuse", action="store_true", help="train instead of loading the ablations' base fit"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    setup = replace(
        Setup(),
        dense=a.dense,
        prune_method=a.prune_method,
        n_train=a.n_train,
        max_length=a.max_length,
        n_diff=min(128, a.n_train),
        n_probe=min(128, a.n_train),
        eval_windows=a.eval_windows,
    )
    reuse = None if a.no_reuse else a.out / "base_fit"
    return FindingsConfig(
        setup,
        steps=a.steps,
        batch_size=a.batch_size,
        objective=a.objective,
        n_task=a.n_task,
        n_heldout=a.n_heldout,
        component_windows=a.component_windows,
        reuse=reuse,
        out=a.out,
    )


def _fit(cfg: FindingsConfig, ctx: Context):
    """(compensation, ranking, history, description): the ablations' base fit when present, else a
    fresh one trained with this script's settings."""
    reuse = cfg.reuse
    if reuse is not None and (reuse / "compensation.safetensors").is_file():
        if not (reuse / "fit.json").is_file():
            logger.warning("%s has no fit.json (how it was trained); training afresh", reuse)
        else:
            comp = Compensation.load(reuse / "compensation.safetensors")
            ranking = torch.load(reuse / "ranking.pt")
            history = json.loads((reuse / "history.json").read_text())
            fit = json.loads((reuse / "fit.json").read_text())
            logger.info("reusing the base fit in %s", reuse)
            where = reuse.resolve()
            with contextlib.suppress(ValueError):
                where = where.relative_to(Path(__file__).resolve().parents[1])
            return (
                comp,
                ranking,
                history,
                f"the ablations' base fit in `{where}` ({describe_fit(fit)})",
            )
    if not ctx.probe:
        from lcc_lens.probing import probe_samples

        ctx.probe = probe_samples(ctx.train_ex[: ctx.setup.n_probe])
    rk = select_heads(
        ctx.pair,
        SelectConfig(method="probe", fraction=cfg.fraction, seed=ctx.setup.seed),
        components=ctx.lost(1),
        diff=ctx.diff,
        probe_data=ctx.probe,
    )
    tcfg = TrainConfig(
        objective=cfg.objective,  # type: ignore[arg-type]
        lr=cfg.lr,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=ctx.setup.seed,
    )
    comp, history = train_compensation(ctx, rk.selected, 1, tcfg)
    ranking = {"method": rk.method, "scores": rk.scores, "order": rk.order, "selected": rk.selected}
    fit = fit_record(tcfg, ctx.setup, selection="probe", fraction=cfg.fraction)
    return comp, ranking, history, f"trained here ({describe_fit(fit)})"


@torch.no_grad()
def single_components(ctx: Context, heads: list[tuple[int, int]], index: int) -> torch.Tensor:
    """c_i = mean_n(U[n, i]) S[i] V[i] per head (i is 1-based), zero elsewhere: [L, H, d]."""
    out = torch.zeros(
        ctx.pair.geometry.n_layers, ctx.pair.geometry.n_heads, ctx.pair.geometry.d_head
    )
    for layer, head in heads:
        dz = ctx.diff.samples[layer, head].double()
        u, s, vh = torch.linalg.svd(dz, full_matrices=False)
        if index - 1 < s.shape[0]:
            out[layer, head] = (u[:, index - 1].mean() * s[index - 1] * vh[index - 1]).float()
    return out


def _offsets_comp(ctx: Context, heads, offsets: torch.Tensor) -> Compensation:
    comp = Compensation(ctx.pair.geometry, heads, use_directions=False)
    comp.init_from(offsets)
    return comp


def _task_logit_diff(ctx: Context, comp: Compensation, task: list[AnswerPair]) -> float:
    return logit_gain(ctx.pair, comp, task).logit_diff_restored


def run(cfg: FindingsConfig) -> Path:
    t0 = time.perf_counter()
    ctx = prepare(cfg.setup, with_probe=False)
    g = ctx.pair.geometry
    figs = cfg.out / "figures"
    saved: dict[str, str] = {}

    def save(fig, name: str) -> None:
        paths = plots.save_figure(fig, figs / name, png=True)
        saved[name] = paths[-1].name

    comp, ranking, history, fit_source = _fit(cfg, ctx)
    heads = comp.selected_heads()
    lc1, lc10 = ctx.lost(1), ctx.lost(10)

    # 1. what was lost
    save(plots.lost_heatmaps(ctx.diff, lc1, selected=heads), "lost_components")
    top_lost = ranked(lc1.norms, g, 10)

    # 4. spectra, and leading vs minor components (training-free injection on the selected heads)
    save(plots.spectra_figure(lc1, g, max_heads=8, leading_k=1), "spectra")
    task = answer_pairs_from_choices(next_passage_items(cfg.n_task, seed=cfg.setup.seed))
    short = replace(ctx.setup, eval_windows=cfg.component_windows)
    ctx_short = replace(ctx, setup=short)
    base_ppl_pruned = ctx_short.ppl(None)
    gain_probe = logit_gain(ctx.pair, _offsets_comp(ctx, heads, lc1.components), task)
    ld_pruned, ld_dense = gain_probe.logit_diff_pruned, gain_probe.logit_diff_dense
    comp_rows: list[dict[str, Any]] = []
    ppl_series: dict[int, float] = {}
    ld_series: dict[int, float] = {}
    for i in COMPONENT_INDICES:
        c = _offsets_comp(ctx, heads, single_components(ctx, heads, i))
        ppl_i, ld_i = ctx_short.ppl(c), _task_logit_diff(ctx, c, task)
        ppl_series[i], ld_series[i] = ppl_i, ld_i
        comp_rows.append(
            {"injected": f"component {i} only", "held-out PPL": ppl_i, "task logit diff": ld_i}
        )
    for k, lc in ((1, lc1), (10, lc10)):
        c = _offsets_comp(ctx, heads, lc.components)
        comp_rows.append(
            {
                "injected": f"rank-{k} lost component (sum of 1..{k})",
                "held-out PPL": ctx_short.ppl(c),
                "task logit diff": _task_logit_diff(ctx, c, task),
            }
        )
    save(
        plots.component_rank_effect(
            {"held-out PPL": ppl_series},
            metric_name=f"held-out perplexity ({short.eval_windows} windows)",
            baselines={"pruned": base_ppl_pruned},
        ),
        "components_ppl",
    )
    save(
        plots.component_rank_effect(
            {"task logit diff": ld_series},
            metric_name="logit(correct) - logit(wrong), next-passage task",
            baselines={"pruned": ld_pruned, "dense": ld_dense},
        ),
        "components_logit_diff",
    )

    # 7. fit: curves and comparison
    ppl_restored = ctx.ppl(comp)
    save(plots.training_curves(history), "training_curves")
    ppl = {"dense": ctx.ppl_dense, "pruned": ctx.ppl_pruned, "restored": ppl_restored}
    save(plots.comparison_bar(ppl, "held-out perplexity"), "perplexity")

    # 3. selection
    save(
        plots.selection_figure(ranking["scores"], g, ranking["selected"], method=ranking["method"]),
        "selection",
    )

    # 2. restoration on held-out prompts
    heldout = passages(
        "validation", cfg.n_heldout, min_chars=200, max_chars=500, seed=cfg.setup.seed + 1
    )
    stats = plots.restoration_stats(
        ctx.pair, comp, heldout, DiffConfig(positions="last", max_length=128)
    )
    save(plots.restoration_heatmap(stats), "restoration")
    save(plots.restoration_ranking(stats, top_n=30), "restoration_ranking")

    # 5. logit lens, 6. logit gain
    lens = logit_lens(ctx.pair.pruned, comp, ctx.pair.tokenizer, top_k=8, max_heads=15)
    save(plots.logit_lens_figure(lens), "logit_lens")
    gain = logit_gain(ctx.pair, comp, task)
    save(plots.logit_gain_figure(gain, selected=heads), "logit_gain")

    report = _report(
        cfg,
        ctx,
        fit_source,
        heads,
        top_lost,
        lc1,
        comp_rows,
        base_ppl_pruned,
        ld_pruned,
        ld_dense,
        ppl,
        stats,
        lens,
        gain,
        saved,
        time.perf_counter() - t0,
        short,
    )
    path = cfg.out / "findings.md"
    write_text(path, report)
    return path


def _report(
    cfg,
    ctx,
    fit_source,
    heads,
    top_lost,
    lc1,
    comp_rows,
    pruned_short,
    ld_pruned,
    ld_dense,
    ppl,
    stats,
    lens,
    gain,
    saved,
    seconds,
    short,
) -> str:
    g = ctx.pair.geometry
    share = lc1.explained(1)
    summ = stats.summary()
    gain_rank = ranked(gain.gain, g, 8)
    lens_rows = [
        {
            "head": h.name,
            "||W_O c||": h.write_norm,
            "promoted": ", ".join(repr(t) for t in h.promoted[:5]),
            "suppressed": ", ".join(repr(t) for t in h.suppressed[:5]),
        }
        for h in lens.heads[:8]
    ]
    cmd = "python analysis/findings.py " + " ".join(sys.argv[1:])
    lines = [
        "# LCC findings on SmolLM2-135M-Instruct (Wanda 50 % unstructured)",
        "",
        f"Command: `{cmd.strip()}` ({seconds / 60:.1f} min). Fit: {fit_source} "
        f"({len(heads)} of {g.n_total_heads} heads by probe).",
        "",
        "## What pruning lost (plot 1)",
        f"Activation differences at the last prompt token of {ctx.diff.n_positions} prompts. "
        f"Mean ||dz||/||z_dense|| over heads {float(ctx.diff.rel_dz_norm.mean()):.3f} "
        f"(max {float(ctx.diff.rel_dz_norm.max()):.3f}); mean dense/pruned cosine {float(ctx.diff.cosine.mean()):.3f} "
        f"(min {float(ctx.diff.cosine.min()):.3f}).",
        "Largest lost components (rank 1): "
        + ", ".join(f"{n} {v:.2f}" for n, v, _ in top_lost)
        + ".",
        f"![lost](figures/{saved['lost_components']})",
        "",
        "## Spectra and leading vs minor components (plot 4, Finding 3)",
        f"Share of ||dZ||^2 in the top direction: median {float(share.median()):.2f}, "
        f"min {float(share.min()):.2f}, max {float(share.max()):.2f}.",
        f"Training-free injection into the {len(heads)} selected heads; PPL over {short.eval_windows} held-out "
        f"windows (pruned {pruned_short:.4g}); task = {gain.n_examples} next-passage items, logit diff of the "
        f"correct vs a wrong ending's first token (pruned {ld_pruned:.3f}, dense {ld_dense:.3f}).",
        "",
        markdown_table(comp_rows, ["injected", "held-out PPL", "task logit diff"]),
        "",
        f"![spectra](figures/{saved['spectra']}) ![ppl](figures/{saved['components_ppl']}) "
        f"![ld](figures/{saved['components_logit_diff']})",
        "",
        "## Fit: training and dense / pruned / restored (plot 7)",
        f"Held-out PPL ({ctx.setup.eval_windows} windows x {ctx.setup.eval_context}): dense {ppl['dense']:.4g}, "
        f"pruned {ppl['pruned']:.4g}, restored {ppl['restored']:.4g}; gap closed "
        f"{ctx.gap_closed(ppl['restored']):.3f}.",
        f"![curves](figures/{saved['training_curves']}) ![ppl](figures/{saved['perplexity']})",
        "",
        "## Head selection (plot 3)",
        f"![selection](figures/{saved['selection']})",
        "",
        "## Restoration per head on held-out prompts (plot 2)",
        "`"
        + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summ.items()})
        + "`",
        f"![restoration](figures/{saved['restoration']}) ![ranking](figures/{saved['restoration_ranking']})",
        "",
        "## Logit lens of the compensations (plot 5, the paper's Figure 5)",
        markdown_table(lens_rows, ["head", "||W_O c||", "promoted", "suppressed"]),
        "",
        f"![lens](figures/{saved['logit_lens']})",
        "",
        "## Per-head logit gain on the task (plot 6, Finding 2)",
        f"Logit diff pruned {gain.logit_diff_pruned:.3f}, restored {gain.logit_diff_restored:.3f}, dense "
        f"{gain.logit_diff_dense:.3f}; sum of the heads' direct gains {float(gain.gain.sum()):.3f} over "
        f"{gain.n_examples} items ({gain.n_skipped} skipped: same first token).",
        "Largest |gain|: "
        + ", ".join(
            f"{n} {float(gain.gain[lh]):+.3f}" for n, _, lh in ranked(gain.gain.abs(), g, 8)
        )
        + ".",
        f"Most positive: {', '.join(f'{n} {v:+.3f}' for n, v, _ in gain_rank)}.",
        f"![gain](figures/{saved['logit_gain']})",
        "",
        "Identity: `" + json.dumps(ctx.identity(), default=str) + "`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    path = run(parse_args(argv))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
