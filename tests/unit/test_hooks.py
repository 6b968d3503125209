"""hooks.py: names, layer binding, capture_z against the full activation cache, and hook cleanup."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.diff import tokenize_prompts
from lcc_lens.errors import ConfigError
from lcc_lens.hooks import (
    capture_z,
    hook_z_name,
    last_token_positions,
    per_layer_hooks,
    temporary_hooks,
)
from lcc_lens.models import load_bridge

PROMPTS = ["The quick brown fox.", "def f(x):\n    return x * 2", "A"]


@pytest.fixture(scope="module")
def bridge(llama_pair_dirs):
    return load_bridge(llama_pair_dirs[0])


def _n_hooks(b) -> int:
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in b.hook_dict.values())


def test_capture_z_equals_the_cached_activations_at_the_chosen_positions(bridge):
    b, tok = bridge
    ids, attn = tokenize_prompts(tok, PROMPTS, 64, "cpu")
    sel = attn.bool().clone()
    sel[0, 1] = False  # an arbitrary subset, rows in prompt-then-token order
    got = capture_z(b, ids, attn, sel)
    _, cache = b.run_with_cache(ids, attention_mask=attn)
    assert got.shape == (3, int(sel.sum()), 4, 16)
    for layer in range(3):
        torch.testing.assert_close(got[layer], cache[hook_z_name(layer)][sel], rtol=0, atol=0)
    last = capture_z(b, ids, attn, last_token_positions(attn), layers=[2])
    rows = torch.arange(len(PROMPTS))
    expect = cache[hook_z_name(2)][rows, attn.sum(1) - 1]
    torch.testing.assert_close(last[0], expect, rtol=0, atol=0)
    assert _n_hooks(b) == 0


def test_per_layer_hooks_bind_the_layer_without_parsing_names(bridge):
    b, tok = bridge
    ids, attn = tokenize_prompts(tok, PROMPTS[:1], 64, "cpu")
    seen: list[tuple[int, str]] = []

    def make(layer: int):
        def hook(z, *, hook):
            seen.append((layer, hook.name))

        return hook

    hooks = per_layer_hooks(make, [2, 0])
    assert [name for name, _ in hooks] == ["blocks.2.attn.hook_z", "blocks.0.attn.hook_z"]
    with temporary_hooks(b, hooks):
        b(ids, attention_mask=attn, return_type=None)
    # the bridge fires hook_z under its canonical name (the o_proj input): only the bound layer is reliable
    assert sorted(layer for layer, _ in seen) == [0, 2]
    assert all(f"blocks.{layer}." in name for layer, name in seen)


def test_temporary_hooks_are_removed_when_the_forward_raises(bridge):
    b, tok = bridge
    ids, attn = tokenize_prompts(tok, PROMPTS[:1], 64, "cpu")

    def boom(z, *, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), temporary_hooks(b, [(hook_z_name(1), boom)]):
        b(ids, attention_mask=attn, return_type=None)
    assert _n_hooks(b) == 0
    clean = b(ids, attention_mask=attn, return_type="logits")  # no stale hook fires
    assert torch.isfinite(clean).all()


def test_unknown_hook_name_is_a_clear_error(bridge):
    b, _ = bridge
    with (
        pytest.raises(ConfigError, match="no hook point"),
        temporary_hooks(b, [("blocks.9.attn.hook_z", lambda z, *, hook: None)]),
    ):
        pass
    assert _n_hooks(b) == 0


def test_capture_stops_the_forward_after_the_last_chosen_layer(bridge):
    b, tok = bridge
    ids, attn = tokenize_prompts(tok, PROMPTS, 64, "cpu")
    later: list[int] = []
    watch = per_layer_hooks(lambda layer: lambda z, *, hook: later.append(layer), [1, 2])
    with temporary_hooks(b, watch):
        got = capture_z(b, ids, attn, last_token_positions(attn), layers=[1])
    assert later == [1]  # layer 2 never ran
    assert got.shape == (1, len(PROMPTS), 4, 16)
    assert _n_hooks(b) == 0
