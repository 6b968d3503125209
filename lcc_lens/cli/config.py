"""Flags + optional YAML -> a frozen (nested) config dataclass: the one parser of every subcommand.

Flags are generated from the dataclass fields: the kebab-case field name (``n_probe`` -> ``--n-probe``),
the help line from ``metadata["help"]`` with the default appended. A nested dataclass field is a YAML
section; its fields get bare flags when their name is unique in the whole tree and ``--section-name``
otherwise. A field whose metadata says ``inline=True`` has its fields at its parent's level (YAML and
flags), e.g. a command's pruning settings. Other metadata keys: ``flag`` (an explicit flag name),
``aliases`` (extra flag names), ``metavar``, ``default_text`` (the default as shown in help),
``cli=False`` (not settable).

Values: ``none``/``null`` for Optional fields; ``true``/``false`` or ``--x``/``--no-x`` for booleans;
a tuple field takes a comma-separated list and may be repeated. YAML values must already have the
field's type (``2.5`` or ``"8"`` for an int is a :class:`~lcc_lens.errors.ConfigError`). Flags override
YAML; anything the dataclass constructors reject becomes a ConfigError naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lcc_lens.cli.values import (
    from_text,
    from_yaml,
    is_dataclass_type,
    strip_optional,
)
from lcc_lens.cli.yaml_file import read_yaml
from lcc_lens.errors import ConfigError, shown

_DEST_PREFIX = "cfg:"


class LccArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`ConfigError` instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}. See `{self.prog} --help`.")


@dataclass(frozen=True)
class FlagSpec:
    """One settable leaf field: where it sits in the tree, its flag, type, default and help."""

    path: tuple[str, ...]
    yaml_path: tuple[str, ...]
    flag: str
    aliases: tuple[str, ...]
    type: Any
    default: Any
    help: str
    required: bool
    metavar: str = ""

    @property
    def dest(self) -> str:
        return _DEST_PREFIX + ".".join(self.path)


# ----------------------------------------------------------------------------------------------
# the field tree


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _walk(
    cls: type,
    path: tuple[str, ...],
    yaml_path: tuple[str, ...],
    flag_path: tuple[str, ...],
    hidden_nested: frozenset[str],
    base: Any = None,
) -> list[tuple[FlagSpec, tuple[str, ...]]]:
    out: list[tuple[FlagSpec, tuple[str, ...]]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli", True) is False:
            continue
        if flag_path and f.name in hidden_nested:
            continue
        tp = hints[f.name]
        default = getattr(base, f.name) if base is not None else _field_default(f)
        if is_dataclass_type(tp):
            inline = bool(f.metadata.get("inline"))
            out += _walk(
                tp,
                (*path, f.name),
                yaml_path if inline else (*yaml_path, f.name),
                flag_path if inline else (*flag_path, f.name),
                hidden_nested,
                None if default is dataclasses.MISSING else default,
            )
            continue
        spec = FlagSpec(
            path=(*path, f.name),
            yaml_path=(*yaml_path, f.name),
            flag=str(f.metadata.get("flag", "")),
            aliases=tuple(f.metadata.get("aliases", ())),
            type=tp,
            default=default,
            help=_help(f, default),
            required=default is dataclasses.MISSING,
            metavar=str(f.metadata.get("metavar", "")),
        )
        out.append((spec, flag_path))
    return out


def _show_default(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "empty"
    return str(default)


def _help(f: dataclasses.Field, default: Any) -> str:
    text = str(f.metadata.get("help", "")).strip()
    if not text:
        return ""
    if default is dataclasses.MISSING:
        return f"{text} (required)"
    shown = f.metadata.get("default_text", _show_default(default))
    return f"{text} (default: {shown})"


def _kebab(*parts: str) -> str:
    return "--" + "-".join(p.replace("_", "-") for p in parts)


def config_flags(cls: type, *, hidden_nested: Collection[str] = ()) -> list[FlagSpec]:
    """Every settable leaf field of ``cls`` with its flag name (see the module docstring).

    ``hidden_nested`` names fields that are not settable inside sections (e.g. ``seed`` where the
    run's seed is copied into every section)."""
    walked = _walk(cls, (), (), (), frozenset(hidden_nested))
    counts: dict[str, int] = {}
    for spec, _ in walked:
        counts[spec.path[-1]] = counts.get(spec.path[-1], 0) + 1
    specs = []
    for spec, flag_path in walked:
        name = spec.path[-1]
        if spec.flag:
            flag = spec.flag
        elif counts[name] == 1 or not flag_path:
            flag = _kebab(name)
        else:
            flag = _kebab(*flag_path, name)
        specs.append(dataclasses.replace(spec, flag=flag))
    seen: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        for name in (spec.flag, *spec.aliases):
            if name in seen:
                raise TypeError(f"flag {name} is generated twice ({seen[name]} and {spec.path})")
            seen[name] = spec.path
    return specs


# ----------------------------------------------------------------------------------------------
# parser and builder


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type, *, hidden_nested: Collection[str] = ()
) -> list[FlagSpec]:
    """Add one flag per leaf field of ``cls`` to ``parser`` (unset flags leave no value)."""
    specs = config_flags(cls, hidden_nested=hidden_nested)
    for spec in specs:
        inner, _ = strip_optional(spec.type)
        help_text = spec.help.replace("%", "%%")
        names = [spec.flag, *spec.aliases]
        if inner is bool:
            parser.add_argument(
                *names,
                dest=spec.dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        metavar = _metavar(spec)
        parser.add_argument(
            *names,
            dest=spec.dest,
            default=argparse.SUPPRESS,
            action="append" if typing.get_origin(inner) is tuple else "store",
            metavar=metavar,
            help=help_text,
        )
    return specs


def _metavar(spec: FlagSpec) -> str:
    if spec.metavar:
        return spec.metavar
    inner, optional = strip_optional(spec.type)
    if typing.get_origin(inner) is tuple:
        inner = typing.get_args(inner)[0]
    if typing.get_origin(inner) is Literal:
        words = [str(c) for c in typing.get_args(inner)] + (["none"] if optional else [])
        return "{" + ",".join(words) + "}"
    base = {int: "INT", float: "FLOAT", Path: "PATH", bool: "BOOL"}.get(inner)
    if base is None:
        base = spec.path[-1].upper()
    return base


def flag_values(ns: argparse.Namespace, specs: Sequence[FlagSpec]) -> dict[tuple[str, ...], Any]:
    """The values of the flags actually given, converted to their field types."""
    given = vars(ns)
    out: dict[tuple[str, ...], Any] = {}
    for spec in specs:
        if spec.dest not in given:
            continue
        raw = given[spec.dest]
        inner, _ = strip_optional(spec.type)
        if isinstance(raw, bool):
            out[spec.path] = raw
        elif typing.get_origin(inner) is tuple and isinstance(raw, list):
            parts: list[Any] = []
            for text in raw:
                value = from_text(text, spec.type, spec.flag)
                if value is None:
                    parts = []
                    out[spec.path] = None
                    break
                parts.extend(value)
            else:
                out[spec.path] = tuple(parts)
        else:
            out[spec.path] = from_text(raw, spec.type, spec.flag)
    return out


def yaml_values(
    data: Mapping[str, Any], specs: Sequence[FlagSpec], source: str = "config"
) -> dict[tuple[str, ...], Any]:
    """Check a (nested) YAML mapping against the fields; unknown keys and wrong types raise."""
    by_yaml = {spec.yaml_path: spec for spec in specs}
    sections = {p[:i] for p in by_yaml for i in range(1, len(p))}
    out: dict[tuple[str, ...], Any] = {}

    def visit(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            where = (*prefix, str(key))
            if where in by_yaml:
                spec = by_yaml[where]
                out[spec.path] = from_yaml(value, spec.type, f"{source} field {'.'.join(where)}")
            elif where in sections:
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{source} section {'.'.join(where)} must be a mapping, got {shown(value)}."
                    )
                visit(value, where)
            else:
                known = sorted(
                    {
                        p[len(prefix)]
                        for p in (*by_yaml, *sections)
                        if len(p) > len(prefix) and p[: len(prefix)] == prefix
                    }
                )
                import difflib

                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{source} has an unknown field {shown('.'.join(where))}{hint}; known fields here: "
                    f"{', '.join(known)}."
                )

    visit(data, ())
    return out


