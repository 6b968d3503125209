from __future__ import annotations

import numpy as np
import pytest
import torch

from lcc_lens.components import cached_lost_components, lost_components
from lcc_lens.diff import (
    DiffAccumulator,
    DiffConfig,
    accumulate_diffs,
    diff_batches,
    head_diffs,
    reservoir_slots,
    tokenize_prompts,
)
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.hooks import hook_z_name
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


def test_components_cache_is_keyed_by_content(pair, tmp_path, llama_pair_dirs, monkeypatch):
    import lcc_lens.components as components

    cfg = DiffConfig(positions="last")
    a, diff_a = cached_lost_components(pair, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    calls = []
    real = components.head_diffs
    monkeypatch.setattr(
        components, "head_diffs", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    b, diff_b = cached_lost_components(pair, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    assert calls == []  # second call read the cache, and the cache hit keeps the whole diff
    torch.testing.assert_close(a.components, b.components, rtol=0, atol=0)
    torch.testing.assert_close(a.directions, b.directions, rtol=0, atol=0)
    for name in ("samples", "dz_norm", "dense_norm", "cosine", "mean_dz"):
        torch.testing.assert_close(getattr(diff_a, name), getattr(diff_b, name), rtol=0, atol=0)
    assert (diff_b.n_positions, diff_b.geometry, diff_b.config) == (
        diff_a.n_positions,
        diff_a.geometry,
        diff_a.config,
    )
    cached_lost_components(pair, PROMPTS[:3], cfg, k=1, cache_dir=tmp_path)
    assert calls == [1]  # other prompts: recomputed
    # Same names, other weights: a different pruned model must not hit the cache.
    other = ModelPair.load(*llama_pair_dirs)
    with torch.no_grad():
        next(p for n, p in other.pruned.named_parameters() if "o_proj" in n).mul_(0.5)
    cached_lost_components(other, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    assert calls == [1, 1]
    # A corrupt entry is recomputed, not trusted.
    for entry in tmp_path.glob("*.safetensors"):
        entry.write_bytes(b"not a safetensors file")
    again, _ = cached_lost_components(pair, PROMPTS, cfg, k=1, cache_dir=tmp_path)
    assert calls == [1, 1, 1]
    torch.testing.assert_close(again.components, a.components, rtol=0, atol=0)


def test_weights_fingerprint_follows_in_place_edits_through_data(llama_pair_dirs):
    """Re-pruning in place through .data (which bumps no version counter) changes the fingerprint."""
    from lcc_lens.components import weights_fingerprint
    from lcc_lens.models import load_bridge

    bridge, _ = load_bridge(llama_pair_dirs[0])
    before = weights_fingerprint(bridge)
    assert weights_fingerprint(bridge) == before  # stable for unchanged content
    weight = next(p for n, p in bridge.named_parameters() if "q_proj" in n)
    version = weight._version
    weight.data[:, : weight.shape[1] // 2] = 0.0
    assert weight._version == version  # the edit is invisible to version-keyed memos
    assert weights_fingerprint(bridge) != before
    twin, _ = load_bridge(llama_pair_dirs[0])
    assert weights_fingerprint(twin) == before  # the same content gives the same key


@pytest.mark.parametrize("positions, max_samples", [("last", 1024), ("all", 9)])
def test_shards_merge_into_the_single_pass_result(pair, positions, max_samples):
    """Data-parallel layout: disjoint shards of the batches, merged, equal one pass over all of them."""
    cfg = DiffConfig(positions=positions, max_samples=max_samples, batch_size=2)
    whole = head_diffs(pair, PROMPTS, cfg)
    batches = diff_batches(pair.tokenizer, PROMPTS, cfg, pair.device)
    # rank 1's shard first: the merge must not depend on the order shards arrive in
    acc = accumulate_diffs(pair, batches[2:], cfg, show_progress=False)
    acc.merge(accumulate_diffs(pair, batches[:2], cfg, show_progress=False))
    merged = acc.result()
    assert merged.n_positions == whole.n_positions
    torch.testing.assert_close(merged.samples, whole.samples, rtol=0, atol=0)
    for name in ("dz_norm", "dense_norm", "cosine", "mean_dz"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name))
    with pytest.raises(ConfigError, match="different settings"):
        acc.merge(DiffAccumulator(pair.geometry, DiffConfig(seed=5)))


def test_reservoir_keeps_every_row_with_equal_probability():
    n, cap, runs = 400, 40, 300
    counts = torch.zeros(n)
    for seed in range(runs):
        slots = reservoir_slots(torch.arange(n), cap, seed)
        assert torch.equal(slots[:cap], torch.arange(cap))
        final = torch.full((cap,), -1)
        for t, s in enumerate(slots.tolist()):  # sequential algorithm R with these draws
            if s >= 0:
                final[s] = t
        counts[final] += 1
    rate = counts / runs  # expected cap / n = 0.1 for every row
    assert abs(float(rate[:cap].mean()) - 0.1) < 0.02
    assert abs(float(rate[-cap:].mean()) - 0.1) < 0.02
    assert abs(float(rate.mean()) - 0.1) < 1e-6
