"""The plain twin the training loop runs: same weights as the bridge, same restored logits and gradients."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.models import HeadGeometry, load_bridge
from lcc_lens.tiny import save_tiny_checkpoint
from lcc_lens.twin import plain_twin

LAYOUTS = ("llama", "qwen2", "qwen3", "mistral", "gpt2")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[1, 18:] = 0  # right padding, as the training batches
    return ids, attn


def _compensation(bridge) -> Compensation:
    g = HeadGeometry.of(bridge)
    heads = [(0, 1), (1, 0), (1, g.n_heads - 1), (g.n_layers - 1, 2)]
    directions = torch.linalg.qr(torch.randn(g.n_layers, g.n_heads, g.d_head, g.d_head))[0]
    comp = Compensation(g, heads, directions.transpose(-1, -2))
    with torch.no_grad():
        comp.bias.normal_(0, 0.5)
        comp.beta.normal_(0, 0.5)
    return comp


def _restored(comp, attach, bridge, ids, attn):
    comp.zero_grad(set_to_none=True)
    with getattr(comp, attach)(bridge) as model:
        logits = model(ids, attention_mask=attn, return_type="logits")
    (logits[attn.bool()].float() ** 2).mean().backward()
    return logits.detach(), comp.bias.grad.clone(), comp.beta.grad.clone()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_twin_gives_the_bridge_logits_and_gradients(layout, tiny_dirs):
    torch.manual_seed(0)
    bridge, _ = load_bridge(tiny_dirs[layout][1])
    comp = _compensation(bridge)
    ids, attn = _batch()
    hooked = _restored(comp, "attach", bridge, ids, attn)
    twin = _restored(comp, "attach_for_training", bridge, ids, attn)
    # GPT-2's bridge renames its attention modules (qkv, o): no twin, the loop keeps the bridge
    assert (plain_twin(bridge) is None) == (layout == "gpt2")
    keep = attn.bool()
    # the same arithmetic as the bridge (eager attention, the same tensors): equal bit for bit
    assert torch.equal(hooked[0][keep], twin[0][keep])
    assert torch.equal(hooked[1], twin[1]) and torch.equal(hooked[2], twin[2])
    assert hooked[1].abs().max() > 0  # the gradient reached the offsets


def test_twin_of_sliding_window_gemma3_matches_the_bridge(tmp_path):
    torch.manual_seed(0)
    bridge, _ = load_bridge(save_tiny_checkpoint(tmp_path / "gemma3", "gemma3", seed=1))
    assert plain_twin(bridge) is not None
    comp = _compensation(bridge)
    ids, attn = _batch()
    hooked = _restored(comp, "attach", bridge, ids, attn)
    twin = _restored(comp, "attach_for_training", bridge, ids, attn)
    keep = attn.bool()
    assert torch.equal(hooked[0][keep], twin[0][keep])
    assert torch.equal(hooked[1], twin[1])


def test_twin_shares_the_bridge_weights_and_is_built_once(llama_pair_dirs):
    bridge, _ = load_bridge(llama_pair_dirs[1])
    twin = plain_twin(bridge)
    assert plain_twin(bridge) is twin
    shared = {id(p) for p in bridge.parameters()}
    assert all(id(p) in shared for p in twin.parameters())  # no copy: the very same tensors
    with torch.no_grad():
        bridge.original_model.model.embed_tokens._original_component.weight[0, 0] += 1.0
    assert (
        twin.model.embed_tokens.weight[0, 0]
        == (bridge.original_model.model.embed_tokens._original_component.weight[0, 0])
    )


def test_twin_hooks_are_removed_also_on_an_exception(llama_pair_dirs):
    bridge, _ = load_bridge(llama_pair_dirs[1])
    comp = _compensation(bridge)
    ids, attn = _batch()
    twin = plain_twin(bridge)
    with torch.no_grad():
        plain = twin(ids, attention_mask=attn).logits
    with pytest.raises(RuntimeError, match="boom"), comp.attach_for_training(bridge):
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(twin(ids, attention_mask=attn).logits, plain)


def test_device_mapped_model_has_no_twin(llama_pair_dirs):
    bridge, _ = load_bridge(llama_pair_dirs[1])
    bridge.original_model.hf_device_map = {"": "cpu"}  # as accelerate marks a dispatched model
    assert plain_twin(bridge) is None
    comp = _compensation(bridge)
    ids, attn = _batch()
    with comp.attach_for_training(bridge) as model:  # falls back to the hooked bridge
        assert model is bridge
        model(ids, attention_mask=attn, return_type="logits")
