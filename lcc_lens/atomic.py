"""Safe output: write into a temporary sibling, rename into place when complete, never replace what
lcc_lens did not write.

Every directory written through :func:`atomic_dir` carries a small marker file (:data:`OWNER_FILE`),
its temporary directory too, from the moment it is created. Replacing an existing directory is allowed
only when it carries that marker or is empty (inside lcc_lens's cache too); anything else raises
:class:`~lcc_lens.errors.OwnershipError` naming what is there. An output is never written over, into or
around a folder the same command reads (:func:`check_apart`), and :func:`writer_lock` keeps a second
writer of one output away. On any exception (including KeyboardInterrupt and the CLI's SIGTERM
:class:`~lcc_lens.errors.Interrupted`) the temporary directory or file is removed and the target is
left untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lcc_lens.errors import ConfigError, OwnershipError

OWNER_FILE = ".lcc_lens_owner"
"""Marker file in every directory lcc_lens writes; its presence allows lcc_lens to replace it."""

_OWNER_TOOL = "lcc_lens"


def mark_owned(directory: str | os.PathLike[str], kind: str) -> Path:
    """Write lcc_lens's marker into ``directory`` (e.g. kind ``"prune"``, ``"fit-run"``, ``"suite"``)."""
    marker = Path(directory) / OWNER_FILE
    marker.write_text(json.dumps({"tool": _OWNER_TOOL, "kind": kind}) + "\n")
    return marker


def owner_kind(directory: str | os.PathLike[str]) -> str | None:
    """The ``kind`` recorded by :func:`mark_owned`, or None when ``directory`` carries no valid marker."""
    marker = Path(directory) / OWNER_FILE
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("tool") != _OWNER_TOOL:
        return None
    kind = data.get("kind")
    return kind if isinstance(kind, str) else None


def is_owned(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` was written by lcc_lens (it carries a valid marker)."""
    return owner_kind(directory) is not None


def _listing(path: Path, n: int = 5) -> str:
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:n]) + (f", ... ({len(names)} entries)" if len(names) > n else "")
    return shown


def check_replaceable(path: str | os.PathLike[str], *, what: str = "output") -> None:
    """Raise :class:`OwnershipError` unless ``path`` is absent, an empty directory, or lcc_lens's own
    (a folder without the marker is refused inside lcc_lens's cache as well)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise OwnershipError(
            f"{what} {path} is an existing file, not a directory lcc_lens wrote; it is never replaced. "
            "Choose another path, or move the file away yourself."
        )
    if not any(path.iterdir()) or is_owned(path):
        return
    raise OwnershipError(
        f"{what} {path} is a directory lcc_lens did not write (it holds {_listing(path)}); it is "
        "never replaced or deleted. Choose another path, or empty it yourself."
    )


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path``'s parent if needed and check it can be written; raise a clear error if not.

    A path with a suffix is taken as a file (its parent is created), one without as a directory.
    """
    path = Path(path)
    parent = path.parent if path.suffix else path
    _ensure_dir(parent)
    return path


def ensure_parent_dir(file: str | os.PathLike[str]) -> Path:
    """Create the parent directory of the file ``file`` and check it is writable and not a folder."""
    file = Path(file)
    if file.is_dir():
        raise ConfigError(
            f"{file} is a directory; pass a file path (e.g. {file / 'results.json'})."
        )
    _ensure_dir(file.parent)
    return file


def check_writable(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Check that ``path`` could be created (its nearest existing ancestor is a writable
    directory) without creating anything."""
    path = Path(path).expanduser()
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {path}: {ancestor} is a file, not a directory.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {ancestor} is not writable. Choose a writable path.")
    return path


def check_apart(
    out: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    *,
    what: str = "--out",
) -> None:
    """Refuse an output ``out`` that is, holds or lies inside one of the local folders the command
    reads (``inputs``: flag -> path; hub ids and absent paths are skipped). Symlinks are resolved, so
    another name of the same folder is caught too. Creates nothing."""
    target = Path(out).expanduser().resolve()
    for flag, source in inputs.items():
        if source is None or not Path(source).expanduser().exists():
            continue
        read = Path(source).expanduser().resolve()
        if target == read:
            relation = "is"
        elif target.is_relative_to(read):
            relation = "lies inside"
        elif read.is_relative_to(target):
            relation = "holds"
        else:
            continue
        raise ConfigError(
            f"{what} {out} {relation} {flag} {source}, which this command reads; writing there "
            f"would destroy its input. Choose {what} outside {read}."
        )


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike[str], *, busy: str) -> Iterator[Path]:
    """Hold an exclusive lock for writing ``target`` (``flock`` on ``.<name>.lock`` beside it).

    A second writer gets :class:`ConfigError` ``busy`` at once. The lock file lies next to
    ``target``, never inside it, and is removed on release; parents created for it are removed again
    when they are still empty. Yields the lock file's path.
    """
    target = Path(target).resolve()  # one lock per folder, whatever name or link reaches it
    created = _missing_parents(target.parent)
    lock = target.with_name(f".{target.name}.lock")
    try:
        _ensure_dir(target.parent)
        fd = _lock_fd(lock, busy)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # still held: a waiting writer re-checks the path (_lock_fd)
        os.close(fd)
        _remove_empty(created)


def _lock_fd(lock: Path, busy: str) -> int:
    """An open descriptor of ``lock`` holding its exclusive ``flock``, or ConfigError ``busy``."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the lock file {lock}: {exc.strerror or exc}. Choose a writable path."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(busy) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file we locked: lock the one now there
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _missing_parents(directory: Path) -> list[Path]:
    """The folders of ``directory``'s chain that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # something was written there: it stays
            return


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output directory {directory}: {exc.strerror or exc}. Choose a writable "
            "path."
        ) from exc
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"output directory {directory} is not writable. Choose a writable path.")


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike[str], *, overwrite: bool = True, kind: str = "output"
) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success it is marked as lcc_lens's own
    (``kind``) and replaces ``final``.

    ``final`` may be replaced only when it is absent, empty, lcc_lens's own or inside its cache
    (:func:`check_replaceable`, checked before anything is written); with ``overwrite=False`` any
    non-empty ``final`` is refused. On any exception the temporary directory is removed and ``final``
    is left untouched.
    """
    final = Path(final)
    _ensure_dir(final.parent)
    if not overwrite and final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise ConfigError(f"{final} already exists. Choose another path or allow overwriting.")
    check_replaceable(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        tmp.chmod(default_mode(directory=True))
        mark_owned(tmp, kind)  # first: a temporary left by a killed process is recognisably ours
        yield tmp
        check_replaceable(final)  # it may have changed while we were writing
        if final.exists():
            backup = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            final.rename(backup)
            tmp.rename(final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool) -> int:
    """The mode a plain ``open``/``mkdir`` would give: temporary files are created private (0600)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; ``os.replace`` it into place on success."""
    final = ensure_parent_dir(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(default_mode(directory=False))
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
