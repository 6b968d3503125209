"""PEFT-style merge invariants on tiny random models of every supported layout (fp32).

Gemma 3 (sliding-window and global layers, 4 query heads over 1 key/value head, q/k norms, pre- and
post-norms) is built here: its export route is the same class with ``attention_bias=True``.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lcc_lens.compensation import Compensation
from lcc_lens.errors import CompensationFileError, ExportError, LccError
from lcc_lens.export import export_checkpoint, merge, output_projections, unmerge
from lcc_lens.models import HeadGeometry, load_bridge, load_causal_lm
from lcc_lens.tiny import save_tiny_checkpoint

LAYOUTS = ["llama", "qwen2", "qwen3", "mistral", "gpt2", "gemma3"]
HEADS = [(0, 0), (0, 3), (1, 2), (2, 1)]


def _comp(g: HeadGeometry, seed: int = 0) -> Compensation:
    gen = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(g.n_layers, g.n_heads, g.d_head, g.d_head, generator=gen))[0]
    comp = Compensation(g, HEADS, v)
    with torch.no_grad():
        comp.beta.copy_(0.5 * torch.randn(comp.beta.shape, generator=gen))
        comp.bias.copy_(0.5 * torch.randn(comp.bias.shape, generator=gen))
    return comp


def _tokens():
    return torch.randint(0, 512, (3, 12), generator=torch.Generator().manual_seed(5))


def _save_gemma3_pair(root):
    """The tiny Gemma 3 layout (lcc_lens.tiny) and its 50 % per-row magnitude prune."""
    dense = save_tiny_checkpoint(root / "gemma3-dense", "gemma3", seed=1)
    model, tok = load_causal_lm(dense)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "layers" in name:
                idx = p.abs().argsort(dim=1)[:, : p.shape[1] // 2]
                p.scatter_(1, idx, 0.0)
    model.save_pretrained(root / "gemma3-pruned")
    tok.save_pretrained(root / "gemma3-pruned")
    return dense, root / "gemma3-pruned"


@pytest.fixture(scope="module")
def dirs(tiny_dirs, tmp_path_factory):
    """tiny_dirs plus the Gemma 3 layout."""
    return {**tiny_dirs, "gemma3": _save_gemma3_pair(tmp_path_factory.mktemp("gemma3"))}


def _reload(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hooked_equals_exported_and_sparsity_kept(layout, dirs, tmp_path):
    _, pruned_dir = dirs[layout]
    bridge, _ = load_bridge(pruned_dir)
    comp = _comp(HeadGeometry.of(bridge))
    x = _tokens()
    with torch.no_grad(), comp.attach(bridge):
        hooked = bridge(x, return_type="logits")
    out = export_checkpoint(pruned_dir, comp, tmp_path / "export")
    exported = _reload(out)  # plain transformers, no lcc_lens code
    with torch.no_grad():
        merged_logits = exported(x).logits
    assert (hooked - merged_logits).abs().max().item() <= 1e-4
    # every weight of the pruned model is unchanged (zero pattern included); only biases are added
    pruned, _ = load_causal_lm(pruned_dir)
    src = pruned.state_dict()
    dst = exported.state_dict()
    out_bias = {k for k in dst if k.endswith(("o_proj.bias", "attn.c_proj.bias"))}
    assert len(out_bias) == 3
    for name, w in src.items():
        if name not in out_bias:
            assert torch.equal(dst[name], w), name
    n_zero = sum(
        int((w == 0).sum()) for n, w in src.items() if w.dim() == 2 and "layers" in n or ".h." in n
    )
    assert n_zero > 0  # the pruned zeros are all still there (checked by equality above)
    added = set(dst) - set(src)
    if layout == "gpt2":
        assert not added  # native route: the existing c_proj bias absorbs the offsets
    else:
        assert added and all(k.endswith("_proj.bias") for k in added)
    for name in added:
        if not name.endswith("o_proj.bias"):
            assert torch.equal(dst[name], torch.zeros_like(dst[name])), name
    assert (out / "compensation.safetensors").is_file()
    assert torch.equal(
        load_file(str(out / "compensation.safetensors"))["z_offsets"], comp.z_offsets()
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_compensation_export_equals_pruned_and_unmerge_restores(layout, dirs):
    _, pruned_dir = dirs[layout]
    model, _ = load_causal_lm(pruned_dir)
    x = _tokens()
    with torch.no_grad():
        base = model(x).logits
        g = HeadGeometry.of(load_bridge(pruned_dir)[0])
        zero = torch.zeros(g.n_layers, g.n_heads, g.d_head)
        merged, _ = merge(model, zero)
        assert torch.equal(merged(x).logits, base)
        offsets = _comp(g).z_offsets()
        merged, route = merge(model, offsets)
        before = [p.module.bias.clone() for p in output_projections(merged)]
        assert (merged(x).logits - base).abs().max() > 1e-3
        unmerge(merged, offsets)
        restored = merged(x).logits
    torch.testing.assert_close(restored, base, atol=1e-5, rtol=1e-5)
    if route != "native":  # biases added from zero come back to exactly zero
        for p in output_projections(merged):
            assert p.module.bias.abs().max() < 1e-6
    assert before


def test_merge_refuses_nan_and_wrong_shape(tiny_dirs):
    model, _ = load_causal_lm(tiny_dirs["llama"][1])
    bad = torch.zeros(3, 4, 16)
    bad[1, 1, 1] = float("nan")
    with pytest.raises(CompensationFileError, match="NaN or inf"):
        merge(model, bad)
    with pytest.raises(ExportError, match="does not fit"):
        merge(model, torch.zeros(4, 3, 16))


def test_sliding_window_mistral_is_refused_clearly(tmp_path):
    from transformers import AutoConfig

    src = save_tiny_checkpoint(tmp_path / "m", "mistral")
    cfg = AutoConfig.from_pretrained(src)
    cfg.sliding_window = 8
    cfg.save_pretrained(src)
    model, _ = load_causal_lm(src)
    with pytest.raises(ExportError, match="sliding window"):
        merge(model, torch.zeros(3, 4, 16))


def test_output_under_a_file_is_a_clear_error_and_nothing_written(tiny_dirs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    comp = _comp(HeadGeometry.of(load_bridge(tiny_dirs["llama"][1])[0]))
    with pytest.raises(LccError, match="cannot create output directory"):
        export_checkpoint(tiny_dirs["llama"][1], comp, blocker / "out")
    # a failure mid-export (NaN) leaves no directory and no temporary files behind
    with torch.no_grad():
        comp.bias[0, 0] = float("nan")
    with pytest.raises(CompensationFileError):
        export_checkpoint(tiny_dirs["llama"][1], comp, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_gemma3_exports_as_itself_with_the_window_and_norms_kept(dirs, tmp_path):
    """Gemma 3 keeps its class: attention_bias=True adds q/k/v/o biases (q/k/v zero) and nothing else."""
    _, pruned_dir = dirs["gemma3"]
    comp = _comp(HeadGeometry.of(load_bridge(pruned_dir)[0]))
    out = export_checkpoint(pruned_dir, comp, tmp_path / "export")
    info = json.loads((out / "lcc_export.json").read_text())
    assert info["route"] == "same-class"
    assert info["exported_architecture"] == "Gemma3ForCausalLM"
    exported = _reload(out)
    cfg = exported.config
    assert cfg.attention_bias is True
    assert cfg.sliding_window == 4
    assert cfg.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    biases = {k for k in exported.state_dict() if k.endswith(".bias")}
    expected = {f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(3) for p in "qkvo"}
    assert biases == expected


@pytest.mark.parametrize("sharded", [False, True])
def test_shard_export_equals_the_in_memory_export(sharded, dirs, tmp_path):
    """The shard-level export copies the weights byte for byte and adds exactly the in-memory biases."""
    import hashlib

    _, pruned_dir = dirs["qwen2"]  # as-llama route: q/k/v biases already present are kept
    source = pruned_dir
    if sharded:  # an indexed, multi-file checkpoint as large models ship
        model, tok = load_causal_lm(pruned_dir)
        source = tmp_path / "sharded"
        model.save_pretrained(source, max_shard_size="40KB")
        tok.save_pretrained(source)
        assert (source / "model.safetensors.index.json").is_file()
    comp = _comp(HeadGeometry.of(load_bridge(source)[0]))
    streamed = export_checkpoint(source, comp, tmp_path / "streamed")
    model, tok = load_causal_lm(source)
    in_memory = export_checkpoint(source, comp, tmp_path / "memory", model=model, tokenizer=tok)
    info = [json.loads((d / "lcc_export.json").read_text()) for d in (streamed, in_memory)]
    assert [i["writer"] for i in info] == ["shards", "in-memory"]
    assert info[0]["route"] == info[1]["route"] == "as-llama"
    a, b = _reload(streamed), _reload(in_memory)
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], atol=1e-7, rtol=0, msg=name)
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(a(x).logits, b(x).logits, atol=1e-5, rtol=0)
    index = json.loads((streamed / "model.safetensors.index.json").read_text())["weight_map"]
    src_files = sorted(p.name for p in source.glob("*.safetensors"))
    copied = sorted(set(index.values()) - {"lcc-biases.safetensors"})
    digest = [
        sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in d)
        for d in (
            [source / f for f in src_files],
            [streamed / f for f in copied],
        )
    ]
    assert digest[0] == digest[1]  # every weight shard is a byte-identical copy


def test_shard_export_never_loads_the_model(dirs, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    _, pruned_dir = dirs["llama"]
    comp = _comp(HeadGeometry.of(load_bridge(pruned_dir)[0]))

    def refuse(*args, **kwargs):
        raise AssertionError("the shard export must not load the weights")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    out = export_checkpoint(pruned_dir, comp, tmp_path / "export")
    monkeypatch.undo()
    assert json.loads((out / "lcc_export.json").read_text())["writer"] == "shards"
