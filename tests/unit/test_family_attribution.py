"""The LCC family's attribution (lcc_lens.attribution) on a tiny pruned Llama pair."""

from __future__ import annotations

import torch

from lcc_lens.attribution import family_attribution
from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.family import CompensationFamily, FamilyLayout
from lcc_lens.models import ModelPair
from lcc_lens.training import TrainConfig, evaluate_loss


def test_removal_rises_and_first_order_heads_agree_with_exact_removal(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    data = encode(pair.tokenizer, load_examples("offline", n=6), 64)
    heads = Compensation(pair.geometry, [(0, 1), (1, 2), (2, 0)], use_directions=False)
    family = CompensationFamily(heads, FamilyLayout.of(pair.pruned), ("heads", "mlp", "scales"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in family.parameters():
            if p.requires_grad:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    cfg = TrainConfig(objective="lm", batch_size=3)
    state = {k: v.clone() for k, v in family.state_dict().items()}
    attr = family_attribution(pair, family, data, cfg)
    assert all(torch.equal(state[k], v) for k, v in family.state_dict().items())  # left unchanged
    assert attr.full_loss == evaluate_loss(pair, family, data, cfg)
    for component in ("heads", "mlp", "scales"):
        with family.without(component):
            assert (
                attr.removed[component] == evaluate_loss(pair, family, data, cfg) - attr.full_loss
            )
        assert len(attr.per_layer[component]) == pair.geometry.n_layers
    # with small terms the first-order estimate of one layer's heads matches removing them exactly
    for layer in range(pair.geometry.n_layers):
        exact = attr.per_layer["heads"][layer]
        estimate = float(attr.per_head["heads"][layer].sum())
        assert abs(estimate - exact) <= 0.1 * abs(exact) + 1e-6, (layer, estimate, exact)
    assert set(attr.per_head) == {"heads", "scales"}
    unselected = torch.ones(3, 4, dtype=torch.bool)
    unselected[[0, 1, 2], [1, 2, 0]] = False
    assert (attr.per_head["heads"][unselected] == 0).all()
