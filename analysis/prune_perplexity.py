"""Held-out perplexity of the real embedded model (SmolLM2-135M) after each pruning method.

    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.prune_perplexity            # full table
    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.prune_perplexity --quick    # 8 windows, for a smoke run

Pruned checkpoints come from the fit's own pair-resolution stage (``lcc_lens.fit.stages.resolve_pruned``,
the cached prune), so reruns and the fit job reuse them. The evaluation text is held out from calibration: passages of ``lcc_lens.corpora`` split
"test", balanced across its sources, scored with ``lcc_lens.evaluation.perplexity`` over non-overlapping
windows. Writes a markdown table (default analysis/results/prune_perplexity.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from lcc_lens.corpora import passages  # noqa: E402
from lcc_lens.evaluation.perplexity import perplexity  # noqa: E402
from lcc_lens.fit import FitConfig, stages  # noqa: E402
from lcc_lens.models import load_causal_lm  # noqa: E402
from lcc_lens.pruning import PruneConfig, PruneReport  # noqa: E402

SETTINGS: list[tuple[str, dict]] = [
    ("dense", {}),
    ("magnitude 50 %", dict(method="magnitude", sparsity=0.5)),
    ("Wanda 50 %", dict(method="wanda", sparsity=0.5)),
    ("SparseGPT 50 %", dict(method="sparsegpt", sparsity=0.5)),
    ("Wanda 2:4", dict(method="wanda", sparsity=None, pattern="2:4")),
    ("SparseGPT 2:4", dict(method="sparsegpt", sparsity=None, pattern="2:4")),
    ("FLAP 20 % heads+channels (mask, uniform)", dict(method="flap", sparsity=0.2)),
]


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--out", type=Path, default=Path("analysis/results/prune_perplexity.md"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    windows = 8 if args.quick else args.max_windows
    text = "\n\n".join(passages("test", 80, min_chars=600, max_chars=2400, seed=0))
    text_sha = hashlib.sha256(text.encode()).hexdigest()[:16]

    rows = []
    for label, kw in SETTINGS:
        t0 = time.perf_counter()
        if kw:
            cfg = PruneConfig(n_samples=args.n_samples, seq_len=args.seq_len, **kw)
            source = stages.resolve_pruned(FitConfig(dense=args.model, prune=cfg))
            report = PruneReport.load(source)
        else:
            source, report = args.model, None
        model, tok = load_causal_lm(source)
        res = perplexity(model, tok, text, context_length=args.context, max_windows=windows)
        rows.append((label, report, res))
        print(
            f"{label:45s} ppl {res.ppl:9.3f}  sparsity "
            f"{report.total_sparsity if report else 0.0:.4f}  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        del model

    dense_ppl = rows[0][2].ppl
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python " + shlex.join(
        ["-m", "analysis.prune_perplexity", *sys.argv[1:]]
    )
    lines = [
        "# Held-out perplexity of pruned SmolLM2-135M-Instruct",
        "",
        f"Command: `{cmd}`",
        "",
        f'Evaluation: {rows[0][2].n_tokens} tokens of lcc_lens.corpora split "test" (80 passages, seed 0, '
        f"sha256 {text_sha}), {rows[0][2].n_windows} non-overlapping windows of {args.context} tokens. "
        f'Calibration: {args.n_samples} x {args.seq_len} tokens of split "calibration" (disjoint documents), '
        "layers pruned in order on the outputs of the already-pruned layers. Sparsity is measured on the "
        "pruned linear layers (all q/k/v/o and gate/up/down projections of the 30 decoder layers).",
        "",
        "| setting | measured sparsity | pruning time (s) | perplexity | x dense |",
        "|---|---|---|---|---|",
    ]
    for label, report, res in rows:
        sp = f"{report.total_sparsity:.4f}" if report else "0"
        if report and report.structured:
            s = report.structured
            sp += f" (heads {s['head_fraction_removed']:.2f}, channels {s['channel_fraction_removed']:.2f})"
        secs = f"{report.seconds:.0f}" if report else "-"
        lines.append(f"| {label} | {sp} | {secs} | {res.ppl:.3f} | {res.ppl / dense_ppl:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
