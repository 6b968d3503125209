"""The zero-keeping peers (masked LoRA, SPP, PERP biases + norms, masked full retraining) on a tiny pruned Llama.

What the shared invariants (``test_methods_invariants.py``) do not show: the mask does real work (the
unmasked update would fill zeros), training keeps the zeros and the gradient at pruned positions is exactly
zero, the trainable counts follow their formulas, the MLP option, the refusal of a model with other zeros,
and that a training checkpoint restores the method.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.errors import ExportError
from lcc_lens.methods import ZERO_KEEPING_PEERS, MethodContext, make_method
from lcc_lens.methods.low_rank import MLP, MaskedLoRA
from lcc_lens.methods.peft_adapters import QKVO
from lcc_lens.training import train


@pytest.fixture(scope="module")
def ctx(llama_pair_dirs, method_context) -> MethodContext:
    return method_context(*llama_pair_dirs)


def _zeros_kept(pruned, merged) -> int:
    """Assert every zero weight of ``pruned`` is zero in ``merged``; return how many there were."""
    merged_params = dict(merged.named_parameters())
    n = 0
    for name, p in pruned.named_parameters():
        zeros = p == 0
        n += int(zeros.sum())
        assert torch.all(merged_params[name][zeros] == 0), name
    return n


def _loss(method) -> torch.Tensor:
    ids = torch.randint(1, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    with method.attach(None) as model:
        return model(ids, return_type="logits").float().pow(2).mean()


def test_masked_lora_mask_is_what_keeps_the_zeros(ctx):
    method = make_method("masked_lora_r8")
    method.prepare(ctx)
    with torch.no_grad():
        for f in method.factors.values():
            f.B.normal_()
    pruned = ctx.pruned_model()
    assert _zeros_kept(pruned, method.export(pruned)) > 0
    filled = 0
    for f in method.factors.values():
        assert not f.mask.all()  # the tiny prune leaves zeros in every adapted projection
        filled += int((f.product()[~f.mask] != 0).sum())
    assert filled > 0, "the unmasked B A would not have filled any zero"


@pytest.mark.parametrize("name", [*ZERO_KEEPING_PEERS, "lcc_lowrank"])
def test_training_keeps_every_zero(name, ctx):
    """A few optimizer steps at a large rate: the merged export still has every zero, and moved."""
    from dataclasses import replace

    method = make_method(name)
    method.prepare(ctx)
    before = [p.detach().clone() for p in method.trainable_parameters()]
    cfg = replace(ctx.train_config, lr=5e-2, steps=3)
    history = train(ctx.pair, method, ctx.train_encoded, [], cfg)
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, method.trainable_parameters(), strict=True)
    )
    pruned = ctx.pruned_model()
    assert _zeros_kept(pruned, method.export(pruned)) > 0


def test_masked_full_ft_gradient_is_zero_exactly_at_pruned_weights(ctx):
    method = make_method("masked_full_ft")
    method.prepare(ctx)
    _loss(method).backward()
    for key, w in method.weights.items():
        mask = method.masks.get_buffer(key)
        assert torch.all(w.grad[~mask] == 0)
        assert w.grad[mask].abs().max() > 0
    assert all(p.grad is None for p in ctx.pruned_model().parameters())


def test_masked_full_ft_remasks_weights_when_attached(ctx):
    method = make_method("masked_full_ft")
    method.prepare(ctx)
    key, w = next(iter(method.weights.items()))
    with torch.no_grad():
        w.add_(1.0)  # as an optimizer that ignored the mask would
    with method.attach(None):
        assert torch.all(w[~method.masks.get_buffer(key)] == 0)


def test_masked_full_ft_counts_free_scalars(ctx):
    method = make_method("masked_full_ft")
    method.prepare(ctx)
    pruned = ctx.pruned_model()
    from lcc_lens.methods.base import decoder_linears

    linears = decoder_linears(pruned)
    free = sum(int((m.weight != 0).sum()) for m in linears.values())
    norms = sum(p.numel() for n, p in pruned.named_parameters() if "norm" in n)
    assert method.n_trainable == free + norms
    stored = sum(m.weight.numel() for m in linears.values()) + norms
    assert method.describe()["stored_params"] == stored > method.n_trainable


def test_perp_trains_output_biases_and_norms_only(ctx):
    method = make_method("perp_bias_norm")
    method.prepare(ctx)
    g = ctx.geometry
    n_layers, d = g.n_layers, g.d_model
    # o_proj and down_proj bias per layer, two RMSNorms per layer and the final one
    assert method.n_trainable == n_layers * 2 * d + (2 * n_layers + 1) * d
    assert method.describe()["tensors"] == {"o_proj": n_layers, "down_proj": n_layers, "norm": 7}
    pruned = ctx.pruned_model()
    merged = method.export(pruned)
    assert merged.config.attention_bias and merged.config.mlp_bias
    weights = dict(merged.named_parameters())
    for name, p in pruned.named_parameters():
        if name.endswith("proj.weight"):
            assert torch.equal(weights[name], p)


def test_matched_size_is_closest_to_lccs_count(ctx):
    lcc = make_method("lcc")
    lcc.prepare(ctx)
    assert lcc.planned_trainable(ctx) == lcc.n_trainable
    paper = make_method("lcc_paper")
    paper.prepare(ctx)
    assert paper.planned_trainable(ctx) == paper.n_trainable
    method = make_method("masked_lora_matched")
    method.prepare(ctx)
    g = ctx.geometry
    per_layer = method.rank * (g.n_heads * g.d_head + g.d_model)
    assert method.n_trainable == per_layer * len(method.layers)
    for k in range(1, g.n_layers + 1):  # no other number of rank-1 o_proj adapters is closer
        assert abs(method.n_trainable - lcc.n_trainable) <= abs(k * per_layer - lcc.n_trainable)
    assert method.describe()["matched_to"] == lcc.n_trainable


def test_masked_adapters_on_the_mlp_too(ctx):
    method = MaskedLoRA(targets=QKVO + MLP)
    method.prepare(ctx)
    assert len(method.weight_names) == 7 * ctx.geometry.n_layers
    with torch.no_grad():
        for f in method.factors.values():
            f.B.normal_()
    pruned = ctx.pruned_model()
    merged = dict(method.export(pruned).named_parameters())
    down = "model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(merged[down], pruned.get_parameter(down))
    assert _zeros_kept(pruned, method.export(pruned)) > 0


def test_same_seed_same_init(ctx):
    a, b = make_method("spp_r8"), make_method("spp_r8")
    a.prepare(ctx)
    b.prepare(ctx)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("name", ["masked_lora_r8", "masked_full_ft"])
def test_export_refuses_a_model_with_other_zeros(name, ctx):
    method = make_method(name)
    method.prepare(ctx)
    other = method.frozen_model(ctx.pruned_model())
    from lcc_lens.methods.base import clean_copy

    other = clean_copy(other)
    w = other.get_parameter("model.layers.0.self_attn.q_proj.weight")
    with torch.no_grad():
        w[w != 0] = 0.0  # a surviving weight is now zero: the mask would fill it
    with pytest.raises(ExportError, match="prepared on"):
        method.export(other)


def test_training_checkpoint_restores_the_method(ctx, tmp_path):
    """train(run_dir=...) writes the method's state (bool masks, dot-free keys) and resume loads it."""
    from dataclasses import replace

    cfg = replace(ctx.train_config, lr=1e-2, steps=2, checkpoint_every=1)
    first = make_method("masked_lora_r8")
    first.prepare(ctx)
    train(ctx.pair, first, ctx.train_encoded, [], cfg, run_dir=tmp_path)
    again = make_method("masked_lora_r8")
    again.prepare(ctx)
    train(ctx.pair, again, ctx.train_encoded, [], cfg, run_dir=tmp_path, resume=True)
    for (k, x), y in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


