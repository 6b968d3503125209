"""The memory plan's instrument: the meta-device count of saved activations equals the real CPU count.

That equality is what lets analysis/gemma_memory_plan.py count 7B/70B layouts on ``meta`` (no memory).
"""

from __future__ import annotations

import pytest
import torch

from analysis.gemma_memory_plan import activation_figures, parameter_figures, stage_plan


def _tiny(kind: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    common = dict(vocab_size=300, hidden_size=48, intermediate_size=96, num_attention_heads=4)
    if kind == "gemma3":
        cfg = Gemma3TextConfig(
            **common, num_hidden_layers=6, num_key_value_heads=1, head_dim=12, sliding_window=16
        )
        cls = Gemma3ForCausalLM
    else:
        cfg = LlamaConfig(**common, num_hidden_layers=3, num_key_value_heads=2, head_dim=12)
        cls = LlamaForCausalLM
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return cls(cfg).eval()


@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_meta_count_equals_the_real_count(kind):
    real = _tiny(kind)
    with torch.device("meta"):
        meta = type(real)(real.config).eval()
    a, b = activation_figures(real, "cpu"), activation_figures(meta, "meta")
    assert a == b
    assert a["saved_bytes_per_token_per_layer"] > 10 * a["residual_bytes_per_token"]
    assert a["saved_bytes_per_layer_quadratic"] > 0  # eager attention keeps [heads, T, T]
    pa, pb = parameter_figures(real), parameter_figures(meta)
    assert pa == pb and pa["total_bytes"] == 4 * sum(p.numel() for p in real.parameters())


def test_stage_plan_orders_the_stages():
    real = _tiny("llama")
    fig = {**parameter_figures(real), **activation_figures(real, "cpu")}
    plan = stage_plan(fig)
    assert plan["fit"] > plan["fit_micro1"] > plan["eval"] >= plan["prune_host"]
    assert plan["export_shards"] < plan["export_in_memory"]
