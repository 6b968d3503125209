"""What a pruning run did: settings, measured sparsity per layer and in total, data identity, time."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lcc_lens.atomic import write_json
from lcc_lens.errors import DataError
from lcc_lens.pruning.masks import weight_matrix

REPORT_FILE = "prune_report.json"


@dataclass(frozen=True)
class ModuleSparsity:
    """Measured sparsity of one linear layer (zeros counted in the saved weight)."""

    name: str
    shape: tuple[int, int]
    n_params: int
    n_zeros: int

    @property
    def sparsity(self) -> float:
        return self.n_zeros / self.n_params if self.n_params else 0.0

    @classmethod
    def measure(cls, name: str, module: nn.Module) -> ModuleSparsity:
        w = weight_matrix(module)
        return cls(name, (int(w.shape[0]), int(w.shape[1])), int(w.numel()), int((w == 0).sum()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["sparsity"] = self.sparsity
        return d


@dataclass(frozen=True)
class PruneReport:
    """Result of :func:`lcc_lens.pruning.prune_model`; saved as ``prune_report.json`` next to a checkpoint."""

    method: str
    config: dict[str, Any]
    modules: tuple[ModuleSparsity, ...]
    target_sparsity: float
    calibration: dict[str, Any] | None
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)
    structured: dict[str, Any] | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def total_sparsity(self) -> float:
        """Zeros over weights of all pruned linear layers together."""
        n = sum(m.n_params for m in self.modules)
        return sum(m.n_zeros for m in self.modules) / n if n else 0.0

    @property
    def layer_sparsity(self) -> dict[str, float]:
        return {m.name: m.sparsity for m in self.modules}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "target_sparsity": self.target_sparsity,
            "total_sparsity": self.total_sparsity,
            "config": self.config,
            "model": self.model,
            "calibration": self.calibration,
            "seconds": self.seconds,
            "parameters": self.parameters,
            "structured": self.structured,
            "modules": [m.to_dict() for m in self.modules],
            "versions": self.versions,
        }

    def with_model(self, model_info: dict[str, Any]) -> PruneReport:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["model"] = {**self.model, **model_info}
        return PruneReport(**d)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruneReport:
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE
        if not path.is_file():
            raise DataError(
                f"no {REPORT_FILE} at {path}; pass a directory written by lcc_lens.prune."
            )
        d = json.loads(path.read_text())
        modules = tuple(
            ModuleSparsity(m["name"], tuple(m["shape"]), m["n_params"], m["n_zeros"])
            for m in d["modules"]
        )
        return cls(
            method=d["method"],
            config=d["config"],
            modules=modules,
            target_sparsity=d["target_sparsity"],
            calibration=d.get("calibration"),
            seconds=d["seconds"],
            model=d.get("model", {}),
            structured=d.get("structured"),
            parameters=d.get("parameters", {}),
            versions=d.get("versions", {}),
        )


def versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}
