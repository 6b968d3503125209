"""Wanda, SparseGPT and magnitude on tiny random models, checked against independent re-derivations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lcc_lens.errors import ConfigError
from lcc_lens.pruning import PruneConfig, calibration_tokens, prune_model, sparsegpt_prune
from lcc_lens.tiny import tiny_model

N_SAMPLES, SEQ_LEN, BATCH = 8, 64, 4


def _cfg(**kw) -> PruneConfig:
    base = dict(n_samples=N_SAMPLES, seq_len=SEQ_LEN, batch_size=BATCH)
    base.update(kw)
    return PruneConfig(**base)


def _capture_inputs(model, tokens, names):
    """Inputs of the named linear modules when the model runs on ``tokens`` in the driver's batches."""
    store = {n: [] for n in names}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(
            lambda m, i, o, n=n: store[n].append(i[0].reshape(-1, i[0].shape[-1]))
        )
        for n in names
    ]
    with torch.no_grad():
        for i in range(0, tokens.shape[0], BATCH):
            ids = tokens[i : i + BATCH]
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    for h in handles:
        h.remove()
    return {n: torch.cat(v) for n, v in store.items()}


def _linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]


def test_wanda_mask_equals_per_row_topk_of_weight_times_input_norm(tok, texts):
    """Re-derive every q/k/v mask from the pruned model's own activations (inputs of pruned layers before)."""
    model = tiny_model("llama", seed=3)
    dense = copy.deepcopy(model)
    prune_model(model, tok, _cfg(method="wanda", sparsity=0.5), texts, show_progress=False)
    tokens = calibration_tokens(tok, texts, N_SAMPLES, SEQ_LEN, seed=0)
    names = [n for n in _linear_names(model) if n.endswith(("q_proj", "k_proj", "v_proj"))]
    xs = _capture_inputs(model, tokens, names)
    dense_w = dict(dense.named_parameters())
    pruned_w = dict(model.named_parameters())
    for name in names:
        w = dense_w[f"{name}.weight"]
        score = w.abs() * xs[name].norm(dim=0)[None, :]
        k = w.shape[1] // 2
        expected = torch.zeros_like(w, dtype=torch.bool)
        expected.scatter_(1, score.argsort(dim=1)[:, :k], True)
        got = pruned_w[f"{name}.weight"] == 0
        assert torch.equal(got, expected), name
        # kept weights are untouched
        assert torch.equal(pruned_w[f"{name}.weight"][~got], w[~got])


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_has_exactly_n_zeros_per_group(tok, texts, method, pattern):
    model = tiny_model("llama", seed=4)
    n, m = map(int, pattern.split(":"))
    report = prune_model(
        model, tok, _cfg(method=method, sparsity=None, pattern=pattern), texts, show_progress=False
    )
    for name in _linear_names(model):
        w = dict(model.named_modules())[name].weight
        groups = (w == 0).view(w.shape[0], -1, m).sum(-1)
        assert (groups == n).all(), name
    assert all(abs(s - n / m) < 1e-12 for s in report.layer_sparsity.values())


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_measured_sparsity_equals_requested_per_layer(tok, texts, method, sparsity):
    model = tiny_model("qwen3", seed=5)
    report = prune_model(
        model, tok, _cfg(method=method, sparsity=sparsity), texts, show_progress=False
    )
    assert len(report.modules) == 3 * 7
    modules = dict(model.named_modules())
    for rec in report.modules:
        w = modules[rec.name].weight
        assert rec.n_zeros == int((w == 0).sum())  # the report counts the real weights
        if (
            method == "wanda"
        ):  # Wanda's comparison group is the row: round(in * s) zeros in every row
            rows, cols = w.shape
            assert rec.n_zeros == rows * round(cols * sparsity), rec.name
            assert abs(rec.sparsity - sparsity) <= 0.5 / cols
        else:  # magnitude and SparseGPT hit the layer-wise count exactly
            assert rec.n_zeros == round(w.numel() * sparsity), rec.name
    assert report.total_sparsity == pytest.approx(sparsity, abs=0.5 / 64)


