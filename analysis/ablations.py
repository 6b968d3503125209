"""The ablation table on the embedded real model (SmolLM2-135M-Instruct, Wanda 50 %).

Variants of one short LCC fit, sharing the pruned model, the activation differences, the lost
components and the probe samples: head selection (probe vs random vs largest-MSE vs KL attribution),
without V^T beta, without b, K (which changes the probe's lost component and so the selected heads), and
the fraction of heads. Each variant trains a fresh zero-initialised compensation with the same seed,
steps and data, then measures held-out perplexity and the share of the dense-to-pruned gap it closes.

    python analysis/ablations.py                  # the full table (about 30-40 min on 2 CPU cores)
    python analysis/ablations.py --steps 4 --only base,random   # a quick partial run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import RESULTS, Context, Setup, markdown_table, prepare, train_compensation  # noqa: E402
from lcc_lens.atomic import write_text  # noqa: E402
from lcc_lens.selection import HeadRanking, SelectConfig, select_heads  # noqa: E402
from lcc_lens.training import TrainConfig  # noqa: E402

logger = logging.getLogger("analysis.ablations")


@dataclass(frozen=True)
class Variant:
    name: str
    selection: str = "probe"
    fraction: float = 0.1
    k: int = 1
    use_directions: bool = True
    use_bias: bool = True
    train: bool = True


VARIANTS: tuple[Variant, ...] = (
    Variant("base (probe, 10 %, K=1, V^T beta + b)"),
    Variant("selection: random", selection="random"),
    Variant("selection: largest MSE", selection="mse"),
    Variant("selection: KL attribution", selection="kl"),
    Variant("without V^T beta (b only)", use_directions=False),
    Variant("without b (V^T beta only)", use_bias=False),
    Variant("K=10", k=10),
    Variant("fraction 5 %", fraction=0.05),
    Variant("fraction 25 %", fraction=0.25),
    Variant("fraction 50 %", fraction=0.5),
    Variant("no training: lost component K=1 injected", train=False),
)
SHORT = {
    "base": 0,
    "random": 1,
    "mse": 2,
    "kl": 3,
    "no_beta": 4,
    "no_b": 5,
    "k10": 6,
    "f5": 7,
    "f25": 8,
    "f50": 9,
    "lc": 10,
}


@dataclass(frozen=True)
class AblationConfig:
    setup: Setup
    steps: int = 16
    lr: float = 1e-2
    batch_size: int = 8
    objective: str = "kl"
    only: tuple[str, ...] = ()
    out: Path = RESULTS


def parse_args(argv: list[str] | None = None) -> AblationConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--objective", default="kl", choices=["lm", "kl", "mix"])
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--eval-windows", type=int, default=24)
    p.add_argument("--only", default="", help=f"comma-separated subset of {sorted(SHORT)}")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--dense", default="embedded", help="dense model (default: the embedded SmolLM2)"
    )
    p.add_argument("--prune-method", default="wanda")
    a = p.parse_args(argv)
    only = tuple(s for s in a.only.split(",") if s)
    bad = [s for s in only if s not in SHORT]
    if bad:
        p.error(f"unknown variants {bad}; choose from {sorted(SHORT)}")
    setup = replace(
        Setup(),
        dense=a.dense,
        prune_method=a.prune_method,
        n_train=a.n_train,
        n_diff=min(128, a.n_train),
        n_probe=min(128, a.n_train),
        eval_windows=a.eval_windows,
    )
    return AblationConfig(setup, a.steps, a.lr, a.batch_size, a.objective, only, a.out)


def _ranking(ctx: Context, cache: dict, selection: str, k: int, fraction: float) -> HeadRanking:
    """Rank once per (selection, K); the fraction only cuts the shared order."""
    key = (selection, k)
    if key not in cache:
        cache[key] = select_heads(
            ctx.pair,
            SelectConfig(method=selection, fraction=fraction, seed=ctx.setup.seed),  # type: ignore[arg-type]
            components=ctx.lost(k),
            diff=ctx.diff,
            probe_data=ctx.probe,
            kl_prompts=[e.prompt + e.response for e in ctx.train_ex[:16]],
        )
    full = cache[key]
    n = SelectConfig(fraction=fraction).count(ctx.pair.geometry)
    return HeadRanking(full.method, full.scores, full.order, sorted(full.order[:n]), full.extra)


def run(cfg: AblationConfig) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    ctx = prepare(cfg.setup)
    tcfg = TrainConfig(
        objective=cfg.objective,  # type: ignore[arg-type]
        lr=cfg.lr,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=cfg.setup.seed,
    )
    variants = [VARIANTS[SHORT[s]] for s in cfg.only] if cfg.only else list(VARIANTS)
    rows: list[dict[str, Any]] = []
    rankings: dict = {}
    cfg.out.mkdir(parents=True, exist_ok=True)
    partial = cfg.out / "ablations.jsonl"
    partial.write_text("")
    for v in variants:
        t1 = time.perf_counter()
        ranking = _ranking(ctx, rankings, v.selection, v.k, v.fraction)
        if v.train:
            comp, history = train_compensation(
                ctx,
                ranking.selected,
                v.k,
                tcfg,
                use_directions=v.use_directions,
                use_bias=v.use_bias,
            )
            final_loss = history[-1]["loss"] if history else float("nan")
        else:
            from lcc_lens.compensation import Compensation

            comp = Compensation(ctx.pair.geometry, ranking.selected, use_directions=False)
            comp.init_from(ctx.lost(v.k).components)
            final_loss = float("nan")
        ppl = ctx.ppl(comp)
        if v is VARIANTS[0]:
            save_base(cfg.out / "base_fit", comp, ranking, history)
        row = {
            "variant": v.name,
            "selection": v.selection,
            "heads": f"{len(ranking.selected)} / {ctx.pair.geometry.n_total_heads}",
            "K": v.k,
            "trainable params": sum(p.numel() for p in comp.parameters() if p.requires_grad)
            if v.train
            else 0,
            "final train loss": float(final_loss),
            "held-out PPL": ppl,
            "gap closed": ctx.gap_closed(ppl),
            "seconds": time.perf_counter() - t1,
        }
        rows.append(row)
        with partial.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        logger.info("%s: ppl %.3f, gap closed %.3f", v.name, ppl, row["gap closed"])
    write_report(cfg, ctx, rows, time.perf_counter() - t0)
    return rows


def save_base(folder: Path, comp, ranking: HeadRanking, history: list[dict[str, Any]]) -> None:
    """Keep the base variant's fit so that analysis/findings.py can reuse it instead of retraining."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    comp.save(folder / "compensation.safetensors")
    torch.save(
        {
            "method": ranking.method,
            "scores": ranking.scores,
            "order": ranking.order,
            "selected": ranking.selected,
        },
        folder / "ranking.pt",
    )
    write_text(folder / "history.json", json.dumps(history))


