"""The LoRA/DoRA baselines: real peft, parameter matching, and why they do not run on the bridge."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.methods.peft_adapters import matched_shape, spaced_layers


def test_spaced_layers_are_distinct_and_in_range():
    assert spaced_layers(30, 1) == [15]
    assert spaced_layers(30, 2) == [0, 29]
    layers = spaced_layers(30, 7)
    assert len(layers) == 7 and len(set(layers)) == 7 and min(layers) == 0 and max(layers) == 29
    assert spaced_layers(3, 10) == [0, 1, 2]


@pytest.mark.parametrize("dora", [False, True])
def test_matched_shape_is_closest_to_the_target(dora):
    # SmolLM2-135M: 30 layers, o_proj 576 -> 576; LCC default: 68 heads x 2 x 64 = 8704
    target, n_layers, d_in, d_out = 8704, 30, 576, 576
    rank, layers = matched_shape(target, n_layers, d_in, d_out, dora=dora)
    per_layer = rank * (d_in + d_out) + (d_out if dora else 0)
    count = per_layer * len(layers)
    assert rank == 1
    # no other number of rank-1 layers is closer to the target
    for k in range(1, n_layers + 1):
        assert abs(count - target) <= abs(k * per_layer - target)


def test_matched_shape_raises_rank_when_all_layers_are_not_enough():
    rank, layers = matched_shape(10_000, 2, 64, 64, dora=False)
    assert layers == [0, 1] and rank == round(10_000 / 2 / 128)


def test_peft_counts_match_the_formula(llama_pair_dirs, tok):
    from peft import LoraConfig, get_peft_model

    from lcc_lens.models import load_causal_lm

    model, _ = load_causal_lm(llama_pair_dirs[1])
    rank, layers = matched_shape(100, 3, 64, 64, dora=True)
    cfg = LoraConfig(
        r=rank,
        target_modules=["o_proj"],
        layers_to_transform=layers,
        layers_pattern="layers",
        use_dora=True,
    )
    peft_model = get_peft_model(model, cfg)
    n = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert n == len(layers) * (rank * 128 + 64)


def test_peft_refuses_the_bridge_modules(llama_pair_dirs):
    """The reason adapters train on a clean HF copy: peft cannot wrap TransformerBridge's LinearBridge."""
    from peft import LoraConfig, get_peft_model

    from lcc_lens.models import load_bridge

    bridge, _ = load_bridge(llama_pair_dirs[1])
    with pytest.raises(ValueError, match="not supported"):
        get_peft_model(bridge.original_model, LoraConfig(r=2, target_modules=["q_proj"]))


def test_lofit_scale_folds_into_o_proj_columns_and_keeps_zeros(llama_pair_dirs):
    from lcc_lens.methods.lofit import HeadScaleShift, LoFiT
    from lcc_lens.models import HeadGeometry, load_bridge, load_causal_lm

    bridge, _ = load_bridge(llama_pair_dirs[1])
    g = HeadGeometry.of(bridge)
    method = LoFiT()
    method.adapter = HeadScaleShift(g, [(0, 1), (2, 3)])
    method._prepared = True
    with torch.no_grad():
        method.adapter.scale.fill_(-1.0)  # scale 0: the head is silenced
    model, _ = load_causal_lm(llama_pair_dirs[1])
    merged = method.export(model)
    w = merged.model.layers[0].self_attn.o_proj.weight
    assert torch.all(w[:, 16:32] == 0)
    before = model.model.layers[0].self_attn.o_proj.weight
    assert torch.equal(w[:, :16], before[:, :16])
