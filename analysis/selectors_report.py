"""The selector comparison's report, generated from the committed JSON of ``analysis.selectors``."""

from __future__ import annotations

import json
import math
import statistics
from itertools import combinations
from pathlib import Path
from typing import Any

from lcc_lens.atomic import write_text

ORDER = ("probe", "probe_aligned", "random", "norm", "mse", "kl", "all")


def _ms(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def _jaccard(sets: list[set]) -> float | None:
    pairs = list(combinations(sets, 2))
    if not pairs:
        return None
    return statistics.fmean(len(a & b) / max(1, len(a | b)) for a, b in pairs)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _num2(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _cell(mean: float, sd: float) -> str:
    return f"{mean:+.3f} +- {sd:.3f}" if not math.isnan(sd) else f"{mean:+.3f}"


def summarise(out: Path) -> dict[str, Any]:
    """Per selector and domain: NLL gap closed over seeds; probe vs random; probe signal."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*_seed*.json"))]
    base_path = out / "runs" / "baseline.json"
    base = json.loads(base_path.read_text()) if base_path.is_file() else None
    roles: dict[str, str] = base["roles"] if base else {}
    by_sel: dict[str, list[dict]] = {}
    for r in runs:
        by_sel.setdefault(r["selector"], []).append(r)
    rows: dict[str, Any] = {}
    for name in [s for s in ORDER if s in by_sel] + sorted(set(by_sel) - set(ORDER)):
        rs = sorted(by_sel[name], key=lambda r: r["seed"])
        gaps = {d: [r["gap_closed_nll"][d] for r in rs] for d in roles}
        rows[name] = {
            "seeds": [r["seed"] for r in rs],
            "n_heads": rs[0]["n_heads"],
            "gap_closed_nll": {
                d: dict(zip(("mean", "sd"), _ms(v), strict=True)) for d, v in gaps.items()
            },
            "gap_closed_nll_per_seed": gaps,
            "jaccard_across_seeds": _jaccard([{tuple(h) for h in r["heads"]} for r in rs]),
        }
    comparisons = {}
    for name in ("probe", "probe_aligned", "norm", "mse", "kl"):
        if name in rows and "random" in rows:
            comparisons[name] = {
                d: _versus(
                    rows[name]["gap_closed_nll_per_seed"][d],
                    rows["random"]["gap_closed_nll_per_seed"][d],
                )
                for d in roles
            }
    rankings = json.loads((out / "rankings.json").read_text())
    signal = {key: r["info"] for key, r in rankings["rankings"].items() if key.startswith("probe")}
    sets: dict[str, list[set]] = {}
    for key, r in rankings["rankings"].items():
        sets.setdefault(key.split("/")[0], []).append({tuple(h) for h in r["selected"]})
    selection = {
        name: {
            "jaccard_across_seeds": _jaccard(v),
            "jaccard_with_probe": _jaccard([v[0], sets["probe"][0]]) if "probe" in sets else None,
        }
        for name, v in sets.items()
    }
    return {
        "selection_overlap": selection,
        "baseline": base,
        "roles": roles,
        "selectors": rows,
        "versus_random": comparisons,
        "probe_signal": signal,
        "command": rankings.get("command", "python -m analysis.selectors rank"),
        "ridge_check": rankings.get("ridge_check", {}),
        "setup": rankings["setup"],
        "fit_setup": runs[0]["setup"] if runs else None,
        "recipe": _recipe(runs),
        "probe_pairs": rankings["probe_pairs"],
    }


def _recipe(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The training recipe every run used: its recorded fit configuration (seed aside).

    Runs written before the configuration was recorded ran the same code path; they are counted so the
    report can say how many runs carry the record.
    """
    recorded = [r["fit_config"] for r in runs if "fit_config" in r]
    if not recorded:
        return None
    keys = ("train", "compensation", "data", "max_length")
    first = {k: recorded[0][k] for k in keys}
    if any({k: c[k] for k in keys} != first for c in recorded[1:]):
        raise ValueError("selector runs were trained with different recipes; rerun them together.")
    return {**first, "n_runs_recorded": len(recorded), "n_runs": len(runs)}


def _versus(a: list[float], b: list[float]) -> dict[str, float | bool | None]:
    """a - b in units of the larger per-seed sd and of the standard error of the difference."""
    ma, sa = _ms(a)
    mb, sb = _ms(b)
    diff = ma - mb
    sd = max(sa, sb) if not (math.isnan(sa) or math.isnan(sb)) else math.nan
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b)) if not math.isnan(sd) else math.nan
    return {
        "difference": diff,
        "in_sd": diff / sd if sd and not math.isnan(sd) else None,
        "in_se": diff / se if se and not math.isnan(se) else None,
        "more_than_2_sd": bool(sd and not math.isnan(sd) and diff > 2 * sd),
        "n_seeds": min(len(a), len(b)),
    }


