"""Plotly figure builders for lcc_lens analyses; they return Figures and never show or write by
themselves (use :func:`save_figure`). plotly is imported inside the functions."""

from __future__ import annotations

from lcc_lens.plots.heads import (
    component_rank_effect,
    head_heatmap,
    lost_heatmaps,
    selection_figure,
    spectra_figure,
)
from lcc_lens.plots.io import png_available, save_figure
from lcc_lens.plots.lens import logit_gain_figure, logit_lens_figure
from lcc_lens.plots.probe import probe_null_figure
from lcc_lens.plots.restoration import (
    comparison_bar,
    family_attribution_figure,
    restoration_heatmap,
    restoration_ranking,
    training_curves,
)
from lcc_lens.restoration import RestorationStats, restoration_stats

__all__ = [
    "RestorationStats",
    "comparison_bar",
    "component_rank_effect",
    "family_attribution_figure",
    "head_heatmap",
    "logit_gain_figure",
    "logit_lens_figure",
    "lost_heatmaps",
    "png_available",
    "probe_null_figure",
    "restoration_heatmap",
    "restoration_ranking",
    "restoration_stats",
    "save_figure",
    "selection_figure",
    "spectra_figure",
    "training_curves",
]
