"""The one flags + YAML -> frozen config helper (lcc_lens.cli.config) on small synthetic dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lcc_lens.cli.config import command_parser, config_flags, parse_command
from lcc_lens.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    seed: int = field(default=0, metadata={"help": "inner seed"})
    lr: float = field(default=0.01, metadata={"help": "learning rate"})
    steps: int | None = field(default=10, metadata={"help": "optimizer steps"})

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")


@dataclass(frozen=True)
class Other:
    seed: int = field(default=0, metadata={"help": "other seed"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "mode"})
    names: tuple[str, ...] = field(default=("x",), metadata={"help": "names"})


@dataclass(frozen=True)
class Root:
    dense: str = field(metadata={"help": "model", "aliases": ("--model",)})
    seed: int = field(default=0, metadata={"help": "run seed"})
    flag: bool = field(default=True, metadata={"help": "a switch"})
    out: Path | None = field(default=None, metadata={"help": "output"})
    limit: int | float | None = field(default=None, metadata={"help": "count or fraction"})
    inner: Inner = field(default_factory=lambda: Inner(steps=5), metadata={"help": "inner"})
    other: Other = field(default_factory=Other, metadata={"help": "other"})


FLAGS = {"inner.seed": "--inner-seed", "other.seed": "--other-seed"}


def _parse(argv, yaml_text=None, tmp_path=None):
    parser, specs = command_parser("t", "test", Root, flags=FLAGS)
    if yaml_text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(yaml_text)
        argv = ["--config", str(path), *argv]
    return parse_command(Root, parser, specs, argv)


def test_flags_are_kebab_bare_unless_named_in_the_table():
    flags = {s.path: s.flag for s in config_flags(Root, flags=FLAGS)}
    assert flags[("dense",)] == "--dense"
    assert flags[("seed",)] == "--seed"
    assert flags[("inner", "seed")] == "--inner-seed"
    assert flags[("other", "seed")] == "--other-seed"
    assert flags[("inner", "lr")] == "--lr"
    assert flags[("other", "names")] == "--names"
    hidden = {s.path for s in config_flags(Root, hidden_nested=("seed",))}
    assert ("inner", "seed") not in hidden and ("seed",) in hidden


def test_a_shared_bare_name_is_refused_never_renamed():
    # without the table, inner.seed and other.seed would both be --seed: an error, not a silent
    # rename of the existing --seed
    with pytest.raises(TypeError, match="--seed names two fields, seed and inner.seed"):
        config_flags(Root)
    with pytest.raises(TypeError, match=r"do not exist: \['inner.sede'\]"):
        config_flags(Root, flags={**FLAGS, "inner.sede": "--x"})


def test_help_has_default_and_nested_default_comes_from_the_parent():
    specs = {s.flag: s for s in config_flags(Root, flags=FLAGS)}
    assert specs["--steps"].help == "optimizer steps (default: 5)"
    assert specs["--dense"].help == "model (required)"
    assert specs["--flag"].help == "a switch (default: true)"


def test_flags_build_nested_frozen_config():
    cfg = _parse(["--model", "m", "--lr", "0.5", "--mode", "b", "--names", "p,q", "--names", "r"])
    assert cfg.dense == "m" and cfg.inner == Inner(lr=0.5, steps=5)
    assert cfg.other.mode == "b" and cfg.other.names == ("p", "q", "r")
    assert _parse(["--dense", "m", "--steps", "none"]).inner.steps is None
    assert _parse(["--dense", "m", "--no-flag"]).flag is False
    assert _parse(["--dense", "m", "--limit", "0.5"]).limit == 0.5
    assert _parse(["--dense", "m", "--limit", "7"]).limit == 7
    assert _parse(["--dense", "m", "--out", "a/b.json"]).out == Path("a/b.json")
    with pytest.raises(Exception):  # noqa: B017 - frozen
        cfg.seed = 3  # type: ignore[misc]


def test_yaml_sections_and_flags_override(tmp_path):
    text = "dense: y\nseed: 4\ninner:\n  lr: 0.2\n  steps: null\nother:\n  names: [a, b]\n"
    cfg = _parse([], text, tmp_path)
    assert (cfg.dense, cfg.seed, cfg.inner.lr, cfg.inner.steps) == ("y", 4, 0.2, None)
    assert cfg.other.names == ("a", "b")
    cfg = _parse(["--lr", "0.3", "--dense", "z"], text, tmp_path)
    assert (cfg.dense, cfg.inner.lr, cfg.inner.steps) == ("z", 0.3, None)
    assert _parse([], "dense: y\ninner: {lr: 1}\n", tmp_path).inner.lr == 1.0


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("dense: y\nseed: '8'\n", "seed must be integer"),
        ("dense: y\nseed: 2.5\n", "seed must be integer"),
        ("dense: y\nseed: true\n", "seed must be integer"),
        ("dense: y\nflag: 'yes'\n", "flag must be true/false"),
        ("dense: y\ninner:\n  lr: fast\n", "inner.lr must be number"),
        ("dense: y\nother:\n  mode: c\n", "must be one of a, b"),
        ("dense: y\nsede: 1\n", "did you mean 'seed'"),
        ("dense: y\ninner: 3\n", "section inner must be a mapping"),
        ("dense: y\ninner:\n  lr: -1\n", "lr must be > 0"),
        ("- a\n- b\n", "must hold a mapping"),
        ("dense: [unclosed\n", "not valid YAML"),
        ("dense: y\nseed: null\n", "seed must be integer"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_config_errors(tmp_path, yaml_text, match):
    with pytest.raises(ConfigError, match=match):
        _parse([], yaml_text, tmp_path)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "required"),
        (["--dense", "m", "--seed", "2.5"], "--seed must be integer"),
        (["--dense", "m", "--lr", "nan"], "got NaN"),
        (["--dense", "m", "--mode", "c"], "must be one of a, b"),
        (["--dense", "m", "--no-such-flag"], "unrecognized arguments"),
        (["--dense", "m", "--lr", "0"], "lr must be > 0"),
        (["--dense", "m", "--config", "/nonexistent.yaml"], "does not exist"),
    ],
)
def test_bad_flags_are_config_errors(argv, match):
    with pytest.raises(ConfigError, match=match):
        _parse(argv)


def test_binary_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    parser, specs = command_parser("t", "test", Root, flags=FLAGS)
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_command(Root, parser, specs, ["--config", str(path)])


def test_a_bad_yaml_value_is_an_error_even_when_a_flag_overrides_it(tmp_path):
    with pytest.raises(ConfigError, match="seed must be integer"):
        _parse(["--seed", "3"], "dense: y\nseed: '8'\n", tmp_path)
    with pytest.raises(ConfigError, match="section inner must be a mapping"):
        _parse(["--lr", "0.5"], "dense: y\ninner: 3\n", tmp_path)
