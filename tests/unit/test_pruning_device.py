"""Pruning on an accelerator keeps the model where it is and moves one decoder layer at a time."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from lcc_lens.pruning import PruneConfig, prune_model
from lcc_lens.pruning.calibrate import find_decoder_layers
from lcc_lens.tiny import tiny_model


@pytest.mark.parametrize("method", ["wanda", "flap"])
def test_only_one_layer_is_moved_at_a_time(tok, texts, monkeypatch, method):
    model = tiny_model("llama", seed=2)
    reference = tiny_model("llama", seed=2)
    _, layers = find_decoder_layers(model)
    index = {id(layer): i for i, layer in enumerate(layers)}
    moves: list[tuple[str, int | None]] = []
    original_to = nn.Module.to

    def spy(self, *args, **kwargs):
        if self is model or self is getattr(model, "model", None):
            moves.append(("model", None))
        elif id(self) in index:
            moves.append(("layer", index[id(self)]))
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", spy)
    cfg = PruneConfig(method=method, sparsity=0.25, n_samples=4, seq_len=16, batch_size=2)
    prune_model(model, tok, replace(cfg, device="cpu"), texts, show_progress=False)
    monkeypatch.setattr(nn.Module, "to", original_to)
    assert ("model", None) not in moves  # the whole model is never moved
    layer_moves = [i for kind, i in moves if kind == "layer"]
    # each layer goes to the device and back, in order, before the next one
    assert layer_moves == [i for i in range(len(layers)) for _ in range(2)]
    # and the result equals the prune without a device
    prune_model(reference, tok, cfg, texts, show_progress=False)
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
