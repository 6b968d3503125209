from __future__ import annotations

import pytest
import torch

from lcc_lens.components import lost_components
from lcc_lens.data import Example
from lcc_lens.diff import DiffConfig, head_diffs
from lcc_lens.errors import ConfigError
from lcc_lens.hooks import hook_z_name, temporary_hooks
from lcc_lens.models import ModelPair, load_causal_lm, to_bridge
from lcc_lens.probe_data import ProbeSample
from lcc_lens.probing import probe_samples
from lcc_lens.selection import SelectConfig, kl_attribution, rank_from_scores, select_heads

PROMPTS = [f"Example number {i}: the quick brown fox jumps over the lazy dog." for i in range(12)]


@pytest.fixture(scope="module")
def planted_pair(llama_pair_dirs):
    """Dense vs a copy whose only change is head 2's query rows in the LAST layer: only z[2, 2] differs."""
    dense, tok = load_causal_lm(llama_pair_dirs[0])
    pruned, _ = load_causal_lm(llama_pair_dirs[0])
    with torch.no_grad():
        q = pruned.model.layers[2].self_attn.q_proj.weight
        q[2 * 16 : 3 * 16].mul_(-3.0)
    return ModelPair.from_bridges(to_bridge(dense, tok), to_bridge(pruned, tok), tok)


def test_baseline_selectors_find_the_planted_head(planted_pair):
    diff = head_diffs(planted_pair, PROMPTS, DiffConfig(positions="all"))
    nonzero = (diff.dz_norm > 1e-6).nonzero().tolist()
    assert nonzero == [[2, 2]]
    lc = lost_components(diff.samples, k=1)
    for method, kw in (
        ("norm", {"components": lc}),
        ("mse", {"diff": diff}),
        ("kl", {"kl_prompts": PROMPTS[:4]}),
    ):
        r = select_heads(planted_pair, SelectConfig(method=method, n_heads=1), **kw)
        assert r.selected == [(2, 2)], method
        assert r.order[0] == (2, 2)
    kl = select_heads(
        planted_pair, SelectConfig(method="kl", n_heads=1), kl_prompts=PROMPTS[:4]
    ).scores
    others = kl.clone()
    others[2, 2] = 0
    assert kl[2, 2] > 0 and others.abs().max() < 1e-6  # unchanged heads have exactly no gap


def _pairs(texts: list[str]) -> list[ProbeSample]:
    """Real-text pairs: a passage's true continuation against the next passage's."""
    out = []
    for i, t in enumerate(texts):
        nxt = texts[(i + 1) % len(texts)]
        out.append(ProbeSample(t[:120], t[120:180], nxt[120:180], "continuation"))
    return out


def test_probe_selector_finds_the_planted_head(planted_pair, texts):
    """'aligned' reads the lost component: the planted head ranks first, the untouched ones score 0."""
    lc = lost_components(head_diffs(planted_pair, PROMPTS, DiffConfig()).samples, k=1)
    cfg = SelectConfig(
        method="probe", probe_mode="aligned", n_heads=1, probe_splits=2, probe_permutations=20
    )
    r = select_heads(planted_pair, cfg, components=lc, probe_data=_pairs(texts))
    assert r.order[0] == (2, 2) and r.selected == [(2, 2)]
    others = r.scores.clone()
    others[2, 2] = 0
    assert r.scores[2, 2] > 0 and others.abs().max() == 0
    for key in ("null_mean", "null_sd", "z", "p_value", "stability", "accuracy"):
        assert r.extra[key].shape == (3, 4)
    assert r.extra["stability"][2, 2] == 1.0
    doc = r.to_json(planted_pair.geometry)
    assert doc["ranking"][0]["name"] == "L2H2" and doc["ranking"][0]["p_value"] <= 1.0
    assert doc["info"]["n_pairs"] == len(texts) and doc["info"]["probe_mode"] == "aligned"


def test_paper_probe_is_blind_to_the_lost_component(planted_pair, texts):
    """As the paper writes it, c cancels: scores with and without the components are identical."""
    lc = lost_components(head_diffs(planted_pair, PROMPTS, DiffConfig()).samples, k=1)
    cfg = SelectConfig(
        method="probe", probe_mode="paper", n_heads=3, probe_splits=2, probe_permutations=20
    )
    a = select_heads(planted_pair, cfg, components=lc, probe_data=_pairs(texts))
    b = select_heads(planted_pair, cfg, components=None, probe_data=_pairs(texts))
    assert torch.equal(a.scores, b.scores) and a.selected == b.selected
    assert a.scores.shape == (3, 4) and len(a.selected) == 3
    assert ((a.scores >= 0) & (a.scores <= 1)).all()
    with pytest.raises(ConfigError, match="contrastive pairs"):
        select_heads(planted_pair, cfg, components=lc)