def _recon_error(w_dense, w_pruned, x):
    return float(torch.linalg.norm(x @ w_dense.detach().T - x @ w_pruned.detach().T))


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude_on_a_layer(nm):
    from lcc_lens.pruning import magnitude_mask, wanda_mask

    g = torch.Generator().manual_seed(0)
    d_in, d_out, n_tok = 64, 48, 4000
    mix = torch.randn(d_in, d_in, generator=g) / d_in**0.5
    scales = torch.exp(torch.randn(d_in, generator=g))  # heterogeneous feature scales, as in LLMs
    x = (
        torch.randn(n_tok, d_in, generator=g) @ mix + 0.1 * torch.randn(n_tok, d_in, generator=g)
    ) * scales
    w = torch.randn(d_out, d_in, generator=g)
    h = x.T @ x / n_tok
    w_sgpt, mask = sparsegpt_prune(w, h, 0.5, nm, blocksize=16, percdamp=0.01)
    assert torch.equal(w_sgpt == 0, mask)
    w_wanda = w.masked_fill(wanda_mask(w, x.norm(dim=0), 0.5, nm), 0.0)
    w_mag = w.masked_fill(magnitude_mask(w, 0.5, nm), 0.0)
    e_s, e_w, e_m = (_recon_error(w, v, x) for v in (w_sgpt, w_wanda, w_mag))
    assert e_s < e_w < e_m
    assert int(mask.sum()) == w.numel() // 2


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_sparsegpt_beats_wanda_and_magnitude_on_a_model_layer(tok, texts, pattern):
    """Layer 0's inputs do not depend on pruning, so the three runs are compared on the same X."""
    dense = tiny_model("llama", seed=6)
    tokens = calibration_tokens(tok, texts, N_SAMPLES, SEQ_LEN, seed=0)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj"]
    xs = _capture_inputs(dense, tokens, names)
    sparsity = None if pattern else 0.5
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(dense)
        prune_model(
            model,
            tok,
            _cfg(method=method, sparsity=sparsity, pattern=pattern),
            texts,
            show_progress=False,
        )
        mods = dict(model.named_modules())
        dmods = dict(dense.named_modules())
        errors[method] = [_recon_error(dmods[n].weight, mods[n].weight, xs[n]) for n in names]
    for i in range(len(names)):
        assert errors["sparsegpt"][i] < min(errors["wanda"][i], errors["magnitude"][i]), errors


def test_gpt2_conv1d_is_pruned_in_its_transposed_layout(tok, texts):
    model = tiny_model("gpt2", seed=7)
    report = prune_model(
        model, tok, _cfg(method="wanda", sparsity=None, pattern="2:4"), texts, show_progress=False
    )
    assert {r.name.split(".")[-1] for r in report.modules} == {"c_attn", "c_proj", "c_fc"}
    for rec in report.modules:
        w = dict(model.named_modules())[rec.name].weight  # Conv1D: [in, out]
        assert ((w.T == 0).view(w.shape[1], -1, 4).sum(-1) == 2).all(), rec.name


def test_layer_pattern_restricts_and_same_seed_is_deterministic(tok, texts):
    cfg = _cfg(method="sparsegpt", sparsity=0.5, include=r"mlp\.(up|down)_proj")
    a, b = tiny_model("llama", seed=8), tiny_model("llama", seed=8)
    ref = tiny_model("llama", seed=8)
    rep = prune_model(a, tok, cfg, texts, show_progress=False)
    prune_model(b, tok, cfg, texts, show_progress=False)
    assert {r.name.split(".")[-1] for r in rep.modules} == {"up_proj", "down_proj"}
    pa, pb, pr = (dict(m.named_parameters()) for m in (a, b, ref))
    for name, p in pa.items():
        assert torch.equal(p, pb[name]), name
        if "up_proj" not in name and "down_proj" not in name:
            assert torch.equal(p, pr[name]), name


def test_pattern_matching_nothing_is_a_clear_error_and_leaves_model_untouched(tok, texts):
    model = tiny_model("llama", seed=9)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="matches no linear layer"):
        prune_model(
            model, tok, _cfg(method="wanda", include="no_such_module"), texts, show_progress=False
        )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_model_without_decoder_layers_is_a_clear_error(tok):
    class NotAnLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

    with pytest.raises(ConfigError, match="cannot find the decoder layers"):
        prune_model(NotAnLM(), tok, _cfg(method="magnitude"), show_progress=False)  # type: ignore[arg-type]


def test_calibration_tokens_shape_and_determinism(tok, texts):
    a = calibration_tokens(tok, texts, 5, 32, seed=1)
    b = calibration_tokens(tok, texts, 5, 32, seed=1)
    c = calibration_tokens(tok, texts, 5, 32, seed=2)
    assert a.shape == (5, 32) and torch.equal(a, b) and not torch.equal(a, c)
