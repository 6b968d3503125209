"""The probe's per-head evidence: its statistic against the permutation null, selected heads marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lcc_lens.models import HeadGeometry
from lcc_lens.plots._common import FONT, check_map, head_axes, heatmap_trace, selected_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go


def probe_null_figure(
    score: Tensor,
    null_mean: Tensor,
    null_sd: Tensor,
    geometry: HeadGeometry,
    selected: Sequence[tuple[int, int]] = (),
    *,
    label: str = "held-out pairwise accuracy",
    top_n: int = 40,
) -> go.Figure:
    """Left: score minus null mean, layer x head. Middle: z = (score - null mean) / null sd.
    Right: the ``top_n`` heads by score beside their null mean +- 2 sd (red: selected)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = check_map(score, geometry, "score")
    mu = check_map(null_mean, geometry, "null_mean")
    sd = check_map(null_sd, geometry, "null_sd").clamp_min(1e-12)
    z = (s - mu) / sd
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.27, 0.27, 0.46],
        horizontal_spacing=0.09,
        subplot_titles=(
            f"{label} minus null mean",
            "z against the permutation null",
            f"top {top_n} heads: score and null mean +- 2 sd",
        ),
    )
    excess = s - mu
    span = float(excess.abs().max()) or 1.0
    fig.add_trace(
        heatmap_trace(
            excess,
            geometry,
            label="score - null",
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-span,
            zmax=span,
            colorbar_x=0.225,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        heatmap_trace(z, geometry, label="z", colorscale="RdBu_r", zmid=0.0, colorbar_x=0.53),
        row=1,
        col=2,
    )
    for col in (1, 2):
        if selected:
            fig.add_trace(selected_trace(selected, geometry, show_legend=col == 1), row=1, col=col)
        head_axes(fig, geometry, row=1, col=col)
    sel = {(int(a), int(b)) for a, b in selected}
    order = torch.argsort(s.flatten(), descending=True, stable=True)[:top_n].tolist()
    heads = [geometry.unflatten(int(i)) for i in order]
    names = [geometry.head_name(lay, h) for lay, h in heads]
    fig.add_trace(
        go.Scatter(
            x=names,
            y=[float(mu[lay, h]) for lay, h in heads],
            error_y={
                "type": "data",
                "array": [2 * float(sd[lay, h]) for lay, h in heads],
                "color": "grey",
            },
            mode="markers",
            marker={"color": "grey", "symbol": "line-ew-open", "size": 10},
            name="null mean +- 2 sd",
            hovertemplate="%{x}<br>null mean %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=[float(s[lay, h]) for lay, h in heads],
            mode="markers",
            marker={
                "color": ["crimson" if hd in sel else "steelblue" for hd in heads],
                "size": 8,
            },
            name=label,
            customdata=[float(z[lay, h]) for lay, h in heads],
            hovertemplate="%{x}<br>score %{y:.4g}<br>z %{customdata:.2f}<extra></extra>",
        ),
        row=1,
        col=3,
    )
    fig.update_xaxes(title_text="head (red: selected)", tickangle=-60, row=1, col=3)
    fig.update_yaxes(title_text=label, row=1, col=3)
    fig.update_layout(
        title=(
            f"Probe {label} against its permutation null: {len(sel)} of "
            f"{geometry.n_total_heads} heads selected"
        ),
        font=FONT,
        width=1600,
        height=max(480, 22 * geometry.n_layers + 180),
        legend={"orientation": "h", "y": -0.18},
    )
    return fig
