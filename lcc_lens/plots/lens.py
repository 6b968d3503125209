"""Token-space figures: the logit lens of each compensation (Figure 5) and per-head logit gain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lcc_lens.errors import ConfigError
from lcc_lens.lens import LogitGain, LogitLens
from lcc_lens.plots._common import FONT, head_axes, heatmap_trace, ranked, selected_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go


def logit_lens_figure(lens: LogitLens, top_k: int | None = None) -> go.Figure:
    """Per head (rows), the top promoted (right panel) and suppressed (left panel) tokens of its
    compensation's direct logit effect; cells show the token, colour its logit contribution."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not lens.heads:
        raise ConfigError("the logit lens holds no heads; compute it on a compensation with heads.")
    k = min(top_k or lens.top_k, lens.top_k)
    names = [h.name for h in lens.heads]
    promoted = [list(h.promoted_logits[:k]) for h in lens.heads]
    suppressed = [list(h.suppressed_logits[:k]) for h in lens.heads]
    vmax = max(max(abs(v) for row in promoted + suppressed for v in row), 1e-12)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.06,
        subplot_titles=("most suppressed tokens", "most promoted tokens"),
    )
    label = "direct logit effect (w_norm * W_O c) @ W_U, before 1/rms"
    for col, vals, toks, show in (
        (1, suppressed, [list(h.suppressed[:k]) for h in lens.heads], False),
        (2, promoted, [list(h.promoted[:k]) for h in lens.heads], True),
    ):
        hover = [[f"{n}<br>{t!r}" for t in row] for n, row in zip(names, toks, strict=True)]
        fig.add_trace(
            go.Heatmap(
                z=vals,
                x=[f"#{i + 1}" for i in range(k)],
                y=names,
                text=toks,
                texttemplate="%{text}",
                textfont={"size": 11},
                customdata=hover,
                hovertemplate="%{customdata}<br>logit effect: %{z:.3g}<extra></extra>",
                colorscale="RdBu_r",
                zmid=0.0,
                zmin=-vmax,
                zmax=vmax,
                showscale=show,
                colorbar={"title": {"text": "logit effect (unscaled)", "side": "right"}},
                name="promoted" if col == 2 else "suppressed",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="rank", row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_yaxes(title_text="head (largest residual write first)", row=1, col=1)
    fig.update_layout(
        title="Logit lens of the learned compensations: " + label,
        font=FONT,
        width=max(1100, 170 * k + 200),
        height=max(380, 34 * len(names) + 180),
    )
    return fig


def logit_gain_figure(gain: LogitGain, selected=(), top_n: int = 20) -> go.Figure:
    """Per-head direct logit gain on a task: heatmap (selected boxed) and the heads ranked by |gain|."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    g = gain.geometry
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.4, 0.6],
        horizontal_spacing=0.2,
        subplot_titles=("direct gain per head", f"top {top_n} heads by |gain|"),
    )
    vmax = max(float(gain.gain.abs().max()), 1e-12)
    fig.add_trace(
        heatmap_trace(
            gain.gain,
            g,
            label="gain (logits)",
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-vmax,
            zmax=vmax,
            colorbar_x=0.34,
        ),
        row=1,
        col=1,
    )
    if selected:
        fig.add_trace(selected_trace(selected, g), row=1, col=1)
    head_axes(fig, g, row=1, col=1)
    rows = ranked(gain.gain.abs(), g, top_n)
    fig.add_trace(
        go.Bar(
            x=[r[0] for r in rows],
            y=[float(gain.gain[r[2][0], r[2][1]]) for r in rows],
            marker_color=[
                "seagreen" if float(gain.gain[r[2][0], r[2][1]]) >= 0 else "firebrick" for r in rows
            ],
            hovertemplate="%{x}<br>gain: %{y:.4g} logits<extra></extra>",
            name="gain",
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="head", row=1, col=2)
    fig.update_yaxes(title_text="direct gain in logit(correct) - logit(wrong)", row=1, col=2)
    fig.update_layout(
        title=(
            f"Per-head logit gain on {gain.n_examples} examples: logit diff pruned "
            f"{gain.logit_diff_pruned:.3f}, restored {gain.logit_diff_restored:.3f}, "
            f"dense {gain.logit_diff_dense:.3f}"
        ),
        font=FONT,
        width=1400,
        height=max(460, 22 * g.n_layers + 160),
        legend={"orientation": "h", "y": -0.12},
    )
    return fig
