"""Long work is never silent: off a terminal the bar becomes periodic log lines (issue 25)."""

from __future__ import annotations

import logging

from lcc_lens.progress import progress


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lcc_lens.progress"]


def test_off_a_terminal_the_bar_logs_a_bounded_number_of_lines(caplog):
    caplog.set_level(logging.INFO, logger="lcc_lens.progress")
    bar = progress(range(200), desc="fit", unit="step", log_interval=3600)
    for _ in bar:
        bar.set_postfix(loss="1.0", refresh=False)
    lines = _lines(caplog)
    assert 1 <= len(lines) <= 3  # the start and the end, not one line per step
    assert "fit" in lines[-1] and "200/200" in lines[-1] and "\r" not in lines[-1]


def test_every_refresh_is_a_line_when_the_interval_allows(caplog):
    caplog.set_level(logging.INFO, logger="lcc_lens.progress")
    with progress(total=5, desc="evaluate speeches", unit="win", log_interval=0) as bar:
        for _ in range(5):
            bar.update(1)
    lines = _lines(caplog)
    assert len(lines) >= 5 and "evaluate speeches" in lines[-1] and "5/5" in lines[-1]


def test_a_disabled_bar_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="lcc_lens.progress")
    assert list(progress(range(3), desc="quiet", enabled=False)) == [0, 1, 2]
    assert _lines(caplog) == []
