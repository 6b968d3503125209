"""``lcc bench``: LCC against LoRA, DoRA, LoFiT, plain biases and training-free compensations.

lcc bench --quick                                   (tiny random model, every method, well under a minute)
lcc bench --settings wanda_unstructured_50 --seeds 0,1,2
lcc bench --dense embedded                          (all three settings: the committed tables, ~hours on CPU)
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from lcc_lens.bench.config import BenchConfig
from lcc_lens.cli.config import command_parser, parse_command, verbose_field
from lcc_lens.cli.policy import execute

PROG = "lcc bench"
SUMMARY = "benchmark restoration methods on the same data, steps and objective, over seeds"


@dataclass(frozen=True)
class BenchArgs:
    """Parsed command line: the benchmark configuration and the verbosity."""

    bench: BenchConfig = field(
        default_factory=BenchConfig, metadata={"help": "benchmark settings", "inline": True}
    )
    verbose: bool = verbose_field()


def build_parser():
    """The ``lcc bench`` parser and its field flags."""
    return command_parser(PROG, SUMMARY + ".\n\n" + __doc__.split("\n\n")[1], BenchArgs)


def parse(argv: Sequence[str] | None = None) -> BenchArgs:
    """argv -> validated BenchArgs (no side effects); ConfigError for any bad value."""
    parser, specs = build_parser()
    return parse_command(BenchArgs, parser, specs, [] if argv is None else argv)


def command_line(cfg: BenchConfig) -> str:
    """The shortest ``python -m lcc_lens.bench`` command that reproduces ``cfg``."""
    parts = ["python", "-m", "lcc_lens.bench"]
    for f in fields(BenchConfig):
        value = getattr(cfg, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, tuple):
            parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: BenchArgs) -> int:
    """Run the benchmark and print where each setting's table went."""
    from lcc_lens.bench.run import run_bench

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    payloads = run_bench(args.bench, command=command_line(args.bench))
    for p in payloads:
        best = [r for r in p["rows"] if r["kind"] != "reference"]
        lines = [f"{p['setting']}: {len(best)} methods x {len(p['config']['seeds'])} seeds"]
        for r in best:
            g = r["ood_nll_gap_closed"]
            mean = "-" if g["mean"] is None else f"{g['mean']:.1%}"
            if r["kind"] == "failed":
                mean = "failed: " + r["failures"][0]["kind"].replace("_", " ")
            lines.append(f"  {r['method']:<18} OOD NLL gap closed {mean}")
        lines.append(f"  -> {p['config']['out']}/{p['setting']}.json")
        print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse, run, argv)
