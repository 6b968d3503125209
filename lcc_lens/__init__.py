"""lcc_lens: explain and repair pruned LLMs with Lost Component Compensation, on TransformerLens."""

from __future__ import annotations

__version__ = "0.1.0"

from lcc_lens.errors import (
    CompensationFileError,
    ConfigError,
    DataError,
    ExportError,
    IncompatibleModelsError,
    LccError,
)
from lcc_lens.models import (
    EMBEDDED_MODEL,
    HeadGeometry,
    ModelPair,
    embedded_model_dir,
    load_bridge,
    load_causal_lm,
    to_bridge,
)

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
]
