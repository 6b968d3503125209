"""The ablation table on the embedded real model (SmolLM2-135M-Instruct, Wanda 50 %).

Variants of one short LCC fit, sharing the pruned model, the activation differences, the lost
components and the probe samples: head selection (probe vs random vs largest-MSE vs KL attribution),
without V^T beta, without b, K (which changes the probe's lost component and so the selected heads), and
the fraction of heads. Each variant trains a fresh zero-initialised compensation with the same seed,
steps and data, then measures held-out perplexity and the share of the dense-to-pruned gap it closes.

    python -m analysis.ablations                  # the full table (about 30-40 min on 2 CPU cores)
    python -m analysis.ablations --steps 4 --only base,random   # a quick partial run

Held-out figures are those of the fit's evaluation protocol on its out-of-domain test domain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.common import (
    RESULTS,
    Shared,
    analysis_config,
    fit_record,
    markdown_table,
    run_shared_stages,
)
from lcc_lens.atomic import write_text
from lcc_lens.fit import FitConfig, stages
from lcc_lens.selection import HeadRanking

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
    fit: FitConfig
    only: tuple[str, ...] = ()
    out: Path = RESULTS
    report_only: bool = False
    ppl_dense: float | None = None
    ppl_pruned: float | None = None


def parse_args(argv: list[str] | None = None) -> AblationConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--objective", default="lm", choices=["lm", "kl", "mix"])
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-windows", type=int, default=24)
    p.add_argument("--only", default="", help=f"comma-separated subset of {sorted(SHORT)}")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--dense", default="embedded", help="dense model (default: the embedded SmolLM2)"
    )
    p.add_argument("--prune-method", default="wanda")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="render the report from the run's record (ablations.json), else from ablations.jsonl "
        "(rows of an interrupted run) and ablations_meta.json or --ppl-dense/--ppl-pruned as logged",
    )
    p.add_argument("--ppl-dense", type=float, default=None)
    p.add_argument("--ppl-pruned", type=float, default=None)
    a = p.parse_args(argv)
    only = tuple(s for s in a.only.split(",") if s)
    bad = [s for s in only if s not in SHORT]
    if bad:
        p.error(f"unknown variants {bad}; choose from {sorted(SHORT)}")
    fit = analysis_config(
        dense=a.dense,
        prune_method=a.prune_method,
        n_train=a.n_train,
        max_length=a.max_length,
        eval_windows=a.eval_windows,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        objective=a.objective,
    )
    return AblationConfig(fit, only, a.out, a.report_only, a.ppl_dense, a.ppl_pruned)


def variant_config(base: FitConfig, v: Variant) -> FitConfig:
    """The shared setting with this variant's selection, fraction and compensation shape."""
    return dataclasses.replace(
        base,
        select=dataclasses.replace(base.select, method=v.selection, fraction=v.fraction),
        compensation=dataclasses.replace(
            base.compensation, k=v.k, use_directions=v.use_directions, use_bias=v.use_bias
        ),
    )


def _ranking(shared: Shared, cache: dict, vcfg: FitConfig) -> HeadRanking:
    """Rank once per (selection, K) with the select stage; the fraction only cuts the shared order."""
    key = (vcfg.select.method, vcfg.compensation.k)
    if key not in cache:
        lost = shared.lost_of_rank(vcfg.compensation.k)
        cache[key] = stages.select(shared.pair, shared.data, lost, vcfg.select, vcfg.probe)
    return cache[key].top(vcfg.select.count(shared.pair.geometry))


