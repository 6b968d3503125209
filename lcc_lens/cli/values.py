"""Command-line text to values of the config dataclasses' field types.

``none``/``null`` for Optional fields, ``true``/``false`` (or ``yes``/``no``, ``1``/``0``) for booleans,
comma-separated tuples, the first member that parses for a union (``int | float``). The parsed values
then go through the same check as a YAML file's (:func:`lcc_lens.settings.build`).
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any, Literal

from lcc_lens.errors import ConfigError, shown
from lcc_lens.settings import NONE_WORDS, bad_value, first_member, strip_optional, union_args

_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


def from_text(text: str, tp: Any, where: str) -> Any:
    """Convert a command-line string to a value of ``tp`` (raises ConfigError naming ``where``)."""
    inner, optional = strip_optional(tp)
    if optional and text.strip().lower() in NONE_WORDS:
        return None
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise ConfigError(
            f"{where} must be one of {', '.join(map(str, choices))}; got {shown(text)}."
        )
    if origin is tuple:
        item = typing.get_args(inner)[0]
        return tuple(from_text(p.strip(), item, where) for p in text.split(",") if p.strip())
    members = union_args(inner)
    if members:
        return first_member(from_text, text, tp, members, where)
    if inner is bool:
        low = text.strip().lower()
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise bad_value(where, text, tp)
    if inner is int:
        try:
            return int(text.strip())
        except ValueError:
            raise bad_value(where, text, tp) from None
    if inner is float:
        try:
            value = float(text.strip())
        except ValueError:
            raise bad_value(where, text, tp) from None
        if math.isnan(value):
            raise ConfigError(f"{where} must be a number, got NaN.")
        return value
    if inner is Path:
        return Path(text).expanduser()
    if inner is str:
        return text
    raise TypeError(f"lcc_lens.cli.config cannot parse {where} of type {tp!r}")