def _recipe_text(recipe: dict[str, Any] | None, st: dict[str, Any]) -> list[str]:
    """One paragraph naming the compensation form, objective, data and budget of every run."""
    if recipe is None:
        return [f"Compensation trained for {st['steps']} steps of batch {st['batch_size']}."]
    tr, comp, data = recipe["train"], recipe["compensation"], recipe["data"]
    form = "V^T beta + b" if comp["use_directions"] else "a free offset b"
    return [
        f"The default fit's recipe on each selector's heads ({st['fraction']:.0%} of the heads; "
        f"'all': every head): {form} per head, objective {tr['objective']}, lr {tr['lr']}, "
        f"{tr['steps']} steps of batch {tr['batch_size']} (max length {recipe['max_length']}), "
        f"training text '{data['fit_text']}' (targets '{data['targets']}'); the same data and seed "
        f"for every selector (recipe recorded in {recipe['n_runs_recorded']} of {recipe['n_runs']} "
        "run files; the others ran the same code path before the record was added).",
        "",
    ]


def _restoration(s: dict[str, Any]) -> list[str]:
    """The selector table and the comparison with random heads, or why they are missing."""
    roles, st, base = s["roles"], s["fit_setup"], s["baseline"]
    if not s["selectors"] or base is None:
        return [
            "No restoration run has been written yet (`runs/` is empty): see the command above."
        ]
    order = sorted(roles, key=lambda d: ("test", "validation", "in_domain").index(roles[d]))
    head = ["selector", "heads"] + [f"{d} ({roles[d]})" for d in order] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in s["selectors"].items():
        cells = [_cell(r["gap_closed_nll"][d]["mean"], r["gap_closed_nll"][d]["sd"]) for d in order]
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(f"| {name} | {r['n_heads']} | " + " | ".join(cells) + f" | {seeds} |")
    test = order[0]
    vs = [
        f"| {name} - random | {c[test]['difference']:+.4f} | {_num(c[test]['in_sd'])} | "
        f"{_num(c[test]['in_se'])} | {'yes' if c[test]['more_than_2_sd'] else 'no'} | "
        f"{c[test]['n_seeds']} |"
        for name, c in s["versus_random"].items()
    ]
    rows = s["selectors"]
    best = max(rows, key=lambda n: rows[n]["gap_closed_nll"][test]["mean"])
    budget = [n for n in rows if n != "all"] or list(rows)
    best_budget = max(budget, key=lambda n: rows[n]["gap_closed_nll"][test]["mean"])
    return [
        *_recipe_text(s.get("recipe"), st),
        "NLL gap closed = (NLL_pruned - NLL_restored) / (NLL_pruned - "
        f"NLL_dense) on the evaluation protocol's windows ({base['protocol']['windows']} x "
        f"{base['protocol']['context_length']} tokens per domain, the same windows for every run); mean "
        "+- sd over seeds. Out-of-domain columns first: the test domain is never used for calibration, "
        "fitting or choosing defaults.",
        "",
        *lines,
        "",
        "Dense / pruned NLL (nats/token): "
        + "; ".join(f"{d} {base['dense'][d]:.3f} / {base['pruned'][d]:.3f}" for d in order),
        "",
        f"### Against random heads ({test}, out of domain)",
        "",
        "| comparison | difference | in sd (larger of the two) | in SE of the difference | > 2 sd | seeds |",
        "|---|---|---|---|---|---|",
        *vs,
        "",
        f"Best selector on {test}: **{best}**; best at the head budget: **{best_budget}**.",
    ]


