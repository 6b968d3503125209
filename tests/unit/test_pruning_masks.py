"""Masks and configuration of the pruning package: exact counts, N:M groups, bad settings."""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError

from lcc_lens.errors import ConfigError
from lcc_lens.pruning import PruneConfig, magnitude_mask, nm_mask, parse_pattern, row_mask
from lcc_lens.pruning.masks import matrix_mask


@pytest.mark.parametrize(
    "pattern,expected", [("2:4", (2, 4)), ("4:8", (4, 8)), (" 1 : 3 ", (1, 3))]
)
def test_parse_pattern_valid(pattern, expected):
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize("pattern", ["4:2", "0:4", "4:4", "2-4", "a:b", "2:4:8", ""])
def test_parse_pattern_invalid(pattern):
    with pytest.raises(ConfigError, match="N:M"):
        parse_pattern(pattern)


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_config_rejects_sparsity_outside_open_interval(sparsity):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        PruneConfig(method="wanda", sparsity=sparsity)


def test_config_pattern_rules():
    assert PruneConfig(method="wanda", sparsity=None, pattern="2:4").target_sparsity == 0.5
    assert PruneConfig(method="sparsegpt", sparsity=0.5, pattern="4:8").nm == (4, 8)
    with pytest.raises(ConfigError, match="contradicts"):
        PruneConfig(method="wanda", sparsity=0.3, pattern="2:4")
    with pytest.raises(ConfigError, match="unstructured"):
        PruneConfig(method="flap", sparsity=None, pattern="2:4")
    with pytest.raises(ConfigError, match="multiple of M"):
        PruneConfig(method="sparsegpt", sparsity=None, pattern="2:5", blocksize=128)
    # under the test suite's run-time type checks a wrong literal fails even earlier
    with pytest.raises((ConfigError, TypeCheckError)):
        PruneConfig(method="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="regular expression"):
        PruneConfig(include="(")
    with pytest.raises(ConfigError, match="ratio-mode uniform"):
        PruneConfig(method="flap", sparsity=0.2, structured_mode="remove", ratio_mode="adaptive")


def test_config_is_frozen():
    cfg = PruneConfig()
    with pytest.raises(AttributeError):
        cfg.sparsity = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.73])
def test_row_mask_is_per_row_bottom_k(sparsity):
    torch.manual_seed(0)
    scores = torch.rand(7, 40)
    mask = row_mask(scores, sparsity)
    k = round(40 * sparsity)
    assert (mask.sum(1) == k).all()
    # every pruned score is <= every kept score of the same row
    for r in range(7):
        assert scores[r][mask[r]].max() <= scores[r][~mask[r]].min()


def test_matrix_mask_exact_global_count():
    torch.manual_seed(1)
    scores = torch.rand(9, 11)
    mask = matrix_mask(scores, 0.3)
    assert int(mask.sum()) == round(99 * 0.3)
    assert scores[mask].max() <= scores[~mask].min()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4), (5, 16)])
def test_nm_mask_exact_groups(n, m):
    torch.manual_seed(2)
    scores = torch.rand(6, 4 * m)
    mask = nm_mask(scores, n, m)
    groups = mask.view(6, 4, m)
    assert (groups.sum(-1) == n).all()
    vals = scores.view(6, 4, m)
    for r in range(6):
        for g in range(4):
            assert vals[r, g][groups[r, g]].max() <= vals[r, g][~groups[r, g]].min()


def test_nm_mask_rejects_untileable_width():
    with pytest.raises(ConfigError, match="multiple of M"):
        nm_mask(torch.rand(3, 10), 2, 4)


def test_magnitude_mask_uses_absolute_value():
    w = torch.tensor([[-5.0, 0.1, 3.0, -0.2]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, False, True]]


def test_calibration_sources_from_local_files(tmp_path):
    import json

    from lcc_lens.errors import DataError
    from lcc_lens.pruning import load_calibration_texts
    from lcc_lens.pruning.data import calibration_identity

    txt = tmp_path / "c.txt"
    txt.write_text("some real text\n\nmore text")
    assert load_calibration_texts(str(txt)) == ["some real text\n\nmore text"]
    js = tmp_path / "c.json"
    js.write_text(json.dumps([{"text": "a b"}, "c d", {"other": 1}]))
    assert load_calibration_texts(str(js)) == ["a b", "c d"]
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"text": "x"}\n{"text": "y"}\n')
    assert load_calibration_texts(str(jl)) == ["x", "y"]
    assert calibration_identity(str(txt))["sha256"] != calibration_identity(str(js))["sha256"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_calibration_texts(str(bad))
    with pytest.raises(DataError, match="does not exist"):
        load_calibration_texts(str(tmp_path / "missing.txt"))
    assert calibration_identity("corpora")["split"] == "calibration"
    assert calibration_identity("c4")["dataset"] == "allenai/c4"
