"""``lcc``: one command line with subcommands (fit, prune, eval, bench).

Each subcommand module exposes ``build_parser()``, ``parse(argv) -> frozen args`` (no side effects)
and ``run(args) -> exit code``; :func:`lcc_lens.cli.policy.execute` runs them under the one exit-code
policy.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lcc_lens.cli.policy import EXIT_BAD_INPUT, EXIT_OK, execute


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line summary and the module that implements it."""

    name: str
    summary: str
    module: str

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


COMMANDS: tuple[Command, ...] = (
    Command("fit", "restore a pruned LLM with Lost Component Compensation", "lcc_lens.cli.fit"),
    Command(
        "prune", "prune a causal LM (magnitude, Wanda, SparseGPT, N:M, FLAP)", "lcc_lens.cli.prune"
    ),
    Command("eval", "evaluate dense / pruned / restored models side by side", "lcc_lens.cli.eval"),
    Command("bench", "benchmark restoration methods on pruned models", "lcc_lens.cli.bench"),
)


def commands() -> tuple[Command, ...]:
    """The subcommands installed here (``bench`` only once its module exists)."""
    return tuple(c for c in COMMANDS if c.available())


def usage() -> str:
    lines = [
        "usage: lcc COMMAND [options]     (lcc COMMAND --help for its options)",
        "",
        "Explain and repair pruned LLMs with Lost Component Compensation.",
        "",
        "commands:",
    ]
    lines += [f"  {c.name:<8} {c.summary}" for c in commands()]
    lines += [
        "",
        "options:",
        "  -h, --help  show this message and exit",
        "  --version   print the lcc_lens version and exit",
        "",
        "exit codes: 0 success, 2 bad input, 1 failure, 130 interrupted (Ctrl-C), 143 terminated.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``lcc COMMAND ...`` to the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK if argv else EXIT_BAD_INPUT
    if argv[0] == "--version":
        from lcc_lens import __version__

        print(f"lcc_lens {__version__}")
        return EXIT_OK
    by_name = {c.name: c for c in commands()}
    command = by_name.get(argv[0])
    if command is None:
        close = difflib.get_close_matches(argv[0], list(by_name), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(
            f"error: unknown command {argv[0]!r}{hint}; choose one of {', '.join(by_name)}. "
            "See `lcc --help`.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    module = importlib.import_module(command.module)
    return execute(module.parse, module.run, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