def build(cls: type, values: Mapping[tuple[str, ...], Any]) -> Any:
    """Construct ``cls`` from leaf values keyed by field path; nested defaults are kept."""
    return _build(cls, values, (), None)


def _build(cls: type, values: Mapping[tuple[str, ...], Any], path: tuple[str, ...], base: Any):
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        here = (*path, f.name)
        tp = hints[f.name]
        if is_dataclass_type(tp):
            if any(p[: len(here)] == here for p in values):
                default = getattr(base, f.name) if base is not None else _field_default(f)
                kwargs[f.name] = _build(
                    tp, values, here, None if default is dataclasses.MISSING else default
                )
        elif here in values:
            kwargs[f.name] = values[here]
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        where = ".".join(path) or cls.__name__
        raise ConfigError(f"invalid {where} settings: {exc}") from exc


def parse_config(
    cls: type,
    ns: argparse.Namespace,
    specs: Sequence[FlagSpec],
    yaml_file: str | Path | None = None,
) -> Any:
    """YAML file (if any) first, then the given flags on top -> a frozen ``cls``."""
    values: dict[tuple[str, ...], Any] = {}
    if yaml_file is not None:
        values.update(yaml_values(read_yaml(yaml_file), specs, source=f"config file {yaml_file}"))
    values.update(flag_values(ns, specs))
    missing = [s.flag for s in specs if s.required and s.path not in values]
    if missing:
        raise ConfigError(
            f"missing required option(s) {', '.join(missing)} (a flag or a key of --config)."
        )
    return build(cls, values)


def command_parser(
    prog: str,
    description: str,
    cls: type,
    *,
    yaml: bool = True,
    epilog: str | None = None,
    hidden_nested: Collection[str] = (),
) -> tuple[LccArgumentParser, list[FlagSpec]]:
    """A parser with one flag per field of ``cls`` plus ``--config YAML`` (unless ``yaml=False``)."""
    parser = LccArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if yaml:
        parser.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="YAML",
            help="YAML file of the same settings (sections mirror the nested configs); flags "
            "override it (default: none)",
        )
    specs = add_config_flags(parser, cls, hidden_nested=hidden_nested)
    return parser, specs


def parse_command(
    cls: type, parser: argparse.ArgumentParser, specs: Sequence[FlagSpec], argv: Sequence[str]
) -> Any:
    """Parse ``argv`` with ``parser`` (from :func:`command_parser`) into a frozen ``cls``."""
    ns = parser.parse_args(list(argv))
    yaml_file = getattr(ns, "config", None)
    return parse_config(cls, ns, specs, yaml_file if isinstance(yaml_file, Path) else None)


def verbose_field() -> Any:
    """The ``verbose`` field every command's arguments carry (``--verbose``)."""
    return dataclasses.field(
        default=False,
        metadata={"help": "debug logging, and the traceback of an unexpected error"},
    )
