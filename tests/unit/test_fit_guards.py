"""The fit's guards: a diverged compensation is not exported, nor weights beyond the target dtype."""

from __future__ import annotations

import math

import pytest
import torch

from lcc_lens.fit import FitDivergedError
from lcc_lens.fit.guards import check_dtype_range, check_not_diverged, exported_abs_max

MARGIN = 0.05  # FitConfig's default worse_margin


def guard(before: float, after: float, *, margin: float = MARGIN, allow: bool = False) -> None:
    check_not_diverged(before, after, worse_margin=margin, allow_worse=allow)


def test_restored_clearly_worse_than_pruned_is_refused():
    guard(3.0, 2.5)  # better: fine
    guard(3.0, 3.04)  # within worse_margin (0.05 nats)
    with pytest.raises(FitDivergedError, match=r"restored validation loss 3.2000 is worse"):
        guard(3.0, 3.2)
    with pytest.raises(FitDivergedError, match="--allow-worse"):
        guard(3.0, math.inf)
    guard(3.0, 3.2, allow=True)
    guard(3.0, 3.2, margin=0.5)
    guard(math.nan, math.nan)  # no validation data: warn only


def test_weights_beyond_the_target_dtype_are_refused():
    with pytest.raises(FitDivergedError, match="float16"):
        check_dtype_range(1e6, torch.float16, allow_worse=False)
    check_dtype_range(1e6, torch.bfloat16, allow_worse=False)  # bf16 holds 1e6
    check_dtype_range(1e6, torch.float32, allow_worse=False)  # only a warning about float16 loads
    check_dtype_range(1e6, torch.float16, allow_worse=True)
    with pytest.raises(FitDivergedError, match="bfloat16"):
        check_dtype_range(
            3.395e38, torch.bfloat16, allow_worse=False
        )  # beyond bfloat16 (3.39e38), within fp32
    with pytest.raises(FitDivergedError, match="float16"):
        check_dtype_range(
            math.inf, torch.float16, allow_worse=False
        )  # an fp16 export that overflowed to inf


def test_the_largest_exported_value_is_read_from_the_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"a": torch.tensor([1.0, -7.0]), "b": torch.tensor([2.0], dtype=torch.float16)},
        str(tmp_path / "model.safetensors"),
    )
    assert exported_abs_max(tmp_path) == 7.0
    save_file(
        {"a": torch.tensor([1.0, float("inf")], dtype=torch.float16)},
        str(tmp_path / "model.safetensors"),
    )
    assert exported_abs_max(tmp_path) == math.inf
