"""The benchmark figure: NLL gap closed against trainable parameters, with sd error bars."""

from __future__ import annotations

import math
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
"""Least factor between the x positions of two methods (log axis; hover gives the exact count)."""


def _side_by_side(counts: list[int]) -> list[float]:
    """x positions: each count, or the nearest SPREAD step right or left of it that no earlier point crowds."""
    placed: list[float] = []
    for n in counts:
        base = float(max(1, n))
        steps = (k for i in range(len(counts) + 1) for k in ((i, -i) if i else (0,)))
        x = next(
            base * SPREAD**k
            for k in steps
            if base * SPREAD**k >= 1.0
            and all(abs(math.log(base * SPREAD**k / p)) >= 0.99 * math.log(SPREAD) for p in placed)
        )
        placed.append(x)
    return placed


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

    Training-free methods have no trainable parameter: they sit at x = 1. Methods with equal or near counts are drawn side by side. The dense and pruned
    models are the dashed lines at 1 and 0.
    """
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    palette = plotly.colors.qualitative.Dark24
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in PANELS], shared_yaxes=True)
    methods = [r for r in payload["rows"] if r["method"] not in REFERENCES]
    xs = _side_by_side([int(r["trainable_params"]) for r in methods])
    for i, (row, x) in enumerate(zip(methods, xs, strict=True)):
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
