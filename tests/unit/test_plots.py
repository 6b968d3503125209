"""Every plotting function on tiny models: traces, shapes, hover names L{l}H{h}, axis titles, saving."""

from __future__ import annotations

import logging

import plotly.graph_objects as go
import pytest
import torch

from lcc_lens import plots
from lcc_lens.compensation import Compensation
from lcc_lens.components import lost_components
from lcc_lens.diff import DiffConfig, head_diffs
from lcc_lens.errors import ConfigError
from lcc_lens.lens import AnswerPair, logit_gain, logit_lens
from lcc_lens.models import ModelPair

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "To be, or not to be: that is the question.",
    "Exceptions are raised with the raise statement.",
    "A short one.",
]
HEADS = [(0, 1), (1, 2), (2, 3)]


@pytest.fixture(scope="module")
def setup(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    diff = head_diffs(pair, PROMPTS, DiffConfig(positions="all"))
    lc = lost_components(diff.samples, k=2)
    comp = Compensation(pair.geometry, HEADS, lc.directions)
    with torch.no_grad():
        comp.bias.copy_(diff.mean_dz[comp.heads[:, 0], comp.heads[:, 1]])
        comp.beta.normal_(generator=torch.Generator().manual_seed(0))
    return pair, diff, lc, comp


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def _check_head_heatmap(hm: go.Heatmap, g) -> None:
    z = hm.z
    assert len(z) == g.n_layers and all(len(row) == g.n_heads for row in z)
    assert hm.text[2][3] == "L2H3" and hm.text[0][1] == "L0H1"
    assert "%{text}" in hm.hovertemplate
    assert hm.colorbar.title.text  # labelled colour scale


def _axis_titles(fig: go.Figure) -> set[str]:
    out = set()
    for key in fig.layout:
        if key.startswith(("xaxis", "yaxis")) and fig.layout[key].title.text:
            out.add(fig.layout[key].title.text)
    return out


def test_lost_heatmaps(setup):
    pair, diff, lc, _ = setup
    g = pair.geometry
    fig = plots.lost_heatmaps(diff, lc, selected=HEADS)
    hms = _heatmaps(fig)
    assert len(hms) == 3
    for hm in hms:
        _check_head_heatmap(hm, g)
    torch.testing.assert_close(torch.tensor(hms[0].z), lc.norms)
    torch.testing.assert_close(torch.tensor(hms[1].z), diff.rel_dz_norm)
    torch.testing.assert_close(torch.tensor(hms[2].z), diff.cosine)
    markers = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(markers) == 3 and list(markers[0].text) == ["L0H1", "L1H2", "L2H3"]
    assert {"head", "layer"} <= _axis_titles(fig)
    # without components the first panel is ||mean dz||
    fig2 = plots.lost_heatmaps(diff)
    torch.testing.assert_close(torch.tensor(_heatmaps(fig2)[0].z), diff.mean_dz.norm(dim=-1))


def test_head_heatmap_rejects_wrong_shape(setup):
    pair = setup[0]
    with pytest.raises(ConfigError, match="n_layers, n_heads"):
        plots.head_heatmap(torch.zeros(2, 2), pair.geometry, title="t", label="x")


def test_spectra_figure(setup):
    pair, _, lc, _ = setup
    g = pair.geometry
    fig = plots.spectra_figure(lc, g, max_heads=4, leading_k=2)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(lines) == 4
    assert lines[0].y[0] == pytest.approx(1.0)  # normalised by sigma_1
    assert all(a >= b - 1e-9 for a, b in zip(lines[0].y, lines[0].y[1:], strict=False))
    assert lines[0].name.startswith("L")
    (hm,) = _heatmaps(fig)
    _check_head_heatmap(hm, g)
    torch.testing.assert_close(torch.tensor(hm.z), lc.explained(2))
    assert "singular value index i" in _axis_titles(fig)
    fig_sel = plots.spectra_figure(lc, g, heads=[(1, 1)])
    assert [t.name for t in fig_sel.data if isinstance(t, go.Scatter)] == ["L1H1"]


def test_component_rank_effect():
    fig = plots.component_rank_effect(
        {"selected heads": {1: 10.0, 2: 11.0, 5: 12.0}},
        metric_name="held-out perplexity",
        baselines={"pruned": 13.0, "dense": 9.0},
    )
    assert len(fig.data) == 1 and list(fig.data[0].x) == [1, 2, 5]
    assert len(fig.layout.shapes) == 2
    assert fig.layout.yaxis.title.text == "held-out perplexity"
    with pytest.raises(ConfigError):
        plots.component_rank_effect({}, metric_name="x")


def test_selection_figure(setup):
    pair = setup[0]
    g = pair.geometry
    scores = torch.linspace(0.5, 0.9, g.n_total_heads).reshape(g.n_layers, g.n_heads)
    fig = plots.selection_figure(scores, g, HEADS, method="probe", top_n=5)
    (hm,) = _heatmaps(fig)
    _check_head_heatmap(hm, g)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 1 and list(bars[0].x) == ["L2H3", "L2H2", "L2H1", "L2H0", "L1H3"]
    assert bars[0].marker.color[0] == "crimson" and bars[0].marker.color[1] == "steelblue"
    assert "held-out probe accuracy" in _axis_titles(fig)


def test_restoration_figures(setup):
    pair, _, _, comp = setup
    g = pair.geometry
    st = plots.restoration_stats(pair, comp, PROMPTS[:3], DiffConfig(positions="all"))
    fig = plots.restoration_heatmap(st)
    hms = _heatmaps(fig)
    assert len(hms) == 2
    for hm in hms:
        _check_head_heatmap(hm, g)
    torch.testing.assert_close(torch.tensor(hms[0].z), st.rel_residual)
    assert hms[1].zmin == -1 and hms[1].zmax == 1
    sel = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert list(sel[0].text) == ["L0H1", "L1H2", "L2H3"]
    same = plots.restoration_heatmap(st, g, [(1, 2)])  # the form lcc_lens.fit calls
    assert list([t for t in same.data if isinstance(t, go.Scatter)][0].text) == ["L1H2"]
    bar = plots.restoration_ranking(st, top_n=6)
    (b,) = bar.data
    assert len(b.x) == 6 and all(x.startswith("L") and "H" in x for x in b.x)
    assert list(b.y) == sorted(b.y, reverse=True)
    assert bar.layout.yaxis.title.text.endswith("(fraction)")


def test_training_curves_and_comparison():
    history = [{"step": i, "loss": 3.0 - 0.1 * i, "lr": 1e-3} for i in range(1, 6)]
    history += [{"step": 5, "epoch": 1, "val_loss": 2.7}]
    fig = plots.training_curves(history)
    names = [t.name for t in fig.data]
    assert names == ["train loss", "validation loss", "learning rate"]
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5]
    assert fig.layout.yaxis.title.text == "loss (nats per token)"
    assert fig.layout.xaxis.title.text == "optimiser step"
    with pytest.raises(ConfigError):
        plots.training_curves([])
    bar = plots.comparison_bar(
        {"ppl_restored": 11.0, "ppl_dense": 9.0, "ppl_pruned": 14.0}, "perplexity"
    )
    assert list(bar.data[0].x) == ["dense", "pruned", "restored"]
    assert list(bar.data[0].y) == [9.0, 14.0, 11.0]
    assert bar.layout.yaxis.title.text == "perplexity"


