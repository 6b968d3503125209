from __future__ import annotations

import pytest

from lcc_lens.errors import IncompatibleModelsError, LccError
from lcc_lens.models import HeadGeometry, ModelPair, load_bridge, resolve_model_source
from lcc_lens.tiny import save_tiny_checkpoint


def test_geometry_indexing_uses_heads_per_layer_not_layer_count():
    g = HeadGeometry("X", n_layers=3, n_heads=5, n_kv_heads=5, d_head=8, d_model=40, d_vocab=10)
    seen = {g.flat_index(layer, head) for layer in range(3) for head in range(5)}
    assert seen == set(range(15))
    assert g.flat_index(2, 0) == 10  # layer * n_heads; layer * n_layers would give 6
    assert all(g.unflatten(g.flat_index(lay, h)) == (lay, h) for lay in range(3) for h in range(5))
    with pytest.raises(LccError, match="out of range"):
        g.flat_index(0, 5)
    with pytest.raises(LccError, match="out of range"):
        g.flat_index(3, 0)


def test_gqa_geometry_reports_query_heads(llama_pair_dirs):
    bridge, _ = load_bridge(llama_pair_dirs[0])
    g = HeadGeometry.of(bridge)
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head) == (3, 4, 2, 16)


def test_pair_rejects_mismatched_models(tmp_path, llama_pair_dirs):
    other = save_tiny_checkpoint(tmp_path / "other", "llama", n_heads=2, n_kv_heads=1)
    with pytest.raises(IncompatibleModelsError, match="n_heads: dense=4 pruned=2"):
        ModelPair.load(llama_pair_dirs[0], other)
    qwen = save_tiny_checkpoint(tmp_path / "qwen", "qwen2")
    with pytest.raises(IncompatibleModelsError, match="architecture"):
        ModelPair.load(llama_pair_dirs[0], qwen)


def test_pair_accepts_dense_and_its_pruned_copy(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    assert pair.geometry.n_total_heads == 12


def test_resolve_source_errors(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_text("x")
    with pytest.raises(LccError, match="is a file"):
        resolve_model_source(f)
    with pytest.raises(LccError, match="no config.json"):
        resolve_model_source(tmp_path)
    with pytest.raises(LccError, match="does not exist"):
        resolve_model_source(tmp_path / "missing")


def test_tiny_gemma3_layout_has_sliding_and_global_layers():
    from lcc_lens.tiny import tiny_model

    model = tiny_model("gemma3")
    cfg = model.config
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert cfg.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 1, 16)
    norm = model.model.layers[0].input_layernorm.weight
    assert norm.abs().max() > 0.1  # (1 + w) norms get non-trivial weights
