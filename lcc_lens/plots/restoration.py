"""Figures of a fit: per-head restoration, training curves, dense / pruned / restored comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from lcc_lens.attribution import FamilyAttribution
from lcc_lens.errors import ConfigError
from lcc_lens.models import HeadGeometry
from lcc_lens.plots._common import FONT, head_axes, heatmap_trace, ranked, selected_trace
from lcc_lens.restoration import RestorationStats

if TYPE_CHECKING:
    import plotly.graph_objects as go


def restoration_heatmap(
    restoration: RestorationStats,
    geometry: HeadGeometry | None = None,
    selected: Sequence[tuple[int, int]] | None = None,
) -> go.Figure:
    """Two layer x head panels: relative residual of the lost activation after restoration, and the
    cosine of c_learned with the mean dz; selected heads boxed (default: the compensation's heads).

    geometry: optional, checked against the one recorded in ``restoration``.
    """
    from plotly.subplots import make_subplots

    g = restoration.geometry
    if geometry is not None and geometry != g:
        raise ConfigError(
            f"geometry {geometry} differs from the restoration stats' {g}; pass the pair's geometry."
        )
    sel = list(restoration.selected if selected is None else selected)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.16,
        subplot_titles=(
            "remaining lost activation ||z_dense - z_restored|| / ||dz||",
            "cos(c_learned, mean dz)",
        ),
    )
    fig.add_trace(
        heatmap_trace(
            restoration.rel_residual,
            g,
            label="relative residual (1 = nothing restored)",
            colorscale="RdBu_r",
            zmid=1.0,
            colorbar_x=0.42,
            name="relative residual",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        heatmap_trace(
            restoration.cosine,
            g,
            label="cosine",
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-1.0,
            zmax=1.0,
            colorbar_x=1.0,
            name="cosine",
        ),
        row=1,
        col=2,
    )
    if sel:
        fig.add_trace(selected_trace(sel, g), row=1, col=1)
        fig.add_trace(selected_trace(sel, g, show_legend=False), row=1, col=2)
    for col in (1, 2):
        head_axes(fig, g, row=1, col=col)
    fig.update_layout(
        title=f"Per-head restoration on held-out prompts ({restoration.n_positions} positions)",
        font=FONT,
        height=max(420, 22 * g.n_layers + 160),
        width=1100,
        legend={"orientation": "h", "y": -0.12},
    )
    return fig


def restoration_ranking(restoration: RestorationStats, top_n: int = 30) -> go.Figure:
    """Ranked bars of the share of lost activation given back (1 - relative residual), selected heads
    coloured; only heads with a finite value are ranked."""
    import plotly.graph_objects as go

    g = restoration.geometry
    rows = ranked(restoration.restored_fraction, g, top_n)
    sel = set(restoration.selected)
    fig = go.Figure(
        go.Bar(
            x=[r[0] for r in rows],
            y=[r[1] for r in rows],
            marker_color=["crimson" if r[2] in sel else "steelblue" for r in rows],
            text=["selected" if r[2] in sel else "" for r in rows],
            hovertemplate="%{x}<br>restored share: %{y:.3f}<br>%{text}<extra></extra>",
            name="restored share",
        )
    )
    fig.update_layout(
        title=f"Top {len(rows)} heads by restored share of the lost activation (red: compensated)",
        xaxis_title="head (L{layer}H{head})",
        yaxis_title="1 - ||z_dense - z_restored|| / ||dz|| (fraction)",
        font=FONT,
        width=max(700, 28 * len(rows) + 200),
        height=480,
    )
    return fig


def training_curves(history: Sequence[Mapping[str, float | int]]) -> go.Figure:
    """Training loss per step, validation loss where logged, and the learning rate (right axis)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not history:
        raise ConfigError("history is empty: there is no training curve to draw.")
    steps = [h["step"] for h in history if "loss" in h and "step" in h]
    loss = [h["loss"] for h in history if "loss" in h and "step" in h]
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h and "step" in h]
    lrs = [(h["step"], h["lr"]) for h in history if "lr" in h and "step" in h]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if steps:
        fig.add_trace(
            go.Scatter(x=steps, y=loss, mode="lines", name="train loss"), secondary_y=False
        )
    if val:
        fig.add_trace(
            go.Scatter(
                x=[v[0] for v in val],
                y=[v[1] for v in val],
                mode="lines+markers",
                name="validation loss",
                marker={"size": 9},
            ),
            secondary_y=False,
        )
    if lrs:
        fig.add_trace(
            go.Scatter(
                x=[v[0] for v in lrs],
                y=[v[1] for v in lrs],
                mode="lines",
                name="learning rate",
                line={"dash": "dot", "color": "grey"},
            ),
            secondary_y=True,
        )
    if not (steps or val):
        raise ConfigError("history has no 'loss' or 'val_loss' entries with a 'step'.")
    fig.update_xaxes(title_text="optimiser step")
    fig.update_yaxes(title_text="loss (nats per token)", secondary_y=False)
    fig.update_yaxes(
        title_text="learning rate",
        secondary_y=True,
        showgrid=False,
        rangemode="tozero",
        tickmode="auto",  # not synced to the loss axis's grid, whose ticks give odd rates
        nticks=6,
        tickformat="~g",
    )
    fig.update_layout(title="Compensation training", font=FONT, width=850, height=450)
    return fig


