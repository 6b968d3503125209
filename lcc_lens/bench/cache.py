"""On-disk results of finished (method, seed) runs, so that an interrupted benchmark resumes.

One JSON file per (setting, method, learning rate, seed), named by a content key of everything that
changes the result: the benchmark settings, both models' content fingerprints, the method and the rate it
trains at (so runs of one method at several rates, as a learning-rate grid makes, are all kept and a
change of one method's rate recomputes that method only). A file that does not parse or
was written for another key is ignored (and recomputed), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcc_lens.atomic import write_json

logger = logging.getLogger(__name__)
FORMAT = "lcc_lens.bench.result/1"


@dataclass(frozen=True)
class ResultCache:
    """Results of one setting under ``root`` (``<root>/<setting>/<method>[-lr<rate>]-seed<seed>.json``).

    ``lr`` is the rate the method trains at (None for the references and training-free methods).
    """

    root: Path
    setting: str
    identity: dict[str, Any]

    def key(self, method: str, seed: int, lr: float | None = None) -> str:
        blob = json.dumps(
            {"identity": self.identity, "method": method, "seed": seed, "lr": lr},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def path(self, method: str, seed: int, lr: float | None = None) -> Path:
        rate = "" if lr is None else f"-lr{lr:g}"
        return self.root / self.setting / f"{method}{rate}-seed{seed}.json"

    def get(self, method: str, seed: int, lr: float | None = None) -> dict[str, Any] | None:
        """The stored result when it exists and was written for the same key, else None."""
        path = self.path(method, seed, lr)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cached result %s (%s)", path, exc)
            return None
        if (
            not isinstance(stored, dict)
            or stored.get("format") != FORMAT
            or stored.get("key") != self.key(method, seed, lr)
        ):
            logger.info("cached result %s is for other settings; recomputing", path)
            return None
        return stored["result"]

    def put(self, method: str, seed: int, result: dict[str, Any], lr: float | None = None) -> Path:
        path = self.path(method, seed, lr)
        write_json(path, {"format": FORMAT, "key": self.key(method, seed, lr), "result": result})
        return path
