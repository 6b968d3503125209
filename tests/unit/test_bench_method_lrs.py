"""``BenchConfig.method_lrs``: one learning rate per method (``lcc bench --method-lrs``), validated."""

from __future__ import annotations

import pytest

from lcc_lens.bench import BenchConfig
from lcc_lens.cli.bench import parse as bench_parse
from lcc_lens.errors import ConfigError


def test_method_lrs_win_over_lr_and_the_defaults():
    cfg = BenchConfig(methods=("lcc", "lora_r8"), lr=0.02, method_lrs=("lora_r8=0.003",))
    assert cfg.method_rates() == {"lora_r8": 0.003}
    assert cfg.lr_for("lora_r8", 1e-3) == 0.003
    assert cfg.lr_for("lcc", 5e-3) == 0.02  # --lr for the methods without an entry
    assert BenchConfig(methods=("lcc",)).lr_for("lcc", 5e-3) == 5e-3
    parsed = bench_parse(["--methods", "lcc,lora_r8", "--method-lrs", "lcc=0.01,lora_r8=3e-3"])
    assert parsed.bench.method_rates() == {"lcc": 0.01, "lora_r8": 0.003}


@pytest.mark.parametrize(
    "entry", ["lcc", "lcc=", "lcc=fast", "lcc=0", "lcc=-1", "lcc=nan", "lora_r8=0.01", "nope=1"]
)
def test_malformed_method_lrs_are_refused(entry):
    with pytest.raises(ConfigError, match="method_lrs"):
        BenchConfig(methods=("lcc",), method_lrs=(entry,))


def test_a_method_named_twice_is_refused():
    with pytest.raises(ConfigError, match="named once"):
        BenchConfig(methods=("lcc",), method_lrs=("lcc=0.01", "lcc=0.02"))
