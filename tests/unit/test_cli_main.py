"""The ``lcc`` dispatcher, every subcommand's help, and the one exit-code policy."""

from __future__ import annotations

import argparse
import importlib

import pytest

from lcc_lens.cli.main import commands, main
from lcc_lens.cli.policy import execute, exit_code
from lcc_lens.errors import (
    CheckpointError,
    CompensationFileError,
    ConfigError,
    DataError,
    ExportError,
    Interrupted,
    LccError,
    OwnershipError,
)

SUBCOMMANDS = [c for c in commands()]


def test_top_level_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "prune", "eval"):
        assert f"  {name} " in out
    assert main([]) == 2
    assert main(["prnue"]) == 2
    assert "did you mean 'prune'" in capsys.readouterr().err


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: c.name)
def test_every_option_has_help_with_default(command, capsys):
    module = importlib.import_module(command.module)
    parser, _specs = module.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"lcc {command.name} {action.option_strings}"
        assert "default:" in action.help or "(required)" in action.help, action.option_strings
    assert main([command.name, "--help"]) == 0
    assert "usage: lcc " + command.name in capsys.readouterr().out


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2),
        (DataError("x"), 2),
        (CompensationFileError("x"), 2),
        (CheckpointError("x"), 2),
        (OwnershipError("x"), 2),
        (ExportError("x"), 1),
        (LccError("x"), 1),
        (RuntimeError("x"), 1),
        (KeyboardInterrupt(), 130),
        (Interrupted(), 143),
    ],
)
def test_exit_code_policy(exc, code):
    assert exit_code(exc) == code


def _run_raising(exc):
    def run(_args):
        raise exc

    return run


def test_execute_prints_one_line_and_no_traceback(capsys):
    assert execute(lambda argv: argv, _run_raising(KeyboardInterrupt()), []) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and err.count("\n") == 1
    assert execute(lambda argv: argv, _run_raising(ZeroDivisionError("boom")), []) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError: boom" in err and "Traceback" not in err and "--verbose" in err


def test_execute_verbose_shows_the_traceback_of_unexpected_errors(capsys):
    class Args:
        verbose = True

    assert execute(lambda argv: Args(), _run_raising(ZeroDivisionError("boom")), []) == 1
    assert "Traceback" in capsys.readouterr().err


def test_execute_maps_parse_errors_to_2(capsys):
    def parse(argv):
        raise ConfigError("--seed must be integer, got 'x'.")

    assert execute(parse, lambda a: 0, ["--seed", "x"]) == 2
    assert capsys.readouterr().err == "error: --seed must be integer, got 'x'.\n"


def test_console_script_is_installed():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "lcc"
    assert script.is_file(), "pip install -e . installs the `lcc` console script"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "commands:" in proc.stdout