def run(cfg: AblationConfig) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    shared = run_shared_stages(cfg.fit)
    base_scores = shared.scores(None)
    variants = [VARIANTS[SHORT[s]] for s in cfg.only] if cfg.only else list(VARIANTS)
    rows: list[dict[str, Any]] = []
    rankings: dict = {}
    cfg.out.mkdir(parents=True, exist_ok=True)
    partial = cfg.out / "ablations.jsonl"
    partial.write_text("")
    meta = run_meta(
        cfg,
        base_scores["ppl_dense"],
        base_scores["ppl_pruned"],
        shared.lost.diff.n_positions,
        shared.identity(),
    )
    write_text(cfg.out / "ablations_meta.json", json.dumps(meta, default=str))
    for v in variants:
        t1 = time.perf_counter()
        vcfg = variant_config(cfg.fit, v)
        ranking = _ranking(shared, rankings, vcfg)
        lost = shared.lost_of_rank(v.k)
        if v.train:
            comp = stages.build_compensation(
                shared.pair, ranking.selected, lost.components, vcfg.compensation
            )
            history = stages.train_compensation(shared.pair, comp, shared.data, vcfg.train).history
            final_loss = history[-1]["loss"] if history else float("nan")
        else:
            from lcc_lens.compensation import Compensation

            comp = Compensation(shared.pair.geometry, ranking.selected, use_directions=False)
            comp.init_from(lost.components.components)
            history, final_loss = [], float("nan")
        scores = shared.scores(comp)
        if v is VARIANTS[0]:
            base = VARIANTS[0]
            fit = fit_record(vcfg, selection=base.selection, fraction=base.fraction)
            save_base(cfg.out / "base_fit", comp, ranking, history, fit, shared)
        row = {
            "variant": v.name,
            "selection": v.selection,
            "heads": f"{len(ranking.selected)} / {shared.pair.geometry.n_total_heads}",
            "K": v.k,
            "trainable params": sum(p.numel() for p in comp.parameters() if p.requires_grad)
            if v.train
            else 0,
            "final train loss": float(final_loss),
            "held-out PPL": scores["ppl_restored"],
            "gap closed": scores["gap_closed"],
            "seconds": time.perf_counter() - t1,
        }
        rows.append(row)
        with partial.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        logger.info("%s: ppl %.3f, gap closed %.3f", v.name, row["held-out PPL"], row["gap closed"])
    write_report(meta, rows, time.perf_counter() - t0, cfg.out)
    return rows


def run_meta(
    cfg: AblationConfig,
    ppl_dense: float,
    ppl_pruned: float,
    n_positions: int,
    identity,
) -> dict:
    """What the report states about the shared setting besides the rows."""
    fit = cfg.fit
    return {
        "ppl_dense": ppl_dense,
        "ppl_pruned": ppl_pruned,
        "n_positions": n_positions,
        "n_probe": fit.probe.n_pairs,
        "objective": fit.train.objective,
        "steps": fit.train.steps,
        "batch_size": fit.train.batch_size,
        "lr": fit.train.lr,
        "setup": {
            "eval_domain": fit.data.test_domain,
            "eval_windows": fit.eval.windows,
            "eval_context": fit.eval.context_length,
            "max_length": fit.max_length,
            "seed": fit.seed,
            "n_train": fit.data.n_train,
        },
        "identity": identity,
        "command": "python -m analysis.ablations " + " ".join(sys.argv[1:]),
    }


def report_only(cfg: AblationConfig) -> Path:
    """The report from the run's record, or from the rows an interrupted run wrote, with no model run."""
    from lcc_lens.errors import DataError

    record_path = cfg.out / "ablations.json"
    if record_path.is_file():
        path = cfg.out / "ablations.md"
        write_text(path, render(json.loads(record_path.read_text(encoding="utf-8"))))
        return path
    rows_path = cfg.out / "ablations.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{rows_path} holds no rows; run the ablations first.")
    meta_path = cfg.out / "ablations_meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    elif cfg.ppl_dense is not None and cfg.ppl_pruned is not None:
        from lcc_lens.models import describe

        identity = {
            "dense": describe(cfg.fit.dense),
            "note": "meta rebuilt from the run's command line and log",
        }
        meta = run_meta(cfg, cfg.ppl_dense, cfg.ppl_pruned, cfg.fit.data.n_diff_prompts, identity)
    else:
        raise DataError(
            f"{meta_path} is missing: pass --ppl-dense and --ppl-pruned as logged by the run."
        )
    return write_report(meta, rows, sum(r["seconds"] for r in rows), cfg.out)


def save_base(
    folder: Path,
    comp,
    ranking: HeadRanking,
    history: list[dict[str, Any]],
    fit: dict[str, Any],
    shared: Shared,
) -> None:
    """Keep the base variant's fit so that analysis/findings.py can reuse it instead of retraining."""
    folder.mkdir(parents=True, exist_ok=True)
    comp.save(folder / "compensation.safetensors")
    write_text(folder / "ranking.json", ranking.dumps(shared.pair.geometry))
    write_text(folder / "history.json", json.dumps(history))
    write_text(folder / "fit.json", json.dumps(fit, default=str))


