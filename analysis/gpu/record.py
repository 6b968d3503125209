"""What every section file of the GPU check records, and how it is written (atomically, at once).

A section file holds the figures, the ``status`` (``done``, ``partial`` while a section is still
adding figures, ``cut`` when the time budget stopped it, ``skipped`` with the ``reason``, ``failed``),
the device by name, the versions, the command, the wall time and the peak memory of its process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from lcc_lens.atomic import write_json
from lcc_lens.fit.clock import peak_rss_mb

FORMAT = "lcc_lens.gpu_check.section/1"
SECTIONS: tuple[str, ...] = ("fit", "bench", "gemma_fit")
"""Every section, in the order they run (most valuable first)."""
REPO = Path(__file__).resolve().parents[2]


def section_path(out: Path, section: str) -> Path:
    return out / f"{section}.json"


def device_name(device: torch.device) -> str:
    """The accelerator's name (``torch.cuda.get_device_name``), or ``cpu``."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return device.type


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    """Device, software versions and machine of the process writing a section."""
    from lcc_lens import __version__

    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "device": device_name(device),
        "device_type": device.type,
        "gpu_memory_gib": (
            torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None
        ),
        "cuda": torch.version.cuda,
        "versions": {
            "lcc_lens": __version__,
            "python": platform.python_version(),
            **{p: _version(p) for p in ("torch", "transformers", "transformer-lens", "peft")},
        },
        "git_commit": _git_commit(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def peak_memory(device: torch.device, at_least_mb: float = 0.0) -> dict[str, Any]:
    """The process's peak: CUDA allocations (and the allocator's reserve) on a GPU, else peak RSS.

    ``at_least_mb``: a peak measured before CUDA's counter was reset (e.g. by a fit's stage clock).
    """
    if device.type == "cuda" and torch.cuda.is_available():
        return {
            "kind": "cuda_max_allocated",
            "mb": max(at_least_mb, torch.cuda.max_memory_allocated(device) / 2**20),
            "reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    return {"kind": "cpu_peak_rss", "mb": peak_rss_mb()}


def new_record(
    section: str,
    device: torch.device,
    command: str,
    status: str = "partial",
    reason: str | None = None,
) -> dict[str, Any]:
    """A section's record before any figure (``partial`` until the section says otherwise)."""
    return {
        "format": FORMAT,
        "section": section,
        "status": status,
        "reason": reason,
        "environment": environment(device),
        "command": command,
        "process_command": " ".join([Path(sys.executable).name, *sys.argv]),
        "wall_s": 0.0,
        "peak_memory": None,
        "figures": {},
    }


def write_record(
    out: Path, record: dict[str, Any], device: torch.device, wall_s: float, at_least_mb: float = 0.0
) -> None:
    """Write ``record`` now (atomically), with the wall time and peak memory so far."""
    record["wall_s"] = wall_s
    record["peak_memory"] = peak_memory(device, at_least_mb)
    write_json(section_path(out, record["section"]), record)


def read_record(out: Path, section: str) -> dict[str, Any] | None:
    """A section's record as written, or None when there is none (or it does not parse as ours)."""
    path = section_path(out, section)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None
