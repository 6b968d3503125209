"""lcc_lens: explain and repair pruned LLMs with Lost Component Compensation, on TransformerLens.

Heavy submodules (pruning, evaluation, plots, fit) are imported on first attribute access, so that
``import lcc_lens`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from lcc_lens.errors import (  # noqa: E402
    CompensationFileError,
    ConfigError,
    DataError,
    ExportError,
    IncompatibleModelsError,
    LccError,
)
from lcc_lens.models import (  # noqa: E402
    EMBEDDED_MODEL,
    HeadGeometry,
    ModelPair,
    embedded_model_dir,
    load_bridge,
    load_causal_lm,
    to_bridge,
)

_LAZY = {
    "DiffConfig": "lcc_lens.diff",
    "HeadDiff": "lcc_lens.diff",
    "head_diffs": "lcc_lens.diff",
    "LostComponents": "lcc_lens.components",
    "lost_components": "lcc_lens.components",
    "cached_lost_components": "lcc_lens.components",
    "Compensation": "lcc_lens.compensation",
    "export_checkpoint": "lcc_lens.export",
    "merge": "lcc_lens.export",
    "unmerge": "lcc_lens.export",
    "SelectConfig": "lcc_lens.selection",
    "HeadRanking": "lcc_lens.selection",
    "select_heads": "lcc_lens.selection",
    "FitConfig": "lcc_lens.fit",
    "FitResult": "lcc_lens.fit",
    "TrainConfig": "lcc_lens.training",
    "PruneConfig": "lcc_lens.pruning",
    "prune_model": "lcc_lens.pruning",
    "prune_checkpoint": "lcc_lens.pruning",
    "cached_pruned_checkpoint": "lcc_lens.pruning",
    "PruneReport": "lcc_lens.pruning",
    "RestorationStats": "lcc_lens.restoration",
    "restoration_stats": "lcc_lens.restoration",
    "logit_lens": "lcc_lens.logit_lens",
    "logit_gain": "lcc_lens.logit_lens",
    "LogitLens": "lcc_lens.logit_lens",
    "LogitGain": "lcc_lens.logit_lens",
    "perplexity": "lcc_lens.evaluation",
    "PerplexityResult": "lcc_lens.evaluation",
    "evaluate_lm_eval": "lcc_lens.evaluation",
    "build_offline_suite": "lcc_lens.evaluation",
    "EvalConfig": "lcc_lens.evaluation",
    "gap_closed": "lcc_lens.evaluation",
    "markdown_table": "lcc_lens.evaluation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lcc_lens' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "EMBEDDED_MODEL",
    "CompensationFileError",
    "ConfigError",
    "DataError",
    "ExportError",
    "HeadGeometry",
    "IncompatibleModelsError",
    "LccError",
    "ModelPair",
    "__version__",
    "embedded_model_dir",
    "load_bridge",
    "load_causal_lm",
    "to_bridge",
    *_LAZY,
]
