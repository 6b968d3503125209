"""lm-eval through evaluate_lm_eval: the offline YAML tasks on tiny models, checkpoints, bad input."""

from __future__ import annotations

import math

import pytest

from lcc_lens.errors import ConfigError, DataError, LccError
from lcc_lens.evaluation.harness import (
    PAPER_TASKS,
    check_task_names,
    evaluate_lm_eval,
    task_manager,
)
from lcc_lens.evaluation.perplexity import perplexity
from lcc_lens.evaluation.suite import SUITE_TASKS, build_offline_suite
from lcc_lens.models import to_bridge
from lcc_lens.tiny import save_tiny_checkpoint, tiny_model

LIMIT = 6


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("suite") / "s"
    build_offline_suite(directory, seed=0, n_items=12)
    return directory


@pytest.fixture(scope="module")
def results(suite_dir, tok):
    model = tiny_model("llama", seed=0)
    return evaluate_lm_eval(
        model, tok, SUITE_TASKS, limit=LIMIT, batch_size=4, include_path=suite_dir
    )


def test_offline_tasks_run_in_lm_eval(results):
    assert set(results) == set(SUITE_TASKS)
    nxt = results["lcc_next_passage"]
    assert 0.0 <= nxt["acc"] <= 1.0 and 0.0 <= nxt["acc_norm"] <= 1.0
    assert nxt["acc_stderr"] is not None and nxt["n_samples"] == LIMIT
    assert nxt["higher_is_better"] == {"acc": True, "acc_norm": True}
    cloze = results["lcc_last_word"]
    assert 0.0 <= cloze["acc"] <= 1.0 and cloze["perplexity"] > 1.0
    ppl = results["lcc_heldout_ppl"]
    assert ppl["word_perplexity"] > 1.0 and ppl["doc_bits_per_byte_stderr"] > 0
    assert ppl["higher_is_better"]["bits_per_byte"] is False


def test_rolling_task_agrees_with_perplexity_function(results, suite_dir, tok):
    import json

    rows = [
        json.loads(line) for line in (suite_dir / "lcc_heldout_ppl.jsonl").read_text().splitlines()
    ]
    model = tiny_model("llama", seed=0)
    nll, n_bytes = 0.0, 0
    for row in rows[:LIMIT]:
        nll += perplexity(model, tok, row["text"], context_length=256).nll_sum
        n_bytes += len(row["text"].encode())
    expected_bpb = nll / n_bytes / math.log(2)
    assert results["lcc_heldout_ppl"]["bits_per_byte"] == pytest.approx(expected_bpb, rel=1e-4)


def test_checkpoint_directory_matches_in_memory_model(tmp_path, suite_dir, tok):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", "llama", seed=0)
    from_dir = evaluate_lm_eval(
        str(ckpt), None, ["lcc_last_word"], limit=LIMIT, batch_size=4, include_path=suite_dir
    )
    in_memory = evaluate_lm_eval(
        tiny_model("llama", seed=0),
        tok,
        ["lcc_last_word"],
        limit=LIMIT,
        batch_size=4,
        include_path=suite_dir,
    )
    assert from_dir["lcc_last_word"]["perplexity"] == pytest.approx(
        in_memory["lcc_last_word"]["perplexity"], rel=1e-4
    )


def test_unknown_task_name_with_real_task_manager():
    manager = task_manager()
    assert set(PAPER_TASKS) <= set(manager.all_tasks)
    with pytest.raises(
        ConfigError, match=r"unknown lm-eval task 'hellaswagg' \(did you mean hellaswag"
    ):
        check_task_names(["hellaswagg"], manager)
    with pytest.raises(ConfigError, match="no task"):
        check_task_names([], manager)


def test_paper_task_offline_fails_fast_with_clear_error(monkeypatch, tok, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # an empty cache, so that a copy cached on a developer machine cannot satisfy the request
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataError, match="boolq.*Hugging Face hub"):
        evaluate_lm_eval(tiny_model("llama"), tok, ["boolq"], limit=2, batch_size=2)


def test_bad_models(tmp_path, tok, suite_dir):
    not_ckpt = tmp_path / "not_a_checkpoint"
    not_ckpt.mkdir()
    (not_ckpt / "notes.txt").write_text("hello")
    with pytest.raises(LccError, match="not a Hugging Face checkpoint"):
        evaluate_lm_eval(str(not_ckpt), None, ["lcc_last_word"], include_path=suite_dir)
    bridge = to_bridge(tiny_model("llama"), tok)
    with pytest.raises(ConfigError, match="TransformerBridge"):
        evaluate_lm_eval(bridge, tok, ["lcc_last_word"], include_path=suite_dir)
    with pytest.raises(ConfigError, match="tokenizer"):
        evaluate_lm_eval(tiny_model("llama"), None, ["lcc_last_word"], include_path=suite_dir)
    with pytest.raises(ConfigError, match="not a directory"):
        evaluate_lm_eval(
            tiny_model("llama"), tok, ["lcc_last_word"], include_path=tmp_path / "nope"
        )
