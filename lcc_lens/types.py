"""jaxtyping aliases for the tensors that flow between lcc_lens modules."""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

HeadZ = Float[Tensor, "batch pos n_heads d_head"]
"""Activations at ``blocks.{l}.attn.hook_z``: per-head output before W_O."""

ZOffsets = Float[Tensor, "n_layers n_heads d_head"]
"""One constant offset per (layer, head), added to hook_z at every position."""

Directions = Float[Tensor, "n_heads d_head d_head"]
"""Per-head right singular vectors of dZ, one unit row per direction (zero rows pad N < d_head)."""

Tokens = Int[Tensor, "batch pos"]
Mask = Int[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos d_vocab"]

__all__ = ["Directions", "HeadZ", "Logits", "Mask", "Tokens", "ZOffsets"]