def write_figures(out: Path) -> list[Path]:
    """The probe figures (score against its permutation null, selected heads marked), redrawn from the
    committed ``heads_<probe>.json`` so they need no model: HTML always, PNG where kaleido works."""
    import torch

    from lcc_lens import plots
    from lcc_lens.models import HeadGeometry
    from lcc_lens.plots.probe import probe_null_figure

    written: list[Path] = []
    for path in sorted(out.glob("heads_probe*.json")):
        doc = json.loads(path.read_text())
        rows = doc["ranking"]
        n_layers = 1 + max(r["layer"] for r in rows)
        n_heads = 1 + max(r["head"] for r in rows)
        # only the layer x head grid is drawn; the other sizes are not recorded in heads.json
        g = HeadGeometry("from " + path.name, n_layers, n_heads, n_heads, 0, 0, 0)
        grids = {k: torch.zeros(n_layers, n_heads) for k in ("score", "null_mean", "null_sd")}
        for r in rows:
            for k, grid in grids.items():
                grid[r["layer"], r["head"]] = r[k]
        paper = doc["info"]["probe_mode"] == "paper"
        fig = probe_null_figure(
            grids["score"],
            grids["null_mean"],
            grids["null_sd"],
            g,
            [tuple(h) for h in doc["selected"]],
            label="held-out pairwise accuracy" if paper else "|w.c| / contrast",
        )
        name = path.stem.removeprefix("heads_")
        written += plots.save_figure(fig, out / "figures" / f"{name}_null", png=True)
    return written


def write_report(out: Path) -> Path:
    """Regenerate ``selectors.json``, the probe figures and ``selectors.md`` from ``out``'s records."""
    s = summarise(out)
    write_figures(out)
    write_text(out / "selectors.json", json.dumps(s, indent=1) + "\n")
    path = out / "selectors.md"
    write_text(path, report_markdown(s))
    return path


def report_markdown(s: dict[str, Any]) -> str:
    """``selectors.md`` from :func:`summarise`'s summary."""
    st = s["setup"]
    sig = [
        f"| {key} | {info['mean_accuracy']:.3f} | {info['heads_accuracy_p_below_0.01']} | "
        f"{info['top_n_jaccard_across_splits']:.2f} |"
        for key, info in s["probe_signal"].items()
    ]
    ridge = [
        f"| {k} | {v['mean_accuracy']:.3f} | {v['top_n_mean_accuracy']:.3f} | {v['max_accuracy']:.3f} | "
        f"{v['heads_z_above_3']} | {v['top_n_jaccard_across_splits']:.2f} |"
        for k, v in s["ridge_check"].items()
    ]
    overlap = [
        f"| {name} | {_num2(v['jaccard_across_seeds'])} | {_num2(v['jaccard_with_probe'])} |"
        for name, v in s["selection_overlap"].items()
    ]
    return "\n".join(
        [
            "# Head selectors compared: out-of-domain restoration at the same head budget",
            "",
            "Generated by `python -m analysis.selectors report` from `runs/*.json` and `rankings.json`; "
            f"produced by `{s['command']}` and `python -m analysis.selectors fit` with the same size "
            "flags. SmolLM2-135M-Instruct (embedded), Wanda 50 %. Probe on "
            f"{sum(s['probe_pairs'].values())} contrastive pairs {s['probe_pairs']} from the fit split "
            f"of the fit domains ({st['context_words']}-word contexts, {st['response_words']}-word "
            "continuations).",
            "",
            "## Probe signal (held-out pairwise accuracy against a label-permutation null)",
            "",
            "| probe / seed | mean held-out accuracy | heads with p < 0.01 | top-k Jaccard across splits |",
            "|---|---|---|---|",
            *sig,
            "",
            "Ridge penalty of the probes (paper mode, 20 shuffles; the default is 0.1):",
            "",
            "| ridge | mean accuracy | top-k mean accuracy | max accuracy | heads z > 3 | top-k Jaccard "
            "across splits |",
            "|---|---|---|---|---|---|",
            *ridge,
            "",
            "## Selected sets: stability across seeds and overlap with the probe's",
            "",
            "| selector | Jaccard across seeds | Jaccard with probe (seed 0) |",
            "|---|---|---|",
            *overlap,
            "",
            "## Restoration",
            "",
            *_restoration(s),
            "",
            "Per-head scores, nulls and stability: `heads_probe.json`, `heads_probe_aligned.json`; figures "
            "in `figures/`.",
            "",
        ]
    )
