"""Calibration text that cannot fill the requested sequences is an error or a warning, never silent."""

from __future__ import annotations

import logging

import pytest

from lcc_lens.errors import DataError
from lcc_lens.pruning.data import calibration_tokens, load_calibration_texts


def test_one_word_is_refused(tok):
    with pytest.raises(DataError, match="fewer than one sequence"):
        calibration_tokens(tok, ["hello"], 4, 16)


def test_short_text_repeats_with_a_warning(tok, caplog):
    text = "The quick brown fox jumps over the lazy dog near the river bank today."
    with caplog.at_level(logging.WARNING, logger="lcc_lens.pruning.data"):
        tokens = calibration_tokens(tok, [text], 8, 16)
    assert tokens.shape == (8, 16)
    assert any("repeat" in r.getMessage() for r in caplog.records)


def test_enough_text_has_no_warning(tok, texts, caplog):
    with caplog.at_level(logging.WARNING, logger="lcc_lens.pruning.data"):
        calibration_tokens(tok, texts, 4, 16)
    assert not caplog.records


@pytest.mark.parametrize("name", ["c.txt", "c.json", "c.jsonl"])
def test_binary_file_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(DataError, match="not UTF-8"):
        load_calibration_texts(str(path))
