"""Restoration methods of the benchmark behind one interface (prepare, parameters, attach, export).

``METHOD_NAMES`` lists them in the order the benchmark reports them; :func:`make_method` builds one.
peft is imported only when a LoRA/DoRA method is prepared. ``ZERO_KEEPING_PEERS`` are the weight-level
methods whose merge keeps every zero of the pruned model (masked LoRA, SPP, biases and norms, masked full
retraining); the committed benchmark tables predate them, so the full benchmark runs them on request
(``--methods``) and ``--quick`` runs every method.
"""

from __future__ import annotations

from lcc_lens.errors import ConfigError
from lcc_lens.methods.base import HFLogits, RestorationMethod
from lcc_lens.methods.bias_norm import BiasNorm
from lcc_lens.methods.context import MethodContext
from lcc_lens.methods.head_offsets import (
    LCC,
    BiasAllHeads,
    LCCFamily,
    LCCPaper,
    LCCRandomHeads,
    LostComponent,
)
from lcc_lens.methods.lcc_low_rank import LCCLowRank
from lcc_lens.methods.lofit import LoFiT
from lcc_lens.methods.low_rank import SPPR8, MaskedLoRAMatched, MaskedLoRAR1, MaskedLoRAR8
from lcc_lens.methods.masked_full_ft import MaskedFullFT
from lcc_lens.methods.mean_bias import MeanBias
from lcc_lens.methods.peft_adapters import DoRAMatched, DoRAR8, LoRAMatched, LoRAR8

_REGISTRY: dict[str, type[RestorationMethod]] = {
    cls.name: cls
    for cls in (
        LCC,
        LCCPaper,
        LCCRandomHeads,
        BiasAllHeads,
        LostComponent,
        MeanBias,
        LoFiT,
        LoRAMatched,
        LoRAR8,
        DoRAMatched,
        DoRAR8,
        MaskedLoRAMatched,
        MaskedLoRAR8,
        MaskedLoRAR1,
        SPPR8,
        BiasNorm,
        MaskedFullFT,
        LCCFamily,
        LCCLowRank,
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Every method name the benchmark accepts (``dense`` and ``pruned`` are reference rows, not methods)."""


ZERO_KEEPING_PEERS: tuple[str, ...] = (
    MaskedLoRAMatched.name,
    MaskedLoRAR8.name,
    MaskedLoRAR1.name,
    SPPR8.name,
    BiasNorm.name,
    MaskedFullFT.name,
)
"""The zero-keeping weight-level peers (issue 24), after the committed benchmark's methods."""

FAMILY_METHODS: tuple[str, ...] = (LCCFamily.name, LCCLowRank.name)
"""The LCC family beyond the head offsets, last: its exact-merge constants (the fit trains them through
``--compensate``) and the head offsets with a masked low-rank term."""


FIT_METHODS: tuple[str, ...] = ("lcc", *ZERO_KEEPING_PEERS, LCCLowRank.name)
"""What ``lcc fit --method`` trains: every method whose merge keeps every zero of the pruned model
(``lcc`` with its ``--compensate`` family; LoRA/DoRA and the head-offset variants are benchmark-only)."""


def make_method(name: str) -> RestorationMethod:
    """A fresh, unprepared method by name."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown restoration method {name!r}; choose from {list(METHOD_NAMES)}.")
    return _REGISTRY[name]()


__all__ = [
    "METHOD_NAMES",
    "FAMILY_METHODS",
    "FIT_METHODS",
    "ZERO_KEEPING_PEERS",
    "HFLogits",
    "MethodContext",
    "RestorationMethod",
    "make_method",
]
