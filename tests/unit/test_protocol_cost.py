"""What makes the main job's evaluation cheaper changes no figure (issue 25).

Scoring a bridge through its plain twin gives the bridge's own per-window sums bit for bit; the dense and
pruned scores come back from the on-disk cache exactly as computed (and a malformed entry is recomputed);
in-domain domains get fewer windows only where the config says so, never more than ``windows``.
"""

from __future__ import annotations

import json

import pytest
import torch

from lcc_lens.compensation import Compensation
from lcc_lens.evaluation.protocol import ProtocolConfig, evaluate, sample_windows, score_windows
from lcc_lens.evaluation.score_cache import _path, score_key
from lcc_lens.models import HeadGeometry, load_bridge
from lcc_lens.twin import plain_twin


@pytest.fixture(scope="module")
def bridge(llama_pair_dirs):
    return load_bridge(llama_pair_dirs[1])


def _bridge_only(model):
    """A callable that scores through the bridge itself (the path before the twin)."""
    return lambda ids: model(ids, return_type="logits")


def test_twin_scoring_equals_the_bridge_bit_for_bit(bridge, texts):
    model, tok = bridge
    assert plain_twin(model) is not None
    windows, _ = sample_windows(tok, texts[:6], ProtocolConfig(context_length=24, windows=5))
    assert score_windows(model, windows, 2) == score_windows(_bridge_only(model), windows, 2)
    g = HeadGeometry.of(model)
    comp = Compensation(g, [(0, 1), (g.n_layers - 1, 0)], None, use_directions=False)
    with torch.no_grad():
        comp.bias.normal_(0, 0.5)

    def hooked(ids):
        with comp.attach(model) as m:
            return m(ids, return_type="logits")

    restored = score_windows((model, comp), windows, 2)
    assert restored == score_windows(hooked, windows, 2)
    assert restored != score_windows(model, windows, 2)  # the offsets did something


def test_cached_scores_are_the_computed_ones_and_a_bad_entry_is_recomputed(bridge, texts):
    model, tok = bridge
    docs = {"a": texts[:6]}
    cfg = ProtocolConfig(context_length=24, windows=4, bootstrap=0)
    first = evaluate({"pruned": model}, tok, docs, cfg, cached=("pruned",))
    windows, _ = sample_windows(tok, docs["a"], cfg)
    path = _path(score_key(model, windows, cfg.batch_size))
    assert json.loads(path.read_text()) == list(first.domains["a"].nll_sums["pruned"])
    path.write_text(
        json.dumps([1.0] * len(windows))
    )  # a planted entry is read back: it is the cache
    assert evaluate({"pruned": model}, tok, docs, cfg, cached=("pruned",)).domains["a"].nll_sums[
        "pruned"
    ] == (1.0,) * len(windows)
    path.write_text("{not json")
    again = evaluate({"pruned": model}, tok, docs, cfg, cached=("pruned",))
    assert again.domains["a"].nll_sums == first.domains["a"].nll_sums
    # another batch size or other windows are another key
    assert score_key(model, windows, 3) != score_key(model, windows, cfg.batch_size)
    assert score_key(model, windows[:2], cfg.batch_size) != score_key(model, windows, 2)


def test_in_domain_windows_apply_to_in_domain_roles_only(tok, texts):
    cfg = ProtocolConfig(context_length=16, windows=6, in_domain_windows=2)
    assert cfg.windows_for("test") == 6 and cfg.windows_for("validation") == 6
    assert cfg.windows_for("in_domain") == 2
    assert ProtocolConfig(windows=3, in_domain_windows=16).windows_for("in_domain") == 3
    assert len(sample_windows(tok, texts[:8], cfg, "in_domain")[0]) == 2
    assert len(sample_windows(tok, texts[:8], cfg, "test")[0]) == 6
