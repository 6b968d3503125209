"""``lcc prune``: prune a causal LM and write a Hugging Face checkpoint plus ``prune_report.json``.

lcc prune --dense embedded --method wanda --sparsity 0.5 --out runs/wanda50
lcc prune --dense embedded --method sparsegpt --pattern 2:4 --out runs/sgpt24
lcc prune --dense embedded --method flap --sparsity 0.2 --out runs/flap20
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lcc_lens.cli.config import command_parser, parse_command, verbose_field
from lcc_lens.cli.policy import execute
from lcc_lens.cli.sources import check_model_source, check_output_dir
from lcc_lens.pruning.config import PruneConfig
from lcc_lens.pruning.report import PruneReport

PROG = "lcc prune"
SUMMARY = "prune a causal LM layer by layer (magnitude, Wanda, SparseGPT, N:M, FLAP structured)"


@dataclass(frozen=True)
class PruneArgs:
    """Parsed command line: what to prune, where to write it, and how."""

    dense: str = field(
        metadata={
            "help": "model to prune: checkpoint directory, hub id or 'embedded'",
            "aliases": ("--model",),
            "metavar": "MODEL",
        }
    )
    out: Path = field(metadata={"help": "output checkpoint directory"})
    prune: PruneConfig = field(
        default_factory=PruneConfig, metadata={"help": "pruning settings", "inline": True}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace --out when it is an earlier lcc_lens output (a folder lcc_lens did "
            "not write is never replaced)"
        },
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})
    verbose: bool = verbose_field()


def build_parser():
    """The ``lcc prune`` parser and its field flags."""
    return command_parser(PROG, SUMMARY + ".\n\n" + __doc__.split("\n\n")[1], PruneArgs)


def parse(argv: Sequence[str] | None = None) -> PruneArgs:
    """argv -> validated PruneArgs (no side effects); ConfigError for any bad value."""
    parser, specs = build_parser()
    return parse_command(PruneArgs, parser, specs, [] if argv is None else argv)


def prune(args: PruneArgs) -> PruneReport:
    """Check the inputs, then prune ``args.dense`` into ``args.out`` (library call; no printing)."""
    from lcc_lens.pruning.api import prune_checkpoint
    from lcc_lens.pruning.data import calibration_identity

    check_output_dir(args.out, overwrite=args.overwrite)
    check_model_source(args.dense, "--dense")
    if args.prune.needs_calibration:
        calibration_identity(args.prune.calibration)  # fail fast on a missing file
    return prune_checkpoint(args.dense, args.out, args.prune, show_progress=not args.quiet)


def summary(report: PruneReport, out: Path) -> str:
    """The terminal summary of a finished prune."""
    lines = [
        f"{report.method}: total sparsity {report.total_sparsity:.4f} (target "
        f"{report.target_sparsity:.4f}) over {len(report.modules)} layers in {report.seconds:.1f} s "
        f"-> {out}"
    ]
    if report.structured:
        s = report.structured
        lines.append(
            f"heads removed {s['head_fraction_removed']:.3f}, channels removed "
            f"{s['channel_fraction_removed']:.3f}, parameters {report.parameters}"
        )
    return "\n".join(lines)


def run(args: PruneArgs) -> int:
    """Prune and print the summary."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = prune(args)
    print(summary(report, args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse, run, argv)
