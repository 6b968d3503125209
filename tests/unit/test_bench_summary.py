"""The cross-setting summary: paired per-seed differences and tables built from benchmark payloads."""

from __future__ import annotations

import pytest

from lcc_lens.bench.summary import paired_difference, summary_markdown


def _gap(values):
    return {"mean": sum(values) / len(values), "sd": 0.01, "seeds": list(values)}


def _row(method, seeds, values, params=10):
    return {
        "method": method,
        "kind": "trained",
        "seeds": list(seeds),
        "trainable_params": params,
        "ood_nll_gap_closed": _gap(values),
        "ood_validation_nll_gap_closed": _gap(values),
        "indomain_nll_gap_closed": _gap(values),
        "sparsity_kept": {"mean": 1.0, "sd": 0.0, "seeds": [1.0] * len(values)},
    }


def _payload(setting, rows):
    return {
        "setting": setting,
        "command": f"python -m lcc_lens.bench --settings {setting}",
        "config": {"seeds": [0, 1, 2]},
        "protocol": {
            "domains": {"speeches": "test", "dialogue": "validation", "code": "in_domain"}
        },
        "rows": rows,
    }


def test_paired_difference_matches_seeds_not_positions():
    anchor = _row("lcc", [0, 1, 2], [0.30, 0.20, 0.25])
    other = _row("lora_r8", [2, 0], [0.20, 0.35])  # seed 1 missing, order differs
    d = paired_difference(anchor, other, "ood_nll_gap_closed")
    assert d["seeds"] == pytest.approx([-0.05, 0.05])
    assert d["anchor_ahead"] == 1
    assert d["mean"] == pytest.approx(0.0)


def test_summary_puts_settings_side_by_side_and_marks_short_rows():
    a = _payload(
        "set_a", [_row("lcc", [0, 1, 2], [0.3, 0.3, 0.3]), _row("lora_r8", [0, 1, 2], [0.2] * 3)]
    )
    b = _payload("set_b", [_row("lcc", [0, 1], [0.1, 0.1]), _row("lora_r8", [0, 1], [0.4, 0.4])])
    text = summary_markdown([a, b])
    assert "| method | set_a (speeches) | set_b (speeches) |" in text
    assert "| `lcc` | 30.0% ± 1.0% | 10.0% ± 1.0% (n=2) |" in text
    assert "| `lora_r8` | +10.0 ± 0.0 pt (lcc ahead 3/3) | -30.0 ± 0.0 pt (lcc ahead 0/2) |" in text
    assert text.index("Out of domain (test") < text.index("In domain")
    assert "python -m lcc_lens.bench --settings set_b" in text


def _interval(closed, half):
    low = None if closed is None else closed - half
    return {
        "closed": closed,
        "low": low,
        "high": None if closed is None else closed + half,
        "half_width": None if closed is None else half,
        "reason": None if closed is not None else "not told apart from zero",
    }


def test_task_section_appears_only_for_runs_on_the_short_task_sets_with_intervals():
    rows = [_row("lcc", [0, 1, 2], [0.3] * 3), _row("lora_r8", [0, 1, 2], [0.2] * 3)]
    rows[0]["task_acc_gap_closed"] = _gap([0.3, 0.2, 0.4])
    rows[0]["task_acc_gap_interval"] = [
        _interval(0.3, 0.08),
        _interval(0.2, 0.10),
        _interval(0.4, 0.09),
    ]
    rows[1]["task_acc_gap_closed"] = _gap([0.1, 0.1, 0.1])
    rows[1]["task_acc_gap_interval"] = [
        _interval(None, 0),
        _interval(0.1, 0.1),
        _interval(0.1, 0.1),
    ]
    old = _payload("set_a", rows)
    assert "Task accuracy gap closed" not in summary_markdown([old])  # 40-item runs: no section
    new = _payload("set_b", rows)
    new["protocol"]["task_set"] = {"version": "short/1"}
    text = summary_markdown([old, new])
    assert "| `lcc` | 30.0% ± 1.0% (95 % CI ±9.0%) |" in text
    assert "| `lora_r8` | undefined (dense - pruned not told apart from 0) |" in text