@pytest.fixture(scope="module")
def early_planted_pair(llama_pair_dirs):
    """Dense vs a copy whose layer-0 head 1 has perturbed queries: its change reaches the logits
    also through the attention of layers 1 and 2."""
    dense, tok = load_causal_lm(llama_pair_dirs[0])
    pruned, _ = load_causal_lm(llama_pair_dirs[0])
    with torch.no_grad():
        pruned.model.layers[0].self_attn.q_proj.weight[16:32].mul_(-3.0)
    return ModelPair.from_bridges(to_bridge(dense, tok), to_bridge(pruned, tok), tok)


def _kl_with_patch(pair, prompts, layer, head, eps):
    """KL(dense || pruned) with z[layer, head] <- z_pruned + eps * (z_dense - z_pruned) (full graph)."""
    from lcc_lens.diff import tokenize_prompts

    ids, attn = tokenize_prompts(pair.tokenizer, prompts, 128, pair.device)
    got = {}

    def grab(z, *, hook):
        got["z"] = z.detach().clone()

    with torch.no_grad(), temporary_hooks(pair.dense, [(hook_z_name(layer), grab)]):
        teacher = pair.dense(ids, attention_mask=attn, return_type="logits").double()

    def patch(z, *, hook):
        z = z.clone()
        z[:, :, head] = z[:, :, head] + eps * (got["z"][:, :, head] - z[:, :, head])
        return z

    with torch.no_grad(), temporary_hooks(pair.pruned, [(hook_z_name(layer), patch)]):
        student = pair.pruned(ids, attention_mask=attn, return_type="logits").double()
    kl = torch.nn.functional.kl_div(
        student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    return float((kl * attn).sum() / attn.sum())


def test_kl_attribution_flows_through_later_attention(early_planted_pair):
    """The score equals -dKL/d(eps) of restoring the head, measured by finite differences through the
    whole model; detaching z at later layers (the old code) misses the path through their attention."""
    prompts = PROMPTS[:2]
    scores = kl_attribution(early_planted_pair, prompts, batch_size=2)
    eps = 1e-3
    fd = (
        _kl_with_patch(early_planted_pair, prompts, 0, 1, eps)
        - _kl_with_patch(early_planted_pair, prompts, 0, 1, -eps)
    ) / (2 * eps)
    assert scores[0, 1] > 0
    assert float(scores[0, 1]) == pytest.approx(-fd, rel=1e-2)
    batched = kl_attribution(early_planted_pair, prompts, batch_size=1)
    assert torch.allclose(batched, scores, rtol=1e-3, atol=1e-7)


def test_negatives_from_real_sentence_embeddings():
    ex = [
        Example("Q1", "The cat sat on the mat."),
        Example("Q2", "A stock market index fell sharply today."),
        Example("Q3", "A kitten was sitting on a rug."),
    ]
    s = probe_samples(ex)
    assert s[0].negative == "A kitten was sitting on a rug."
    assert s[2].negative == "The cat sat on the mat."


def test_counts_random_and_ranking(planted_pair):
    g = planted_pair.geometry
    assert SelectConfig(fraction=0.25).count(g) == 3
    assert SelectConfig(n_heads=0).count(g) == 0
    with pytest.raises(ConfigError, match="only 12"):
        SelectConfig(n_heads=13).count(g)
    with pytest.raises(ConfigError, match="unknown head selection"):
        SelectConfig(method="best")
    for bad, field in (
        ({"probe_mode": "x"}, "probe_mode"),
        ({"probe_splits": 0}, "n_splits"),
        ({"n_kl_prompts": 0}, "n_kl_prompts"),
        ({"fraction": 2.0}, "fraction"),
    ):
        with pytest.raises(ConfigError, match=field):
            SelectConfig(**bad)
    a = select_heads(planted_pair, SelectConfig(method="random", n_heads=4, seed=1))
    b = select_heads(planted_pair, SelectConfig(method="random", n_heads=4, seed=1))
    assert a.selected == b.selected
    assert len(select_heads(planted_pair, SelectConfig(method="all")).selected) == 12
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    r = rank_from_scores("x", scores, 2)
    assert r.order[:3] == [(0, 1), (1, 0), (0, 2)] and r.selected == [(0, 1), (1, 0)]
