from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lcc_lens.compensation import Compensation, load_z_offsets, read_compensation_file
from lcc_lens.errors import CompensationFileError, ConfigError, LccError
from lcc_lens.models import HeadGeometry, load_bridge

HEADS = [(0, 1), (2, 3), (1, 0)]


@pytest.fixture(scope="module")
def bridge(llama_pair_dirs):
    return load_bridge(llama_pair_dirs[1])[0]


def _random_comp(g: HeadGeometry, seed: int = 0) -> Compensation:
    gen = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(g.n_layers, g.n_heads, g.d_head, g.d_head, generator=gen))[0]
    comp = Compensation(g, HEADS, v.transpose(-1, -2))
    with torch.no_grad():
        comp.beta.copy_(torch.randn(comp.beta.shape, generator=gen))
        comp.bias.copy_(torch.randn(comp.bias.shape, generator=gen))
    return comp


def _tokens():
    return torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(3))


def test_offsets_formula_and_unselected_heads_zero(bridge):
    g = HeadGeometry.of(bridge)
    comp = _random_comp(g)
    z = comp.z_offsets()
    assert z.shape == (g.n_layers, g.n_heads, g.d_head)
    for layer in range(g.n_layers):
        for head in range(g.n_heads):
            if (layer, head) in HEADS:
                i = comp.selected_heads().index((layer, head))
                expect = comp.directions[i].T @ comp.beta[i] + comp.bias[i]
                torch.testing.assert_close(z[layer, head], expect)
            else:
                assert torch.equal(z[layer, head], torch.zeros(g.d_head))


def test_zero_compensation_is_noop_and_detach_restores(bridge):
    g = HeadGeometry.of(bridge)
    x = _tokens()
    with torch.no_grad():
        base = bridge(x, return_type="logits")
        zero = Compensation(g, HEADS, torch.zeros(g.n_layers, g.n_heads, g.d_head, g.d_head))
        with zero.attach(bridge):
            same = bridge(x, return_type="logits")
        assert torch.equal(base, same)
        comp = _random_comp(g)
        with comp.attach(bridge):
            moved = bridge(x, return_type="logits")
        after = bridge(x, return_type="logits")
    assert (moved - base).abs().max() > 1e-3
    assert torch.equal(after, base)


def test_hooks_removed_even_on_error(bridge):
    g = HeadGeometry.of(bridge)
    comp = _random_comp(g)
    x = _tokens()
    with torch.no_grad():
        base = bridge(x, return_type="logits")
        with pytest.raises(RuntimeError, match="boom"), comp.attach(bridge):
            raise RuntimeError("boom")
        assert torch.equal(bridge(x, return_type="logits"), base)


def test_gradients_reach_only_compensation(bridge):
    g = HeadGeometry.of(bridge)
    comp = _random_comp(g)
    with comp.attach(bridge):
        loss = bridge(_tokens(), return_type="logits").logsumexp(-1).mean()
    loss.backward()
    assert comp.beta.grad is not None and comp.bias.grad is not None
    assert comp.bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in bridge.parameters())


def test_save_load_roundtrip_is_exact(tmp_path, bridge):
    g = HeadGeometry.of(bridge)
    comp = _random_comp(g)
    path = comp.save(tmp_path / "compensation.safetensors", metadata={"note": "x"})
    tensors = load_file(str(path))
    assert list(tensors)[0] == "z_offsets" or "z_offsets" in tensors
    assert tensors["z_offsets"].dtype == torch.float32
    back = Compensation.load(path)
    assert back.selected_heads() == comp.selected_heads()
    assert torch.equal(back.z_offsets(), comp.z_offsets())
    assert torch.equal(back.beta, comp.beta) and torch.equal(back.bias, comp.bias)
    assert torch.equal(load_z_offsets(path, g), comp.z_offsets())


def test_bad_files_give_clear_errors(tmp_path, bridge):
    g = HeadGeometry.of(bridge)
    comp = _random_comp(g)
    with pytest.raises(CompensationFileError, match="does not exist"):
        Compensation.load(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CompensationFileError, match="not a readable safetensors"):
        Compensation.load(corrupt)
    good = comp.save(tmp_path / "good.safetensors")
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as fh:
        meta = fh.metadata()
    bad_shape = dict(tensors, z_offsets=torch.zeros(3, 5, 16))
    save_file(bad_shape, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(CompensationFileError, match="shape"):
        read_compensation_file(tmp_path / "shape.safetensors")
    nan = dict(tensors)
    nan["z_offsets"] = tensors["z_offsets"].clone()
    nan["z_offsets"][0, 1, 0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(CompensationFileError, match="NaN or inf"):
        read_compensation_file(tmp_path / "nan.safetensors")
    bad_beta = dict(tensors, beta=torch.zeros(2, 16))
    save_file(bad_beta, str(tmp_path / "beta.safetensors"), metadata=meta)
    with pytest.raises(CompensationFileError, match="'beta' has shape"):
        Compensation.load(tmp_path / "beta.safetensors")
    with pytest.raises(CompensationFileError, match="does not fit this model"):
        load_z_offsets(good, HeadGeometry("X", 3, 5, 5, 16, 80, 512))


def test_nan_offsets_refused_on_save(tmp_path, bridge):
    comp = _random_comp(HeadGeometry.of(bridge))
    with torch.no_grad():
        comp.bias[0, 0] = float("inf")
    with pytest.raises(CompensationFileError, match="NaN or inf"):
        comp.save(tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()
    assert list(tmp_path.iterdir()) == []


def test_invalid_construction(bridge):
    g = HeadGeometry.of(bridge)
    with pytest.raises(LccError, match="out of range"):
        Compensation(g, [(0, 4)], None, use_directions=False)
    with pytest.raises(ConfigError, match="duplicates"):
        Compensation(g, [(0, 1), (0, 1)], None, use_directions=False)
    with pytest.raises(ConfigError, match="needs the lost directions"):
        Compensation(g, [(0, 1)], None)
    other = HeadGeometry("X", 2, 4, 2, 16, 64, 512)
    comp = Compensation(other, [(0, 1)], None, use_directions=False)
    with pytest.raises(ConfigError, match="compensation is for"), comp.attach(bridge):
        pass


@pytest.mark.parametrize(
    "geometry",
    [
        "{oops",
        '{"n_layers": 3}',
        '["not", "a", "mapping"]',
        '{"architecture": "x", "n_layers": '
        '"3", "n_heads": 4, "n_kv_heads": 2, "d_head": 16, "d_model": 64, "d_vocab": 512}',
    ],
)
def test_corrupt_metadata_is_a_clear_error(tmp_path, bridge, geometry):
    comp = _random_comp(HeadGeometry.of(bridge))
    path = comp.save(tmp_path / "c.safetensors")
    tensors = load_file(str(path))
    save_file(
        tensors, str(path), metadata={"format": "lcc_lens.compensation/1", "geometry": geometry}
    )
    with pytest.raises(CompensationFileError, match="metadata"):
        Compensation.load(path)
    with pytest.raises(CompensationFileError, match="metadata"):
        read_compensation_file(path)


def test_compensation_config_validates():
    from lcc_lens.compensation import CompensationConfig

    assert CompensationConfig().k == 1
    for bad, match in (
        (dict(k=0), "k must be"),
        (dict(use_directions=False, use_bias=False), "at least one"),
        (dict(init="lost_component", use_bias=False), "use_bias"),
    ):
        with pytest.raises(ConfigError, match=match):
            CompensationConfig(**bad)
