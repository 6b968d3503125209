"""The benchmark figure: NLL gap closed against trainable parameters, with sd error bars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

PANELS = (
    ("ood_nll_gap_closed", "out of domain (test domain)"),
    ("indomain_nll_gap_closed", "in domain"),
)
REFERENCES = {"dense": 1.0, "pruned": 0.0}
"""Drawn as horizontal lines: their gap closed is 1 and 0 by definition."""
SPREAD = 1.25
"""Factor between the x positions of methods with the same parameter count (log axis; hover is exact)."""


def _symbol(method: str) -> str:
    """One marker shape per family, so that overlapping points stay readable."""
    if method.startswith(("lora", "dora")):
        return "square"
    if method in ("lost_component", "mean_bias"):
        return "x"
    if method == "lofit":
        return "diamond"
    return "circle"


def gap_figure(payload: Mapping[str, Any]) -> go.Figure:
    """Two panels (out of domain first, then in domain); one colour per method in both, x on a log scale.

    Training-free methods have no trainable parameter: they sit at x = 1. Methods with equal counts are drawn side by side. The dense and pruned models are
    the dashed lines at 1 and 0.
    """
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    palette = plotly.colors.qualitative.Dark24
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in PANELS], shared_yaxes=True)
    methods = [r for r in payload["rows"] if r["method"] not in REFERENCES]
    seen: dict[int, int] = {}
    for i, row in enumerate(methods):
        n = max(1, int(row["trainable_params"]))
        x = n * SPREAD ** seen.get(n, 0)  # side by side where methods share a parameter count
        seen[n] = seen.get(n, 0) + 1
        for col, (key, _title) in enumerate(PANELS, start=1):
            cell = row[key]
            if cell.get("mean") is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[x],
                    y=[cell["mean"]],
                    error_y={"type": "data", "array": [cell.get("sd") or 0.0], "visible": True},
                    mode="markers",
                    marker={
                        "color": palette[i % len(palette)],
                        "symbol": _symbol(row["method"]),
                        "size": 10,
                        "line": {"width": 1, "color": "white"},
                    },
                    name=f"{row['method']} ({row['trainable_params']:,})",
                    legendgroup=row["method"],
                    showlegend=col == 1,
                    hovertext=f"{row['method']}: {row['trainable_params']:,} trainable parameters",
                ),
                row=1,
                col=col,
            )
    for label, level in REFERENCES.items():
        for col in (1, 2):
            note = (
                {"annotation_text": label, "annotation_position": "bottom left"} if col == 1 else {}
            )
            fig.add_hline(y=level, line_dash="dash", line_color="grey", row=1, col=col, **note)
    fig.update_xaxes(type="log", title_text="trainable parameters (0 shown at 1)")
    fig.update_yaxes(title_text="NLL gap closed (mean ± sd over seeds)", row=1, col=1)
    fig.update_layout(
        title=f"Restoration benchmark: {payload['setting']}",
        template="plotly_white",
        height=520,
        width=1100,
        legend_title_text="method (trainable parameters)",
    )
    return fig
