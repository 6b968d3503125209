"""On-disk results of finished (method, seed) runs, so that an interrupted benchmark resumes.

One JSON file per (setting, method, seed), named by a content key of everything that changes the result:
the benchmark settings, both models' content fingerprints and the method. A file that does not parse or
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
    """Results of one setting under ``root`` (``<root>/<setting>/<method>-seed<seed>.json``)."""

    root: Path
    setting: str
    identity: dict[str, Any]

    def key(self, method: str, seed: int) -> str:
        blob = json.dumps(
            {"identity": self.identity, "method": method, "seed": seed}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def path(self, method: str, seed: int) -> Path:
        return self.root / self.setting / f"{method}-seed{seed}.json"

    def get(self, method: str, seed: int) -> dict[str, Any] | None:
        """The stored result when it exists and was written for the same key, else None."""
        path = self.path(method, seed)
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
            or stored.get("key") != self.key(method, seed)
        ):
            logger.info("cached result %s is for other settings; recomputing", path)
            return None
        return stored["result"]

    def put(self, method: str, seed: int, result: dict[str, Any]) -> Path:
        path = self.path(method, seed)
        write_json(path, {"format": FORMAT, "key": self.key(method, seed), "result": result})
        return path
