"""Layer-by-layer calibration replays each decoder layer with ITS OWN call arguments.

Gemma 3 interleaves sliding-window and global layers: the model passes each layer the mask and rotary
embeddings of its own type (global rope base 1e6, local 1e4). Replaying every layer with the first
layer's arguments silently feeds global layers the wrong positions, so the pruning statistics of every
layer after the first global one come from activations the model never produces.
"""

from __future__ import annotations

import torch

from lcc_lens.pruning.calibrate import capture_layer_inputs, find_decoder_layers, layer_forward


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08) if p.dim() >= 2 else p.uniform_(-0.5, 0.5)
    return model


@torch.no_grad()
def test_replaying_layers_reproduces_the_models_own_hidden_states():
    model = _tiny_gemma3()
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    reference = model(ids, output_hidden_states=True).hidden_states
    _, layers = find_decoder_layers(model)
    captured = capture_layer_inputs(model, layers[0], ids, 2, layers)
    inp = captured[0]
    for i, layer in enumerate(layers[:-1]):  # the last output is normed in hidden_states
        inp.hidden = layer_forward(layer, inp, i)
        torch.testing.assert_close(inp.hidden, reference[i + 1], atol=1e-5, rtol=1e-5)
