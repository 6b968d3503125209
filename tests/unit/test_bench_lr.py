"""The learning-rate sensitivity table: chosen on the validation domain only, generated from committed JSON."""

from __future__ import annotations

import pytest

from analysis.bench_lr import MARKER, OUT, SETTING, chosen, collect, lr_markdown


def _gap(values):
    return {"mean": sum(values) / len(values), "sd": 0.01, "seeds": list(values)}


def _row(method, lr, test, val):
    return {
        "method": method,
        "kind": "trained",
        "lr": lr,
        "seeds": [0, 1, 2],
        "ood_nll_gap_closed": _gap(test),
        "ood_validation_nll_gap_closed": _gap(val),
        "indomain_nll_gap_closed": _gap(val),
    }


def _payload(lr):
    return {
        "command": f"python -m lcc_lens.bench --lr {lr}",
        "config": {"seeds": [0, 1, 2], "steps": 16, "batch_size": 8, "objective": "kl"},
        "protocol": {"domains": {"speeches": "test", "dialogue": "validation"}},
    }


def test_the_rate_is_chosen_on_validation_never_on_test():
    lcc = [
        (_row("lcc", 0.005, [0.30] * 3, [0.20] * 3), _payload(0.005)),
        (_row("lcc", 0.015, [0.40] * 3, [0.10] * 3), _payload(0.015)),  # best test, worse val
    ]
    lora = [
        (_row("lora_r8", 0.001, [0.20, 0.25, 0.30], [0.10] * 3), _payload(0.001)),
        (_row("lora_r8", 0.003, [0.35, 0.30, 0.25], [0.30] * 3), _payload(0.003)),
    ]
    assert chosen(lcc)["lr"] == 0.005 and chosen(lora)["lr"] == 0.003
    text = lr_markdown({"lcc": lcc, "lora_r8": lora}, "s")
    assert "| `lcc` | 0.005 | 30.0% ± 1.0% | 20.0% ± 1.0% | 20.0% ± 1.0% | yes |" in text
    assert "| `lcc` | 0.015 | 40.0% ± 1.0% | 10.0% ± 1.0% | 10.0% ± 1.0% |  |" in text
    assert "paired by seed: +0.0 ± 5.0 points (`lcc` ahead in 1 of 3 seeds" in text


def test_committed_table_is_generated_from_the_json():
    target = OUT / "summary.md"
    if not target.is_file():
        pytest.skip("no committed learning-rate sweep")
    text = target.read_text(encoding="utf-8")
    assert text.startswith(MARKER)
    assert text == lr_markdown(collect(SETTING, ("lcc", "lora_r8")), SETTING)
