"""The fit's guards: a diverged compensation is not exported, nor weights beyond the target dtype."""

from __future__ import annotations

import math

import pytest
import torch

from lcc_lens.fit import FitConfig, FitDivergedError
from lcc_lens.fit.evaluate import check_dtype_range, check_not_diverged
from lcc_lens.fit.stages import Trained


def test_restored_clearly_worse_than_pruned_is_refused():
    config = FitConfig()
    check_not_diverged(Trained([], 3.0, 2.5), config)  # better: fine
    check_not_diverged(Trained([], 3.0, 3.04), config)  # within worse_margin (0.05 nats)
    with pytest.raises(FitDivergedError, match=r"restored validation loss 3.2000 is worse"):
        check_not_diverged(Trained([], 3.0, 3.2), config)
    with pytest.raises(FitDivergedError, match="--allow-worse"):
        check_not_diverged(Trained([], 3.0, math.inf), config)
    check_not_diverged(Trained([], 3.0, 3.2), FitConfig(allow_worse=True))
    check_not_diverged(Trained([], 3.0, 3.2), FitConfig(worse_margin=0.5))
    check_not_diverged(Trained([], math.nan, math.nan), config)  # no validation data: warn only


def test_weights_beyond_the_target_dtype_are_refused():
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.bias[0] = 1e6
    config = FitConfig()
    with pytest.raises(FitDivergedError, match="float16"):
        check_dtype_range(model, torch.float16, config)
    check_dtype_range(model, torch.bfloat16, config)  # bf16 holds 1e6
    check_dtype_range(model, torch.float32, config)  # only a warning about float16 loads
    check_dtype_range(model, torch.float16, FitConfig(allow_worse=True))
    with torch.no_grad():
        model.bias[0] = 3.395e38  # beyond bfloat16 (3.39e38), within float32
    with pytest.raises(FitDivergedError, match="bfloat16"):
        check_dtype_range(model, torch.bfloat16, config)
