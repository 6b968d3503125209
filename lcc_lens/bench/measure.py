"""Measurements of a merged export against the pruned model: zeros kept, forward time, peak memory.

Nothing here is assumed: ``sparsity_kept`` counts the pruned model's zero weights that are still exactly
zero in the export, and the forward ratio times both models interleaved in the same process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor, nn

from lcc_lens.errors import ExportError

logger = logging.getLogger(__name__)


@torch.no_grad()
def sparsity_kept(pruned: nn.Module, merged: nn.Module) -> float | None:
    """Fraction of the pruned model's zero weights (matrices) still exactly zero in ``merged``.

    None when the pruned model has no zero weight. A weight missing from the export, or of another
    shape, is an error: the export would not be comparable.
    """
    merged_params = dict(merged.named_parameters())
    zeros = kept = 0
    for name, p in pruned.named_parameters():
        if p.dim() < 2:
            continue
        mask = p == 0
        n = int(mask.sum())
        if n == 0:
            continue
        q = merged_params.get(name)
        if q is None or q.shape != p.shape:
            raise ExportError(
                f"the export has no weight {name} of shape {tuple(p.shape)}; cannot compare sparsity."
            )
        zeros += n
        kept += int((q[mask] == 0).sum())
    return kept / zeros if zeros else None


def _time_once(model: nn.Module, ids: Tensor) -> float:
    if ids.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(input_ids=ids)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.no_grad()
def forward_ratio(
    pruned: nn.Module, merged: nn.Module, ids: Int[Tensor, "batch pos"], repeats: int = 5
) -> dict[str, float]:
    """Forward time of ``merged`` over ``pruned`` on ``ids``: the fastest of ``repeats`` alternated runs.

    Alternating the two in one loop, after a warm-up, and keeping each one's fastest run (the least
    disturbed by other processes) makes the ratio robust to load on a shared machine.
    """
    pruned.eval()
    merged.eval()
    _time_once(pruned, ids)
    _time_once(merged, ids)
    t_pruned, t_merged = [], []
    for _ in range(max(1, repeats)):
        t_pruned.append(_time_once(pruned, ids))
        t_merged.append(_time_once(merged, ids))
    p, m = min(t_pruned), min(t_merged)
    return {
        "ratio": m / p,
        "pruned_s": p,
        "merged_s": m,
        "pruned_median_s": statistics.median(t_pruned),
        "merged_median_s": statistics.median(t_merged),
    }


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class PeakMemory:
    """Peak memory used above the level at entry, in MiB: CUDA allocations, else sampled process RSS."""

    device: str = "cpu"
    interval_s: float = 0.02
    peak_mb: float = 0.0
    kind: str = ""

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.startswith("cuda") and torch.cuda.is_available():
            self.kind = "cuda_allocated"
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            try:
                yield self
            finally:
                torch.cuda.synchronize()
                self.peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
            return
        self.kind = "cpu_rss_sampled"
        base = _rss_bytes()
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                stop.wait(self.interval_s)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            self.peak_mb = (peak[0] - base) / 2**20
