"""Frozen (nested) settings dataclasses from plain mappings: the one type check of YAML and flags.

:func:`build` turns a nested mapping (a ``--config`` YAML file with the command-line flags merged on
top, or :meth:`~lcc_lens.fit.config.FitConfig.from_dict`'s input) into the dataclass, checking every
value against its field's annotation without silent conversions (``2.5`` or ``"8"`` for an int is a
:class:`~lcc_lens.errors.ConfigError`); the only conversions are an int for a float, a list for a tuple,
text for a ``Path`` and ``none``/``null`` text for an Optional field. Unknown keys, wrong types and
whatever the constructors reject become a ConfigError naming the field (``train.lr``).

A nested dataclass field is a section (a mapping); fields not given keep the parent field's default
section. A field whose metadata says ``inline=True`` has its fields at its parent's level (a command's
pruning settings). A section class with its own ``from_dict`` classmethod (``FitConfig``: legacy keys,
one seed) is built by it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from lcc_lens.errors import ConfigError, shown

NONE_WORDS = frozenset({"none", "null"})


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def union_args(tp: Any) -> tuple[Any, ...] | None:
    """The members of a ``Union``/``X | Y`` annotation (None for any other annotation)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    args = union_args(tp)
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
    args = union_args(inner)
    if args:
        return " or ".join(type_name(a) for a in args)
    if typing.get_origin(inner) is tuple:
        return f"list of {type_name(typing.get_args(inner)[0])}"
    return {int: "integer", float: "number", str: "text", bool: "true/false", Path: "path"}.get(
        inner, getattr(inner, "__name__", str(inner))
    )


def bad_value(where: str, value: Any, tp: Any) -> ConfigError:
    """The one wording of a value of the wrong type."""
    return ConfigError(f"{where} must be {type_name(tp)}, got {shown(value)}.")


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` and returned (see the module docstring)."""
    inner, optional = strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in NONE_WORDS):
        if optional or tp is Any:
            return None
        raise bad_value(where, value, tp)
    if inner is Any:
        return value
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise ConfigError(
            f"{where} must be one of {', '.join(map(str, choices))}; got {shown(value)}."
        )
    if origin is tuple:
        item = typing.get_args(inner)[0]
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(check_value(v, item, f"{where}[{i}]") for i, v in enumerate(items))
    members = union_args(inner)
    if members:
        return first_member(check_value, value, tp, members, where)
    return _check_scalar(value, inner, tp, where)


def first_member(
    convert: Callable[[Any, Any, str], Any], value: Any, tp: Any, members: tuple, where: str
) -> Any:
    """For a union (``int | float``): ``convert(value, member, where)`` of the first member that
    accepts ``value``, in the annotation's order."""
    for member in members:
        try:
            return convert(value, member, where)
        except ConfigError:
            continue
    raise bad_value(where, value, tp)


def _check_scalar(value: Any, inner: Any, tp: Any, where: str) -> Any:
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise ConfigError(f"{where} must be a number, got NaN.")
            return float(value)
    elif inner is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
    elif inner is str:
        if isinstance(value, str):
            return value
    elif isinstance(inner, type):
        if isinstance(value, inner):
            return value
    else:
        raise TypeError(f"lcc_lens.settings cannot check {where} of type {tp!r}")
    raise bad_value(where, value, tp)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def build(cls: type, values: Any, *, base: Any = None, where: str = "") -> Any:
    """``cls`` from a nested mapping; fields not given keep ``base``'s value (else their default).

    ``where`` is the dotted path of this section in messages (``""`` for the top level)."""
    if not isinstance(values, Mapping):
        what = f"section {where}" if where else "the settings"
        raise ConfigError(f"{what} must be a mapping of fields, got {shown(values)}.")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    inline = [f for f in fields if f.metadata.get("inline")]
    own = {f.name for f in fields if f not in inline}
    unknown = [k for k in values if k not in own]
    if unknown and not inline:
        raise _unknown(unknown[0], sorted(own), where)
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f in inline:
            given = {k: values[k] for k in unknown}
            inner_where = where
        elif f.name in values:
            given = values[f.name]
            inner_where = f"{where}.{f.name}" if where else f.name
        else:
            continue
        kwargs[f.name] = _value(f, hints[f.name], given, base, inner_where)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where or cls.__name__} settings: {exc}") from exc


def _value(f: dataclasses.Field, tp: Any, given: Any, base: Any, where: str) -> Any:
    if not is_dataclass_type(tp):
        return check_value(given, tp, where)
    own_builder = tp.__dict__.get("from_dict")
    if own_builder is not None:
        return tp.from_dict(given if given is not None else {})
    section = getattr(base, f.name) if base is not None else field_default(f)
    section = None if section is dataclasses.MISSING else section
    return build(tp, given if given is not None else {}, base=section, where=where)


def _unknown(key: Any, known: list[str], where: str) -> ConfigError:
    path = f"{where}.{key}" if where else str(key)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown field {shown(path)}{hint}; known fields of {where or 'the settings'}: "
        f"{', '.join(known)}."
    )
