"""The calibration driver replays every decoder layer with that layer's own call arguments.

Gemma 3 interleaves sliding-window and global layers, each called with its own mask and rotary
embeddings; replaying the first layer's arguments everywhere computes activations the model never
produces. Replayed layer by layer, the hidden states must equal the model's own.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.pruning.calibrate import (
    capture_layer_inputs,
    find_decoder_layers,
    layer_forward,
    layers_differ,
)


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
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


def _replay(model, ids, batch_size):
    _, layers = find_decoder_layers(model)
    captured = capture_layer_inputs(model, layers[0], ids, batch_size, layers)
    states = []
    for inp in captured:
        row = []
        for i, layer in enumerate(layers[:-1]):  # the last hidden state is normed in hidden_states
            inp.hidden = layer_forward(layer, inp, i)
            row.append(inp.hidden)
        states.append(row)
    return [torch.cat([s[i] for s in states]) for i in range(len(layers) - 1)]


@torch.no_grad()
def test_gemma3_layers_replay_with_their_own_arguments():
    model = _tiny_gemma3()
    assert layers_differ(model)
    ids = torch.randint(0, 512, (4, 12), generator=torch.Generator().manual_seed(3))
    reference = model(ids, output_hidden_states=True).hidden_states
    for i, hidden in enumerate(_replay(model, ids, batch_size=2)):
        torch.testing.assert_close(hidden, reference[i + 1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_first_layer_arguments_alone_are_wrong_for_gemma3():
    """The check above can fail: with the first layer's arguments the global layers diverge."""
    model = _tiny_gemma3()
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    reference = model(ids, output_hidden_states=True).hidden_states
    _, layers = find_decoder_layers(model)
    inp = capture_layer_inputs(model, layers[0], ids, 2, layers)[0]
    inp.per_layer = {}
    hidden = inp.hidden
    for layer in layers[:2]:
        inp.hidden = hidden = layer_forward(layer, inp)
    assert (hidden - reference[2]).abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["llama", "qwen2"])
@torch.no_grad()
def test_uniform_layers_keep_the_single_capture(layout):
    from lcc_lens.tiny import tiny_model

    model = tiny_model(layout, seed=0)
    assert not layers_differ(model)
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    _, layers = find_decoder_layers(model)
    captured = capture_layer_inputs(model, layers[0], ids, 2, layers)
    assert captured[0].per_layer == {}
    reference = model(ids, output_hidden_states=True).hidden_states
    for i, hidden in enumerate(_replay(model, ids, batch_size=2)):
        torch.testing.assert_close(hidden, reference[i + 1], atol=1e-5, rtol=1e-5)
