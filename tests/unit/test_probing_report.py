"""The selector comparison report (analysis/selectors_report.py) is generated from its JSON, correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.selectors_report import summarise, write_report

ROLES = {"speeches": "test", "dialogue": "validation", "python_docs": "in_domain"}


def _write(out: Path, gaps: dict[str, list[float]]) -> None:
    info = {
        "mean_accuracy": 0.55,
        "heads_accuracy_p_below_0.01": 7,
        "top_n_jaccard_across_splits": 0.8,
    }
    rankings = {
        f"{name}/{seed}": {"selected": [[0, seed], [1, 1]], "info": info if "probe" in name else {}}
        for name in gaps
        for seed in range(len(gaps[name]))
    }
    setup = {"context_words": 24, "response_words": 8, "k": 1, "fraction": 0.25}
    (out / "runs").mkdir(parents=True)
    (out / "rankings.json").write_text(
        json.dumps(
            {
                "setup": setup,
                "rankings": rankings,
                "probe_pairs": {"yes_no": 8, "continuation": 8},
                "command": "python -m analysis.selectors rank",
                "ridge_check": {},
            }
        )
    )
    base = {
        "roles": ROLES,
        "protocol": {"windows": 4, "context_length": 256},
        "dense": dict.fromkeys(ROLES, 2.0),
        "pruned": dict.fromkeys(ROLES, 3.0),
    }
    (out / "runs" / "baseline.json").write_text(json.dumps(base))
    fit_setup = {**setup, "steps": 8, "batch_size": 4, "max_length": 96, "lr": 0.01}
    for name, values in gaps.items():
        for seed, g in enumerate(values):
            run = {
                "selector": name,
                "seed": seed,
                "n_heads": 2,
                "heads": [[0, seed], [1, 1]],
                "gap_closed_nll": dict.fromkeys(ROLES, g),
                "setup": fit_setup,
            }
            (out / "runs" / f"{name}_seed{seed}.json").write_text(json.dumps(run))


def test_probe_against_random_in_standard_deviations(tmp_path):
    _write(tmp_path, {"probe": [0.30, 0.31, 0.29], "random": [0.10, 0.12, 0.08]})
    s = summarise(tmp_path)
    v = s["versus_random"]["probe"]["speeches"]
    assert v["difference"] == pytest.approx(0.2)
    assert v["in_sd"] == pytest.approx(0.2 / 0.02) and v["more_than_2_sd"] and v["n_seeds"] == 3
    assert s["selectors"]["probe"]["gap_closed_nll"]["speeches"]["mean"] == pytest.approx(0.3)
    assert s["selection_overlap"]["random"]["jaccard_across_seeds"] == pytest.approx(1 / 3)
    text = write_report(tmp_path).read_text()
    assert "| probe | 2 | +0.300 +- 0.010 | +0.300 +- 0.010 | +0.300 +- 0.010 | 0,1,2 |" in text
    assert "| probe - random | +0.2000 | +10.00 |" in text and "| yes | 3 |" in text
    assert "Best selector on speeches: **probe**" in text
    assert json.loads((tmp_path / "selectors.json").read_text())["versus_random"]


def test_overlapping_seeds_are_not_called_better(tmp_path):
    _write(tmp_path, {"probe": [0.12, 0.20, 0.10], "random": [0.10, 0.15, 0.11]})
    v = summarise(tmp_path)["versus_random"]["probe"]["speeches"]
    assert v["difference"] > 0 and not v["more_than_2_sd"]
    assert "| no | 3 |" in write_report(tmp_path).read_text()


def test_report_without_runs_says_so(tmp_path):
    _write(tmp_path, {"probe": [0.1]})
    for p in (tmp_path / "runs").iterdir():
        p.unlink()
    text = write_report(tmp_path).read_text()
    assert "No restoration run has been written yet" in text
    assert "| probe/0 | 0.550 | 7 | 0.80 |" in text
