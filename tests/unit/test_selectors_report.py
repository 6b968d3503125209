"""The selector comparison report (analysis.selectors_report) from synthetic run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.selectors_report import summarise, write_report

ROLES = {"speeches": "test", "dialogue": "validation", "python_docs": "in_domain"}
SETUP = {
    "fraction": 0.25,
    "steps": 12,
    "batch_size": 8,
    "max_length": 128,
    "k": 1,
    "context_words": 40,
    "response_words": 12,
}
INFO = {
    "mean_accuracy": 0.53,
    "heads_accuracy_p_below_0.01": 80,
    "top_n_jaccard_across_splits": 0.4,
}


def _recipe(lr: float = 5e-3) -> dict:
    return {
        "train": {"objective": "kl", "lr": lr, "steps": 12, "batch_size": 8},
        "compensation": {"use_directions": False},
        "data": {"fit_text": "corpus_self", "targets": "all"},
        "max_length": 128,
        "seed": 0,
    }


def _write(root: Path, gaps: dict[str, list[float]], lrs: dict[str, float] | None = None) -> Path:
    runs = root / "runs"
    runs.mkdir(parents=True)
    base = {
        "protocol": {"windows": 8, "context_length": 256},
        "roles": ROLES,
        "dense": dict.fromkeys(ROLES, 2.0),
        "pruned": dict.fromkeys(ROLES, 3.0),
    }
    (runs / "baseline.json").write_text(json.dumps(base))
    rankings = {}
    for name, values in gaps.items():
        for seed, g in enumerate(values):
            heads = [[0, seed], [1, 1]]
            rankings[f"{name}/{seed}"] = {"selected": heads, "info": INFO}
            record = {
                "selector": name,
                "seed": seed,
                "n_heads": 2,
                "heads": heads,
                "gap_closed_nll": dict.fromkeys(ROLES, g),
                "setup": SETUP,
                "fit_config": _recipe((lrs or {}).get(name, 5e-3)),
            }
            (runs / f"{name}_seed{seed}.json").write_text(json.dumps(record))
    meta = {"rankings": rankings, "setup": SETUP, "probe_pairs": {"yes_no": 4}, "command": "x"}
    meta["ridge_check"] = {}
    (root / "rankings.json").write_text(json.dumps(meta))
    return root


def test_probe_beats_random_only_by_more_than_two_sd(tmp_path):
    s = summarise(
        _write(tmp_path / "a", {"probe": [0.30, 0.31, 0.32], "random": [0.1, 0.11, 0.12]})
    )
    assert s["versus_random"]["probe"]["speeches"]["more_than_2_sd"] is True
    assert s["selectors"]["probe"]["gap_closed_nll"]["speeches"]["mean"] == pytest.approx(0.31)
    s = summarise(_write(tmp_path / "b", {"probe": [0.1, 0.3, 0.5], "random": [0.1, 0.2, 0.3]}))
    assert s["versus_random"]["probe"]["speeches"]["more_than_2_sd"] is False


def test_report_names_the_recorded_recipe(tmp_path):
    root = _write(tmp_path, {"probe": [0.2, 0.25], "random": [0.1, 0.12]})
    text = write_report(root).read_text()
    assert "a free offset b per head, objective kl, lr 0.005" in text
    assert "| probe | 2 | +0.225 +- 0.035" in text
    assert json.loads((root / "selectors.json").read_text())["recipe"]["n_runs"] == 4


def test_runs_trained_with_different_recipes_are_refused(tmp_path):
    root = _write(tmp_path, {"probe": [0.2, 0.25], "random": [0.1, 0.12]}, lrs={"random": 1e-2})
    with pytest.raises(ValueError, match="different recipes"):
        summarise(root)
