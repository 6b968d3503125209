"""Tables of the out-of-domain experiments, generated from the committed JSON of ``analysis.ood_sweep``.

Reads ``analysis/results/ood/records/*.json`` and writes ``analysis/results/ood/summary.json`` and
``analysis/results/ood/results.md``: per setting and domain (out-of-domain test first, then the
validation domain that chose the default, then in domain), the NLL gap closed (headline) and the
perplexity-scale gap as mean +- sd over seeds, the held-out task accuracy gap, and the dense control.

    python -m analysis.ood_report                     # in place, and the README's results block
    python -m analysis.ood_report --out DIR --readme DIR/README.md   # elsewhere (the README a copy)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from analysis.readme_block import README, update_block
from lcc_lens.atomic import write_text
from lcc_lens.evaluation.gap import nll_gap_closed, ppl_gap_closed
from lcc_lens.evaluation.heldout_tasks import task_gap_closed

ROOT = Path(__file__).resolve().parent / "results" / "ood"
ROLE_ORDER = {"test": 0, "validation": 1, "in_domain": 2}
README_SETTING = "fit_default"
"""The setting the README reports: the library's default fit (``FitConfig()``), three seeds."""
TARGETS = {"ood_nll_gap_closed": 0.35, "ood_task_acc_gap_closed": 0.70}
"""Issue 11's targets on the embedded model, Wanda 50 %, mean of 3 seeds."""


def describe(s: dict[str, Any]) -> str:
    """One line for a setting: a sweep ``Setting`` or a whole fit configuration (``fit_default``)."""
    if "train" in s:  # a FitConfig dict
        t, sel, c, d = s["train"], s["select"], s["compensation"], s["data"]
        heads = "all" if sel["method"] == "all" else f"{sel['method']} ({sel['fraction']:.0%})"
        form = "offsets over lost directions + b" if c["use_directions"] else "free offsets"
        return (
            f"objective {t['objective']} on {d['targets']} positions of {d['fit_text']} text, heads "
            f"{heads}, {form}, lr {t['lr']}, {t['steps']} steps of {t['batch_size']} x "
            f"{s['max_length']} tokens"
        )
    return (
        f"objective {s['objective']} on {s['positions']} positions of {s.get('text', 'corpus')} "
        f"text, heads {s['heads']}, "
        f"{'offsets over lost directions' if s['use_directions'] else 'free constant offsets'}"
        f"{', init ' + s['init'] if s.get('init', 'zeros') != 'zeros' else ''}, "
        f"lr {s['lr']}, {s['steps']} steps of {s['batch_size']} x {s['max_length']} tokens"
    )


def _role_mean(entry: dict[str, Any], role: str) -> float | None:
    vals = [d["nll_gap_closed"]["mean"] for d in entry["domains"].values() if d["role"] == role]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def choice_table(summary: dict[str, Any]) -> list[str]:
    """Every setting with 3+ seeds ranked by the validation domain's NLL gap closed (the criterion)."""
    rows = [(k, e) for k, e in summary.items() if len(e["seeds"]) >= 3]
    rows.sort(key=lambda kv: -(_role_mean(kv[1], "validation") or -9.0))
    lines = [
        "| setting | validation NLL gap (chooses) | test NLL gap (headline) | in-domain NLL gap "
        "(mean of domains) | test task-accuracy gap |",
        "|---|---|---|---|---|",
    ]
    for k, e in rows:
        cells = []
        for role in ("validation", "test"):
            dom = next(d for d in e["domains"].values() if d["role"] == role)
            cells.append(_fmt(dom["nll_gap_closed"]))
        ind = _role_mean(e, "in_domain")
        lines.append(
            f"| {k} | {cells[0]} | {cells[1]} | {'-' if ind is None else f'{ind:.1%}'} | "
            f"{_fmt(e['tasks']['gap_closed']['mean_accuracy'])} |"
        )
    return lines


def target_lines(entry: dict[str, Any]) -> list[str]:
    """The default's out-of-domain figures against issue 11's targets."""
    test = next(d for d in entry["domains"].values() if d["role"] == "test")
    got = {
        "ood_nll_gap_closed": test["nll_gap_closed"]["mean"],
        "ood_task_acc_gap_closed": entry["tasks"]["gap_closed"]["mean_accuracy"]["mean"],
    }
    out = []
    for name, target in TARGETS.items():
        value = got[name]
        if value is None:
            continue
        verdict = "met" if value >= target else f"missed by {target - value:.1%}"
        out.append(f"- {name}: {value:.1%} (target >= {target:.0%}): {verdict}")
    return out


