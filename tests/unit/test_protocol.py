"""The evaluation protocol: seeded windows over the whole text, exact scoring, one gap convention."""

from __future__ import annotations

import math

import pytest
import torch

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.evaluation import report
from lcc_lens.evaluation.gap import (
    bootstrap_nll_gap,
    gap_closed,
    nll_gap_closed,
    ppl_gap_closed,
)
from lcc_lens.evaluation.perplexity import perplexity
from lcc_lens.evaluation.protocol import (
    ProtocolConfig,
    evaluate,
    markdown,
    sample_windows,
    score_windows,
)
from lcc_lens.tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=0).eval()


@pytest.fixture(scope="module")
def docs(texts):
    return texts[:8]


def test_windows_are_drawn_across_the_whole_text(tok, docs):
    cfg = ProtocolConfig(context_length=16, windows=8, seed=0)
    windows, available = sample_windows(tok, docs, cfg)
    assert available > 40 and len(windows) == 8
    starts = [w.start for w in windows]
    assert max(starts) > 16 * 8  # not the first N windows
    again, _ = sample_windows(tok, docs, cfg)
    assert [w.start for w in again] == starts
    other, _ = sample_windows(tok, docs, ProtocolConfig(context_length=16, windows=8, seed=1))
    assert [w.start for w in other] != starts
    for w in windows:
        assert len(w.input_ids) == len(w.targets) == 16
        assert w.input_ids[1:] == w.targets[:-1]  # every target is the next token


def test_scoring_all_windows_equals_exact_perplexity(model, tok, docs):
    text = "\n\n".join(d.strip() for d in docs)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    L = 32
    cfg = ProtocolConfig(context_length=L, windows=10_000, bootstrap=0)
    res = evaluate({"m": model}, tok, {"d": docs}, cfg)
    scores = res.domains["d"]
    assert scores.n_tokens == (n // L) * L
    cut = tok.decode(tok(text, add_special_tokens=False)["input_ids"][: (n // L) * L])
    ref = perplexity(model, tok, cut, context_length=L, batch_size=4)
    if ref.n_tokens == scores.n_tokens:  # decode/encode round trips on this tokenizer
        assert math.isclose(scores.nll("m"), ref.nll, rel_tol=1e-5)
    # scoring is the same whatever the batch size
    ws, _ = sample_windows(tok, docs, ProtocolConfig(context_length=L, windows=6))
    a = score_windows(model, ws, batch_size=1)
    b = score_windows(model, ws, batch_size=6)
    assert a == pytest.approx(b, rel=1e-5)


def _nll_by_hand(logits_fn, windows) -> float:
    """Mean next-token NLL (nats per token) over ``windows``, from first principles."""
    ids = torch.tensor([w.input_ids for w in windows])
    targets = torch.tensor([w.targets for w in windows])
    with torch.no_grad():
        logp = torch.log_softmax(logits_fn(ids).double(), dim=-1)
    return float(-logp.gather(-1, targets[..., None]).sum() / targets.numel())


def test_models_share_windows_and_gap_is_on_the_nll_scale(model, tok, docs):
    def dense(ids):
        return model(ids).logits

    def worse(ids):  # a flatter next-token distribution: another NLL
        return 0.2 * model(ids).logits

    def mixed(ids):
        return 0.6 * model(ids).logits

    models = {"dense": dense, "pruned": worse, "restored": mixed}
    cfg = ProtocolConfig(context_length=16, windows=12, bootstrap=200)
    texts = {"a": docs[:4], "b": docs[4:]}
    res = evaluate(models, tok, texts, cfg, roles={"b": "test", "a": "in_domain"})
    assert [d.domain for d in res.ordered()] == ["b", "a"]  # out of domain first
    for name, d in res.domains.items():
        windows, _ = sample_windows(tok, texts[name], cfg)
        assert d.tokens_per_window == tuple(len(w.targets) for w in windows)
        by_hand = {label: _nll_by_hand(fn, windows) for label, fn in models.items()}
        for label, value in by_hand.items():  # every model scored on the same windows
            assert d.nll(label) == pytest.approx(value, rel=1e-6), label
        dense_nll, pruned_nll, restored_nll = (
            by_hand["dense"],
            by_hand["pruned"],
            by_hand["restored"],
        )
        assert abs(pruned_nll - dense_nll) > 1e-2  # a real gap to close
        g = res.gap("restored", name)
        # the headline: the share of the pruned-minus-dense NLL gap that the restored model removes
        assert g.nll == pytest.approx(
            (pruned_nll - restored_nll) / (pruned_nll - dense_nll), rel=1e-5
        )
        # the secondary column: the same share on raw perplexities
        pd, pp, pr = (math.exp(v) for v in (dense_nll, pruned_nll, restored_nll))
        assert g.ppl == pytest.approx((pp - pr) / (pp - pd), rel=1e-5)
        assert g.nll_low is not None and g.nll_low <= g.nll <= g.nll_high
    table = markdown(res)
    assert table.index("| b | test") < table.index("| a | in_domain")
    out = res.to_dict()
    assert list(out["domains"]) == ["b", "a"] and "gap_closed" in out["domains"]["b"]


def test_one_gap_function():
    assert report.gap_closed is gap_closed
    assert gap_closed(10.0, 20.0, 15.0, higher_is_better=False) == pytest.approx(0.5)
    # perplexities compare in log space: sqrt(10*20) is half-way on the NLL scale
    assert gap_closed(10.0, 20.0, math.sqrt(200), higher_is_better=False, log_scale=True) == (
        pytest.approx(0.5)
    )
    assert nll_gap_closed(2.0, 3.0, 2.5) == pytest.approx(0.5)
    assert ppl_gap_closed(2.0, 3.0, 2.5) > 0.5  # the perplexity scale flatters
    assert gap_closed(1.0, 1.0, 2.0, higher_is_better=True) is None


def test_bootstrap_interval_is_paired_and_seeded():
    g = torch.Generator().manual_seed(0)
    counts = [100] * 30
    dense = (torch.rand(30, generator=g) * 50 + 200).tolist()
    pruned = [d + 30 for d in dense]
    restored = [d + 15 for d in dense]
    lo, hi = bootstrap_nll_gap(dense, pruned, restored, counts, n_boot=300)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # paired: no window noise
    noisy = [r + float(x) for r, x in zip(restored, torch.randn(30, generator=g) * 10, strict=True)]
    a = bootstrap_nll_gap(dense, pruned, noisy, counts, n_boot=300, seed=1)
    assert a == bootstrap_nll_gap(dense, pruned, noisy, counts, n_boot=300, seed=1)
    assert a[0] < 0.5 < a[1]


def test_bad_input_errors(model, tok):
    with pytest.raises(ConfigError, match="windows"):
        ProtocolConfig(windows=0)
    with pytest.raises(ConfigError, match="confidence"):
        ProtocolConfig(confidence=1.0)
    with pytest.raises(DataError, match="no held-out text"):
        evaluate({"m": model}, tok, {"d": ["  "]})
    with pytest.raises(ConfigError, match="cannot score"):
        evaluate({"m": object()}, tok, {"d": ["some text here"]})
