"""The CI-budgeted end-to-end run on the real embedded SmolLM2-135M-Instruct (a few minutes on 2 cores).

Wanda 50 % prune (cached), lost components, probing, a short fit (default objective) through the CLI,
export check, and the held-out (out-of-domain test domain) perplexity ordering dense < restored < pruned.
"""

from __future__ import annotations

import json
import math

import pytest

from lcc_lens.cli.fit import main as fit_main

pytestmark = pytest.mark.slow


def test_fit_cli_end_to_end_on_the_real_model(tmp_path, capsys):
    out = tmp_path / "run"
    rc = fit_main(
        [
            "--out", str(out), "--steps", "8", "--n-train", "64", "--n-diff-prompts", "32",
            "--n-pairs", "128", "--fraction", "0.25", "--windows", "12", "--device", "cpu",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["ppl_dense"] < summary["ppl_restored"] < summary["ppl_pruned"]
    assert summary["gap_closed"] > 0
    logs = [math.log(summary[k]) for k in ("ppl_dense", "ppl_pruned", "ppl_restored")]
    assert summary["gap_closed_nll"] == pytest.approx((logs[1] - logs[2]) / (logs[1] - logs[0]))
    assert summary["eval_domain"] == "speeches" and (out / "complete.json").is_file()
    assert summary["export_max_abs_logit_diff"] < 1e-3
    heads = json.loads((out / "heads.json").read_text())
    assert heads["n_selected"] == round(0.25 * 270)
    assert "gap closed" in capsys.readouterr().out
