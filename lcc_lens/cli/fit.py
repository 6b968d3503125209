"""``lcc fit``: restore a pruned LLM with Lost Component Compensation and write a run directory.

Defaults run offline: the embedded SmolLM2-135M-Instruct, Wanda 50 %, real text. Every knob of
:class:`~lcc_lens.fit.config.FitConfig` is a flag; ``--config run.yaml`` holds the same settings in
sections (``prune:``, ``data:``, ``diff:``, ``select:``, ``compensation:``, ``train:``, ``eval:``).
A flag is the bare field name (``--lr``, ``--n-probe``); a field whose name several sections share
has a fixed ``--section-field`` name (``--train-batch-size``, ``--prune-method``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lcc_lens.cli.config import command_parser, parse_command, verbose_field
from lcc_lens.cli.policy import execute
from lcc_lens.fit.config import FitConfig
from lcc_lens.pruning.config import check_device

PROG = "lcc fit"
SUMMARY = "restore a pruned LLM with Lost Component Compensation"
DEFAULT_OUT = Path("runs/default")

# The explicit names of the section fields whose bare name another field has (a section's field
# ``batch_size`` would otherwise clash with the others'). A new field whose bare name is taken must be
# added here; building the parser refuses the clash, so an existing flag is never renamed.
FLAGS: dict[str, str] = {
    "prune.method": "--prune-method",
    "prune.batch_size": "--prune-batch-size",
    "prune.device": "--prune-device",
    "diff.batch_size": "--diff-batch-size",
    "diff.max_length": "--diff-max-length",
    "select.method": "--select-method",
    "select.batch_size": "--select-batch-size",
    "train.batch_size": "--train-batch-size",
    "eval.batch_size": "--eval-batch-size",
}


@dataclass(frozen=True)
class FitArgs:
    """The ``lcc fit`` command line: the fit's configuration plus where and how to write the run."""

    config: FitConfig = field(
        default_factory=FitConfig, metadata={"help": "the fit's settings", "inline": True}
    )
    out: Path = field(default=DEFAULT_OUT, metadata={"help": "run directory"})
    resume: bool = field(
        default=False, metadata={"help": "finish an interrupted run in --out (same settings)"}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace an earlier run in --out (a folder lcc_lens did not write is never "
            "replaced)"
        },
    )
    verbose: bool = verbose_field()

    def __post_init__(self) -> None:
        check_device(self.config.device, what="--device")


def build_parser():
    """The ``lcc fit`` parser and its field flags (sections' own ``seed`` is the run's ``--seed``)."""
    return command_parser(
        PROG,
        SUMMARY + ".\n\n" + __doc__.split("\n\n", 1)[1],
        FitArgs,
        hidden_nested=("seed",),
        flags=FLAGS,
    )


def parse(argv: Sequence[str] | None = None) -> FitArgs:
    """argv -> validated FitArgs (no side effects): YAML first, then the flags given."""
    parser, specs = build_parser()
    return parse_command(FitArgs, parser, specs, [] if argv is None else argv)


parse_args = parse


def run(args: FitArgs) -> int:
    """Check the inputs, run the fit, print the summary (rank 0 only under a launcher)."""
    from lcc_lens import distributed
    from lcc_lens.cli.sources import check_model_source
    from lcc_lens.fit import fit
    from lcc_lens.fit.summary import summary_table

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    check_model_source(args.config.dense, "--dense")
    if args.config.pruned is not None:
        check_model_source(args.config.pruned, "--pruned")
    result = fit(args.config, args.out, resume=args.resume, overwrite=args.overwrite)
    if distributed.context().is_main:  # under torchrun every rank has the result; rank 0 reports
        print(summary_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse, run, argv)