_ORDER = ("dense", "pruned", "restored")
_COLOURS = {"dense": "seagreen", "pruned": "firebrick", "restored": "royalblue"}


def comparison_bar(
    metrics: Mapping[str, float], metric_name: str = "perplexity", *, zero_based: bool = True
) -> go.Figure:
    """Bars of one metric for dense / pruned / restored (keys ``dense``, ``pruned``, ``restored`` or
    ``{metric}_dense`` etc.; further keys are drawn after them), values printed on the bars.

    zero_based=False zooms the value axis onto the bars' range, for differences small against the level.
    """
    import plotly.graph_objects as go

    values: dict[str, float] = {}
    for key, val in metrics.items():
        label = key
        for model in _ORDER:
            if key in (model, f"{metric_name}_{model}", f"ppl_{model}"):
                label = model
        if val is not None:
            values[label] = float(val)
    if not values:
        raise ConfigError(
            "metrics is empty: pass e.g. {'dense': 9.1, 'pruned': 14.2, 'restored': 11.0}."
        )
    labels = [m for m in _ORDER if m in values] + [k for k in values if k not in _ORDER]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[values[k] for k in labels],
            marker_color=[_COLOURS.get(k, "grey") for k in labels],
            text=[f"{values[k]:.4g}" for k in labels],
            textposition="outside",
            hovertemplate="%{x}: %{y:.4g}<extra></extra>",
            name=metric_name,
        )
    )
    lo_v, hi_v = min(values.values()), max(values.values())
    if zero_based:
        lo, hi = min(0.0, lo_v), max(0.0, hi_v)
    else:
        lo, hi = lo_v, hi_v
    pad = 0.15 * (hi - lo) if hi > lo else 0.15 * max(abs(hi), 1.0)
    y_range = [lo - (pad if lo < 0 or not zero_based else 0.0), hi + pad]
    fig.update_layout(
        title=f"{metric_name}: dense vs pruned vs restored",
        xaxis_title="model",
        yaxis_title=metric_name,
        yaxis_range=y_range,
        font=FONT,
        width=600,
        height=450,
    )
    return fig


def family_attribution_figure(attribution: FamilyAttribution) -> go.Figure:
    """Per layer, how much each LCC family component restored: the validation objective's rise when
    that component alone is removed in that layer (bars grouped by layer, one colour per component)."""
    import plotly.graph_objects as go

    if not attribution.per_layer:
        raise ConfigError("the attribution has no component: there is nothing to draw.")
    fig = go.Figure()
    for component, rises in attribution.per_layer.items():
        whole = attribution.removed[component]
        fig.add_trace(
            go.Bar(
                x=list(range(len(rises))), y=rises, name=f"{component} (all layers: {whole:+.4f})"
            )
        )
    fig.update_layout(
        title=f"what each component restored ({attribution.objective} objective, "
        f"{attribution.n_examples} validation examples)",
        xaxis_title="layer",
        yaxis_title="objective rise when removed (nats/token)",
        barmode="group",
        font=FONT,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
