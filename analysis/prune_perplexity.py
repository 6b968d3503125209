"""Held-out perplexity of the real embedded model (SmolLM2-135M) after each pruning method.

    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.prune_perplexity --threads 1   # full table
    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.prune_perplexity --quick       # 8 windows, smoke run
    .venv/bin/python -m analysis.prune_perplexity --report-only                   # table from the record

Pruned checkpoints come from the fit's own pair-resolution stage (``lcc_lens.fit.stages.resolve_pruned``,
the cached prune), so reruns and the fit job reuse them. The evaluation text is held out from
calibration: passages of ``lcc_lens.corpora`` split "test", balanced across its sources, scored with
``lcc_lens.evaluation.perplexity`` over non-overlapping windows. Writes the run's record
(``prune_perplexity.json``) and the markdown table rendered from it (``prune_perplexity.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lcc_lens.atomic import write_text  # noqa: E402

logger = logging.getLogger("analysis.prune_perplexity")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS / "prune_perplexity.md"

SETTINGS: list[tuple[str, dict]] = [
    ("dense", {}),
    ("magnitude 50 %", dict(method="magnitude", sparsity=0.5)),
    ("Wanda 50 %", dict(method="wanda", sparsity=0.5)),
    ("SparseGPT 50 %", dict(method="sparsegpt", sparsity=0.5)),
    ("Wanda 2:4", dict(method="wanda", sparsity=None, pattern="2:4")),
    ("SparseGPT 2:4", dict(method="sparsegpt", sparsity=None, pattern="2:4")),
    ("FLAP 20 % heads+channels (mask, uniform)", dict(method="flap", sparsity=0.2)),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=24)
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is faster on a busy CPU)"
    )
    p.add_argument("--quick", action="store_true", help="8 windows only")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="render the table from the committed record beside --out, without a model run",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Prune (cached) and score every setting; the record the table is rendered from."""
    import torch

    from lcc_lens.corpora import passages
    from lcc_lens.evaluation.perplexity import perplexity
    from lcc_lens.fit import FitConfig, stages
    from lcc_lens.models import load_causal_lm
    from lcc_lens.pruning import PruneConfig, PruneReport

    if args.threads:
        torch.set_num_threads(args.threads)
    windows = 8 if args.quick else args.max_windows
    text = "\n\n".join(passages("test", 80, min_chars=600, max_chars=2400, seed=0))
    rows = []
    for label, kw in SETTINGS:
        t0 = time.perf_counter()
        report = None
        source = args.model
        if kw:
            cfg = PruneConfig(n_samples=args.n_samples, seq_len=args.seq_len, **kw)
            source = stages.resolve_pruned(FitConfig(dense=args.model, prune=cfg))
            report = PruneReport.load(source)
        model, tok = load_causal_lm(source)
        res = perplexity(model, tok, text, context_length=args.context, max_windows=windows)
        rows.append(
            {
                "setting": label,
                "sparsity": report.total_sparsity if report else 0.0,
                "structured": report.structured if report else None,
                "prune_seconds": report.seconds if report else None,
                "ppl": res.ppl,
                "n_tokens": res.n_tokens,
                "n_windows": res.n_windows,
            }
        )
        logger.info("%s: ppl %.3f (%.0f s)", label, res.ppl, time.perf_counter() - t0)
        del model
    return {
        "command": command,
        "model": args.model,
        "context": args.context,
        "n_samples": args.n_samples,
        "seq_len": args.seq_len,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
        "rows": rows,
    }


def _sparsity(row: dict[str, Any]) -> str:
    if row["prune_seconds"] is None:
        return "0"
    text = f"{row['sparsity']:.4f}"
    s = row["structured"]
    if s:
        text += f" (heads {s['head_fraction_removed']:.2f}, channels {s['channel_fraction_removed']:.2f})"
    return text


def render(record: dict[str, Any]) -> str:
    """The markdown table of one record."""
    rows = record["rows"]
    dense = rows[0]
    lines = [
        "# Held-out perplexity of pruned SmolLM2-135M-Instruct",
        "",
        f"Command: `{record['command']}`",
        "",
        f'Evaluation: {dense["n_tokens"]} tokens of lcc_lens.corpora split "test" (80 passages, seed 0, '
        f"sha256 {record['text_sha256']}), {dense['n_windows']} non-overlapping windows of "
        f"{record['context']} tokens. Calibration: {record['n_samples']} x {record['seq_len']} tokens of "
        'split "calibration" (disjoint documents), layers pruned in order on the outputs of the '
        "already-pruned layers. Sparsity is measured on the pruned linear layers (all q/k/v/o and "
        "gate/up/down projections of the 30 decoder layers). Generated by `analysis/prune_perplexity.py` "
        "from `prune_perplexity.json`.",
        "",
        "| setting | measured sparsity | pruning time (s) | perplexity | x dense |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        secs = "-" if row["prune_seconds"] is None else f"{row['prune_seconds']:.0f}"
        lines.append(
            f"| {row['setting']} | {_sparsity(row)} | {secs} | {row['ppl']:.3f} | "
            f"{row['ppl'] / dense['ppl']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    record_path = args.out.with_suffix(".json")
    if args.report_only:
        if not record_path.is_file():
            print(
                f"error: no record at {record_path}; run without --report-only first",
                file=sys.stderr,
            )
            return 2
        record = json.loads(record_path.read_text(encoding="utf-8"))
    else:
        command = "HF_HUB_OFFLINE=1 .venv/bin/python " + shlex.join(
            ["-m", "analysis.prune_perplexity", *(sys.argv[1:] if argv is None else argv)]
        )
        text = json.dumps(measure(args, command), indent=1, default=str) + "\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(record_path, text)
        record = json.loads(text)  # the table is rendered from the record as committed
    text = render(record)
    write_text(args.out, text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
