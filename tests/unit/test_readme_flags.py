"""Every flag the README shows exists in the command it is shown with (issue 25).

A newcomer copies commands from the README; a flag that the command does not know (`--data` for
`--source`, say) ends the first run with "unrecognized arguments". Each command line the README shows
(`lcc SUB`, `python -m lcc_lens.SUB`, `python -m analysis.NAME`, behind `flock`, `torchrun` or
`accelerate launch` too) is checked against that command's own ``--help``; a flag mentioned in prose
must exist in at least one lcc subcommand. Flags of other tools are named explicitly below.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from functools import cache
from pathlib import Path

import pytest

from lcc_lens.cli.main import main as lcc_main

README = Path(__file__).resolve().parents[2] / "README.md"

FOREIGN = {
    # torchrun / accelerate launch
    "--nproc_per_node",
    "--multi_gpu",
    "--num_processes",
    "--cpu",
    # pytest (pyproject's addopts) and scripts/test.sh
    "--jaxtyping-packages",
    "--all",
    # `lcc --version` / `--help` of every command
    "--version",
    "--help",
    # placeholders where the README describes the flag syntax (`--x` / `--no-x` of a bool field)
    "--x",
    "--no-x",
    # other libraries' flag syntax, named where the README says why lcc_lens does not use them
    "--train.lr",
}
"""Flags the README shows for tools other than lcc_lens's commands."""

SUBCOMMANDS = ("fit", "prune", "eval", "bench")
SCRIPTS = {"scripts/gpu_check.sh": "analysis.gpu.check"}
"""Shell wrappers the README shows, by the Python module whose flags they pass on."""
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")
COMMAND = re.compile(
    r"(?:(?<![\w.])lcc (?P<sub>fit|prune|eval|bench)\b"
    r"|-m lcc_lens\.(?P<mod>fit|prune|eval|bench)\b"
    r"|-m (?P<analysis>analysis\.[a-z_.]+)"
    r"|(?P<script>scripts/gpu_check\.sh))"
    r"(?P<args>[^`\n]*)"
)


@cache
def help_text(target: str) -> str:
    """``--help`` of an lcc subcommand (``fit``) or of an analysis script (``analysis.ood_report``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        if target.startswith("analysis."):
            module = importlib.import_module(target)
            with contextlib.suppress(SystemExit):
                module.main(["--help"])
        else:
            with contextlib.suppress(SystemExit):
                lcc_main([target, "--help"])
    return out.getvalue()


def known(flag: str, target: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(target)) is not None


def readme_commands() -> list[tuple[str, str, str]]:
    """(target, flag, the README line) for every flag after a command the README shows."""
    rows = []
    for line in README.read_text().splitlines():
        for m in COMMAND.finditer(line):
            target = m.group("sub") or m.group("mod") or m.group("analysis")
            target = target or SCRIPTS[m.group("script")]
            for flag in FLAG.findall(m.group("args")):
                if flag not in FOREIGN:
                    rows.append((target, flag, line.strip()))
    return rows


def prose_flags() -> list[str]:
    return sorted({f for f in FLAG.findall(README.read_text()) if f not in FOREIGN})


def test_the_readme_shows_commands_with_flags() -> None:
    rows = readme_commands()
    assert len(rows) >= 20
    assert {t for t, _, _ in rows} >= {"fit", "prune", "eval", "bench"}


@pytest.mark.parametrize(
    ("target", "flag", "line"), readme_commands(), ids=lambda v: v if len(v) < 40 else ""
)
def test_a_flag_shown_with_a_command_exists_there(target: str, flag: str, line: str) -> None:
    assert known(flag, target), f"`{flag}` is not a flag of {target}: README line {line!r}"


@pytest.mark.parametrize("flag", prose_flags())
def test_every_flag_named_in_the_readme_exists_somewhere(flag: str) -> None:
    analysis = sorted({t for t, _, _ in readme_commands() if t.startswith("analysis.")})
    targets = [*SUBCOMMANDS, *analysis]
    assert any(known(flag, t) for t in targets), (
        f"the README names `{flag}`, which no lcc subcommand or analysis script it shows accepts"
    )


def test_the_check_can_fail() -> None:
    assert not known("--data", "fit")  # the flag the README once told users to pass
    assert known("--source", "fit")
