from __future__ import annotations

import pytest
import torch

from lcc_lens.components import lost_components
from lcc_lens.data import Example
from lcc_lens.diff import DiffConfig, head_diffs
from lcc_lens.errors import ConfigError
from lcc_lens.models import ModelPair, load_causal_lm, to_bridge
from lcc_lens.probing import probe_samples
from lcc_lens.selection import SelectConfig, rank_from_scores, select_heads

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


def test_probe_selector_scores_every_head(planted_pair):
    lc = lost_components(head_diffs(planted_pair, PROMPTS, DiffConfig()).samples, k=1)
    ex = [Example(p[:20], p[20:], negatives=(" something else entirely",)) for p in PROMPTS]
    samples = probe_samples(ex)
    cfg = SelectConfig(method="probe", fraction=0.25, probe_steps=50)
    r = select_heads(planted_pair, cfg, components=lc, probe_data=samples)
    assert r.scores.shape == (3, 4) and len(r.selected) == 3
    assert ((r.scores >= 0) & (r.scores <= 1)).all()
    assert "train_accuracy" in r.extra
    again = select_heads(planted_pair, cfg, components=lc, probe_data=samples)
    assert again.selected == r.selected and torch.equal(again.scores, r.scores)


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
        SelectConfig(method="best")  # type: ignore[arg-type]
    a = select_heads(planted_pair, SelectConfig(method="random", n_heads=4, seed=1))
    b = select_heads(planted_pair, SelectConfig(method="random", n_heads=4, seed=1))
    assert a.selected == b.selected
    assert len(select_heads(planted_pair, SelectConfig(method="all")).selected) == 12
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    r = rank_from_scores("x", scores, 2)
    assert r.order[:3] == [(0, 1), (1, 0), (0, 2)] and r.selected == [(0, 1), (1, 0)]
