"""Shared pieces of the head-level figures: the layer x head heatmap and selected-head markers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lcc_lens.errors import ConfigError
from lcc_lens.models import HeadGeometry

if TYPE_CHECKING:
    import plotly.graph_objects as go

FONT = {"size": 13}


def names_grid(geometry: HeadGeometry) -> list[list[str]]:
    """[layer][head] -> "L{layer}H{head}", the hover label of every heatmap cell."""
    return [
        [geometry.head_name(layer, head) for head in range(geometry.n_heads)]
        for layer in range(geometry.n_layers)
    ]


def check_map(values: Tensor, geometry: HeadGeometry, what: str) -> Tensor:
    """A [n_layers, n_heads] float CPU tensor, or a clear error."""
    t = torch.as_tensor(values).detach().float().cpu()
    if tuple(t.shape) != (geometry.n_layers, geometry.n_heads):
        raise ConfigError(
            f"{what} has shape {tuple(t.shape)}, expected [n_layers, n_heads] = "
            f"[{geometry.n_layers}, {geometry.n_heads}]."
        )
    return t


def heatmap_trace(
    values: Tensor,
    geometry: HeadGeometry,
    *,
    label: str,
    colorscale: str = "Viridis",
    zmid: float | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colorbar_x: float | None = None,
    name: str | None = None,
) -> go.Heatmap:
    """A layer (rows) x head (columns) heatmap whose hover names the head L{l}H{h} and the value."""
    import plotly.graph_objects as go

    t = check_map(values, geometry, label)
    colorbar: dict = {"title": {"text": label, "side": "right"}}
    if colorbar_x is not None:
        colorbar.update(x=colorbar_x, len=0.9)
    return go.Heatmap(
        z=t.tolist(),
        x=list(range(geometry.n_heads)),
        y=list(range(geometry.n_layers)),
        text=names_grid(geometry),
        hovertemplate="%{text}<br>" + label + ": %{z:.4g}<extra></extra>",
        colorscale=colorscale,
        zmid=zmid,
        zmin=zmin,
        zmax=zmax,
        colorbar=colorbar,
        name=name or label,
    )


def selected_trace(
    selected: Sequence[tuple[int, int]], geometry: HeadGeometry, *, show_legend: bool = True
) -> go.Scatter:
    """Open-square markers over the selected heads (hover: L{l}H{h} selected)."""
    import plotly.graph_objects as go

    sel = [(int(a), int(b)) for a, b in selected]
    return go.Scatter(
        x=[h for _, h in sel],
        y=[lay for lay, _ in sel],
        mode="markers",
        marker={"symbol": "square-open", "size": 11, "color": "red", "line": {"width": 2}},
        text=[geometry.head_name(lay, h) for lay, h in sel],
        hovertemplate="%{text} (selected)<extra></extra>",
        name="selected heads",
        showlegend=show_legend,
    )


def head_axes(
    fig: go.Figure, geometry: HeadGeometry, row: int | None = None, col: int | None = None
):
    """Label the head (x) and layer (y) axes; layer 0 at the top."""
    kw = {} if row is None else {"row": row, "col": col}
    fig.update_xaxes(title_text="head", dtick=1 if geometry.n_heads <= 16 else None, **kw)
    fig.update_yaxes(
        title_text="layer", autorange="reversed", dtick=1 if geometry.n_layers <= 12 else 2, **kw
    )


def ranked(values: Tensor, geometry: HeadGeometry, top_n: int, *, descending: bool = True):
    """The top_n (name, value, (layer, head)) triples of a head map."""
    t = check_map(values, geometry, "values").flatten()
    order = torch.argsort(t, descending=descending)[:top_n].tolist()
    out = []
    for i in order:
        layer, head = geometry.unflatten(int(i))
        out.append((geometry.head_name(layer, head), float(t[i]), (layer, head)))
    return out
