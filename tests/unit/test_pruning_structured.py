"""FLAP-style structured pruning on tiny random models: masks, bias compensation, shape removal, loading."""

from __future__ import annotations

import copy

import pytest
import torch

from lcc_lens.errors import ConfigError
from lcc_lens.models import to_bridge
from lcc_lens.pruning import PruneConfig, calibration_tokens, prune_model
from lcc_lens.tiny import tiny_model

N_SAMPLES, SEQ_LEN, BATCH = 8, 64, 4


def _cfg(**kw) -> PruneConfig:
    base = dict(
        method="flap", sparsity=0.25, n_samples=N_SAMPLES, seq_len=SEQ_LEN, batch_size=BATCH
    )
    base.update(kw)
    return PruneConfig(**base)


def _outputs_of(model, tokens, name):
    out = []
    module = dict(model.named_modules())[name]
    h = module.register_forward_hook(lambda m, i, o: out.append(o.reshape(-1, o.shape[-1])))
    with torch.no_grad():
        for i in range(0, tokens.shape[0], BATCH):
            ids = tokens[i : i + BATCH]
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    h.remove()
    return torch.cat(out)


def test_mask_mode_zeroes_whole_heads_and_channels(tok, texts):
    model = tiny_model("llama", seed=1, n_heads=8, n_kv_heads=2)
    rep = prune_model(model, tok, _cfg(sparsity=0.25), texts, show_progress=False)
    s = rep.structured
    assert s is not None and s["mode"] == "mask"
    d_head = 16
    for i, layer in enumerate(model.model.layers):
        heads = s["heads_removed"][f"model.layers.{i}"]
        assert len(heads) == 2  # 25 % of 8 heads
        o_cols = layer.self_attn.o_proj.weight.view(128, 8, d_head)
        dead = [h for h in range(8) if (o_cols[:, h] == 0).all()]
        assert dead == heads
        q = layer.self_attn.q_proj.weight.view(8, d_head, 128)
        assert all((q[h] == 0).all() for h in heads)
        down = layer.mlp.down_proj.weight
        zero_cols = int((down == 0).all(0).sum())
        assert zero_cols == s["channels_removed"][f"model.layers.{i}"] == 32  # 25 % of 128
        assert int((layer.mlp.gate_proj.weight == 0).all(1).sum()) == 32
    assert s["head_fraction_removed"] == pytest.approx(0.25)
    assert s["channel_fraction_removed"] == pytest.approx(0.25)


def test_bias_compensation_preserves_the_mean_output(tok, texts):
    """Layer 0's o_proj input is unchanged by pruning, so its mean output over the calibration tokens must
    equal the dense one exactly when the removed heads' mean is folded into the bias (and not without)."""
    dense = tiny_model("llama", seed=2)
    tokens = calibration_tokens(tok, texts, N_SAMPLES, SEQ_LEN, seed=0)
    name = "model.layers.0.self_attn.o_proj"
    ref = _outputs_of(dense, tokens, name).mean(0)
    comp = copy.deepcopy(dense)
    prune_model(comp, tok, _cfg(), texts, show_progress=False)
    assert comp.config.attention_bias and comp.config.mlp_bias
    plain = copy.deepcopy(dense)
    prune_model(plain, tok, _cfg(bias_compensation=False), texts, show_progress=False)
    got = _outputs_of(comp, tokens, name).mean(0)
    without = _outputs_of(plain, tokens, name).mean(0)
    assert torch.allclose(got, ref, atol=1e-5)
    assert (without - ref).abs().max() > 100 * (got - ref).abs().max()


def test_mlp_only_compensation_preserves_down_proj_mean(tok, texts):
    dense = tiny_model("llama", seed=3)
    tokens = calibration_tokens(tok, texts, N_SAMPLES, SEQ_LEN, seed=0)
    name = "model.layers.0.mlp.down_proj"
    ref = _outputs_of(dense, tokens, name).mean(0)
    model = copy.deepcopy(dense)
    rep = prune_model(model, tok, _cfg(sparsity=0.5, include=r"mlp\."), texts, show_progress=False)
    assert sum(map(len, rep.structured["heads_removed"].values())) == 0
    assert torch.allclose(_outputs_of(model, tokens, name).mean(0), ref, atol=1e-5)


