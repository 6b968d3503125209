"""Per-head probe statistics on synthetic pair features: signal, null calibration, c, ties."""

from __future__ import annotations

import pytest
import torch

from lcc_lens.errors import ConfigError
from lcc_lens.probing import ProbeConfig, ProbeFeatures, rank_order, score_probes

L, H, D, N = 3, 4, 8, 200


def features(signal_head=(1, 2), strength=0.6, seed=0) -> ProbeFeatures:
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(N, L, H, D, generator=gen)
    if signal_head is not None:
        delta[:, signal_head[0], signal_head[1], 0] += strength  # r+ reads higher along one axis
    return ProbeFeatures(delta)


def test_a_head_with_signal_ranks_first_and_beats_its_null():
    cfg = ProbeConfig(n_splits=3, n_permutations=50)
    r = score_probes(features(), None, cfg)
    assert r.score.shape == (L, H)
    assert rank_order(r.score)[0] == 1 * H + 2
    assert r.accuracy[1, 2] > 0.65 and r.score_z[1, 2] > 4 and r.score_p[1, 2] <= 1 / 51 + 1e-9
    others = torch.ones(L, H, dtype=torch.bool)
    others[1, 2] = False
    assert (r.accuracy[others] - 0.5).abs().max() < 0.12
    assert (r.score_null_mean - 0.5).abs().max() < 0.05
    assert r.stability(1)[1, 2] == 1.0 and r.split_jaccard(1) == 1.0


def test_null_is_calibrated_without_signal():
    r = score_probes(features(signal_head=None), None, ProbeConfig(n_splits=2, n_permutations=40))
    # p-values under the null: few small ones (12 heads), none extreme
    assert int((r.score_p < 0.05).sum()) <= 3
    assert r.score_z.abs().max() < 4


def test_paper_mode_ignores_the_lost_component_aligned_mode_uses_it():
    f = features()
    comp = torch.randn(L, H, D, generator=torch.Generator().manual_seed(3))
    a = score_probes(f, None, ProbeConfig(n_splits=2, n_permutations=10))
    b = score_probes(f, comp, ProbeConfig(n_splits=2, n_permutations=10))
    assert torch.equal(a.score, b.score) and torch.equal(a.score_z, b.score_z)
    zero = comp.clone()
    zero[0, 0] = 0.0
    al = score_probes(f, zero, ProbeConfig(mode="aligned", n_splits=2, n_permutations=10))
    assert al.score[0, 0] == 0.0 and (al.score.flatten()[1:] > 0).all()
    al2 = score_probes(f, 2 * zero, ProbeConfig(mode="aligned", n_splits=2, n_permutations=10))
    assert torch.allclose(al2.score, 2 * al.score, rtol=1e-5)
    assert torch.equal(al.accuracy, a.accuracy)  # accuracy reported in either mode
    with pytest.raises(ConfigError, match="lost components"):
        score_probes(f, None, ProbeConfig(mode="aligned"))


def test_deterministic_and_ties_are_not_broken_by_noise():
    f = features()
    a = score_probes(f, None, ProbeConfig(n_splits=2, n_permutations=10, seed=4))
    b = score_probes(f, None, ProbeConfig(n_splits=2, n_permutations=10, seed=4))
    assert torch.equal(a.score, b.score) and torch.equal(a.score_p, b.score_p)
    s = torch.tensor([[0.5, 0.7 + 1e-9, 0.7], [0.7 - 1e-9, 0.1, 0.9]])
    assert rank_order(s) == [5, 1, 2, 3, 0, 4]  # the three 0.7s tie: index order


def test_config_validation():
    for bad in (
        {"mode": "best"},
        {"n_splits": 0},
        {"train_fraction": 1.0},
        {"n_permutations": 0},
        {"ridge": float("nan")},
    ):
        with pytest.raises(ConfigError):
            ProbeConfig(**bad)


def test_probe_null_figure():
    import plotly.graph_objects as go

    from lcc_lens.models import HeadGeometry
    from lcc_lens.plots.probe import probe_null_figure

    g = HeadGeometry("LlamaForCausalLM", L, H, H, D, 32, 100)
    r = score_probes(features(), None, ProbeConfig(n_splits=2, n_permutations=10))
    fig = probe_null_figure(r.score, r.score_null_mean, r.score_null_sd, g, [(1, 2)], top_n=5)
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 2 and heat[0].text[1][2] == "L1H2"
    z = torch.tensor(heat[1].z)
    assert z.argmax().item() == 1 * H + 2
    scatter = [t for t in fig.data if isinstance(t, go.Scatter) and t.name != "selected heads"]
    assert scatter[-1].x[0] == "L1H2" and list(scatter[-1].marker.color[:1]) == ["crimson"]
    assert len(scatter[-1].x) == 5
    with pytest.raises(ConfigError, match="shape"):
        probe_null_figure(r.score[:2], r.score_null_mean, r.score_null_sd, g)
