"""Command line: prune a causal LM and write a Hugging Face checkpoint plus ``prune_report.json``.

python -m lcc_lens.prune --model embedded --method wanda --sparsity 0.5 --out runs/wanda50
python -m lcc_lens.prune --model embedded --method sparsegpt --pattern 2:4 --out runs/sgpt24
python -m lcc_lens.prune --model embedded --method flap --sparsity 0.2 --out runs/flap20
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lcc_lens.errors import ConfigError, LccError
from lcc_lens.pruning.config import DEFAULT_INCLUDE, METHODS, PruneConfig
from lcc_lens.pruning.report import PruneReport


@dataclass(frozen=True)
class PruneArgs:
    """Parsed command line: what to prune, where to write it, and how."""

    model: str
    out: Path
    config: PruneConfig
    overwrite: bool = False
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lcc_lens.prune",
        description="Prune a causal LM layer by layer (magnitude, Wanda, SparseGPT, FLAP structured).",
    )
    p.add_argument("--model", required=True, help="checkpoint directory, hub id, or 'embedded'")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--method", choices=METHODS, default="wanda")
    p.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help="fraction in (0, 1) of weights to zero (flap: of heads and MLP channels); default 0.5",
    )
    p.add_argument(
        "--pattern", default=None, help="N:M pattern, N zeros in every M inputs (e.g. 2:4)"
    )
    p.add_argument("--layers", default=DEFAULT_INCLUDE, help="regex of module names to prune")
    p.add_argument("--exclude", default=None, help="regex of module names to keep dense")
    p.add_argument(
        "--calibration",
        default="corpora",
        help="'corpora' (offline real text), 'c4', a .txt/.json/.jsonl file, or a datasets name",
    )
    p.add_argument("--n-samples", type=int, default=64, help="calibration sequences (paper: 128)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (paper: 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT Hessian damping")
    p.add_argument("--structured-mode", choices=("mask", "remove"), default="mask")
    p.add_argument("--ratio-mode", choices=("uniform", "adaptive"), default="uniform")
    p.add_argument(
        "--no-bias-compensation", action="store_true", help="flap: skip bias compensation"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: Sequence[str] | None = None) -> PruneArgs:
    """argv -> validated PruneArgs; raises ConfigError for bad values (argparse exits for bad syntax)."""
    ns = build_parser().parse_args(argv)
    sparsity = ns.sparsity
    if sparsity is None and ns.pattern is None:
        sparsity = 0.5
    config = PruneConfig(
        method=ns.method,
        sparsity=sparsity,
        pattern=ns.pattern,
        include=ns.layers,
        exclude=ns.exclude,
        calibration=ns.calibration,
        n_samples=ns.n_samples,
        seq_len=ns.seq_len,
        seed=ns.seed,
        batch_size=ns.batch_size,
        blocksize=ns.blocksize,
        percdamp=ns.percdamp,
        structured_mode=ns.structured_mode,
        ratio_mode=ns.ratio_mode,
        bias_compensation=not ns.no_bias_compensation,
        device=ns.device,
    )
    out: Path = ns.out
    if out.exists() and not ns.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists; pass --overwrite or choose another --out.")
    return PruneArgs(
        model=ns.model, out=out, config=config, overwrite=ns.overwrite, progress=not ns.quiet
    )


def run(args: PruneArgs) -> PruneReport:
    """Prune ``args.model`` into ``args.out``."""
    from lcc_lens.models import resolve_model_source
    from lcc_lens.pruning.api import prune_checkpoint
    from lcc_lens.pruning.data import calibration_identity

    resolve_model_source(args.model)  # fail fast on a missing directory
    if args.config.needs_calibration:
        calibration_identity(args.config.calibration)  # fail fast on a missing file
    return prune_checkpoint(args.model, args.out, args.config, show_progress=args.progress)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
        report = run(args)
    except LccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{report.method}: total sparsity {report.total_sparsity:.4f} (target {report.target_sparsity:.4f}) "
        f"over {len(report.modules)} layers in {report.seconds:.1f} s -> {args.out}"
    )
    if report.structured:
        s = report.structured
        print(
            f"heads removed {s['head_fraction_removed']:.3f}, channels removed "
            f"{s['channel_fraction_removed']:.3f}, parameters {report.parameters}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
