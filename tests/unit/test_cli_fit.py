"""``lcc fit`` parsing: flags and YAML onto the nested FitConfig, without touching disk or models."""

from __future__ import annotations

import pytest

from lcc_lens.cli.fit import DEFAULT_OUT, parse
from lcc_lens.errors import ConfigError
from lcc_lens.fit import FitConfig


def test_defaults_are_the_fit_defaults():
    args = parse([])
    assert args.config == FitConfig() and args.out == DEFAULT_OUT
    assert not (args.resume or args.overwrite or args.verbose)


def test_flags_reach_the_sections(tmp_path):
    args = parse(
        ["--lr", "0.02", "--steps", "none", "--train-batch-size", "2", "--n-probe", "16"]
        + ["--prune-method", "sparsegpt", "--pattern", "2:4", "--seed", "3", "--out", str(tmp_path)]
    )
    cfg = args.config
    assert (cfg.train.lr, cfg.train.steps, cfg.train.batch_size) == (0.02, None, 2)
    assert cfg.data.n_probe == 16
    assert (cfg.prune.method, cfg.prune.pattern, cfg.prune.target_sparsity) == (
        "sparsegpt",
        "2:4",
        0.5,
    )
    assert cfg.seed == 3 and cfg.train.seed == 3 and cfg.prune.seed == 3  # one seed for the run
    assert args.out == tmp_path


def test_yaml_sections_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 2\ntrain:\n  lr: 0.05\n  steps: 7\nselect:\n  n_heads: 3\n")
    cfg = parse(["--config", str(path), "--steps", "9"]).config
    assert (cfg.seed, cfg.train.lr, cfg.train.steps, cfg.select.n_heads) == (2, 0.05, 9, 3)


@pytest.mark.parametrize(
    ("argv", "yaml_text", "match"),
    [
        (["--train-seed", "1"], None, "unrecognized"),  # sections' seeds follow --seed
        ([], "train:\n  seed: 1\n", "unknown field"),
        ([], "select:\n  n_heads: 2.5\n", "n_heads must be integer"),
        ([], "train:\n  lr: '0.1'\n", "lr must be number"),
        (["--device", "tpu"], None, "not a device name"),
        (["--dtype", "float64"], None, "must be one of"),
        (["--kl-weight", "nan"], None, "NaN"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, argv, yaml_text, match):
    if yaml_text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text)
        argv = [*argv, "--config", str(path)]
    with pytest.raises(ConfigError, match=match):
        parse(argv)


def test_yaml_goes_through_fitconfig_from_dict(tmp_path):
    # the one validator: `lcc fit --config` reads the same mapping FitConfig.from_dict does, legacy
    # flat keys of earlier runs included, and flags still override it
    path = tmp_path / "old.yaml"
    path.write_text("lr: 0.05\nheads: norm\n")
    cfg = parse(["--config", str(path), "--n-heads", "4"]).config
    assert cfg == FitConfig.from_dict({"lr": 0.05, "heads": "norm", "select": {"n_heads": 4}})
    assert (cfg.train.lr, cfg.select.method, cfg.select.n_heads) == (0.05, "norm", 4)
