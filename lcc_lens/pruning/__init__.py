"""Pruning of causal LMs: magnitude, Wanda, SparseGPT (unstructured and N:M) and FLAP structured pruning.

Layers are processed in order, each calibrated on the outputs of the already-pruned layers before it.
"""

from lcc_lens.pruning.api import (
    cached_pruned_checkpoint,
    prune_checkpoint,
    prune_model,
    pruned_cache_key,
)
from lcc_lens.pruning.calibrate import find_decoder_layers
from lcc_lens.pruning.config import METHODS, PruneConfig, parse_pattern
from lcc_lens.pruning.data import calibration_tokens, load_calibration_texts
from lcc_lens.pruning.magnitude import magnitude_mask
from lcc_lens.pruning.masks import nm_mask, row_mask
from lcc_lens.pruning.report import REPORT_FILE, ModuleSparsity, PruneReport
from lcc_lens.pruning.sparsegpt import sparsegpt_prune
from lcc_lens.pruning.wanda import wanda_mask, wanda_scores

__all__ = [
    "METHODS",
    "REPORT_FILE",
    "ModuleSparsity",
    "PruneConfig",
    "PruneReport",
    "cached_pruned_checkpoint",
    "calibration_tokens",
    "find_decoder_layers",
    "load_calibration_texts",
    "magnitude_mask",
    "nm_mask",
    "parse_pattern",
    "prune_checkpoint",
    "prune_model",
    "pruned_cache_key",
    "row_mask",
    "sparsegpt_prune",
    "wanda_mask",
    "wanda_scores",
]