def test_logit_lens_and_gain_figures(setup):
    pair, _, _, comp = setup
    lens = logit_lens(pair.pruned, comp, pair.tokenizer, top_k=4)
    fig = plots.logit_lens_figure(lens)
    hms = _heatmaps(fig)
    assert len(hms) == 2
    for hm in hms:
        assert len(hm.z) == len(HEADS) and len(hm.z[0]) == 4
        assert set(hm.y) == {"L0H1", "L1H2", "L2H3"}
        assert hm.zmid == 0
    assert list(hms[1].text[0]) == list(lens.heads[0].promoted)
    assert max(hms[1].z[0]) > 0 > min(hms[0].z[0])
    gain = logit_gain(
        pair,
        comp,
        [
            AnswerPair("The quick brown fox", " jumps", " sleeps"),
            AnswerPair("To be", " or", " and"),
        ],
    )
    fig2 = plots.logit_gain_figure(gain, selected=HEADS, top_n=3)
    (hm,) = _heatmaps(fig2)
    _check_head_heatmap(hm, pair.geometry)
    (bar,) = [t for t in fig2.data if isinstance(t, go.Bar)]
    assert set(bar.x) == {"L0H1", "L1H2", "L2H3"}  # unselected heads have exactly zero gain
    assert len(bar.x) == 3


def test_save_figure_html_offline_and_png_optional(tmp_path, caplog):
    fig = plots.comparison_bar({"dense": 1.0, "pruned": 2.0, "restored": 1.5})
    paths = plots.save_figure(fig, tmp_path / "sub" / "cmp", png=False)
    assert paths == [tmp_path / "sub" / "cmp.html"]
    html = paths[0].read_text()
    assert "<script" in html and len(html) > 1_000_000  # plotly.js embedded: opens offline
    assert "cdn.plot.ly" not in html.split("</script>")[-1]
    with caplog.at_level(logging.WARNING):
        paths = plots.save_figure(fig, tmp_path / "cmp2", png=True)
    if plots.png_available() and len(paths) == 2:
        assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert paths == [tmp_path / "cmp2.html"]
        assert "PNG" in caplog.text


def test_comparison_bar_ranges():
    zoomed = plots.comparison_bar(
        {"dense": 10.0, "pruned": 12.0, "restored": 11.0}, zero_based=False
    )
    lo, hi = zoomed.layout.yaxis.range
    assert 9.0 < lo < 10.0 and 12.0 < hi < 13.0
    signed = plots.comparison_bar({"a": -0.2, "b": 0.5}, "gap closed (fraction)")
    lo, hi = signed.layout.yaxis.range
    assert lo < -0.2 and hi > 0.5
    assert list(signed.data[0].x) == ["a", "b"] and signed.data[0].marker.color == ("grey", "grey")


def test_spectra_skips_numerically_zero_singular_values(setup):
    from lcc_lens.components import LostComponents

    g = setup[0].geometry
    s = torch.zeros(g.n_layers, g.n_heads, g.d_head)
    s[..., :5] = torch.tensor([4.0, 2.0, 1.0, 0.5, 1e-12])
    lc = LostComponents(
        torch.ones(g.n_layers, g.n_heads, g.d_head),
        torch.zeros(g.n_layers, g.n_heads, g.d_head, g.d_head),
        s,
        1,
        5,
    )
    fig = plots.spectra_figure(lc, g, heads=[(0, 0)])
    (line,) = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert list(line.y) == [1.0, 0.5, 0.25, 0.125]
