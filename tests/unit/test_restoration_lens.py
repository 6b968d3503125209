"""restoration_stats and the logit lens / logit gain on tiny real models."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.components import lost_components
from lcc_lens.diff import DiffConfig, head_diffs, tokenize_prompts
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.lens import (
    AnswerPair,
    _token_text,
    direct_logits,
    logit_gain,
    logit_lens,
    readout,
    residual_writes,
)
from lcc_lens.models import ModelPair
from lcc_lens.restoration import restoration_stats

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "To be, or not to be: that is the question.",
    "Exceptions are raised with the raise statement.",
]
HEADS = [(0, 1), (0, 3), (1, 2), (2, 0)]


def _comp(pair: ModelPair, scale: float = 1.0) -> Compensation:
    diff = head_diffs(pair, PROMPTS, DiffConfig(positions="all", max_samples=4096))
    lc = lost_components(diff.samples, k=2)
    comp = Compensation(pair.geometry, HEADS, lc.directions)
    with torch.no_grad():
        comp.bias.copy_(scale * diff.mean_dz[comp.heads[:, 0], comp.heads[:, 1]])
    return comp


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, tiny_dirs):
    return ModelPair.load(*tiny_dirs[request.param])


def test_zero_compensation_restores_nothing(pair):
    comp = Compensation(pair.geometry, HEADS, use_directions=False)
    st = restoration_stats(pair, comp, PROMPTS, DiffConfig(positions="all"))
    torch.testing.assert_close(st.rel_residual, torch.ones_like(st.rel_residual))
    torch.testing.assert_close(st.static_rel_residual, torch.ones_like(st.rel_residual))
    assert torch.all(st.cosine == 0)


def test_layer0_restored_equals_static_and_mean_dz_helps(pair):
    cfg = DiffConfig(positions="all", max_samples=4096)
    comp = _comp(pair)
    st = restoration_stats(pair, comp, PROMPTS, cfg)
    # layer 0 sees no upstream compensation: z_restored = z_pruned + c exactly
    torch.testing.assert_close(st.rel_residual[0], st.static_rel_residual[0], atol=1e-4, rtol=1e-4)
    for layer, head in HEADS:
        assert st.cosine[layer, head] > 0.999  # c is the mean dz itself
        assert st.static_rel_residual[layer, head] < 1.0  # the mean is the best constant in L2
    assert torch.all(st.rel_residual[0, [0, 2]] == 1.0)  # unselected layer-0 heads untouched
    summary = st.summary()
    assert summary["n_selected"] == len(HEADS)
    assert summary["static_rel_residual_unselected"] == pytest.approx(1.0)


def test_restoration_refuses_other_geometry(pair):
    from dataclasses import replace

    comp = _comp(pair)
    comp.geometry = replace(comp.geometry, n_layers=comp.geometry.n_layers + 1)
    with pytest.raises(ConfigError, match="compensation"):
        restoration_stats(pair, comp, PROMPTS)


def _hf_w_o(pair: ModelPair, layer: int, head: int) -> torch.Tensor:
    """W_O slice of a head from the Hugging Face weights: [d_head, d_model]."""
    d = pair.geometry.d_head
    om = pair.pruned.original_model
    if pair.geometry.architecture.startswith("GPT2"):
        return om.transformer.h[layer].attn.c_proj.weight[head * d : (head + 1) * d, :]
    return om.model.layers[layer].self_attn.o_proj.weight[:, head * d : (head + 1) * d].T


def test_logit_lens_matches_hand_computation(pair):
    comp = _comp(pair)
    lens = logit_lens(pair.pruned, comp, pair.tokenizer, top_k=5)
    assert {(h.layer, h.head) for h in lens.heads} == set(HEADS)
    norms = [h.write_norm for h in lens.heads]
    assert norms == sorted(norms, reverse=True)
    ro = readout(pair.pruned)
    layer, head = lens.heads[0].layer, lens.heads[0].head
    c = comp.z_offsets()[layer, head].detach()
    delta = c @ _hf_w_o(pair, layer, head).detach()
    norm = pair.pruned.original_model.lm_head.weight.detach()  # [vocab, d_model]
    if ro.centred:
        delta = delta - delta.mean()
    w = ro.norm_weight
    expect = norm @ (w * delta)
    top = expect.topk(5).indices.tolist()
    assert list(lens.heads[0].promoted) == [_token_text(pair.tokenizer, i) for i in top]
    torch.testing.assert_close(
        torch.tensor(lens.heads[0].promoted_logits), expect.topk(5).values, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        torch.tensor(lens.heads[0].suppressed_logits),
        -(-expect).topk(5).values,
        rtol=1e-4,
        atol=1e-5,
    )


def test_residual_writes_shape_error(pair):
    ro = readout(pair.pruned)
    with pytest.raises(ConfigError, match="z_offsets shape"):
        residual_writes(ro, torch.zeros(1, 2, 3))


def test_logit_gain_matches_hand_computation(pair):
    comp = _comp(pair, scale=3.0)
    tok = pair.tokenizer
    examples = [
        AnswerPair("The quick brown fox", " jumps", " sleeps"),
        AnswerPair("To be, or not to", " be", " go"),
        AnswerPair("def add(a, b):", " return", " yield"),
    ]
    res = logit_gain(pair, comp, examples)
    assert res.gain.shape == (pair.geometry.n_layers, pair.geometry.n_heads)
    unselected = torch.ones_like(res.gain, dtype=torch.bool)
    for layer, head in HEADS:
        unselected[layer, head] = False
    assert torch.all(res.gain[unselected] == 0)
    # independent: HF weights for W_O and W_U, cached ln_final input for the scale
    ro = readout(pair.pruned)
    usable = res.n_examples
    assert usable + res.n_skipped == len(examples)
    total = torch.zeros_like(res.gain)
    for ex in examples:
        p_ids = tok(ex.prompt)["input_ids"]
        good = tok(ex.prompt + ex.correct)["input_ids"][len(p_ids)]
        bad = tok(ex.prompt + ex.wrong)["input_ids"][len(p_ids)]
        if good == bad:
            continue
        ids, attn = tokenize_prompts(tok, [ex.prompt], 256, pair.device)
        with comp.attach(pair.pruned):
            _, cache = pair.pruned.run_with_cache(ids, names_filter=["ln_final.hook_in"])
        x = cache["ln_final.hook_in"][0, -1]
        if ro.centred:
            x = x - x.mean()
        s = (x.square().mean() + ro.eps).sqrt()
        w_u = pair.pruned.original_model.lm_head.weight.detach()
        for layer, head in HEADS:
            delta = comp.z_offsets()[layer, head].detach() @ _hf_w_o(pair, layer, head).detach()
            if ro.centred:
                delta = delta - delta.mean()
            total[layer, head] += float((ro.norm_weight * delta) @ (w_u[good] - w_u[bad]) / s)
    torch.testing.assert_close(res.gain, total / usable, rtol=1e-3, atol=1e-5)
    # the model-level logit diffs are real forward passes: restored differs from pruned
    assert res.logit_diff_restored != res.logit_diff_pruned


def test_logit_gain_rejects_identical_answers(pair):
    comp = _comp(pair)
    with pytest.raises(DataError, match="same token"):
        logit_gain(pair, comp, [AnswerPair("Hello", " world", " world")])


def test_direct_logits_linear(pair):
    ro = readout(pair.pruned)
    a, b = torch.randn(2, ro.w_u.shape[0], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        direct_logits(ro, a + 2 * b),
        direct_logits(ro, a) + 2 * direct_logits(ro, b),
        rtol=1e-4,
        atol=1e-4,
    )


class _FakeTok:
    def __init__(self, text: str) -> None:
        self.text = text

    def decode(self, ids):
        return self.text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (" can", "\u2423can"),
        ("\x1b", "\\x1b"),
        ("a\nb", "a\\nb"),
        ("", "''"),
        ("  ", "'  '"),
        ("ing", "ing"),
    ],
)
def test_token_text_is_printable(raw, shown):
    assert _token_text(_FakeTok(raw), 0) == shown


def test_restoration_with_a_given_base_equals_one_pass(pair):
    cfg = DiffConfig(positions="all", max_samples=4096)
    comp = _comp(pair, scale=0.5)
    one_pass = restoration_stats(pair, comp, PROMPTS, cfg)
    given = restoration_stats(pair, comp, PROMPTS, cfg, base=head_diffs(pair, PROMPTS, cfg))
    for name in ("rel_residual", "static_rel_residual", "cosine", "norm_ratio", "restored_dz_norm"):
        torch.testing.assert_close(getattr(one_pass, name), getattr(given, name), rtol=0, atol=0)
    assert (one_pass.rel_residual[comp.heads[:, 0], comp.heads[:, 1]] < 1).all()