def _ms(values: list[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0, "values": values}
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return {"mean": statistics.fmean(vals), "sd": sd, "n": len(vals), "values": values}


def _fmt(cell: dict[str, Any], pct: bool = True) -> str:
    if cell["mean"] is None:
        return "-"
    m = f"{cell['mean']:.1%}" if pct else f"{cell['mean']:.4f}"
    if cell["sd"] is None:
        return f"{m} (n={cell['n']})"
    sd = f"{cell['sd']:.1%}" if pct else f"{cell['sd']:.4f}"
    return f"{m} ± {sd} (n={cell['n']})"


def _run_rows(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per domain: role, tokens, NLLs, gaps and the dense control of one run."""
    out = {}
    for domain, d in run["protocol"]["domains"].items():
        nll = d["nll"]
        row = {
            "role": d["role"],
            "n_tokens": d["n_tokens"],
            "nll": nll,
            "nll_gap": nll_gap_closed(nll["dense"], nll["pruned"], nll["restored"]),
            "ppl_gap": ppl_gap_closed(nll["dense"], nll["pruned"], nll["restored"]),
            "ci": [
                d["gap_closed"]["restored"]["nll_low"],
                d["gap_closed"]["restored"]["nll_high"],
            ],
        }
        if "dense_control" in nll:
            # how much the same fit lowers the DENSE model's NLL, in units of the pruning gap
            row["dense_control"] = (nll["dense"] - nll["dense_control"]) / (
                nll["pruned"] - nll["dense"]
            )
        out[domain] = row
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_setting[run["setting"]].append(run)
    summary: dict[str, Any] = {}
    for setting, group in sorted(by_setting.items()):
        group.sort(key=lambda r: r["seed"])
        rows = [_run_rows(r) for r in group]
        domains = sorted(rows[0], key=lambda k: (ROLE_ORDER.get(rows[0][k]["role"], 9), k))
        entry: dict[str, Any] = {
            "seeds": [r["seed"] for r in group],
            "settings": group[0]["settings"],
            "data": group[0]["data"]["domains"],
            "commands": [r["command"] for r in group],
            "notes": [r["dense_control_removed"] for r in group if r.get("dense_control_removed")],
            "fit_seconds": _ms([r["fit_seconds"] for r in group]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
            "domains": {},
        }
        for dom in domains:
            cells = [rw[dom] for rw in rows if dom in rw]
            entry["domains"][dom] = {
                "role": cells[0]["role"],
                "n_tokens": cells[0]["n_tokens"],
                "nll_dense": cells[0]["nll"]["dense"],
                "nll_pruned": cells[0]["nll"]["pruned"],
                "nll_restored": _ms([c["nll"]["restored"] for c in cells]),
                "nll_gap_closed": _ms([c["nll_gap"] for c in cells]),
                "ppl_gap_closed": _ms([c["ppl_gap"] for c in cells]),
                "nll_gap_ci_per_seed": [c["ci"] for c in cells],
                "dense_control": _ms([c.get("dense_control") for c in cells]),
            }
        tasks = [task_gap_closed(r["tasks"], "restored") for r in group]
        entry["tasks"] = {
            "domain": group[0]["tasks"]["domain"],
            "n_items": group[0]["tasks"]["n_items"],
            "accuracy": {
                task: {
                    m: group[0]["tasks"][task][m]["acc_norm" if task == "next_passage" else "acc"]
                    for m in ("dense", "pruned")
                }
                | {
                    "restored": _ms(
                        [
                            r["tasks"][task]["restored"][
                                "acc_norm" if task == "next_passage" else "acc"
                            ]
                            for r in group
                        ]
                    )
                }
                for task in ("next_passage", "last_word")
            },
            "gap_closed": {k: _ms([t[k] for t in tasks]) for k in tasks[0]},
        }
        summary[setting] = entry
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Out-of-domain restoration (issue 11)",
        "",
        "Generated by `python -m analysis.ood_report` from `analysis/results/ood/records/*.json` (written "
        "by `python -m analysis.ood_sweep`). Embedded SmolLM2-135M-Instruct, Wanda 50 %. Calibration "
        "and fitting on python_docs + shakespeare; the validation domain (dialogue) is the one that may "
        "choose defaults; the test domain (speeches) was never used for calibration, fitting or "
        "choosing. Gap closed = "
        "(pruned - restored) / (pruned - dense) on the NLL scale (headline; the perplexity-scale figure "
        "is secondary); mean ± sd over seeds. Dense control = how much the same fit lowers the dense "
        "model's NLL, in units of the pruning gap (restoration the dense model also enjoys is domain "
        "adaptation).",
        "",
    ]
    lines += [
        "## Settings ranked by the validation domain (3 seeds or more)",
        "",
        "The default is chosen by the validation column alone; the test column is the headline.",
        "",
        *choice_table(summary),
        "",
    ]
    if README_SETTING in summary:
        lines += [
            f"## The default ({README_SETTING}) against issue 11's targets",
            "",
            *target_lines(summary[README_SETTING]),
            "",
        ]
    for setting, e in summary.items():
        lines += [
            f"## {setting}",
            "",
            f"{describe(e['settings'])}; seeds {e['seeds']}; fit "
            f"{_fmt(e['fit_seconds'], pct=False)} s; peak RSS {e['peak_rss_mb']:.0f} MB.",
            "",
            "| domain | role | tokens | NLL dense | NLL pruned | NLL restored | NLL gap closed | "
            "ppl-scale gap closed | dense control |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for dom, d in e["domains"].items():
            lines.append(
                f"| {dom} | {d['role']} | {d['n_tokens']} | {d['nll_dense']:.4f} | "
                f"{d['nll_pruned']:.4f} | {_fmt(d['nll_restored'], pct=False)} | "
                f"{_fmt(d['nll_gap_closed'])} | {_fmt(d['ppl_gap_closed'])} | "
                f"{_fmt(d['dense_control'])} |"
            )
        t = e["tasks"]
        lines += [
            "",
            f"Held-out tasks ({t['domain']}, {t['n_items']} items each):",
            "",
            "| task | dense | pruned | restored | accuracy gap closed |",
            "|---|---|---|---|---|",
        ]
        for task, acc in t["accuracy"].items():
            lines.append(
                f"| {task} | {acc['dense']:.3f} | {acc['pruned']:.3f} | "
                f"{_fmt(acc['restored'], pct=False)} | {_fmt(t['gap_closed'][task])} |"
            )
        lines.append(f"| mean accuracy | | | | {_fmt(t['gap_closed']['mean_accuracy'])} |")
        lines += ["", "Commands:", "", *[f"    {c}" for c in e["commands"]], ""]
        lines += [f"Note: {n}" for n in e.get("notes", [])] + ([""] if e.get("notes") else [])
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- ood-results:begin -->", "<!-- ood-results:end -->"


def readme_block(summary: dict[str, Any], setting: str) -> str:
    """The README's short results table for ``setting``: out of domain first, both scales, control."""
    e = summary[setting]
    lines = [
        BEGIN,
        f"The default fit ({describe(e['settings'])}); seeds {e['seeds']} (mean ± sd); generated by "
        "`python -m analysis.ood_report` from `analysis/results/ood/records/*.json`, written by "
        + "; ".join(f"`{c}`" for c in e["commands"])
        + ".",
        "",
        "| domain | role | tokens | NLL dense / pruned | NLL gap closed | ppl-scale gap | "
        "dense control |",
        "|---|---|---|---|---|---|---|",
    ]
    for dom, d in e["domains"].items():
        lines.append(
            f"| {dom} | {d['role']} | {d['n_tokens']} | {d['nll_dense']:.3f} / {d['nll_pruned']:.3f}"
            f" | {_fmt(d['nll_gap_closed'])} | {_fmt(d['ppl_gap_closed'])} | "
            f"{_fmt(d['dense_control'])} |"
        )
    t = e["tasks"]
    lines += [
        "",
        f"Held-out tasks ({t['domain']}, {t['n_items']} items each), accuracy gap closed: next passage "
        f"{_fmt(t['gap_closed']['next_passage'])}, last word {_fmt(t['gap_closed']['last_word'])}, "
        f"mean accuracy {_fmt(t['gap_closed']['mean_accuracy'])}.",
        "",
        "Against issue 11's targets:",
        "",
        *target_lines(e),
        END,
    ]
    return "\n".join(lines)


def update_readme(block: str, readme: Path = README) -> bool:
    """Replace the text between ``readme``'s ood-results markers; False when the markers are absent."""
    return update_block(readme, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--records", type=Path, default=ROOT / "records", help="the sweep's JSON records"
    )
    ap.add_argument("--out", type=Path, default=ROOT, help="where summary.json and results.md go")
    ap.add_argument(
        "--readme", type=Path, default=README, help="the README whose results block is rewritten"
    )
    args = ap.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in sorted(args.records.glob("*.json"))]
    problem = None
    if not runs:
        problem = f"no records under {args.records}: run python -m analysis.ood_sweep first."
    elif not args.readme.is_file():
        problem = f"--readme {args.readme} does not exist: give the README (or a copy) to update."
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    summary = summarise(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    write_text(args.out / "results.md", markdown(summary))
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'results.md'}")
    if README_SETTING in summary and update_readme(
        readme_block(summary, README_SETTING), args.readme
    ):
        print(f"updated the results block of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
