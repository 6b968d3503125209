"""``python -m analysis.gpu.report``: the README's GPU table and the budget curve, from the section files.

    python -m analysis.gpu.report                                  # analysis/results/gpu -> README
    python -m analysis.gpu.report --results DIR --readme OTHER.md  # e.g. a smoke run's folder
    python -m analysis.gpu.report --blocked "status line"          # no GPU ran: say why, in the README

Reads ``<results>/{fit,bench,gemma_fit,run}.json`` (:mod:`analysis.gpu.check`) and writes
``<results>/report.md`` (every figure), the budget curve ``<results>/budget_curve.html`` (PNG too where
kaleido works) and the block between the README's ``gpu-check`` markers. GPU figures are kept apart from
the committed CPU ones and every table names its device. A ``--smoke`` run's folder never goes into the
repository's README (its figures are sizes, not measurements).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.gpu.bench_section import curve
from analysis.gpu.check import RUN_FILE
from analysis.gpu.record import SECTIONS, read_record
from lcc_lens.atomic import write_text
from lcc_lens.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "analysis" / "results" / "gpu"
README = REPO / "README.md"
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
FIGURE = "budget_curve"
ROLE_LABEL = {"test": "OOD test", "validation": "OOD validation", "in_domain": "in domain"}


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def load(results: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The section records found in ``results`` and its run.json (None when absent)."""
    records = {s: r for s in SECTIONS if (r := read_record(results, s)) is not None}
    run_file = results / RUN_FILE
    run = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
    return records, run


def _device_line(record: dict[str, Any]) -> str:
    env = record.get("environment") or {}
    v = env.get("versions", {})
    return (
        f"device **{env.get('device', '?')}** (torch {v.get('torch')}, CUDA {env.get('cuda')}, "
        f"transformers {v.get('transformers')}, lcc_lens {v.get('lcc_lens')}, "
        f"commit {str(env.get('git_commit'))[:10]})"
    )


def _status(record: dict[str, Any]) -> str:
    reason = f": {record['reason']}" if record.get("reason") else ""
    return f"status {record['status']}{reason}; wall {record.get('wall_s', 0):.0f} s"


