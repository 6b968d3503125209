"""Invariants of the LCC family (lcc_lens.family) on tiny random pruned models of every layout.

For each component alone and all together: a trained (perturbed) family attached by hooks and its merged
export give the same fp32 logits, every zero of the pruned weights is still zero in the export, a zero
family is a no-op, the safetensors file round-trips, and attach leaves no hook behind.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.compensation import COMPONENTS, Compensation, CompensationConfig
from lcc_lens.errors import CompensationFileError, ConfigError
from lcc_lens.family import CompensationFamily, FamilyLayout, load_compensation
from lcc_lens.models import HeadGeometry
from lcc_lens.tiny import tiny_model, tiny_tokenizer

TOL = 1e-5
MLP_LAYOUTS = ("llama", "gpt2")
ALL_LAYOUTS = ("llama", "qwen3", "gemma3", "gpt2")
CASES = [(lay, (c,)) for lay in ALL_LAYOUTS for c in COMPONENTS] + [
    (lay, COMPONENTS if lay in MLP_LAYOUTS else ("heads", "norms", "scales")) for lay in ALL_LAYOUTS
]
CASES = [(lay, comps) for lay, comps in CASES if "mlp" not in comps or lay in MLP_LAYOUTS]


def _pruned(layout: str):
    """A tiny model with half of every 2-D decoder weight set to zero (by magnitude, per row)."""
    model = tiny_model(layout, seed=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and (".layers." in name or ".h." in name):
                idx = p.abs().argsort(dim=1)[:, : p.shape[1] // 2]
                p.scatter_(1, idx, 0.0)
    return model


def _geometry(model) -> HeadGeometry:
    c = model.config
    n_heads = getattr(c, "num_attention_heads", None) or c.n_head
    d_model = getattr(c, "hidden_size", None) or c.n_embd
    return HeadGeometry(
        type(model).__name__,
        getattr(c, "num_hidden_layers", None) or c.n_layer,
        n_heads,
        getattr(c, "num_key_value_heads", None) or n_heads,
        getattr(c, "head_dim", None) or d_model // n_heads,
        d_model,
        c.vocab_size,
    )


def _family(model, components, *, perturb: bool = True) -> CompensationFamily:
    heads = Compensation(_geometry(model), [(0, 1), (2, 3), (1, 0)], use_directions=False)
    family = CompensationFamily(heads, FamilyLayout.of(model), tuple(components))
    if perturb:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in family.parameters():
                if p.requires_grad:
                    p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return family


IDS = torch.randint(1, 500, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits if hasattr(model, "config") else model(IDS)


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(("layout", "components"), CASES)
def test_attached_equals_export_and_zeros_are_kept(layout, components):
    model = _pruned(layout)
    family = _family(model, components)
    before = _logits(model)
    with family.attach(model) as hooked:
        attached = _logits(hooked)
    assert _n_hooks(model) == 0
    assert (attached - before).abs().max() > 1e-3  # the terms really act
    merged, _route = family.merge(model)
    assert (_logits(merged) - attached).abs().max() <= TOL
    exported = dict(merged.named_parameters())
    for name, p in model.named_parameters():
        zeros = p == 0
        if p.dim() == 2 and zeros.any():
            assert (exported[name][zeros] == 0).all(), name
    assert torch.equal(_logits(model), before)  # merging copies; the pruned model is untouched


@pytest.mark.parametrize(("layout", "components"), CASES)
def test_zero_family_is_a_no_op_and_round_trips(layout, components, tmp_path):
    model = _pruned(layout)
    with _family(model, components, perturb=False).attach(model) as hooked:
        assert torch.equal(_logits(hooked), _logits(model))
    family = _family(model, components)
    family.save(tmp_path / "c.safetensors", metadata={"note": "x"})
    loaded = load_compensation(tmp_path / "c.safetensors")
    assert isinstance(loaded, CompensationFamily) and loaded.components == family.components
    for (name, a), (_n, b) in zip(
        family.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with family.attach(model) as a, loaded.attach(model) as b:
        assert torch.equal(_logits(a), _logits(b))


@pytest.mark.parametrize("layout", ["qwen3", "gemma3"])
def test_mlp_is_refused_where_no_down_proj_bias_exists(layout):
    model = _pruned(layout)
    with pytest.raises(ConfigError, match="down_proj bias"):
        _family(model, ("mlp",))


def test_config_names_the_valid_components():
    assert CompensationConfig().compensate == ("heads",)
    assert CompensationConfig(compensate=("heads", "mlp")).compensate == ("heads", "mlp")
    for bad in (("heads", "attn"), (), ("mlp", "mlp")):
        with pytest.raises(ConfigError, match="heads, mlp, norms, scales"):
            CompensationConfig(compensate=bad)


def test_family_file_is_not_read_as_heads_only_and_bad_shapes_are_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = _pruned("llama")
    path = _family(model, ("heads", "mlp")).save(tmp_path / "c.safetensors")
    with pytest.raises(CompensationFileError, match="family"):
        Compensation.load(path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors["family.mlp_offset"] = tensors["family.mlp_offset"][:, :3].contiguous()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CompensationFileError, match="family.mlp_offset"):
        CompensationFamily.load(tmp_path / "bad.safetensors")


def test_removing_a_component_restores_it_afterwards():
    model = _pruned("llama")
    family = _family(model, COMPONENTS)
    state = {k: v.clone() for k, v in family.state_dict().items()}
    with family.attach(model) as hooked:
        full = _logits(hooked)
        for comp in COMPONENTS:
            with family.without(comp, layer=1):
                assert (_logits(hooked) - full).abs().max() > 0, comp
    assert all(torch.equal(state[k], v) for k, v in family.state_dict().items())


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
def test_bridge_attach_matches_the_plain_model_and_the_export(layout, tmp_path):
    """On the TransformerBridge (hook_z for the head terms, the wrapped modules for the rest) the family
    computes what it computes on the plain model and what its export computes."""
    from lcc_lens.models import load_bridge

    model = _pruned(layout)
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    bridge = load_bridge(str(tmp_path / "m"))[0]
    components = COMPONENTS if layout in MLP_LAYOUTS else ("heads", "norms", "scales")
    family = _family(model, components)
    assert FamilyLayout.of(bridge) == family.layout
    with family.attach(bridge) as hooked, torch.no_grad():
        on_bridge = hooked(IDS, return_type="logits")
    with family.attach(model) as hooked:
        plain = _logits(hooked)
    assert (on_bridge - plain).abs().max() <= 1e-4
    assert (_logits(family.merge(model)[0]) - on_bridge).abs().max() <= 1e-4
