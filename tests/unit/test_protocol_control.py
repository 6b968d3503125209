"""Held-out tasks scored in process, and the dense control, on a tiny real (random) model pair."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.evaluation.control import dense_control_fraction, dense_pair, fit_dense_control
from lcc_lens.evaluation.heldout_tasks import score_suite, task_gap_closed
from lcc_lens.evaluation.protocol import ProtocolConfig, evaluate
from lcc_lens.models import ModelPair
from lcc_lens.training import TrainConfig


@pytest.fixture(scope="module")
def pair(llama_pair_dirs):
    return ModelPair.load(*llama_pair_dirs)


def _all_heads(pair):
    g = pair.geometry
    return [(lay, h) for lay in range(g.n_layers) for h in range(g.n_heads)]


def test_tasks_score_hooked_models_and_zero_compensation_is_a_no_op(pair):
    zero = Compensation(pair.geometry, _all_heads(pair), None, use_directions=False)
    models = {"dense": pair.dense, "pruned": pair.pruned, "restored": (pair.pruned, zero)}
    out = score_suite(models, pair.tokenizer, n_items=6, batch_size=4)
    assert out["domain"] == "speeches"
    for task in ("next_passage", "last_word"):
        assert out[task]["restored"] == out[task]["pruned"]
        assert len(out[task]["dense"]["correct"]) == 6
    gaps = task_gap_closed(out, "restored")
    assert set(gaps) == {"next_passage", "last_word", "mean_accuracy"}
    assert all(v in (None, 0.0) for v in gaps.values())


def test_dense_control_trains_on_the_dense_model(pair):
    from lcc_lens.training import evaluate_loss

    data = encode(pair.tokenizer, load_examples("corpora", n=16, seed=0), 64)
    control_pair = dense_pair(pair)
    assert control_pair.dense is pair.dense and control_pair.pruned is not pair.dense
    ids = torch.tensor([data[0].input_ids])
    same = pair.dense(ids, return_type="logits")
    assert torch.equal(control_pair.pruned(ids, return_type="logits"), same)

    def make():
        return Compensation(pair.geometry, _all_heads(pair), None, use_directions=False)

    lm = TrainConfig(objective="lm", steps=4, batch_size=4, lr=0.05)
    before = evaluate_loss(control_pair, make(), data, lm)
    ctrl, history = fit_dense_control(pair, make, data, data[:4], lm)
    assert len(history) == 4
    assert (
        evaluate_loss(control_pair, ctrl, data, lm) < before
    )  # the dense model adapts to the text
    docs = [e.prompt * 3 for e in load_examples("corpora", n=4, seed=5)]
    res = evaluate(
        {"dense": pair.dense, "pruned": pair.pruned, "dense_control": (pair.dense, ctrl)},
        pair.tokenizer,
        {"d": docs},
        ProtocolConfig(context_length=16, windows=4, bootstrap=0),
    )
    d = res.domains["d"]
    expected = (d.nll("dense") - d.nll("dense_control")) / (d.nll("pruned") - d.nll("dense"))
    assert dense_control_fraction(res, "d") == pytest.approx(expected)
