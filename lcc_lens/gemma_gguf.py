"""Direct conversion of a Gemma 3 GGUF file (e.g. Gemma 3 270M, Q4_K_M) to a plain fp32 checkpoint.

transformers can load the GGUF itself (``gguf_file=``), but the result is marked as GGUF-quantized and
refuses ``save_pretrained``. Here every tensor is dequantised with the ``gguf`` package, renamed to the
``Gemma3ForCausalLM`` layout and saved; the config holds the values transformers' own GGUF loader derives
(the file's metadata plus Gemma3TextConfig defaults: 5 sliding-window layers to 1 global, local rope
base 10000). llama.cpp's Gemma convention is undone: RMSNorm weights are stored as ``1 + w`` (Gemma's
norm multiplies by ``1 + w``), so 1 is subtracted; q/k are stored unpermuted (llama.cpp permutes them
only for llama-architecture files). Checked against transformers' loader on the real 270M model: every
parameter and the logits identical (max difference 0.0).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from lcc_lens.atomic import atomic_dir
from lcc_lens.errors import LccError

logger = logging.getLogger(__name__)

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
}
_LAYER = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def hf_name(gguf_name: str) -> str:
    """The Hugging Face Gemma3ForCausalLM parameter name of a GGUF tensor name."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    match = _BLOCK.match(gguf_name)
    if match and match.group(2) in _LAYER:
        return f"model.layers.{match.group(1)}.{_LAYER[match.group(2)]}"
    raise LccError(f"unexpected tensor {gguf_name!r} in the Gemma 3 GGUF file.")


def _field(reader, key: str):
    field = reader.fields[key]
    return field.parts[field.data[0]][0] if len(field.data) == 1 else None


def gemma_config(reader):
    """A Gemma3TextConfig from the GGUF metadata (the same values transformers' GGUF loader sets)."""
    from transformers import Gemma3TextConfig

    def meta(key: str):
        return _field(reader, f"gemma3.{key}")

    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return Gemma3TextConfig(
        vocab_size=n_vocab,
        hidden_size=int(meta("embedding_length")),
        intermediate_size=int(meta("feed_forward_length")),
        num_hidden_layers=int(meta("block_count")),
        num_attention_heads=int(meta("attention.head_count")),
        num_key_value_heads=int(meta("attention.head_count_kv")),
        head_dim=int(meta("attention.key_length")),
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon")),
        sliding_window=int(meta("attention.sliding_window")),
        max_position_embeddings=int(meta("context_length")),
        rope_theta=float(meta("rope.freq_base")),
        bos_token_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        pad_token_id=int(_field(reader, "tokenizer.ggml.padding_token_id")),
        tie_word_embeddings=all(t.name != "output.weight" for t in reader.tensors),
        architectures=["Gemma3ForCausalLM"],
    )


def dequantised_state(reader) -> dict[str, torch.Tensor]:
    """Every tensor of the GGUF dequantised to fp32 under its Hugging Face name."""
    from gguf.quants import dequantize

    state = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type)
        value = torch.from_numpy(array.reshape([int(d) for d in reversed(tensor.shape)]).copy())
        value = value.to(torch.float32)
        if tensor.name.endswith("norm.weight"):
            value = value - 1.0  # llama.cpp stores Gemma's (1 + w)
        state[hf_name(tensor.name)] = value
    return state


def convert(gguf: Path, target: Path, *, name: str, source: str) -> None:
    """Write the fp32 Hugging Face checkpoint of a Gemma 3 GGUF file to ``target`` (atomically)."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    logger.info("converting %s to %s (once)", gguf.name, target)
    reader = GGUFReader(str(gguf))
    config = gemma_config(reader)
    config._name_or_path = name
    model = Gemma3ForCausalLM(config).eval()  # real buffers (rotary frequencies, embedding scale)
    state = dequantised_state(reader)
    expected = set(model.state_dict()) - {"lm_head.weight"}  # tied to the embedding
    if set(state) != expected:
        raise LccError(
            f"Gemma 3 GGUF conversion mismatch: missing {sorted(expected - set(state))[:5]}, "
            f"unexpected {sorted(set(state) - expected)[:5]}; the file is not a Gemma 3 text model."
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lcc_lens_source.json").write_text(
            json.dumps({"source": source, "dtype": "float32", "converter": "gemma_gguf"}) + "\n"
        )
