"""Atomic output: write into a temporary sibling, rename into place only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lcc_lens.errors import LccError


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path``'s parent if needed and check it can be written; raise a clear error if not."""
    path = Path(path)
    parent = path.parent if path.suffix else path
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LccError(
            f"cannot create output directory {parent}: {exc}. Choose a writable --out."
        ) from exc
    if not os.access(parent, os.W_OK):
        raise LccError(f"output directory {parent} is not writable. Choose a writable --out.")
    return path


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success it replaces ``final``.

    On any exception the temporary directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    ensure_writable_dir(final.parent / "x.tmp")
    if final.exists() and not overwrite:
        raise LccError(f"{final} already exists. Remove it or pass overwrite=True.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        backup = final.with_name(f".{final.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        final.rename(backup)
        tmp.rename(final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(final)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; ``os.replace`` it into place on success."""
    final = Path(final)
    ensure_writable_dir(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
