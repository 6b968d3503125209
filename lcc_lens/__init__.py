"""lcc_lens: explain and repair pruned LLMs with Lost Component Compensation, on TransformerLens.

Every public name is imported on first attribute access (``import lcc_lens`` loads neither torch nor
transformers). No public name equals a submodule's name, so every name is the same object in every import
order; ``lcc_lens.fit`` is the fit package (``python -m lcc_lens.fit``), whose function is
``from lcc_lens.fit import fit``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # errors
    "CheckpointError": "lcc_lens.errors",
    "CompensationFileError": "lcc_lens.errors",
    "ConfigError": "lcc_lens.errors",
    "DataError": "lcc_lens.errors",
    "ExportError": "lcc_lens.errors",
    "IncompatibleModelsError": "lcc_lens.errors",
    "LccError": "lcc_lens.errors",
    "OwnershipError": "lcc_lens.errors",
    "UnsafePathError": "lcc_lens.errors",
    # models and the embedded real models
    "HeadGeometry": "lcc_lens.models",
    "ModelPair": "lcc_lens.models",
    "load_bridge": "lcc_lens.models",
    "load_causal_lm": "lcc_lens.models",
    "to_bridge": "lcc_lens.models",
    "EMBEDDED_MODEL": "lcc_lens.embedded",
    "GEMMA_MODEL": "lcc_lens.embedded",
    "embedded_model_dir": "lcc_lens.embedded",
    # data
    "DataConfig": "lcc_lens.data",
    "FitData": "lcc_lens.data",
    "fit_data": "lcc_lens.data",
    # hooks, activation differences, lost components
    "capture_z": "lcc_lens.hooks",
    "hook_z_name": "lcc_lens.hooks",
    "DiffConfig": "lcc_lens.diff",
    "HeadDiff": "lcc_lens.diff",
    "head_diffs": "lcc_lens.diff",
    "LostComponents": "lcc_lens.components",
    "cached_lost_components": "lcc_lens.components",
    "lost_components": "lcc_lens.components",
    # head selection and its probe data
    "HeadRanking": "lcc_lens.selection",
    "SelectConfig": "lcc_lens.selection",
    "select_heads": "lcc_lens.selection",
    "ProbeDataConfig": "lcc_lens.probe_data",
    "ProbeSample": "lcc_lens.probe_data",
    "fit_probe_items": "lcc_lens.probe_data",
    # compensation, training, export
    "Compensation": "lcc_lens.compensation",
    "CompensationConfig": "lcc_lens.compensation",
    "CompensationFamily": "lcc_lens.family",
    "load_compensation": "lcc_lens.family",
    "TrainConfig": "lcc_lens.training",
    "train": "lcc_lens.training",
    "export_checkpoint": "lcc_lens.export",
    "merge": "lcc_lens.export",
    "unmerge": "lcc_lens.export",
    # the whole fit (the function: from lcc_lens.fit import fit)
    "FitConfig": "lcc_lens.fit",
    "FitResult": "lcc_lens.fit",
    # pruning
    "PruneConfig": "lcc_lens.pruning",
    "PruneReport": "lcc_lens.pruning",
    "cached_pruned_checkpoint": "lcc_lens.pruning",
    "prune_checkpoint": "lcc_lens.pruning",
    "prune_model": "lcc_lens.pruning",
    # reading a compensation
    "RestorationStats": "lcc_lens.restoration",
    "restoration_stats": "lcc_lens.restoration",
    "LogitGain": "lcc_lens.lens",
    "LogitLens": "lcc_lens.lens",
    "logit_gain": "lcc_lens.lens",
    "logit_lens": "lcc_lens.lens",
    # evaluation
    "EvalConfig": "lcc_lens.evaluation",
    "PerplexityResult": "lcc_lens.evaluation",
    "build_offline_suite": "lcc_lens.evaluation",
    "evaluate_lm_eval": "lcc_lens.evaluation",
    "gap_closed": "lcc_lens.evaluation",
    "markdown_table": "lcc_lens.evaluation",
    "perplexity": "lcc_lens.evaluation.perplexity",
}
"""Public name -> the module that defines it."""

if TYPE_CHECKING:  # what editors and type checkers see; at run time these load lazily
    from lcc_lens.compensation import Compensation as Compensation
    from lcc_lens.compensation import CompensationConfig as CompensationConfig
    from lcc_lens.components import LostComponents as LostComponents
    from lcc_lens.components import cached_lost_components as cached_lost_components
    from lcc_lens.components import lost_components as lost_components
    from lcc_lens.data import DataConfig as DataConfig
    from lcc_lens.data import FitData as FitData
    from lcc_lens.data import fit_data as fit_data
    from lcc_lens.diff import DiffConfig as DiffConfig
    from lcc_lens.diff import HeadDiff as HeadDiff
    from lcc_lens.diff import head_diffs as head_diffs
    from lcc_lens.embedded import EMBEDDED_MODEL as EMBEDDED_MODEL
    from lcc_lens.embedded import GEMMA_MODEL as GEMMA_MODEL
    from lcc_lens.embedded import embedded_model_dir as embedded_model_dir
    from lcc_lens.errors import CheckpointError as CheckpointError
    from lcc_lens.errors import CompensationFileError as CompensationFileError
    from lcc_lens.errors import ConfigError as ConfigError
    from lcc_lens.errors import DataError as DataError
    from lcc_lens.errors import ExportError as ExportError
    from lcc_lens.errors import IncompatibleModelsError as IncompatibleModelsError
    from lcc_lens.errors import LccError as LccError
    from lcc_lens.errors import OwnershipError as OwnershipError
    from lcc_lens.errors import UnsafePathError as UnsafePathError
    from lcc_lens.evaluation import EvalConfig as EvalConfig
    from lcc_lens.evaluation import PerplexityResult as PerplexityResult
    from lcc_lens.evaluation import build_offline_suite as build_offline_suite
    from lcc_lens.evaluation import evaluate_lm_eval as evaluate_lm_eval
    from lcc_lens.evaluation import gap_closed as gap_closed
    from lcc_lens.evaluation import markdown_table as markdown_table
    from lcc_lens.evaluation.perplexity import perplexity as perplexity
    from lcc_lens.export import export_checkpoint as export_checkpoint
    from lcc_lens.export import merge as merge
    from lcc_lens.export import unmerge as unmerge
    from lcc_lens.family import CompensationFamily as CompensationFamily
    from lcc_lens.family import load_compensation as load_compensation
    from lcc_lens.fit import FitConfig as FitConfig
    from lcc_lens.fit import FitResult as FitResult
    from lcc_lens.hooks import capture_z as capture_z
    from lcc_lens.hooks import hook_z_name as hook_z_name
    from lcc_lens.lens import LogitGain as LogitGain
    from lcc_lens.lens import LogitLens as LogitLens
    from lcc_lens.lens import logit_gain as logit_gain
    from lcc_lens.lens import logit_lens as logit_lens
    from lcc_lens.models import HeadGeometry as HeadGeometry
    from lcc_lens.models import ModelPair as ModelPair
    from lcc_lens.models import load_bridge as load_bridge
    from lcc_lens.models import load_causal_lm as load_causal_lm
    from lcc_lens.models import to_bridge as to_bridge
    from lcc_lens.probe_data import ProbeDataConfig as ProbeDataConfig
    from lcc_lens.probe_data import ProbeSample as ProbeSample
    from lcc_lens.probe_data import fit_probe_items as fit_probe_items
    from lcc_lens.pruning import PruneConfig as PruneConfig
    from lcc_lens.pruning import PruneReport as PruneReport
    from lcc_lens.pruning import cached_pruned_checkpoint as cached_pruned_checkpoint
    from lcc_lens.pruning import prune_checkpoint as prune_checkpoint
    from lcc_lens.pruning import prune_model as prune_model
    from lcc_lens.restoration import RestorationStats as RestorationStats
    from lcc_lens.restoration import restoration_stats as restoration_stats
    from lcc_lens.selection import HeadRanking as HeadRanking
    from lcc_lens.selection import SelectConfig as SelectConfig
    from lcc_lens.selection import select_heads as select_heads
    from lcc_lens.training import TrainConfig as TrainConfig
    from lcc_lens.training import train as train


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lcc_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "EMBEDDED_MODEL",
    "GEMMA_MODEL",
    "CheckpointError",
    "Compensation",
    "CompensationConfig",
    "CompensationFamily",
    "CompensationFileError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DiffConfig",
    "EvalConfig",
    "ExportError",
    "FitConfig",
    "FitData",
    "FitResult",
    "HeadDiff",
    "HeadGeometry",
    "HeadRanking",
    "IncompatibleModelsError",
    "LccError",
    "LogitGain",
    "LogitLens",
    "LostComponents",
    "ModelPair",
    "OwnershipError",
    "PerplexityResult",
    "ProbeDataConfig",
    "ProbeSample",
    "PruneConfig",
    "PruneReport",
    "RestorationStats",
    "SelectConfig",
    "TrainConfig",
    "UnsafePathError",
    "__version__",
    "build_offline_suite",
    "cached_lost_components",
    "cached_pruned_checkpoint",
    "capture_z",
    "embedded_model_dir",
    "evaluate_lm_eval",
    "export_checkpoint",
    "fit_data",
    "fit_probe_items",
    "gap_closed",
    "head_diffs",
    "hook_z_name",
    "load_bridge",
    "load_causal_lm",
    "load_compensation",
    "logit_gain",
    "logit_lens",
    "lost_components",
    "markdown_table",
    "merge",
    "perplexity",
    "prune_checkpoint",
    "prune_model",
    "restoration_stats",
    "select_heads",
    "to_bridge",
    "train",
    "unmerge",
]