@pytest.mark.parametrize("layout", ["llama", "qwen3", "gemma3"])
def test_mask_mode_checkpoint_reloads_in_transformers_and_bridge(tmp_path, tok, texts, layout):
    from transformers import AutoModelForCausalLM

    model = tiny_model(layout, seed=4)
    prune_model(model, tok, _cfg(), texts, show_progress=False)
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.model.layers[0].self_attn.o_proj.bias is not None
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
    bridge = to_bridge(reloaded, tok)
    with torch.no_grad():
        assert torch.allclose(bridge(ids), expected, atol=1e-4)


@pytest.mark.parametrize(
    "layout,n_heads,n_kv", [("llama", 8, 2), ("llama", 4, 4), ("mistral", 6, 3)]
)
def test_remove_mode_shrinks_shapes_and_reloads(tmp_path, tok, texts, layout, n_heads, n_kv):
    from transformers import AutoModelForCausalLM

    model = tiny_model(layout, seed=5, n_heads=n_heads, n_kv_heads=n_kv)
    rep = prune_model(
        model, tok, _cfg(sparsity=0.5, structured_mode="remove"), texts, show_progress=False
    )
    group = n_heads // n_kv
    if group > 1:
        exp_heads, exp_kv = n_heads - n_kv * round(group * 0.5), n_kv
    else:
        exp_heads = exp_kv = n_heads - round(n_heads * 0.5)
    assert model.config.num_attention_heads == exp_heads
    assert model.config.num_key_value_heads == exp_kv
    assert model.config.intermediate_size == 64
    assert rep.parameters["after"] < rep.parameters["before"]
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
    bridge = to_bridge(reloaded, tok)
    assert bridge.cfg.n_heads == exp_heads and bridge.cfg.d_head == 16
    with torch.no_grad():
        assert torch.allclose(bridge(ids), expected, atol=1e-4)


def test_remove_mode_equals_mask_mode_numerically(tok, texts):
    """Removing a head or channel and zeroing it are the same function (uniform, MHA)."""
    a = tiny_model("llama", seed=6, n_heads=4, n_kv_heads=4)
    b = copy.deepcopy(a)
    prune_model(a, tok, _cfg(sparsity=0.5, structured_mode="mask"), texts, show_progress=False)
    prune_model(b, tok, _cfg(sparsity=0.5, structured_mode="remove"), texts, show_progress=False)
    ids = torch.randint(0, 500, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits, atol=1e-5)


def test_adaptive_mode_hits_the_parameter_budget(tok, texts):
    model = tiny_model("llama", seed=7, n_layers=4, n_heads=8, n_kv_heads=2)
    rep = prune_model(
        model, tok, _cfg(sparsity=0.3, ratio_mode="adaptive"), texts, show_progress=False
    )
    s = rep.structured
    d_model, d_head = 128, 16
    head_cost, chan_cost = 2 * d_head * d_model, 3 * d_model
    removed = sum(map(len, s["heads_removed"].values())) * head_cost
    removed += sum(s["channels_removed"].values()) * chan_cost
    total = 4 * (8 * head_cost + 128 * chan_cost)
    assert 0.3 <= removed / total < 0.3 + max(head_cost, chan_cost) / total
    assert all(len(h) < 8 for h in s["heads_removed"].values())
    counts = [len(h) for h in s["heads_removed"].values()] + list(s["channels_removed"].values())
    assert len(set(counts)) > 1  # ratios differ between layers


def test_structured_refuses_gpt2_and_partial_remove(tok, texts):
    with pytest.raises(ConfigError, match="Llama-style"):
        prune_model(tiny_model("gpt2"), tok, _cfg(), texts, show_progress=False)
    with pytest.raises(ConfigError, match="every layer alike"):
        prune_model(
            tiny_model("llama"),
            tok,
            _cfg(structured_mode="remove", include=r"layers\.0\."),
            texts,
            show_progress=False,
        )
