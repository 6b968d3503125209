"""Scoring in the benchmark: the protocol's windows, lm-eval task accuracy, and gap-closed arithmetic."""

from __future__ import annotations

import pytest

from lcc_lens.bench.scoring import ScoringPlan, gaps, sampled_windows, score_model
from lcc_lens.evaluation.protocol import ProtocolConfig
from lcc_lens.evaluation.task_sets import TASK_SET_VERSION, TaskSetConfig


def _scores(nll_test: float, nll_in: float, acc: float | None) -> dict:
    domains = {
        "speeches": {"role": "test", "nll": nll_test, "nll_sum": nll_test * 100, "n_tokens": 100},
        "dialogue": {"role": "validation", "nll": 2.0, "nll_sum": 200.0, "n_tokens": 100},
        "a": {"role": "in_domain", "nll": nll_in, "nll_sum": nll_in * 50, "n_tokens": 50},
        "b": {
            "role": "in_domain",
            "nll": nll_in + 1,
            "nll_sum": (nll_in + 1) * 150,
            "n_tokens": 150,
        },
    }
    tasks = {} if acc is None else {"next_passage": {"acc_norm": acc}, "last_word": {"acc": acc}}
    return {"domains": domains, "tasks": tasks}


def test_gap_arithmetic_pools_in_domain_tokens_and_orients_accuracy():
    dense, pruned = _scores(2.0, 1.0, 0.6), _scores(3.0, 2.0, 0.4)
    half = _scores(2.5, 1.5, 0.5)
    g = gaps(dense, pruned, half)
    assert g["ood_nll_gap_closed"] == pytest.approx(0.5)
    assert g["indomain_nll_gap_closed"] == pytest.approx(0.5)
    assert g["task_acc_gap_closed"] == pytest.approx(0.5)
    assert g["ood_validation_nll_gap_closed"] is None  # dense and pruned tie there
    worse = gaps(dense, pruned, _scores(3.5, 2.0, None))
    assert worse["ood_nll_gap_closed"] == pytest.approx(-0.5)
    assert worse["task_acc_gap_closed"] is None


def test_gaps_carry_the_paired_task_interval_or_the_reason_it_is_undefined():
    dense, pruned, half = _scores(2.0, 1.0, 0.6), _scores(3.0, 2.0, 0.4), _scores(2.5, 1.5, 0.5)
    d, p = "1" * 60 + "0" * 40, "1" * 40 + "0" * 60  # 20 points apart on every task
    for s, outcomes in ((dense, d), (pruned, p), (half, "1" * 50 + "0" * 50)):
        s["task_outcomes"] = {"next_passage": outcomes, "last_word": outcomes}
    g = gaps(dense, pruned, half)
    interval = g["task_acc_gap_interval"]
    assert g["task_acc_gap_closed"] == pytest.approx(0.5) == interval["closed"]
    # the restored model differs from pruned only on dense-pruned discordant items: a tight interval
    assert interval["low"] <= 0.5 <= interval["high"] and interval["half_width"] < 0.2
    pruned["task_outcomes"] = dense["task_outcomes"]  # dense and pruned now agree item by item
    g = gaps(dense, pruned, half)
    assert (
        g["task_acc_gap_closed"] is None
        and "not told apart" in g["task_acc_gap_interval"]["reason"]
    )


def test_score_model_uses_the_protocol_windows_and_heldout_tasks(llama_pair_dirs):
    from lcc_lens.corpora import passages
    from lcc_lens.models import load_causal_lm

    model, tok = load_causal_lm(llama_pair_dirs[0])
    texts = {"x": tuple(passages("test", 4)), "y": tuple(passages("validation", 4))}
    protocol = ProtocolConfig(context_length=32, windows=3, bootstrap=0)
    windows = sampled_windows(tok, texts, protocol)
    assert all(len(w) == 3 for w in windows.values())
    tasks = TaskSetConfig(next_passage=6, last_word=6)
    plan = ScoringPlan(protocol, windows, {"x": "test", "y": "in_domain"}, tasks=tasks)
    scores = score_model(model, tok, plan)
    assert set(scores["domains"]) == {"x", "y"}
    assert scores["domains"]["x"]["n_tokens"] == 3 * 32
    assert set(scores["tasks"]) == {"next_passage", "last_word"}
    assert 0.0 <= scores["tasks"]["next_passage"]["acc_norm"] <= 1.0
    assert 0.0 <= scores["tasks"]["last_word"]["acc"] <= 1.0
    assert scores["task_set"]["version"] == TASK_SET_VERSION
    assert {len(v) for v in scores["task_outcomes"].values()} == {6}
    assert score_model(model, tok, plan) == scores  # deterministic


def test_peak_memory_sees_an_allocation_and_forward_ratio_is_measured(llama_pair_dirs):
    import torch

    from lcc_lens.bench.measure import PeakMemory, forward_ratio
    from lcc_lens.models import load_causal_lm

    mem = PeakMemory(device="cpu", interval_s=0.005)
    with mem.measure():
        block = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched
        del block
    assert mem.kind == "cpu_rss_sampled" and mem.peak_mb > 100
    model, _ = load_causal_lm(llama_pair_dirs[1])
    ids = torch.randint(1, 500, (2, 16))
    timing = forward_ratio(model, model, ids, repeats=2)
    assert timing["ratio"] > 0 and timing["pruned_s"] > 0 and timing["merged_s"] > 0
