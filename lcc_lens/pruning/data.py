"""Calibration data for pruning: texts from a named source, cut into fixed-length token sequences.

Sources: ``"corpora"`` (the offline real text of :mod:`lcc_lens.corpora`, split "calibration", of the
default calibration domains; ``"corpora:python_docs,dialogue"`` names the domains), ``"c4"``
(allenai/c4, English, first training shard, as Wanda and SparseGPT use; needs network), a local ``.txt``
(one document) or ``.json``/``.jsonl`` file (a list of strings or records with a ``text`` field), or any
``datasets`` name ``name`` / ``name:config`` with a ``text`` column.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from lcc_lens.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

C4_FILE = "en/c4-train.00000-of-01024.json.gz"
_FILE_SUFFIXES = (".txt", ".json", ".jsonl")


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def corpora_domains(source: str) -> tuple[str, ...] | None:
    """The domains of a ``corpora`` or ``corpora:a,b`` source; None for any other source."""
    from lcc_lens.corpora import SOURCES, check_domains

    if source == "corpora":
        return SOURCES
    if not source.startswith("corpora:"):
        return None
    domains = tuple(d.strip() for d in source.removeprefix("corpora:").split(",") if d.strip())
    if not domains:
        raise DataError(f"calibration {source!r} names no domain; pass e.g. corpora:python_docs.")
    return check_domains(domains)


def calibration_identity(source: str) -> dict[str, Any]:
    """Name the calibration data without loading it (for cache keys and reports)."""
    domains = corpora_domains(source)
    if domains is not None:
        from lcc_lens.corpora import corpus_identity

        return corpus_identity("calibration", domains)
    path = Path(source).expanduser()
    if path.is_file():
        return {"file": str(path.resolve()), "sha256": _file_sha(path)}
    if path.suffix in _FILE_SUFFIXES or source.startswith((".", "/", "~")):
        raise DataError(
            f"calibration file {source} does not exist; pass an existing .txt/.json/.jsonl file."
        )
    if source == "c4":
        return {"dataset": "allenai/c4", "data_files": C4_FILE, "split": "train"}
    return {"dataset": source, "split": "train"}


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"calibration file {path} is not UTF-8 text (undecodable byte at offset {exc.start}); "
            "pass a UTF-8 .txt/.json/.jsonl file."
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read calibration file {path}: {exc.strerror or exc}.") from exc


def _texts_from_json(path: Path) -> list[str]:
    raw = _read_utf8(path)
    try:
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"calibration file {path} is not valid JSON: {exc}.") from exc
    if isinstance(items, dict):
        items = items.get("text", items.get("data", []))
    texts = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
    if not texts:
        raise DataError(
            f"calibration file {path} holds no texts: write a list of strings or of records with a 'text' field."
        )
    return texts


def load_calibration_texts(source: str) -> list[str]:
    """The documents of a calibration source (see the module docstring)."""
    domains = corpora_domains(source)
    if domains is not None:
        from lcc_lens.corpora import split_documents

        return [d.text for d in split_documents("calibration", domains)]
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix in (".json", ".jsonl"):
            return _texts_from_json(path)
        text = _read_utf8(path)
        if not text.strip():
            raise DataError(f"calibration file {path} is empty; pass a file with text.")
        return [text]
    calibration_identity(source)  # raises for a missing file
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DataError("loading a calibration dataset needs the `datasets` package.") from exc
    try:
        if source == "c4":
            ds = datasets.load_dataset("allenai/c4", data_files={"train": C4_FILE}, split="train")
        else:
            name, _, config = source.partition(":")
            ds = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:
        raise DataError(
            f"cannot load calibration dataset {source!r} ({type(exc).__name__}: {exc}). Offline, use "
            "--calibration corpora or a local .txt/.json file."
        ) from exc
    if "text" not in ds.column_names:
        raise DataError(f"dataset {source!r} has no 'text' column (columns: {ds.column_names}).")
    return [t for t in ds["text"] if isinstance(t, str) and t.strip()]


def calibration_tokens(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    n_samples: int,
    seq_len: int,
    seed: int = 0,
) -> Int[Tensor, "n_samples seq_len"]:
    """``n_samples`` sequences of exactly ``seq_len`` tokens, deterministic in ``seed``.

    Documents are visited in a seeded random order; each visit takes a window of at most ``seq_len``
    tokens at a random offset (so long documents do not dominate), windows are joined with EOS, and the
    stream is cut into sequences. Passes repeat with fresh offsets until enough sequences exist.
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError(
            "no calibration text: pass non-empty texts or another --calibration source."
        )
    rng = random.Random(seed)
    eos = tokenizer.eos_token_id
    span = seq_len * 8  # characters: comfortably more than seq_len tokens for natural text
    samples: list[list[int]] = []
    buf: list[int] = []
    order = list(range(len(texts)))
    seen: set[tuple[int, int]] = set()
    fresh = repeated = 0
    while len(samples) < n_samples:
        rng.shuffle(order)
        gained = 0
        for i in order:
            text = texts[i]
            start = rng.randrange(0, max(1, len(text) - span + 1))
            ids = tokenizer(text[start : start + span], add_special_tokens=False, verbose=False)[
                "input_ids"
            ]
            if start > 0:
                ids = ids[1:]  # the first token may be a fragment of a word
            ids = ids[:seq_len]
            if not ids:
                continue
            if (i, start) in seen:
                repeated += len(ids)
            else:
                seen.add((i, start))
                fresh += len(ids)
            buf.extend(ids)
            gained += len(ids)
            if eos is not None:
                buf.append(eos)
            while len(buf) >= seq_len and len(samples) < n_samples:
                samples.append(buf[:seq_len])
                buf = buf[seq_len:]
            if len(samples) >= n_samples:
                break
        if gained == 0:
            raise DataError("the calibration texts tokenize to nothing; pass real text.")
        if repeated and fresh < seq_len:
            raise DataError(
                f"the calibration text holds only {fresh} tokens, fewer than one sequence of "
                f"seq_len={seq_len}; it would be repeated to fill {n_samples} sequences. Pass more "
                "text (or lower --seq-len / --n-samples)."
            )
    if repeated:
        logger.warning(
            "calibration text is short: %.0f %% of the %d x %d calibration tokens repeat the same "
            "windows; pass more text for a representative calibration",
            100.0 * repeated / (fresh + repeated),
            n_samples,
            seq_len,
        )
    return torch.tensor(samples, dtype=torch.long)


def tokens_sha(tokens: Tensor) -> str:
    """A short content hash of calibration token ids (recorded in reports)."""
    return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()[:16]
