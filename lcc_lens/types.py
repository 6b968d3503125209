"""jaxtyping aliases for tensors that several lcc_lens modules pass between them."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

ZOffsets = Float[Tensor, "n_layers n_heads d_head"]
"""One constant offset per (layer, head), added to ``blocks.{l}.attn.hook_z`` at every position."""

__all__ = ["ZOffsets"]
