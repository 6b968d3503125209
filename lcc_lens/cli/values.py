"""Field types of the config dataclasses: command-line text and YAML values to typed values.

Command-line text is converted (``none``/``null`` for Optional fields, ``true``/``false``, comma-separated
tuples); YAML values are checked strictly and never converted (``2.5`` or ``"8"`` for an int is a
:class:`~lcc_lens.errors.ConfigError`), except an int for a float.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from lcc_lens.errors import ConfigError, shown

_NONE_WORDS = {"none", "null"}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def strip_optional(tp: Any) -> tuple[Any, bool]:
    args = _union_args(tp)
    if args is None or type(None) not in args:
        return tp, False
    rest = tuple(a for a in args if a is not type(None))
    return (rest[0] if len(rest) == 1 else typing.Union[rest]), True  # noqa: UP007


def type_name(tp: Any) -> str:
    """A short human name of a field type for messages and metavars."""
    inner, optional = strip_optional(tp)
    if optional:
        return f"{type_name(inner)} or none"
    if typing.get_origin(inner) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(inner)))
    args = _union_args(inner)
    if args:
        return " or ".join(type_name(a) for a in args)
    if typing.get_origin(inner) is tuple:
        return f"list of {type_name(typing.get_args(inner)[0])}"
    return {int: "integer", float: "number", str: "text", bool: "true/false", Path: "path"}.get(
        inner, getattr(inner, "__name__", str(inner))
    )


def _bad(where: str, value: Any, tp: Any) -> ConfigError:
    return ConfigError(f"{where} must be {type_name(tp)}, got {shown(value)}.")


def from_text(text: str, tp: Any, where: str) -> Any:
    """Convert a command-line string to a value of ``tp`` (raises ConfigError naming ``where``)."""
    inner, optional = strip_optional(tp)
    if optional and text.strip().lower() in _NONE_WORDS:
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
    args = _union_args(inner)
    if args:  # e.g. int | float: the first member that accepts the text
        for member in args:
            try:
                return from_text(text, member, where)
            except ConfigError:
                continue
        raise _bad(where, text, tp)
    if inner is bool:
        low = text.strip().lower()
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise _bad(where, text, tp)
    if inner is int:
        try:
            return int(text.strip())
        except ValueError:
            raise _bad(where, text, tp) from None
    if inner is float:
        try:
            value = float(text.strip())
        except ValueError:
            raise _bad(where, text, tp) from None
        if math.isnan(value):
            raise ConfigError(f"{where} must be a number, got NaN.")
        return value
    if inner is Path:
        return Path(text).expanduser()
    if inner is str:
        return text
    raise TypeError(f"lcc_lens.cli.config cannot parse {where} of type {tp!r}")


def from_yaml(value: Any, tp: Any, where: str) -> Any:
    """Check a YAML value against ``tp`` strictly (no silent conversions) and return it."""
    inner, optional = strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise _bad(where, value, tp)
    if isinstance(value, str) and optional and value.strip().lower() in _NONE_WORDS:
        return None
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(
            f"{where} must be one of {', '.join(map(str, choices))}; got {shown(value)}."
        )
    if origin is tuple:
        item = typing.get_args(inner)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(from_yaml(v, item, where) for v in items)
    args = _union_args(inner)
    if args:
        for member in args:
            try:
                return from_yaml(value, member, where)
            except ConfigError:
                continue
        raise _bad(where, value, tp)
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise _bad(where, value, tp)
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(where, value, tp)
    if inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{where} must be a number, got NaN.")
            return float(value)
        raise _bad(where, value, tp)
    if inner in (str, Path):
        if isinstance(value, str):
            return Path(value).expanduser() if inner is Path else value
        raise _bad(where, value, tp)
    raise TypeError(f"lcc_lens.cli.config cannot read {where} of type {tp!r}")
