"""A name read from a file, or a link found in a folder, never leads out of that folder.

Checkpoint folders name their own files: a shard index maps tensors to shard file names, a folder holds
tokenizer files and links. A crafted folder can name ``../../.bashrc`` or link ``notes.txt`` to a file
elsewhere; whatever reads (or copies) by those names would then read or overwrite files outside. Every
such name goes through :func:`inside`, every folder whose entries are copied through
:func:`check_links`.

One exception: a Hugging Face hub cache snapshot (``models--org--name/snapshots/<rev>/``) is made of
links into the same repository's ``blobs/`` folder; links from a snapshot may point there.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from lcc_lens.errors import UnsafePathError, shown

_MAX_ENTRIES = 10_000


def _roots(folder: Path) -> tuple[Path, ...]:
    """Where names and links of ``folder`` may lead: the folder, and a hub snapshot's ``blobs``."""
    real = folder.resolve()
    roots = [real]
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        roots.append((folder.parent.parent / "blobs").resolve())
    return tuple(roots)


def _within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def inside(folder: str | os.PathLike[str], name: object, *, what: str = "file name") -> Path:
    """``folder / name``, after checking that ``name`` (read from a file in ``folder``) stays inside.

    Refuses non-text or empty names, absolute paths, ``..`` parts and names whose target (links
    followed) lies outside ``folder``, with :class:`~lcc_lens.errors.UnsafePathError`.
    """
    folder = Path(folder)
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise UnsafePathError(
            f"{folder}: a {what} read from the folder is {shown(name)}, not a file name. The "
            "folder is corrupt or crafted; re-save it with the tool that wrote it."
        )
    parts = PurePosixPath(name).parts + PureWindowsPath(name).parts
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or ".." in parts:
        raise UnsafePathError(
            f"{folder}: the {what} {shown(name)} leads out of the folder; lcc_lens reads and writes "
            "only files inside it. The folder is corrupt or crafted; re-save it with the tool that "
            "wrote it."
        )
    path = folder / name
    if not _within(path.resolve(), _roots(folder)):
        raise UnsafePathError(
            f"{path} is a link to {path.resolve()}, outside {folder}; lcc_lens never follows a link "
            "out of a checkpoint folder. Replace the link with a copy of the file (or remove it)."
        )
    return path


def check_links(folder: str | os.PathLike[str]) -> None:
    """Refuse a folder holding a link (at any depth) whose target lies outside the folder."""
    folder = Path(folder)
    roots = _roots(folder)
    for count, path in enumerate(folder.rglob("*")):
        if count > _MAX_ENTRIES:
            raise UnsafePathError(
                f"{folder} holds more than {_MAX_ENTRIES} entries; it is not a checkpoint folder."
            )
        if path.is_symlink() and not _within(path.resolve(), roots):
            raise UnsafePathError(
                f"{path} is a link to {path.resolve()}, outside {folder}; lcc_lens never follows a "
                "link out of a checkpoint folder. Replace the link with a copy of the file (or "
                "remove it)."
            )