def fit_lines(record: dict[str, Any], title: str) -> list[str]:
    """A fit section: stages, gaps per domain beside the CPU figures, the export check."""
    lines = [f"**{title}**: {_device_line(record)}; {_status(record)}.", ""]
    f = record.get("figures") or {}
    if not f:
        return lines
    peak = record.get("peak_memory") or {}
    lines += [
        f"Command: `{record['command']}`; peak memory {_num(peak.get('mb'))} MiB "
        f"({peak.get('kind')}); export check, hooked bridge vs plain-transformers reload, max "
        f"|logit diff|: {_num(f.get('export_max_abs_logit_diff'), '{:.2e}')} as the fit ran it "
        f"(bridge in the fit's dtype), {_num(f.get('export_max_abs_logit_diff_fp32'), '{:.2e}')} "
        "with the bridge in fp32.",
        "",
        "| stage | " + " | ".join(f["stages"]) + " | total |",
        "|---|" + "---|" * (len(f["stages"]) + 1),
        "| seconds | "
        + " | ".join(f"{s['seconds']:.1f}" for s in f["stages"].values())
        + f" | {_num(f.get('wall_time_s'), '{:.1f}')} |",
        "| peak MiB | "
        + " | ".join(f"{s['peak_memory_mb']:.0f}" for s in f["stages"].values())
        + " | |",
        "",
    ]
    cmp_ = f.get("cpu_comparison") or {}
    if cmp_.get("available"):
        proto = cmp_["protocol"]
        lines += [
            f"NLL gap closed on the committed CPU records' windows ({proto['windows']} x "
            f"{proto['context_length']} tokens per domain"
            + (", shrunk for --smoke" if cmp_["protocol_shrunk_for_smoke"] else "")
            + "); CPU: fp32, committed `analysis/results/ood/records/fit_default_seed*.json`"
            + (
                f"; recipe differs in {', '.join(cmp_['recipe_differences'])}"
                if cmp_["recipe_differences"]
                else "; same recipe"
            )
            + ".",
            "",
            "| domain | role | this run | CPU same seed | CPU mean ± sd | difference (points) | "
            "within 1 point |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, d in cmp_["domains"].items():
            sd = "" if d["cpu_sd"] is None else f" ± {d['cpu_sd']:.1%}"
            lines.append(
                f"| {name} | {ROLE_LABEL.get(d['role'], d['role'])} | {_pct(d['gpu_nll_gap_closed'])}"
                f" | {_pct(d['cpu_same_seed'])} | {_pct(d['cpu_mean'])}{sd} (n={d['cpu_n']}) | "
                f"{_num(d['delta_points_vs_same_seed'], '{:+.1f}')} | "
                f"{ {True: 'yes', False: 'no', None: '-'}[d['within_1_point']] } |"
            )
        lines.append("")
    else:
        lines += [
            "| domain | role | NLL gap closed (fit's own protocol) |",
            "|---|---|---|",
            *(
                f"| {n} | {ROLE_LABEL.get(d['role'], d['role'])} | {_pct(d['nll_gap_closed'])} |"
                for n, d in f["domains"].items()
            ),
            "",
        ]
    return lines


def bench_lines(record: dict[str, Any]) -> list[str]:
    """The budget curve as a table: OOD test gap per method and budget, at the chosen rates."""
    lines = [f"**Restoration benchmark**: {_device_line(record)}; {_status(record)}.", ""]
    f = record.get("figures") or {}
    if not f.get("points"):
        return lines
    curves = curve(f["points"])
    budgets = sorted({p["steps"] for pts in curves.values() for p in pts})
    tokens = {p["steps"]: p["tokens"] for pts in curves.values() for p in pts}
    lines += [
        f"{f['setting']}, seed 0; NLL gap closed out of domain (test domain) against training "
        "tokens, each method at the rate it chose on the validation domain from "
        f"{', '.join(f'{s:g}x' for s in f['grid_scales'])} its default at {budgets[0]} steps.",
        "",
        "| method | chosen lr | "
        + " | ".join(f"{s} steps ({tokens[s]:,} tokens)" for s in budgets)
        + " | zeros kept |",
        "|---|---|" + "---|" * (len(budgets) + 1),
    ]
    for method, pts in curves.items():
        by_steps = {p["steps"]: p for p in pts}
        cells = [_pct(by_steps[s]["ood_nll_gap_closed"]) if s in by_steps else "-" for s in budgets]
        kept = _pct(pts[-1]["sparsity_kept"])
        lines.append(f"| `{method}` | {pts[0]['lr']:g} | " + " | ".join(cells) + f" | {kept} |")
    skipped = [f"`{m}`: {n}" for m, n in f["method_notes"].items() if n.startswith("skipped")]
    notes = skipped + f.get("notes", [])
    return lines + ([""] + [f"- {n}" for n in notes] if notes else []) + [""]


def budget_figure(record: dict[str, Any]) -> Any:
    """OOD NLL gap closed against training tokens (log x), one line per method at its chosen rate."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for method, pts in curve(record["figures"]["points"]).items():
        fig.add_trace(
            go.Scatter(
                x=[p["tokens"] for p in pts],
                y=[p["ood_nll_gap_closed"] for p in pts],
                mode="lines+markers",
                name=f"{method} (lr {pts[0]['lr']:g})",
            )
        )
    device = (record.get("environment") or {}).get("device", "?")
    fig.update_layout(
        title=f"NLL gap closed out of domain against training tokens ({device})",
        xaxis={"type": "log", "title": "training tokens (steps x batch x max length)"},
        yaxis={"title": "NLL gap closed (test domain)", "tickformat": ".0%"},
        template="plotly_white",
    )
    return fig


def render(records: dict[str, dict[str, Any]], run: dict[str, Any] | None) -> list[str]:
    """The report's lines: each section that wrote a file, in the order they ran."""
    lines: list[str] = []
    if run is not None:
        kind = "smoke run (CPU sizes, not measurements)" if run.get("smoke") else "run"
        lines += [
            f"GPU check {kind}: `{run['command']}`, {run.get('wall_s', 0):.0f} s of a "
            f"{run['budget_s']:.0f} s budget.",
            "",
        ]
    if "fit" in records:
        lines += fit_lines(records["fit"], "Default fit, embedded SmolLM2-135M, Wanda 50 %")
    if "bench" in records:
        lines += bench_lines(records["bench"])
    if "gemma_fit" in records:
        lines += fit_lines(records["gemma_fit"], "Default fit, Gemma 3 270M, Wanda 50 %")
    return lines


def readme_block(lines: Sequence[str], figure_png: Path | None, blocked: str | None) -> str:
    """The text between the README markers: the tables, or the blocked note when no GPU ran."""
    if blocked is not None:
        body = [f"**Blocked**: no GPU figures yet. {blocked}", ""]
    else:
        body = list(lines)
        if figure_png is not None:
            body += [f"![budget curve]({figure_png.relative_to(REPO).as_posix()})", ""]
    note = "<!-- generated by python -m analysis.gpu.report: do not edit -->"
    return "\n".join([BEGIN, note, *body]).rstrip() + "\n" + END


def update_readme(readme: Path, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ConfigError(
            f"{readme} has no {BEGIN} ... {END} markers; add them where the block goes."
        )
    head, rest = text.split(BEGIN, 1)
    write_text(readme, head + block + rest.split(END, 1)[1])


def main(argv: Sequence[str] | None = None) -> int:
    from lcc_lens.cli.policy import print_error

    ap = argparse.ArgumentParser(
        prog="python -m analysis.gpu.report", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the section files")
    ap.add_argument("--readme", type=Path, default=README, help="README holding the markers")
    ap.add_argument("--blocked", default=None, help="no GPU ran: this line says why")
    args = ap.parse_args(argv)
    try:
        return report(args.results, args.readme, args.blocked)
    except ConfigError as exc:
        print_error(exc)
        return 2


def report(results: Path, readme: Path, blocked: str | None) -> int:
    """Write report.md and the figure in ``results``, and the README block."""
    from lcc_lens.plots.io import png_available, save_figure

    records, run = load(results)
    if not records and blocked is None:
        raise ConfigError(
            f"no GPU check section files in {results}; run scripts/gpu_check.sh, or pass --blocked."
        )
    if run is not None and run.get("smoke") and readme.resolve() == README:
        raise ConfigError(f"{results} holds a --smoke run; pass --readme OTHER.md to render it.")
    lines = render(records, run)
    png = None
    if records:
        write_text(results / "report.md", "# GPU check\n\n" + "\n".join(lines) + "\n")
        if (records.get("bench") or {}).get("figures", {}).get("points"):
            written = save_figure(
                budget_figure(records["bench"]), results / FIGURE, png=png_available()
            )
            png = next((p for p in written if p.suffix == ".png"), None)
    inside_repo = png is not None and png.resolve().is_relative_to(REPO)
    update_readme(readme, readme_block(lines, png if inside_repo else None, blocked))
    print(
        f"wrote the README block of {readme}" + (f" and {results / 'report.md'}" if records else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
