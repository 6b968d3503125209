"""The paper's analyses on the embedded real model (SmolLM2-135M-Instruct, Wanda 50 %), with figures.

* what pruning lost per head (norm of the lost component, relative ||dz||, dense/pruned cosine);
* spectra of dZ and leading versus minor components (Finding 3): inject only the i-th singular
  component of each selected head's dZ, training-free, and measure held-out perplexity and a task's
  correct-minus-wrong logit difference (Finding 1 is the same measurement for the leading components);
* a short fit (reused from analysis/ablations.py's base variant when present): training curves, dense /
  pruned / restored perplexity, head selection, per-head restoration on held-out prompts;
* the logit lens of each compensation (Figure 5) and each head's logit gain on the task (Finding 2).

    python -m analysis.findings     # writes analysis/results/findings.md and figures/ (about 10 min)

Held-out figures are the fit's evaluation protocol on its out-of-domain test domain.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.common import (
    RESULTS,
    Shared,
    analysis_config,
    describe_fit,
    fit_record,
    markdown_table,
    run_shared_stages,
    top_heads,
)
from lcc_lens import plots
from lcc_lens.atomic import write_text
from lcc_lens.compensation import Compensation
from lcc_lens.evaluation.suite import next_passage_items
from lcc_lens.fit import FitConfig, stages
from lcc_lens.fit.evaluate import heldout_evaluation, restoration
from lcc_lens.lens import AnswerPair, answer_pairs_from_choices, logit_gain, logit_lens
from lcc_lens.models import HeadGeometry
from lcc_lens.selection import HeadRanking

logger = logging.getLogger("analysis.findings")

COMPONENT_INDICES = (1, 2, 5, 20, 50)


@dataclass(frozen=True)
class FindingsConfig:
    fit: FitConfig
    fraction: float = 0.1
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
    fit = analysis_config(
        dense=a.dense,
        prune_method=a.prune_method,
        n_train=a.n_train,
        max_length=a.max_length,
        eval_windows=a.eval_windows,
        steps=a.steps,
        batch_size=a.batch_size,
        objective=a.objective,
    )
    reuse = None if a.no_reuse else a.out / "base_fit"
    return FindingsConfig(
        fit,
        n_task=a.n_task,
        n_heldout=a.n_heldout,
        component_windows=a.component_windows,
        reuse=reuse,
        out=a.out,
    )


def ranking_from_json(data: dict[str, Any], geometry: HeadGeometry) -> HeadRanking:
    """A HeadRanking back from the heads JSON a fit or the ablations wrote."""
    scores = torch.zeros(geometry.n_layers, geometry.n_heads)
    order = []
    for row in data["ranking"]:
        scores[row["layer"], row["head"]] = row["score"]
        order.append((row["layer"], row["head"]))
    selected = [tuple(h) for h in data["selected"]]
    return HeadRanking(data["method"], scores, order, sorted(selected))  # type: ignore[arg-type]


def _fit(cfg: FindingsConfig, shared: Shared):
    """(compensation, ranking, history, description): the ablations' base fit when present, else a
    fresh one trained with this script's settings by the fit's own stages."""
    reuse = cfg.reuse
    if reuse is not None and (reuse / "compensation.safetensors").is_file():
        if not (reuse / "fit.json").is_file() or not (reuse / "ranking.json").is_file():
            logger.warning("%s lacks fit.json or ranking.json; training afresh", reuse)
        else:
            comp = Compensation.load(reuse / "compensation.safetensors")
            ranking = ranking_from_json(
                json.loads((reuse / "ranking.json").read_text()), shared.pair.geometry
            )
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
    fcfg = dataclasses.replace(
        cfg.fit, select=dataclasses.replace(cfg.fit.select, method="probe", fraction=cfg.fraction)
    )
    ranking = stages.select(shared.pair, shared.data, shared.lost, fcfg.select, fcfg.probe)
    comp = stages.build_compensation(
        shared.pair, ranking.selected, shared.lost.components, fcfg.compensation
    )
    history = stages.train_compensation(shared.pair, comp, shared.data, fcfg.train).history
    fit = fit_record(fcfg, selection="probe", fraction=cfg.fraction)
    return comp, ranking, history, f"trained here ({describe_fit(fit)})"


@torch.no_grad()
def single_components(shared: Shared, heads: list[tuple[int, int]], index: int) -> torch.Tensor:
    """c_i = mean_n(U[n, i]) S[i] V[i] per head (i is 1-based), zero elsewhere: [L, H, d]."""
    g = shared.pair.geometry
    out = torch.zeros(g.n_layers, g.n_heads, g.d_head)
    for layer, head in heads:
        dz = shared.lost.diff.samples[layer, head].double()
        u, s, vh = torch.linalg.svd(dz, full_matrices=False)
        if index - 1 < s.shape[0]:
            out[layer, head] = (u[:, index - 1].mean() * s[index - 1] * vh[index - 1]).float()
    return out


def _offsets_comp(shared: Shared, heads, offsets: torch.Tensor) -> Compensation:
    comp = Compensation(shared.pair.geometry, heads, use_directions=False)
    comp.init_from(offsets)
    return comp


def _task_logit_diff(shared: Shared, comp: Compensation, task: list[AnswerPair]) -> float:
    return logit_gain(shared.pair, comp, task).logit_diff_restored


def _shorter(shared: Shared, windows: int) -> Shared:
    """The same setting scored on fewer held-out windows (the many component injections)."""
    config = dataclasses.replace(
        shared.config, eval=dataclasses.replace(shared.config.eval, windows=windows)
    )
    baseline = heldout_evaluation(shared.pair, None, shared.data, config.eval)
    return dataclasses.replace(shared, config=config, baseline=baseline)


def run(cfg: FindingsConfig) -> Path:
    t0 = time.perf_counter()
    shared = run_shared_stages(cfg.fit)
    g = shared.pair.geometry
    figs = cfg.out / "figures"
    saved: dict[str, str] = {}

    def save(fig, name: str) -> None:
        paths = plots.save_figure(fig, figs / name, png=True)
        saved[name] = paths[-1].name

    comp, ranking, history, fit_source = _fit(cfg, shared)
    heads = comp.selected_heads()
    diff = shared.lost.diff
    lc1 = stages.components_of_rank(shared.lost, 1)
    lc10 = stages.components_of_rank(shared.lost, 10)

    # 1. what was lost
    save(plots.lost_heatmaps(diff, lc1, selected=heads), "lost_components")
    top_lost = top_heads(lc1.norms, g, 10)

    # 4. spectra, and leading vs minor components (training-free injection on the selected heads)
    save(plots.spectra_figure(lc1, g, max_heads=8, leading_k=1), "spectra")
    task = answer_pairs_from_choices(next_passage_items(cfg.n_task, seed=cfg.fit.seed))
    short = _shorter(shared, cfg.component_windows)
    base_ppl_pruned = short.scores(None)["ppl_pruned"]
    gain_probe = logit_gain(shared.pair, _offsets_comp(shared, heads, lc1.components), task)
    ld_pruned, ld_dense = gain_probe.logit_diff_pruned, gain_probe.logit_diff_dense
    comp_rows: list[dict[str, Any]] = []
    ppl_series: dict[int, float] = {}
    ld_series: dict[int, float] = {}
    for i in COMPONENT_INDICES:
        c = _offsets_comp(shared, heads, single_components(shared, heads, i))
        ppl_i = short.scores(c)["ppl_restored"]
        ld_i = _task_logit_diff(shared, c, task)
        ppl_series[i], ld_series[i] = ppl_i, ld_i
        comp_rows.append(
            {"injected": f"component {i} only", "held-out PPL": ppl_i, "task logit diff": ld_i}
        )
    for k, lc in ((1, lc1), (10, lc10)):
        c = _offsets_comp(shared, heads, lc.components)
        comp_rows.append(
            {
                "injected": f"rank-{k} lost component (sum of 1..{k})",
                "held-out PPL": short.scores(c)["ppl_restored"],
                "task logit diff": _task_logit_diff(shared, c, task),
            }
        )
    save(
        plots.component_rank_effect(
            {"held-out PPL": ppl_series},
            metric_name=f"held-out perplexity ({cfg.component_windows} windows)",
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
    scores = shared.scores(comp)
    save(
        plots.training_curves(history),
        "training_curves",
    )
    ppl = {k: scores[f"ppl_{k}"] for k in ("dense", "pruned", "restored")}
    save(plots.comparison_bar(ppl, "held-out perplexity"), "perplexity")

    # 3. selection
    save(
        plots.selection_figure(ranking.scores, g, ranking.selected, method=ranking.method),
        "selection",
    )

    # 2. restoration on held-out prompts
    stats = restoration(shared.pair, comp, shared.data, shared.config.diff, cfg.n_heldout)
    save(plots.restoration_heatmap(stats), "restoration")
    save(plots.restoration_ranking(stats, top_n=30), "restoration_ranking")

    # 5. logit lens, 6. logit gain
    lens = logit_lens(shared.pair.pruned, comp, shared.pair.tokenizer, top_k=8, max_heads=15)
    save(plots.logit_lens_figure(lens), "logit_lens")
    gain = logit_gain(shared.pair, comp, task)
    save(plots.logit_gain_figure(gain, selected=heads), "logit_gain")

    record = findings_record(
        cfg,
        shared,
        scores,
        fit_source,
        heads,
        top_lost,
        lc1,
        comp_rows,
        (base_ppl_pruned, ld_pruned, ld_dense),
        stats,
        lens,
        gain,
        saved,
        time.perf_counter() - t0,
    )
    text = json.dumps(record, indent=1, default=str) + "\n"
    write_text(cfg.out / "findings.json", text)
    path = cfg.out / "findings.md"
    write_text(path, render(json.loads(text)))  # rendered from the record as committed
    return path


def findings_record(
    cfg: FindingsConfig,
    shared: Shared,
    scores: dict[str, Any],
    fit_source: str,
    heads: list[tuple[int, int]],
    top_lost,
    lc1,
    comp_rows: list[dict[str, Any]],
    baselines: tuple[float, float, float],
    stats,
    lens,
    gain,
    saved: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    """Every figure the report quotes, as plain JSON values (the report is rendered from this)."""
    g = shared.pair.geometry
    diff = shared.lost.diff
    share = lc1.explained(1)
    pruned_short, ld_pruned, ld_dense = baselines
    return {
        "command": "python -m analysis.findings " + " ".join(sys.argv[1:]),
        "seconds": seconds,
        "fit_source": fit_source,
        "n_selected": len(heads),
        "n_total_heads": g.n_total_heads,
        "lost": {
            "n_positions": diff.n_positions,
            "rel_dz_mean": float(diff.rel_dz_norm.mean()),
            "rel_dz_max": float(diff.rel_dz_norm.max()),
            "cosine_mean": float(diff.cosine.mean()),
            "cosine_min": float(diff.cosine.min()),
            "top": [[name, value] for name, value, _ in top_lost],
            "share_median": float(share.median()),
            "share_min": float(share.min()),
            "share_max": float(share.max()),
        },
        "components": {
            "windows": cfg.component_windows,
            "ppl_pruned": pruned_short,
            "logit_diff_pruned": ld_pruned,
            "logit_diff_dense": ld_dense,
            "rows": comp_rows,
        },
        "fit": {
            "eval_domain": scores["eval_domain"],
            "windows": cfg.fit.eval.windows,
            "context_length": cfg.fit.eval.context_length,
            "ppl": {k: scores[f"ppl_{k}"] for k in ("dense", "pruned", "restored")},
            "gap_closed_nll": scores["gap_closed_nll"],
            "gap_closed": scores["gap_closed"],
        },
        "restoration": {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.summary().items()
        },
        "lens": [
            {
                "head": h.name,
                "||W_O c||": h.write_norm,
                "promoted": ", ".join(repr(t) for t in h.promoted[:5]),
                "suppressed": ", ".join(repr(t) for t in h.suppressed[:5]),
            }
            for h in lens.heads[:8]
        ],
        "gain": {
            "n_examples": gain.n_examples,
            "n_skipped": gain.n_skipped,
            "logit_diff_pruned": gain.logit_diff_pruned,
            "logit_diff_restored": gain.logit_diff_restored,
            "logit_diff_dense": gain.logit_diff_dense,
            "sum": float(gain.gain.sum()),
            "largest_abs": [
                [n, float(gain.gain[lh])] for n, _, lh in top_heads(gain.gain.abs(), g, 8)
            ],
            "most_positive": [[n, v] for n, v, _ in top_heads(gain.gain, g, 8)],
        },
        "figures": saved,
        "identity": shared.identity(),
    }


def _figure_note(saved: dict[str, str]) -> list[str]:
    """Where the figures are when the run could only write HTML (ignored by git, so not committed)."""
    if not any(name.endswith(".html") for name in saved.values()):
        return []
    return [
        "",
        "The figures below are the run's interactive HTML files in `analysis/results/figures/`. They are "
        "not committed (`analysis/results/**/*.html` is ignored): run the command above to write them. "
        "With kaleido and Chromium installed the run writes PNGs, which are committed.",
    ]


def render(record: dict[str, Any]) -> str:
    """The findings report of one record (no model run)."""
    lost, comps, fit, gain = record["lost"], record["components"], record["fit"], record["gain"]
    saved, ppl = record["figures"], fit["ppl"]
    lines = [
        "# LCC findings on SmolLM2-135M-Instruct (Wanda 50 % unstructured)",
        "",
        f"Command: `{record['command'].strip()}` ({record['seconds'] / 60:.1f} min). Fit: "
        f"{record['fit_source']} ({record['n_selected']} of {record['n_total_heads']} heads by probe). "
        "Generated by `analysis/findings.py` from `findings.json`.",
        *_figure_note(saved),
        "",
        "## What pruning lost (plot 1)",
        f"Activation differences at the last prompt token of {lost['n_positions']} prompts. "
        f"Mean ||dz||/||z_dense|| over heads {lost['rel_dz_mean']:.3f} "
        f"(max {lost['rel_dz_max']:.3f}); mean dense/pruned cosine "
        f"{lost['cosine_mean']:.3f} (min {lost['cosine_min']:.3f}).",
        "Largest lost components (rank 1): "
        + ", ".join(f"{n} {v:.2f}" for n, v in lost["top"])
        + ".",
        f"![lost](figures/{saved['lost_components']})",
        "",
        "## Spectra and leading vs minor components (plot 4, Finding 3)",
        f"Share of ||dZ||^2 in the top direction: median {lost['share_median']:.2f}, "
        f"min {lost['share_min']:.2f}, max {lost['share_max']:.2f}.",
        f"Training-free injection into the {record['n_selected']} selected heads; PPL over "
        f"{comps['windows']} held-out "
        f"windows (pruned {comps['ppl_pruned']:.4g}); task = {gain['n_examples']} next-passage items, "
        f"logit diff of the correct vs a wrong ending's first token (pruned "
        f"{comps['logit_diff_pruned']:.3f}, dense {comps['logit_diff_dense']:.3f}).",
        "",
        markdown_table(comps["rows"], ["injected", "held-out PPL", "task logit diff"]),
        "",
        f"![spectra](figures/{saved['spectra']}) ![ppl](figures/{saved['components_ppl']}) "
        f"![ld](figures/{saved['components_logit_diff']})",
        "",
        "## Fit: training and dense / pruned / restored (plot 7)",
        f"Held-out PPL on {fit['eval_domain']!r} (out of domain; {fit['windows']} windows x "
        f"{fit['context_length']}): dense {ppl['dense']:.4g}, pruned {ppl['pruned']:.4g}, restored "
        f"{ppl['restored']:.4g}; gap closed {fit['gap_closed_nll']:.3f} in NLL, "
        f"{fit['gap_closed']:.3f} on the perplexity scale.",
        f"![curves](figures/{saved['training_curves']}) ![ppl](figures/{saved['perplexity']})",
        "",
        "## Head selection (plot 3)",
        f"![selection](figures/{saved['selection']})",
        "",
        "## Restoration per head on held-out prompts (plot 2)",
        "`" + json.dumps(record["restoration"]) + "`",
        f"![restoration](figures/{saved['restoration']}) ![ranking](figures/{saved['restoration_ranking']})",
        "",
        "## Logit lens of the compensations (plot 5, the paper's Figure 5)",
        markdown_table(record["lens"], ["head", "||W_O c||", "promoted", "suppressed"]),
        "",
        f"![lens](figures/{saved['logit_lens']})",
        "",
        "## Per-head logit gain on the task (plot 6, Finding 2)",
        f"Logit diff pruned {gain['logit_diff_pruned']:.3f}, restored {gain['logit_diff_restored']:.3f}, "
        f"dense {gain['logit_diff_dense']:.3f}; sum of the heads' direct gains {gain['sum']:.3f} over "
        f"{gain['n_examples']} items ({gain['n_skipped']} skipped: same first token).",
        "Largest |gain|: " + ", ".join(f"{n} {v:+.3f}" for n, v in gain["largest_abs"]) + ".",
        f"Most positive: {', '.join(f'{n} {v:+.3f}' for n, v in gain['most_positive'])}.",
        f"![gain](figures/{saved['logit_gain']})",
        "",
        "Identity: `" + json.dumps(record["identity"], default=str) + "`",
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
