"""Reading a ``--config`` YAML file: plain settings only, refused quickly when crafted.

A settings file needs no anchors or aliases, no integer beyond 64 bits and no deep nesting. Allowing
them lets a few hundred bytes expand into gigabytes (an alias "billion laughs"), integers of thousands of
digits, or nesting that exhausts the stack, so each is a :class:`~lcc_lens.errors.ConfigError` raised
while the file is parsed, before any value is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent

from lcc_lens.errors import ConfigError, shown

MAX_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_INT_DIGITS = 19  # 2**63 - 1 has 19 digits
_INT_LIMIT = 2**63


class Refused(yaml.YAMLError):
    """A construct that a settings file does not need (an alias, a huge integer, deep nesting)."""


class SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, with bounded nesting and integers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise Refused(
                f"uses a YAML anchor or alias (line {event.start_mark.line + 1}, column "
                f"{event.start_mark.column + 1}); write each value out in full"
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH and isinstance(event, CollectionStartEvent):
                raise Refused(
                    f"nests deeper than {MAX_DEPTH} levels (line {event.start_mark.line + 1}); "
                    "settings are at most a few sections deep"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS + 2:  # room for leading zeros and base prefixes; checked below
            raise self._huge(node)
        value = super().construct_yaml_int(node)
        if abs(value) >= _INT_LIMIT:
            raise self._huge(node)
        return value

    @staticmethod
    def _huge(node: Any) -> Refused:
        return Refused(
            f"has an integer beyond 64 bits ({shown(str(node.value), 40)} at line "
            f"{node.start_mark.line + 1}); settings integers are far smaller"
        )


SettingsLoader.add_constructor("tag:yaml.org,2002:int", SettingsLoader.construct_yaml_int)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ConfigError for a missing, binary, malformed or crafted file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (or is not a file).")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(
            f"config file {path} is {size} bytes; a settings file is small (at most {MAX_BYTES}). "
            "Pass the YAML file of settings."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); pass a YAML file."
        ) from exc
    try:
        data = yaml.load(text, Loader=SettingsLoader)  # noqa: S506 - a safe loader, stricter still
    except Refused as exc:
        raise ConfigError(f"config file {path} {exc}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of field: value, got {type(data).__name__}."
        )
    return data
