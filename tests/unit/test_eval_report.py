"""Comparison tables: gap-closed fractions, orientation, log-scale perplexity, markdown."""

from __future__ import annotations

import math

import pytest

from lcc_lens.errors import ConfigError
from lcc_lens.evaluation.report import ModelResult, comparison_rows, gap_closed, markdown_table


def test_gap_closed_accuracy_and_perplexity():
    assert gap_closed(0.60, 0.54, 0.5883, higher_is_better=True) == pytest.approx(0.805, abs=1e-3)
    assert gap_closed(0.60, 0.54, 0.54, higher_is_better=True) == 0.0
    assert gap_closed(0.60, 0.54, 0.50, higher_is_better=True) < 0
    # lower is better, linear (bits per byte)
    assert gap_closed(1.0, 2.0, 1.25, higher_is_better=False) == pytest.approx(0.75)
    # perplexity on log scale: halfway in log space
    mid = math.sqrt(10.0 * 40.0)
    assert gap_closed(10.0, 40.0, mid, higher_is_better=False, log_scale=True) == pytest.approx(0.5)
    assert gap_closed(10.0, 40.0, 25.0, higher_is_better=False) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.5, 0.7, higher_is_better=True) is None


def _result(label, role, acc, se, ppl):
    return ModelResult(
        label,
        role,
        f"/ckpt/{label}",
        {
            "lcc_last_word": {
                "acc": acc,
                "acc_stderr": se,
                "perplexity": ppl,
                "perplexity_stderr": None,
                "higher_is_better": {"acc": True, "perplexity": False},
                "n_samples": 400,
            }
        },
        {"ppl": ppl, "nll": math.log(ppl), "n_tokens": 1000},
    )


def test_rows_and_markdown():
    results = [
        _result("dense", "dense", 0.40, 0.02, 10.0),
        _result("pruned", "pruned", 0.20, 0.02, 40.0),
        _result("lcc", "restored", 0.35, 0.02, 20.0),
    ]
    rows = {(r.task, r.metric): r for r in comparison_rows(results)}
    acc = rows[("lcc_last_word", "acc")]
    assert acc.gap["lcc"] == pytest.approx(0.75)
    assert acc.separation_z == pytest.approx(0.20 / math.hypot(0.02, 0.02))
    ppl = rows[("perplexity", "ppl")]
    assert not ppl.higher_is_better
    assert ppl.gap["lcc"] == pytest.approx(0.5)
    table = markdown_table(results)
    assert "gap closed (lcc)" in table and "75.0%" in table and "50.0%" in table
    assert "0.4000 ± 0.0200" in table


def test_single_model_has_no_gap_columns():
    table = markdown_table([_result("dense", "dense", 0.4, 0.02, 10.0)])
    assert "gap closed" not in table and "z" not in table.splitlines()[0]


def test_duplicate_labels_rejected():
    with pytest.raises(ConfigError, match="unique"):
        comparison_rows(
            [_result("a", "dense", 0.4, 0.02, 10.0), _result("a", "pruned", 0.3, 0.02, 9.0)]
        )
