"""The nested fit configuration: every knob documented, YAML round trip, typed errors, legacy keys."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from lcc_lens.errors import ConfigError
from lcc_lens.fit import FitConfig


def _leaves(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from _leaves(type(default), prefix + f.name + ".")


def test_every_field_has_help():
    missing = [path for path, f in _leaves(FitConfig) if not f.metadata.get("help")]
    assert missing == []


def test_yaml_round_trip_of_a_non_default_config():
    c = FitConfig.from_dict(
        {
            "seed": 3,
            "max_length": 64,
            "prune": {"method": "magnitude", "n_samples": 8},
            "data": {"n_train": 32, "fit_domains": ["python_docs"]},
            "diff": {"positions": "all", "max_samples": 64},
            "probe": {"n_pairs": 40},
            "select": {"method": "kl", "n_heads": 5},
            "compensation": {"k": 2, "init": "lost_component"},
            "train": {"weight_decay": 0.1, "steps": None, "epochs": 2},
            "eval": {"windows": 7},
        }
    )
    assert c.data.fit_domains == ("python_docs",) and c.train.steps is None
    assert c.train.seed == c.data.seed == c.select.seed == c.eval.seed == 3
    assert c.train.checkpoint_every == 8  # a partial section keeps the fit's own defaults
    text = yaml.safe_dump(c.to_dict(), sort_keys=False)
    assert FitConfig.from_dict(yaml.safe_load(text)) == c


def test_defaults_are_the_fit_defaults():
    c = FitConfig()
    assert (c.train.steps, c.train.checkpoint_every, c.diff.max_length, c.max_length) == (
        48,
        8,
        128,
        128,
    )
    assert FitConfig.from_dict({}) == c


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"select": {"n_heads": 2.5}}, "select.n_heads must be integer"),
        ({"select": {"n_heads": "3"}}, "select.n_heads must be integer"),
        ({"train": {"lr": "fast"}}, "train.lr must be number"),
        ({"train": {"lr": True}}, "train.lr must be number"),
        ({"compensation": {"use_bias": "yes"}}, "compensation.use_bias must be true/false"),
        ({"compensation": {"init": "ones"}}, "compensation.init must be one of"),
        ({"dtype": "float64"}, "dtype must be one of"),
        ({"data": {"fit_domains": ["python_docs", 3]}}, r"data.fit_domains\[1\]"),
        ({"train": {"learning_rate": 1}}, "unknown field .train.learning_rate."),
        ({"nonsense": 1}, "unknown field .nonsense."),
        ({"train": 5}, "train must be a mapping"),
        ({"data": {"seed": 1}}, "top-level 'seed'"),
        ({"worse_margin": -1.0}, "worse_margin"),
        ({"worse_margin": float("inf")}, "worse_margin must be a finite number.*--allow-worse"),
        ({"max_length": 1}, "max_length must be >= 2"),
        ({"train": {"warmup_fraction": -0.1}}, "warmup_fraction"),
        ({"device_map": "everywhere"}, "everywhere"),
        ({"steps": 3, "train": {"steps": 4}}, "keep only 'train.steps'"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(ConfigError, match=match):
        FitConfig.from_dict(values)


def test_legacy_flat_keys_of_earlier_runs_still_load():
    c = FitConfig.from_dict(
        {"steps": 3, "heads": "norm", "data": "x.jsonl", "max_length": 64, "eval_windows": 5}
    )
    assert (c.train.steps, c.select.method, c.data.source) == (3, "norm", "x.jsonl")
    assert (c.max_length, c.diff.max_length, c.eval.windows) == (64, 64, 5)
