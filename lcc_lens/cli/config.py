"""Flags + optional YAML -> a frozen (nested) config dataclass: the one parser of every subcommand.

Flags are generated from the dataclass fields, one per settable leaf field, the help line from
``metadata["help"]`` with the default appended. The flag is the kebab-case field name wherever the
field sits (``n_probe`` -> ``--n-probe``), unless it is named explicitly: by the field's metadata
``flag`` (in every command) or by the command's ``flags`` table of ``section.field: --flag``
(``"train.batch_size": "--train-batch-size"``). Two fields with one flag are a TypeError when the
parser is built, so a field added elsewhere never renames an existing flag: it needs a name of its
own. A nested dataclass field is a YAML section; one whose metadata says ``inline=True`` has its
fields at its parent's level (YAML and flags), e.g. a command's pruning settings. Other metadata keys:
``aliases`` (extra flag names), ``metavar``, ``default_text`` (the default as shown in help),
``cli=False`` (not settable).

Values: ``none``/``null`` for Optional fields; ``true``/``false`` or ``--x``/``--no-x`` for booleans;
a tuple field takes a comma-separated list and may be repeated. The flags given are merged over the
``--config`` YAML file and the result is checked and built once, by :func:`lcc_lens.settings.build`
(the same check as :meth:`~lcc_lens.fit.config.FitConfig.from_dict`): a YAML value of the wrong type
is a :class:`~lcc_lens.errors.ConfigError` naming the field, never converted.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lcc_lens.cli.values import from_text
from lcc_lens.cli.yaml_file import read_yaml
from lcc_lens.errors import ConfigError
from lcc_lens.settings import (
    build,
    check_value,
    field_default,
    is_dataclass_type,
    strip_optional,
)

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


def _walk(
    cls: type,
    path: tuple[str, ...],
    yaml_path: tuple[str, ...],
    hidden_nested: frozenset[str],
    base: Any = None,
) -> list[FlagSpec]:
    out: list[FlagSpec] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli", True) is False:
            continue
        if yaml_path and f.name in hidden_nested:
            continue
        tp = hints[f.name]
        default = getattr(base, f.name) if base is not None else field_default(f)
        if is_dataclass_type(tp):
            out += _walk(
                tp,
                (*path, f.name),
                yaml_path if f.metadata.get("inline") else (*yaml_path, f.name),
                hidden_nested,
                None if default is dataclasses.MISSING else default,
            )
            continue
        out.append(
            FlagSpec(
                path=(*path, f.name),
                yaml_path=(*yaml_path, f.name),
                flag=str(f.metadata.get("flag", "")) or "--" + f.name.replace("_", "-"),
                aliases=tuple(f.metadata.get("aliases", ())),
                type=tp,
                default=default,
                help=_help(f, default),
                required=default is dataclasses.MISSING,
                metavar=str(f.metadata.get("metavar", "")),
            )
        )
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


def config_flags(
    cls: type, *, hidden_nested: Collection[str] = (), flags: Mapping[str, str] | None = None
) -> list[FlagSpec]:
    """Every settable leaf field of ``cls`` with its flag name (see the module docstring).

    ``flags`` names flags explicitly by the field's YAML path (``{"train.batch_size":
    "--train-batch-size"}``); ``hidden_nested`` names fields that are not settable inside sections
    (e.g. ``seed`` where the run's seed is copied into every section). A flag name given to two
    fields, or a ``flags`` entry that names no field, is a TypeError."""
    specs = _walk(cls, (), (), frozenset(hidden_nested))
    table = dict(flags or {})
    named = []
    for spec in specs:
        flag = table.pop(".".join(spec.yaml_path), spec.flag)
        named.append(dataclasses.replace(spec, flag=flag))
    if table:
        raise TypeError(f"flags table names fields that do not exist: {sorted(table)}")
    seen: dict[str, tuple[str, ...]] = {}
    for spec in named:
        for name in (spec.flag, *spec.aliases):
            if name in seen:
                raise TypeError(
                    f"flag {name} names two fields, {'.'.join(seen[name])} and "
                    f"{'.'.join(spec.yaml_path)}: give one an explicit name in the command's flags table"
                )
            seen[name] = spec.yaml_path
    return named


# ----------------------------------------------------------------------------------------------
# parser and builder


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    hidden_nested: Collection[str] = (),
    flags: Mapping[str, str] | None = None,
) -> list[FlagSpec]:
    """Add one flag per leaf field of ``cls`` to ``parser`` (unset flags leave no value)."""
    specs = config_flags(cls, hidden_nested=hidden_nested, flags=flags)
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
    """The values of the flags actually given, parsed to their field types, by YAML path."""
    given = vars(ns)
    out: dict[tuple[str, ...], Any] = {}
    for spec in specs:
        if spec.dest not in given:
            continue
        raw = given[spec.dest]
        inner, _ = strip_optional(spec.type)
        if isinstance(raw, bool):
            out[spec.yaml_path] = raw
        elif typing.get_origin(inner) is tuple and isinstance(raw, list):
            parts: list[Any] = []
            for text in raw:
                value = from_text(text, spec.type, spec.flag)
                if value is None:
                    parts = []
                    out[spec.yaml_path] = None
                    break
                parts.extend(value)
            else:
                out[spec.yaml_path] = tuple(parts)
        else:
            out[spec.yaml_path] = from_text(raw, spec.type, spec.flag)
    return out


def _merged(data: Mapping[str, Any], flags: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """``data`` (the YAML mapping) with each flag value set at its path; nothing is mutated.

    Where the YAML holds a non-mapping in place of a section, it is kept for the check to report."""
    out = dict(data)
    for path, value in flags.items():
        node = out
        for key in path[:-1]:
            child = node.get(key, {})
            if not isinstance(child, Mapping):
                break
            node[key] = node = dict(child)
        else:
            node[path[-1]] = value
    return out


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """``(True, value)`` at ``path`` in nested ``data``, else ``(False, None)``."""
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def parse_config(
    cls: type,
    ns: argparse.Namespace,
    specs: Sequence[FlagSpec],
    yaml_file: str | Path | None = None,
) -> Any:
    """The YAML file (if any) with the given flags over it, checked and built once -> a frozen ``cls``."""
    data = read_yaml(yaml_file) if yaml_file is not None else {}
    for spec in specs:  # every value of the file is checked, also one that a flag overrides
        found, value = _lookup(data, spec.yaml_path)
        if found:
            check_value(value, spec.type, ".".join(spec.yaml_path))
    values = _merged(data, flag_values(ns, specs))
    missing = [s.flag for s in specs if s.required and not _lookup(values, s.yaml_path)[0]]
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
    flags: Mapping[str, str] | None = None,
) -> tuple[LccArgumentParser, list[FlagSpec]]:
    """A parser with one flag per field of ``cls`` plus ``--config YAML`` (unless ``yaml=False``);
    ``flags`` and ``hidden_nested`` as in :func:`config_flags`."""
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
    specs = add_config_flags(parser, cls, hidden_nested=hidden_nested, flags=flags)
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
