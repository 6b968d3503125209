"""Wall time and peak memory of each stage of a fit, recorded in ``metrics.json`` under ``stages``.

On CUDA a stage's peak is ``torch.cuda.max_memory_allocated`` since the stage began (the models already
resident included); on other devices it is the process's peak RSS so far (the kernel's high-water mark,
which never goes down, so a later stage reads at least an earlier one's figure).
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


def peak_rss_mb() -> float:
    """The process's peak resident set so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StageClock:
    """Times named stages on ``device``; ``stages`` maps each name to its seconds and peak memory."""

    device: torch.device
    stages: dict[str, dict[str, float | str]] = field(default_factory=dict)

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record ``name``'s wall time (CUDA synchronised at both ends) and peak memory."""
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize(self.device)
                peak, kind = torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_allocated"
            else:
                peak, kind = peak_rss_mb(), "cpu_peak_rss"
            self.stages[name] = {
                "seconds": time.perf_counter() - t0,
                "peak_memory_mb": peak,
                "memory_kind": kind,
            }