def write_report(
    cfg: AblationConfig, ctx: Context, rows: list[dict[str, Any]], seconds: float
) -> Path:
    from lcc_lens import plots

    figs = cfg.out / "figures"
    bars = {"dense": ctx.ppl_dense, "pruned": ctx.ppl_pruned}
    bars.update({r["variant"]: r["held-out PPL"] for r in rows})
    fig = plots.comparison_bar(bars, "held-out perplexity")
    fig.update_layout(
        width=1200, height=600, xaxis_tickangle=-30, title="Ablations: held-out perplexity"
    )
    written = plots.save_figure(fig, figs / "ablations_ppl", png=True)
    cols = [
        "variant",
        "heads",
        "K",
        "trainable params",
        "final train loss",
        "held-out PPL",
        "gap closed",
        "seconds",
    ]
    cmd = "python analysis/ablations.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "# LCC ablations on SmolLM2-135M-Instruct (Wanda 50 % unstructured)",
            "",
            f"Command: `{cmd.strip()}` ({seconds / 60:.1f} min on this machine's CPU).",
            "",
            f"Dense held-out PPL {ctx.ppl_dense:.4g}; pruned {ctx.ppl_pruned:.4g} "
            f"({ctx.setup.eval_windows} windows x {ctx.setup.eval_context} tokens of the held-out 'test' text). "
            f"Each variant: fresh zero-initialised compensation, objective {cfg.objective}, {cfg.steps} steps of "
            f"batch {cfg.batch_size} (max length {ctx.setup.max_length}), lr {cfg.lr}, seed {ctx.setup.seed}; "
            f"lost components from {ctx.diff.n_positions} last-token activation differences; probe on "
            f"{len(ctx.probe)} contrastive samples. 'gap closed' = (PPL_pruned - PPL) / (PPL_pruned - PPL_dense).",
            "",
            markdown_table(rows, cols),
            "",
            "Notes: 'largest MSE' selects the heads with the largest mean ||dz||^2; 'KL attribution' is "
            "lcc_lens.selection's KL-gap score. K only changes the lost component the probe is built on "
            "(the directions V are all d_head right singular vectors either way), hence the selected heads.",
            "",
            f"![held-out perplexity per variant](figures/{written[-1].name})",
            "",
            "Identity: `" + json.dumps(ctx.identity(), default=str) + "`",
            "",
        ]
    )
    path = cfg.out / "ablations.md"
    write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rows = run(parse_args(argv))
    for r in rows:
        print(f"{r['variant']:<45} PPL {r['held-out PPL']:.3f}  gap closed {r['gap closed']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
