"""The one exit-code policy, error printer, logging setup and signal handling of every subcommand.

Exit codes: 0 success; 2 bad input (:data:`~lcc_lens.errors.BAD_INPUT_ERRORS`, argument errors);
1 any other failure; 130 Ctrl-C; 143 SIGTERM. The user sees one ``error: ...`` line, never a
traceback (``--verbose`` adds it for unexpected errors). SIGTERM raises
:class:`~lcc_lens.errors.Interrupted` in the main thread, so every ``with`` block (temporary output
directories, hooks) cleans up before the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from lcc_lens.errors import BAD_INPUT_ERRORS, Interrupted, LccError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

A = TypeVar("A")
logger = logging.getLogger("lcc_lens.cli")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with --verbose); quiet the chattier dependencies."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lcc_lens", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._lcc_lens = True  # type: ignore[attr-defined]
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("httpx", "urllib3", "datasets", "filelock", "sentence_transformers", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Interrupted):
        return EXIT_TERMINATED
    if isinstance(exc, BAD_INPUT_ERRORS):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def print_error(exc: BaseException, *, verbose: bool = False) -> None:
    """One line on stderr naming the problem; the traceback only for unexpected errors in verbose."""
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted (Ctrl-C); nothing half-written was kept."
    elif isinstance(exc, Interrupted):
        message = "terminated (SIGTERM); nothing half-written was kept."
    elif isinstance(exc, LccError):
        message = str(exc)
    elif isinstance(exc, MemoryError):
        message = "out of memory; lower --batch-size or the sequence length."
    else:
        message = (
            f"unexpected {type(exc).__name__}: {exc}. This is a bug or an unchecked input; "
            "rerun with --verbose for the traceback and report it."
        )
    if verbose and not isinstance(exc, (LccError, KeyboardInterrupt, Interrupted)):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` in the main thread (then restored)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover - not the main thread
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(
    parse: Callable[[Sequence[str]], A],
    run: Callable[[A], int | None],
    argv: Sequence[str] | None,
) -> int:
    """Parse, set up logging, run; map every failure to a message and an exit code.

    ``parse(argv)`` returns the command's frozen arguments (their ``verbose`` attribute, if any,
    turns on debug logging); ``run(args)`` returns an exit code or None for success.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    with sigterm_raises():
        try:
            args = parse(argv)
            verbose = bool(getattr(args, "verbose", False))
            setup_logging(verbose)
            code = run(args)
            return EXIT_OK if code is None else int(code)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        except BaseException as exc:  # noqa: BLE001 - the one place every failure is reported
            print_error(exc, verbose=verbose)
            return exit_code(exc)
