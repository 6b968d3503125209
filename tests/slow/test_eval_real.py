"""The embedded SmolLM2-135M, dense and Wanda-50 %, through ``python -m lcc_lens.eval`` (small --limit)."""

from __future__ import annotations

import json

import pytest

from lcc_lens.eval import main
from lcc_lens.evaluation.suite import SUITE_TASKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wanda50():
    from lcc_lens.pruning import PruneConfig, cached_pruned_checkpoint

    return cached_pruned_checkpoint("embedded", PruneConfig(method="wanda", sparsity=0.5))


def test_cli_dense_vs_wanda50_on_offline_suite(tmp_path, wanda50, capsys):
    out = tmp_path / "results.json"
    code = main(
        [
            "--model", "dense=embedded",
            "--model", f"wanda50={wanda50}",
            "--tasks", "offline",
            "--limit", "16",
            "--batch-size", "8",
            "--perplexity", "heldout",
            "--context-length", "256",
            "--max-windows", "4",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    dense, pruned = (m["tasks"] for m in report["models"])
    assert set(dense) == set(SUITE_TASKS)
    for model in (dense, pruned):
        assert all(model[t]["n_samples"] == 16 for t in SUITE_TASKS)
    # a real model is far better than chance on the held-out tasks, and pruning costs perplexity
    assert dense["lcc_next_passage"]["acc_norm"] > 0.25
    assert dense["lcc_heldout_ppl"]["bits_per_byte"] < pruned["lcc_heldout_ppl"]["bits_per_byte"]
    ppl = [m["perplexity"] for m in report["models"]]
    assert ppl[0]["n_tokens"] == ppl[1]["n_tokens"] == 4 * 256
    assert ppl[0]["ppl"] < ppl[1]["ppl"]
    assert "dense-pruned z" in out.with_suffix(".md").read_text()
    assert "wanda50 (pruned)" in capsys.readouterr().out
