"""A short real prune of the embedded SmolLM2-135M: sparsity is exact, perplexity rises but stays finite."""

from __future__ import annotations

import math

import pytest

from lcc_lens.corpora import passages
from lcc_lens.evaluation.perplexity import perplexity
from lcc_lens.models import load_causal_lm
from lcc_lens.pruning import PruneConfig, prune_model

pytestmark = pytest.mark.slow


def test_wanda_2_4_on_the_real_model():
    model, tok = load_causal_lm("embedded")
    text = "\n\n".join(passages("test", 12, min_chars=600, max_chars=2400, seed=0))
    dense = perplexity(model, tok, text, context_length=256, max_windows=4)
    cfg = PruneConfig(method="wanda", sparsity=None, pattern="2:4", n_samples=16, seq_len=128)
    report = prune_model(model, tok, cfg, show_progress=False)
    assert len(report.modules) == 30 * 7
    # The embedded weights are dequantised Q4_1 and hold ~0.03 % exact zeros before pruning, so a group
    # can hold more than 2 zeros; Wanda prunes those zeros first (score 0), never fewer than 2 per group.
    assert all(0.5 <= m.sparsity < 0.5 + 1e-3 for m in report.modules)
    for layer in model.model.layers:
        w = layer.mlp.down_proj.weight
        zeros = (w == 0).view(w.shape[0], -1, 4).sum(-1)
        assert (zeros >= 2).all() and (zeros == 2).float().mean() > 0.999
    pruned = perplexity(model, tok, text, context_length=256, max_windows=4)
    assert math.isfinite(pruned.ppl)
    assert dense.ppl < pruned.ppl < 50 * dense.ppl
