"""Checks of command-line inputs and outputs that run before any model is loaded."""

from __future__ import annotations

import os
from pathlib import Path

from lcc_lens.atomic import check_replaceable, check_writable
from lcc_lens.errors import BAD_INPUT_ERRORS, ConfigError, LccError


def check_model_source(source: str, flag: str) -> str:
    """Resolve a model source (directory, hub id, embedded alias); any failure is bad input."""
    from lcc_lens.models import resolve_model_source

    try:
        return resolve_model_source(source)
    except BAD_INPUT_ERRORS:
        raise
    except LccError as exc:
        raise ConfigError(f"{flag} {source}: {exc}") from exc


def check_output_dir(out: str | os.PathLike[str], *, overwrite: bool, flag: str = "--out") -> Path:
    """Refuse an existing non-empty ``out`` without ``--overwrite``, and with it anything lcc_lens did
    not write; check the path could be created. Creates nothing."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        empty_dir = out.is_dir() and not out.is_symlink() and not any(out.iterdir())
        if not empty_dir and not overwrite:
            raise ConfigError(
                f"{flag} {out} already exists. Pass --overwrite to replace an earlier lcc_lens "
                f"output, or choose another {flag}."
            )
        check_replaceable(out, what=flag)
    return check_writable(out, what=flag)


def check_output_file(
    out: str | os.PathLike[str], *, overwrite: bool, suffix: str, flag: str = "--out"
) -> Path:
    """A results file path: it must end in ``suffix``, must not be a directory, and must not exist
    unless ``overwrite``. Creates nothing."""
    out = Path(out)
    if out.suffix != suffix:
        raise ConfigError(
            f"{flag} {out} must be a {suffix} file path (e.g. {out.with_suffix(suffix)}); a "
            f"{suffix[1:].upper()} report is written there and a .md table beside it."
        )
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; pass a file path ending in {suffix}.")
    if out.exists() and not overwrite:
        raise ConfigError(
            f"{flag} {out} already exists. Pass --overwrite or choose another {flag}."
        )
    return check_writable(out, what=flag)
