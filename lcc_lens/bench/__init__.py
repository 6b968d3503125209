"""The restoration benchmark: LCC against LoRA, DoRA, LoFiT, plain biases and training-free corrections.

``run_bench(BenchConfig())`` trains every method of :mod:`lcc_lens.methods` on the same data and budget
for each seed and pruning setting, scores the merged exports with the evaluation protocol, and writes
``<out>/<setting>.json``, a markdown table and a figure. ``python -m lcc_lens.bench`` / ``lcc bench``.
"""

from __future__ import annotations

from lcc_lens.bench.config import SETTINGS, BenchConfig
from lcc_lens.bench.run import run_bench, run_setting

__all__ = ["SETTINGS", "BenchConfig", "run_bench", "run_setting"]
