"""The direct Gemma 3 GGUF conversion, on a tiny random Gemma 3 written as GGUF with llama.cpp's conventions.

The real 270M file (optional extra) is checked in tests/slow/test_gemma_real.py; here a round trip
HF -> GGUF (norm weights stored as 1 + w, llama.cpp tensor names) -> lcc_lens.gemma_gguf -> HF must give
the same logits, so a wrong name, a missed norm offset or a transposed weight fails.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens import gemma_gguf
from lcc_lens.embedded import EMBEDDED_MODELS, GEMMA_MODEL
from lcc_lens.errors import ConfigError, LccError
from lcc_lens.models import resolve_model_source

gguf = pytest.importorskip("gguf")

_HF_TO_GGUF = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=6,  # the default pattern: 5 sliding-window layers, then 1 global
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=4,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1) if p.dim() >= 2 else p.uniform_(-0.5, 0.5)
    return model


def _write_gguf(model, path) -> None:
    """Write ``model`` as llama.cpp writes Gemma 3: its names, norm weights + 1, F32 tensors."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    w.add_sliding_window(cfg.sliding_window)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            g = f"blk.{layer}.{_HF_TO_GGUF[rest]}"
        value = tensor.detach().float()
        if g.endswith("norm.weight"):
            value = value + 1.0
        w.add_tensor(g, value.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_round_trip_gives_the_same_model(tmp_path):
    from transformers import Gemma3ForCausalLM

    original = _tiny_gemma3()
    path = tmp_path / "tiny.gguf"
    _write_gguf(original, path)
    reader = gguf.GGUFReader(str(path))
    config = gemma_gguf.gemma_config(reader)
    assert config.layer_types == original.config.layer_types
    assert (config.sliding_window, config.head_dim, config.num_key_value_heads) == (4, 8, 1)
    assert config.rope_parameters == original.config.rope_parameters
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (2, 1, 0)
    converted = Gemma3ForCausalLM(config).eval()
    missing, unexpected = converted.load_state_dict(
        gemma_gguf.dequantised_state(reader), strict=False
    )
    assert missing == ["lm_head.weight"] and not unexpected
    converted.tie_weights()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits)


def test_unknown_tensor_names_are_refused():
    assert gemma_gguf.hf_name("blk.3.ffn_up.weight") == "model.layers.3.mlp.up_proj.weight"
    with pytest.raises(LccError, match="unexpected tensor"):
        gemma_gguf.hf_name("blk.0.attn_qkv.weight")


def test_gemma_alias_is_registered_and_unknown_embedded_aliases_are_clear():
    entry = EMBEDDED_MODELS[GEMMA_MODEL]
    assert entry.converter == "gemma3-gguf" and entry.assembler == "assemble"
    assert "lcc_lens[gemma]" in entry.install_hint
    with pytest.raises(ConfigError, match="unknown embedded model 'embedded:nope'"):
        resolve_model_source("embedded:nope")
