"""bfloat16 models with fp32 compensation, and models spread by a device map (CPU + disk offload).

No GPU is lent to this project's CI: the device-map path runs here with layers offloaded to disk, which
exercises the same accelerate dispatch hooks a multi-GPU map uses.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.errors import ConfigError
from lcc_lens.fit import FitConfig, fit
from lcc_lens.models import HeadGeometry, ModelPair, load_bridge
from lcc_lens.placement import input_device, parse_device_map

DISK_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def _comp(g: HeadGeometry) -> Compensation:
    comp = Compensation(g, [(0, 1), (1, 2), (2, 0)], None, use_directions=False)
    with torch.no_grad():
        comp.bias.copy_(
            0.3 * torch.randn(comp.bias.shape, generator=torch.Generator().manual_seed(0))
        )
    return comp


def _ids() -> torch.Tensor:
    return torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(1))


def _loss(bridge, comp, ids) -> torch.Tensor:
    with comp.attach(bridge):
        logits = bridge(ids, return_type="logits")
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
    )


def test_bf16_model_keeps_fp32_compensation_and_matches_fp32(llama_pair_dirs):
    _, pruned = llama_pair_dirs
    ids = _ids()
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        bridge, _ = load_bridge(pruned, dtype=dtype)
        comp = _comp(HeadGeometry.of(bridge))
        loss = _loss(bridge, comp, ids)
        loss.backward()
        assert all(p.dtype == torch.float32 for p in comp.parameters())
        assert comp.bias.grad is not None and comp.bias.grad.dtype == torch.float32
        assert torch.isfinite(comp.bias.grad).all() and comp.bias.grad.abs().sum() > 0
        with torch.no_grad(), comp.attach(bridge):
            assert bridge(ids, return_type="logits").dtype == dtype
        results[dtype] = (loss.item(), comp.bias.grad.clone())
    (l32, g32), (l16, g16) = results[torch.float32], results[torch.bfloat16]
    assert abs(l32 - l16) < 0.05 * abs(l32)
    cos = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
    assert cos > 0.95


def test_fit_runs_end_to_end_in_bf16(llama_pair_dirs, tmp_path):
    dense, pruned = llama_pair_dirs
    cfg = FitConfig.from_dict(
        {
            "dense": str(dense),
            "pruned": str(pruned),
            "device": "cpu",
            "dtype": "bfloat16",
            "max_length": 96,
            "allow_worse": True,
            "data": {"n_train": 16, "n_diff_prompts": 8, "n_probe": 8},
            "select": {"method": "norm"},
            "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1},
            "eval": {"windows": 2, "context_length": 32, "bootstrap": 0},
        }
    )
    res = fit(cfg, tmp_path / "run")
    assert res.compensation.z_offsets().dtype == torch.float32
    assert torch.isfinite(res.compensation.z_offsets()).all()
    assert all(torch.isfinite(torch.tensor(v)) for v in (res.metrics.headline.ppl["pruned"],))


def test_disk_offloaded_pair_matches_the_single_device_pair(llama_pair_dirs):
    dense, pruned = llama_pair_dirs
    ids = _ids()
    plain = ModelPair.load(dense, pruned)
    mapped = ModelPair.load(dense, pruned, device_map=DISK_MAP)
    model = mapped.pruned.original_model
    assert model.hf_device_map["model.layers.1"] == "disk"
    assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # not resident
    assert mapped.device == torch.device("cpu") == input_device(model)
    assert mapped.geometry == plain.geometry
    comp_a, comp_b = _comp(plain.geometry), _comp(plain.geometry)
    la, lb = _loss(plain.pruned, comp_a, ids), _loss(mapped.pruned, comp_b, ids)
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-5
    torch.testing.assert_close(comp_a.bias.grad, comp_b.bias.grad, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        for bridge_a, bridge_b in ((plain.dense, mapped.dense), (plain.pruned, mapped.pruned)):
            _, ca = bridge_a.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"))
            _, cb = bridge_b.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"))
            for name in ca:
                torch.testing.assert_close(ca[name], cb[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("everywhere", "use one of"),
        ('{"model": "meta"}', "meta"),
        ('{"model.layers.0": 0, "model.layers.1": "cpu"}', "mixes GPUs"),
        ("{not json", "invalid JSON"),
        ("/no/such/map.json", "does not exist"),
    ],
)
def test_bad_device_maps_are_clear_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_device_map(spec)


def test_device_map_specs_parse(tmp_path):
    assert parse_device_map(None) is None and parse_device_map("none") is None
    assert parse_device_map("auto") == "auto"
    f = tmp_path / "map.json"
    f.write_text('{"model.layers.0": 0, "lm_head": 1}')
    assert parse_device_map(str(f)) == {"model.layers.0": 0, "lm_head": 1}


def test_fit_runs_with_layers_offloaded_to_disk(llama_pair_dirs, tmp_path):
    """The whole fit (diff, selection, training, evaluation, export) with a device-map JSON file."""
    import json

    dense, pruned = llama_pair_dirs
    placement = tmp_path / "map.json"
    placement.write_text(json.dumps(DISK_MAP))
    base = {
        "dense": str(dense),
        "pruned": str(pruned),
        "device": "cpu",
        "max_length": 96,
        "allow_worse": True,
        "data": {"n_train": 16, "n_diff_prompts": 8, "n_probe": 8},
        "select": {"method": "norm", "n_heads": 3},
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1},
        "eval": {"windows": 2, "context_length": 32, "bootstrap": 0},
    }
    mapped = fit(FitConfig.from_dict({**base, "device_map": str(placement)}), tmp_path / "a")
    plain = fit(FitConfig.from_dict(base), tmp_path / "b")
    assert mapped.pair.pruned.original_model.hf_device_map["model.layers.2"] == "disk"
    assert mapped.compensation.selected_heads() == plain.compensation.selected_heads()
    torch.testing.assert_close(
        mapped.compensation.z_offsets(), plain.compensation.z_offsets(), atol=1e-5, rtol=1e-4
    )
    assert mapped.metrics.export_max_abs_logit_diff < 1e-4
