from __future__ import annotations

import numpy as np
import pytest
import torch

from lcc_lens.components import cached_lost_components, lost_components
from lcc_lens.diff import DiffConfig, head_diffs, hook_z_name, tokenize_prompts
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.models import ModelPair

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "To be, or not to be: that is the question.",
    "Exceptions are raised with the raise statement.",
    "A short one.",
]


@pytest.fixture(scope="module")
def pair(llama_pair_dirs):
    return ModelPair.load(*llama_pair_dirs)


def _manual_z(bridge, ids, attn, layer):
    _, cache = bridge.run_with_cache(ids, attention_mask=attn, names_filter=[hook_z_name(layer)])
    return cache[hook_z_name(layer)]


def test_last_token_diff_matches_full_cache(pair):
    diff = head_diffs(pair, PROMPTS, DiffConfig(positions="last", batch_size=2))
    ids, attn = tokenize_prompts(pair.tokenizer, PROMPTS, 256, pair.device)
    last = attn.sum(1) - 1
    rows = torch.arange(len(PROMPTS))
    for layer in range(pair.geometry.n_layers):
        zd = _manual_z(pair.dense, ids, attn, layer)[rows, last]
        zp = _manual_z(pair.pruned, ids, attn, layer)[rows, last]
        expect = (zd - zp).permute(1, 0, 2)  # [H, N, D]
        torch.testing.assert_close(diff.samples[layer], expect, atol=1e-5, rtol=1e-5)
    assert diff.n_positions == len(PROMPTS)
    assert diff.samples.shape == (3, 4, len(PROMPTS), 16)
    assert ((diff.cosine > -1) & (diff.cosine < 1)).all()
    assert (diff.rel_dz_norm > 0).all()


def test_all_positions_reservoir_bounds_memory_and_keeps_stats(pair):
    cfg = DiffConfig(positions="all", max_samples=7, batch_size=2)
    diff = head_diffs(pair, PROMPTS, cfg)
    ids, attn = tokenize_prompts(pair.tokenizer, PROMPTS, 256, pair.device)
    assert diff.n_positions == int(attn.sum())
    assert diff.samples.shape[2] == 7
    again = head_diffs(pair, PROMPTS, cfg)
    torch.testing.assert_close(diff.samples, again.samples)  # seeded: deterministic
    other = head_diffs(
        pair, PROMPTS, DiffConfig(positions="all", max_samples=7, batch_size=2, seed=1)
    )
    assert not torch.equal(diff.samples, other.samples)


def test_mask_positions(pair):
    ids, attn = tokenize_prompts(pair.tokenizer, PROMPTS[:2], 256, pair.device)
    masks = [[0, 1, 1] + [0] * 40, [1] + [0] * 40]
    diff = head_diffs(pair, PROMPTS[:2], DiffConfig(positions="mask"), masks=masks)
    assert diff.n_positions == 3
    with pytest.raises(DataError, match="one token mask per prompt"):
        head_diffs(pair, PROMPTS[:2], DiffConfig(positions="mask"))
    with pytest.raises(DataError, match="no prompts"):
        head_diffs(pair, [], DiffConfig())


def test_lost_component_matches_independent_numpy_formula():
    gen = torch.Generator().manual_seed(0)
    dz = torch.randn(2, 3, 20, 8, generator=gen) + torch.randn(2, 3, 1, 8, generator=gen)
    for k in (1, 3):
        lc = lost_components(dz, k=k)
        for layer in range(2):
            for head in range(3):
                u, s, vt = np.linalg.svd(dz[layer, head].double().numpy(), full_matrices=False)
                c = sum(u[:, i].mean() * s[i] * vt[i] for i in range(k))
                np.testing.assert_allclose(lc.components[layer, head].numpy(), c, atol=1e-5)
    full = lost_components(dz, k=8)
    torch.testing.assert_close(full.components, dz.mean(dim=2), atol=1e-5, rtol=1e-5)


def test_planted_heads_are_recovered_at_their_own_index():
    """n_layers != n_heads: each head's lost component lands at [layer, head] and nowhere else."""
    n_layers, n_heads, d = 3, 5, 8
    dz = torch.zeros(n_layers, n_heads, 12, d)
    for layer in range(n_layers):
        for head in range(n_heads):
            direction = torch.zeros(d)
            direction[(layer * n_heads + head) % d] = 1.0
            dz[layer, head] = (1 + layer * n_heads + head) * direction  # rank one, constant
    lc = lost_components(dz, k=1)
    for layer in range(n_layers):
        for head in range(n_heads):
            torch.testing.assert_close(
                lc.components[layer, head], dz[layer, head, 0], atol=1e-5, rtol=0
            )
    assert lc.explained().min() > 0.999


def test_directions_zero_padded_when_few_samples():
    dz = torch.randn(1, 2, 3, 8)
    lc = lost_components(dz, k=1)
    norms = lc.directions.norm(dim=-1)
    torch.testing.assert_close(norms[..., :3], torch.ones(1, 2, 3), atol=1e-5, rtol=0)
    assert torch.equal(norms[..., 3:], torch.zeros(1, 2, 5))
    with pytest.raises(ConfigError, match="k must be"):
        lost_components(dz, k=9)


def test_components_cache_is_keyed_by_content(pair, tmp_path, llama_pair_dirs):
    cfg = DiffConfig(positions="last")
    a, diff_a = cached_lost_components(pair, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    b, diff_b = cached_lost_components(pair, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    assert diff_a is not None and diff_b is None  # second call read the cache
    torch.testing.assert_close(a.components, b.components)
    _, diff_c = cached_lost_components(pair, PROMPTS[:3], cfg, k=1, cache_dir=tmp_path)
    assert diff_c is not None  # other prompts: recomputed
    # Same names, other weights: a different pruned model must not hit the cache.
    other = ModelPair.load(*llama_pair_dirs)
    with torch.no_grad():
        next(p for n, p in other.pruned.named_parameters() if "o_proj" in n).mul_(0.5)
    _, diff_d = cached_lost_components(other, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    assert diff_d is not None
