"""Per-head figures of what pruning lost, the lost-component spectra, and head selection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from lcc_lens.components import LostComponents
from lcc_lens.diff import HeadDiff
from lcc_lens.errors import ConfigError
from lcc_lens.models import HeadGeometry
from lcc_lens.plots._common import FONT, check_map, head_axes, heatmap_trace, ranked, selected_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go


def head_heatmap(
    values: Tensor,
    geometry: HeadGeometry,
    *,
    title: str,
    label: str,
    selected: Sequence[tuple[int, int]] = (),
    colorscale: str = "Viridis",
    zmid: float | None = None,
) -> go.Figure:
    """Any [n_layers, n_heads] quantity as a heatmap; ``label`` names the colour scale and its unit."""
    import plotly.graph_objects as go

    fig = go.Figure(heatmap_trace(values, geometry, label=label, colorscale=colorscale, zmid=zmid))
    if selected:
        fig.add_trace(selected_trace(selected, geometry))
    head_axes(fig, geometry)
    fig.update_layout(
        title=title,
        font=FONT,
        width=max(520, 40 * geometry.n_heads + 300),
        height=max(420, 22 * geometry.n_layers + 160),
        legend={"orientation": "h", "y": -0.12},
    )
    return fig


def lost_heatmaps(
    diff: HeadDiff,
    components: LostComponents | None = None,
    selected: Sequence[tuple[int, int]] = (),
) -> go.Figure:
    """Three layer x head panels of what pruning lost: ||lost component|| (or ||mean dz|| without
    components), ||dz|| / ||z_dense||, and the dense/pruned cosine."""
    from plotly.subplots import make_subplots

    g = diff.geometry
    if components is not None:
        first, first_title = components.norms, f"lost component ||c|| (rank {components.k})"
    else:
        first, first_title = diff.mean_dz.norm(dim=-1), "||mean dz||"
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.11,
        subplot_titles=(first_title, "||dz|| / ||z_dense||", "cos(z_dense, z_pruned)"),
    )
    panels = [
        (first, "L2 norm (hook_z units)", "Viridis", None, None, None),
        (diff.rel_dz_norm, "ratio of mean norms", "Viridis", None, 0.0, None),
        (diff.cosine, "cosine", "RdBu_r", 0.0 if float(diff.cosine.min()) < 0 else None, None, 1.0),
    ]
    xs = (0.255, 0.63, 1.0)
    for col, (vals, label, scale, zmid, zmin, zmax) in enumerate(panels, start=1):
        fig.add_trace(
            heatmap_trace(
                vals,
                g,
                label=label,
                colorscale=scale,
                zmid=zmid,
                zmin=zmin,
                zmax=zmax,
                colorbar_x=xs[col - 1],
            ),
            row=1,
            col=col,
        )
        if selected:
            fig.add_trace(selected_trace(selected, g, show_legend=col == 1), row=1, col=col)
        head_axes(fig, g, row=1, col=col)
    fig.update_layout(
        title=(
            f"What pruning lost per head ({diff.n_positions} positions, "
            f"positions={diff.config.positions!r})"
        ),
        font=FONT,
        width=1400,
        height=max(440, 22 * g.n_layers + 180),
        legend={"orientation": "h", "y": -0.1},
    )
    return fig


def spectra_figure(
    components: LostComponents,
    geometry: HeadGeometry,
    heads: Sequence[tuple[int, int]] | None = None,
    *,
    max_heads: int = 8,
    leading_k: int = 1,
) -> go.Figure:
    """Left: normalised singular-value spectra sigma_i / sigma_1 of dZ for some heads (default: the
    largest lost components). Right: per head, the share of ||dZ||_F^2 in the leading ``leading_k``
    directions; 1 - share is what the minor components hold (the paper's Finding 3)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = components.singular_values
    if tuple(s.shape[:2]) != (geometry.n_layers, geometry.n_heads):
        raise ConfigError("components do not match the geometry; pass the pair's HeadGeometry.")
    if heads is None:
        heads = [r[2] for r in ranked(components.norms, geometry, max_heads)]
    heads = list(heads)[:max_heads]
    # numerically-zero singular values (rank deficiency: N <= d_head, or the mean removed) are not drawn
    rank = int((s > s[..., :1] * 1e-6).sum(-1).max())
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.12,
        subplot_titles=(
            "singular values of dZ, sigma_i / sigma_1 (> 1e-6 shown)",
            f"energy share of the top {leading_k} direction(s)",
        ),
    )
    for layer, head in heads:
        sv = s[layer, head, :rank]
        norm = [v for v in (sv / sv[0].clamp_min(1e-30)).tolist() if v > 1e-6]
        name = geometry.head_name(layer, head)
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(norm) + 1)),
                y=norm,
                mode="lines+markers",
                marker={"size": 4},
                name=name,
                hovertemplate=name + "<br>i=%{x}<br>sigma_i/sigma_1=%{y:.3g}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    share = components.explained(leading_k)
    fig.add_trace(
        heatmap_trace(
            share, geometry, label="share of ||dZ||_F^2", zmin=0.0, zmax=1.0, colorbar_x=1.0
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="singular value index i", row=1, col=1)
    fig.update_yaxes(title_text="sigma_i / sigma_1 (log)", type="log", row=1, col=1)
    head_axes(fig, geometry, row=1, col=2)
    fig.update_layout(
        title=f"Spectra of the activation differences ({components.n_samples} samples per head)",
        font=FONT,
        width=1300,
        height=max(460, 22 * geometry.n_layers + 160),
        legend={"title": {"text": "head"}, "x": 0.49, "y": 1.0},
    )
    return fig


def component_rank_effect(
    effects: Mapping[str, Mapping[int, float]],
    *,
    metric_name: str,
    baselines: Mapping[str, float] | None = None,
) -> go.Figure:
    """Leading versus minor components: a metric measured after injecting only the i-th singular
    component (x: i) for one or more settings; dashed lines mark baselines (e.g. pruned, dense)."""
    import plotly.graph_objects as go

    if not effects:
        raise ConfigError("effects is empty: pass {setting: {component index: metric}}.")
    fig = go.Figure()
    for name, series in effects.items():
        xs = sorted(series)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[series[i] for i in xs],
                mode="lines+markers",
                name=name,
                hovertemplate=name + "<br>component %{x}<br>%{y:.4g}<extra></extra>",
            )
        )
    for label, value in (baselines or {}).items():
        fig.add_hline(y=value, line_dash="dash", annotation_text=label, line_color="grey")
    fig.update_layout(
        title=f"Injecting a single singular component of dZ: {metric_name}",
        xaxis_title="singular component index i (1 = leading)",
        yaxis_title=metric_name,
        font=FONT,
        width=850,
        height=450,
    )
    return fig