@pytest.mark.parametrize("layout", ["qwen2", "qwen3", "mistral", "gpt2"])
def test_other_layouts_merge_exactly_or_are_refused(layout, tiny_dirs, method_context):
    """Qwen2 / Mistral take the as-Llama o_proj-bias route, Qwen3 has no down_proj bias, GPT-2 no q/k/v/o."""
    from lcc_lens.bench.measure import sparsity_kept
    from lcc_lens.errors import ConfigError

    ctx = method_context(*tiny_dirs[layout])
    ids = torch.randint(1, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    names = ["perp_bias_norm"] if layout == "gpt2" else ["perp_bias_norm", "masked_lora_r8"]
    for name in names:
        method = make_method(name)
        method.prepare(ctx)
        with torch.no_grad():
            for p in method.trainable_parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
        with torch.no_grad(), method.attach(None) as model:
            attached = model(ids, return_type="logits")
        merged = method.export(ctx.pruned_model())
        with torch.no_grad():
            assert (merged(ids).logits - attached).abs().max() <= 1e-4, name
        assert sparsity_kept(ctx.pruned_model(), merged) == 1.0
        if name == "perp_bias_norm":  # Qwen3 has no mlp_bias switch, GPT-2 no down_proj
            down = method.describe()["tensors"]["down_proj"]
            assert down == (3 if layout in ("qwen2", "mistral") else 0)
    if layout == "gpt2":
        with pytest.raises(ConfigError, match="q_proj"):
            make_method("masked_lora_r8").prepare(ctx)


def test_lcc_lowrank_trains_its_head_offsets_at_half_the_rate(ctx):
    """Its two parts take one optimizer step each at their own rate (Adam's first step is ~ the rate)."""
    from dataclasses import replace

    method = make_method("lcc_lowrank")
    method.prepare(ctx)
    groups = method.param_groups(1e-2)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(
        id(p) for p in method.trainable_parameters()
    )
    offsets = method.offsets.bias
    factors = [f.B for f in method.factors.values()]
    before = [offsets.detach().clone(), *(b.detach().clone() for b in factors)]
    train(ctx.pair, method, ctx.train_encoded, [], replace(ctx.train_config, lr=1e-2, steps=1))
    step_offsets = float((offsets - before[0]).abs().max())
    step_factors = max(
        float((b - b0).abs().max()) for b, b0 in zip(factors, before[1:], strict=True)
    )
    assert step_offsets > 0 and step_factors > 0
    assert step_offsets / step_factors == pytest.approx(0.5, rel=0.02)
