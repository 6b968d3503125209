"""Perplexity: exact agreement with lm-eval's loglikelihood_rolling, bridges, windows and bad input."""

from __future__ import annotations

import math

import pytest

from lcc_lens.corpora import split_text
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.evaluation.perplexity import perplexity, prefix_token_id, rolling_windows
from lcc_lens.models import to_bridge
from lcc_lens.tiny import tiny_model


@pytest.fixture(scope="module")
def text() -> str:
    return split_text("test")[:2500]


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
def test_matches_lm_eval_loglikelihood_rolling(layout, tok, text):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = tiny_model(layout, seed=1)
    ours = perplexity(model, tok, text, context_length=64, batch_size=5)
    lm = HFLM(pretrained=model, tokenizer=tok, max_length=64, batch_size=4)
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (loglik,) = lm.loglikelihood_rolling([request], disable_tqdm=True)
    n_lm_eval = len(lm.tok_encode(text))
    assert n_lm_eval % 64 != 0, "the text should end in a partial window"
    assert ours.n_tokens == n_lm_eval
    assert ours.n_windows == math.ceil(n_lm_eval / 64)
    assert abs(ours.nll_sum + loglik) <= 1e-4 * abs(loglik)
    assert ours.nll == pytest.approx(ours.nll_sum / ours.n_tokens)
    assert ours.ppl == pytest.approx(math.exp(ours.nll))


def test_batch_size_does_not_change_result(tok, text):
    model = tiny_model("llama", seed=2)
    a = perplexity(model, tok, text, context_length=48, batch_size=1)
    b = perplexity(model, tok, text, context_length=48, batch_size=7)
    assert a.n_tokens == b.n_tokens
    assert a.nll_sum == pytest.approx(b.nll_sum, rel=1e-5)


def test_bridge_scores_like_hf_model(tok, text):
    model = tiny_model("llama", seed=3)
    hf = perplexity(model, tok, text[:1200], context_length=32, batch_size=4)
    bridge = to_bridge(tiny_model("llama", seed=3), tok)
    br = perplexity(bridge, tok, text[:1200], context_length=32, batch_size=4)
    assert br.n_tokens == hf.n_tokens
    assert br.nll_sum == pytest.approx(hf.nll_sum, rel=1e-5)


def test_a_different_model_scores_differently(tok, text):
    a = perplexity(tiny_model("llama", seed=4), tok, text[:800], context_length=32)
    b = perplexity(tiny_model("llama", seed=5), tok, text[:800], context_length=32)
    assert abs(a.nll - b.nll) > 1e-3


def test_windows_score_every_token_once():
    tokens = list(range(100, 203))  # 103 tokens
    windows = rolling_windows(tokens, prefix=7, context_length=25)
    scored = [t for _, targets in windows for t in targets]
    assert scored == tokens
    assert windows[0][0][0] == 7
    for inp, targets in windows:
        assert len(inp) <= 25 and len(targets) <= len(inp)
    # the short last window sees a full window of preceding context
    last_inp, last_targets = windows[-1]
    assert len(last_targets) == 3 and len(last_inp) == 25 and last_inp[-1] == tokens[-2]


def test_default_context_and_max_windows(tok, text):
    model = tiny_model("llama", seed=6)  # 256 positions
    full = perplexity(model, tok, text)
    assert full.context_length == 256
    short = perplexity(model, tok, text, context_length=32, max_windows=3)
    assert short.n_windows == 3 and short.n_tokens == 96


def test_bad_input(tok):
    model = tiny_model("llama", seed=7)
    with pytest.raises(DataError, match="empty"):
        perplexity(model, tok, "")
    with pytest.raises(DataError, match="empty"):
        perplexity(model, tok, "  \n\t ")
    with pytest.raises(ConfigError, match="exceeds the model's 256"):
        perplexity(model, tok, "hello world", context_length=1024)
    with pytest.raises(ConfigError, match="batch_size"):
        perplexity(model, tok, "hello world", batch_size=0)
    with pytest.raises(ConfigError, match="pass a Hugging Face PreTrainedModel"):
        perplexity(object(), tok, "hello world")


def test_prefix_token_is_bos_then_eos(tok):
    assert prefix_token_id(tok) == tok.bos_token_id


def test_wikitext2_offline_is_a_clear_error(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    from lcc_lens.evaluation.perplexity import wikitext2_test_text

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # an empty cache, so that a copy cached on a developer machine cannot satisfy the request
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataError, match="WikiText-2.*perplexity='heldout'"):
        wikitext2_test_text()
