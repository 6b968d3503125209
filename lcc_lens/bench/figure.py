"""The benchmark figure: NLL gap closed against trainable parameters, with sd error bars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

PANELS = (
    ("ood_nll_gap_closed", "out of domain (test)"),
    ("indomain_nll_gap_closed", "in domain"),
)


def gap_figure(payload: Mapping[str, Any]) -> go.Figure:
    """Two panels (out of domain first, then in domain); one marker per method, x on a log scale.

    Training-free methods and the references have no trainable parameter: they sit at x = 1 and are
    named in the hover text and legend.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in PANELS], shared_yaxes=True)
    for row in payload["rows"]:
        x = max(1, int(row["trainable_params"]))
        for col, (key, _title) in enumerate(PANELS, start=1):
            cell = row[key]
            if cell.get("mean") is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[x],
                    y=[cell["mean"]],
                    error_y={"type": "data", "array": [cell.get("sd") or 0.0], "visible": True},
                    mode="markers+text",
                    text=[row["method"]],
                    textposition="top center",
                    name=row["method"],
                    legendgroup=row["method"],
                    showlegend=col == 1,
                    hovertext=f"{row['method']}: {row['trainable_params']:,} trainable parameters",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(type="log", title_text="trainable parameters (0 shown at 1)")
    fig.update_yaxes(title_text="NLL gap closed (mean ± sd over seeds)", row=1, col=1)
    fig.update_layout(
        title=f"Restoration benchmark: {payload['setting']}", template="plotly_white", height=500
    )
    return fig
