"""The CI-budgeted end-to-end run on the real embedded SmolLM2-135M-Instruct (a few minutes on 2 cores).

Wanda 50 % prune (cached), lost components, the default fit (KL to the dense model on half fit-domain, half
self-written text, a free offset on every head) shortened to 16 steps of 8 x 64 tokens through the CLI, the
export check and the evaluation protocol on every domain, out-of-domain test domain first.

It asserts restoration on the domains it was fitted on; what the short fit does out of domain is reported,
not asserted (the full default's 3-seed figures are in analysis/results/ood/).
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
            "--out", str(out), "--steps", "16", "--n-train", "64", "--n-diff-prompts", "32",
            "--windows", "12", "--device", "cpu", "--max-length", "64", "--self-tokens", "64",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["eval_domain"] == "speeches" and (out / "complete.json").is_file()
    assert summary["ppl_dense"] < summary["ppl_pruned"]
    logs = [math.log(summary[k]) for k in ("ppl_dense", "ppl_pruned", "ppl_restored")]
    assert summary["gap_closed_nll"] == pytest.approx((logs[1] - logs[2]) / (logs[1] - logs[0]))
    domains = summary["evaluation"]["domains"]
    assert list(domains)[0] == "speeches" and domains["speeches"]["role"] == "test"
    in_domain = [d for d in domains.values() if d["role"] == "in_domain"]
    assert len(in_domain) == 2
    # the compensation restores the domains it was fitted on
    for d in in_domain:
        assert d["nll"]["restored"] < d["nll"]["pruned"]
    assert summary["export_max_abs_logit_diff"] < 1e-3
    heads = json.loads((out / "heads.json").read_text())
    assert heads["n_selected"] == 270  # the default compensates every head
    assert "gap closed" in capsys.readouterr().out