def write_report(
    meta: dict[str, Any], rows: list[dict[str, Any]], seconds: float, out: Path
) -> Path:
    """Write the run's record (``ablations.json``), its figures and the table rendered from it."""
    figures = write_figures(meta, rows, out / "figures")
    record = {"meta": meta, "rows": rows, "seconds": seconds, "figures": figures}
    text = json.dumps(record, indent=1, default=str) + "\n"
    write_text(out / "ablations.json", text)
    path = out / "ablations.md"
    write_text(path, render(json.loads(text)))  # rendered from the record as committed
    return path


def write_figures(meta: dict[str, Any], rows: list[dict[str, Any]], figs: Path) -> dict[str, str]:
    """The perplexity and gap-closed bars; the file names the report links to."""
    from lcc_lens import plots

    bars = {"dense": meta["ppl_dense"], "pruned": meta["ppl_pruned"]}
    bars.update({r["variant"]: r["held-out PPL"] for r in rows})
    layout = {"width": 1200, "height": 650, "xaxis_tickangle": -30, "xaxis_title": "variant"}
    fig = plots.comparison_bar(bars, "held-out perplexity", zero_based=False)
    fig.update_layout(title="Ablations: held-out perplexity", **layout)
    written = plots.save_figure(fig, figs / "ablations_ppl", png=True)
    gap = plots.comparison_bar(
        {r["variant"]: r["gap closed"] for r in rows}, "gap closed (fraction)"
    )
    gap.update_layout(title="Ablations: share of the PPL gap closed", **layout)
    written_gap = plots.save_figure(gap, figs / "ablations_gap", png=True)
    return {"ppl": written[-1].name, "gap": written_gap[-1].name}


COLUMNS = [
    "variant",
    "heads",
    "K",
    "trainable params",
    "final train loss",
    "held-out PPL",
    "gap closed",
    "gap closed (NLL)",
    "seconds",
]


def render(record: dict[str, Any]) -> str:
    """The ablation report of one record (no model run, no figure written)."""
    meta, seconds, figures = record["meta"], record["seconds"], record["figures"]
    log_d, log_p = math.log(meta["ppl_dense"]), math.log(meta["ppl_pruned"])
    rows = [
        {**r, "gap closed (NLL)": (log_p - math.log(r["held-out PPL"])) / (log_p - log_d)}
        for r in record["rows"]
    ]
    cmd = meta["command"]
    st = meta["setup"]
    missing = [v.name for v in VARIANTS if v.name not in {r["variant"] for r in rows}]
    text = "\n".join(
        [
            "# LCC ablations on SmolLM2-135M-Instruct (Wanda 50 % unstructured)",
            "",
            f"Command: `{cmd.strip()}` ({seconds / 60:.1f} min of variant time on this machine's shared CPU). "
            "Generated by `analysis/ablations.py` from `ablations.json`.",
            "",
            f"Dense held-out PPL {meta['ppl_dense']:.4g}; pruned {meta['ppl_pruned']:.4g} "
            f"({st['eval_windows']} windows x {st['eval_context']} tokens of the held-out "
            f"{st.get('eval_domain', 'test')!r} text). "
            f"Each variant: fresh zero-initialised compensation, objective {meta['objective']}, {meta['steps']} "
            f"steps of batch {meta['batch_size']} (max length {st['max_length']}), lr {meta['lr']}, seed "
            f"{st['seed']}; lost components from {meta['n_positions']} last-token activation differences; probe on "
            f"{meta['n_probe']} contrastive pairs. 'gap closed' = (PPL_pruned - PPL) / (PPL_pruned - PPL_dense); "
            "'gap closed (NLL)' is the same in log-perplexity, as `python -m lcc_lens.eval` reports it.",
            "",
            markdown_table(rows, COLUMNS),
            "",
            (
                "Not in this run (see --only, or an interrupted run): " + "; ".join(missing) + "."
                if missing
                else ""
            ),
            "",
            "Notes: 'largest MSE' selects the heads with the largest mean ||dz||^2; 'KL attribution' is "
            "lcc_lens.selection's KL-gap score. K only changes the lost component the probe is built on "
            "(the directions V are all d_head right singular vectors either way), hence the selected heads.",
            "",
            f"![held-out perplexity per variant](figures/{figures['ppl']}) "
            f"![gap closed per variant](figures/{figures['gap']})",
            "",
            "Identity: `" + json.dumps(meta["identity"], default=str) + "`",
            "",
        ]
    )
    return text


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = parse_args(argv)
    if cfg.report_only:
        print(report_only(cfg).read_text())
        return 0
    rows = run(cfg)
    for r in rows:
        print(f"{r['variant']:<45} PPL {r['held-out PPL']:.3f}  gap closed {r['gap closed']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