def selection_figure(
    scores: Tensor,
    geometry: HeadGeometry,
    selected: Sequence[tuple[int, int]],
    *,
    method: str = "probe",
    top_n: int = 30,
) -> go.Figure:
    """The selector's score per head (heatmap, selected boxed) and the top ``top_n`` heads ranked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = check_map(scores, geometry, "scores")
    label = "held-out probe accuracy" if method == "probe" else f"{method} score"
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.4, 0.6],
        horizontal_spacing=0.2,
        subplot_titles=(f"{label} per head", f"top {top_n} heads"),
    )
    short = "accuracy" if method == "probe" else "score"
    fig.add_trace(heatmap_trace(t, geometry, label=short, colorbar_x=0.34), row=1, col=1)
    if selected:
        fig.add_trace(selected_trace(selected, geometry), row=1, col=1)
    head_axes(fig, geometry, row=1, col=1)
    rows = ranked(t, geometry, top_n)
    sel = {(int(a), int(b)) for a, b in selected}
    fig.add_trace(
        go.Bar(
            x=[r[0] for r in rows],
            y=[r[1] for r in rows],
            marker_color=["crimson" if r[2] in sel else "steelblue" for r in rows],
            hovertemplate="%{x}<br>" + label + ": %{y:.4g}<extra></extra>",
            name=label,
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    lo = min(r[1] for r in rows)
    hi = max(r[1] for r in rows)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-6)
    fig.update_xaxes(title_text="head (red: selected)", row=1, col=2)
    fig.update_yaxes(title_text=label, row=1, col=2, range=[lo - pad, hi + pad])
    fig.update_layout(
        title=f"Head selection by {method}: {len(sel)} of {geometry.n_total_heads} heads selected",
        font=FONT,
        width=1400,
        height=max(460, 22 * geometry.n_layers + 160),
        legend={"orientation": "h", "y": -0.12},
    )
    return fig
