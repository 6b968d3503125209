"""Progress of long work: a tqdm bar on a terminal, periodic log lines anywhere else.

tqdm hides its bar when stderr is not a terminal (a log file, a notebook runner, CI), which made a
twenty-minute job look hung. Every stage that takes more than a few seconds goes through
:func:`progress`: on a terminal it is an ordinary tqdm bar; otherwise the same bar is rendered, at most
every ``log_interval`` seconds, as one ``logging`` line (rate and ETA included). Only rank 0 of a
distributed run reports.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger("lcc_lens.progress")

T = TypeVar("T")

LOG_INTERVAL_S = 20.0
"""Seconds between two progress lines when stderr is not a terminal."""


class _LogStream:
    """A file for tqdm that turns each refresh into one log line (no carriage returns)."""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            logger.info("%s", line)

    def flush(self) -> None:  # tqdm calls it; logging flushes its own handlers
        pass


def _on_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
    enabled: bool = True,
    log_interval: float = LOG_INTERVAL_S,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) that is never silent.

    ``enabled=False`` (e.g. a rank other than 0, or a caller's ``show_progress``) shows nothing.
    """
    from lcc_lens import distributed

    if not enabled or not distributed.context().is_main:
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=True, **kwargs)
    if _on_terminal():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, **kwargs)
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=_LogStream(),
        mininterval=log_interval,
        maxinterval=log_interval * 3,
        ascii=True,
        ncols=100,
        leave=True,
        **kwargs,
    )
