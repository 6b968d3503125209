"""Wall time and peak memory of each stage of a fit, recorded as it runs.

The main job's cost is reported stage by stage (``metrics.json`` ``"stages"``, one log line each), so a
user sees where twelve minutes go and a slow stage is found without a profiler. Peak RSS is the
process's high-water mark after the stage (it only grows); on CUDA the device's peak is recorded too.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, in GB (2**30 bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, kB on Linux


def peak_cuda_gb() -> float | None:
    """The peak memory allocated on the current CUDA device, in GB; None without CUDA."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


@dataclass
class StageClock:
    """Seconds and peak memory per named stage, in the order the stages ran."""

    stages: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            row: dict[str, Any] = {
                "stage": name,
                "seconds": round(time.perf_counter() - t0, 3),
                "peak_rss_gb": round(peak_rss_gb(), 3),
            }
            cuda = peak_cuda_gb()
            if cuda is not None:
                row["peak_cuda_gb"] = round(cuda, 3)
            self.stages.append(row)
            logger.info(
                "stage %s: %.1f s, peak RSS %.2f GB", name, row["seconds"], row["peak_rss_gb"]
            )

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.stages]
