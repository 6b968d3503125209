"""The GPU check's pieces that need no model: per-method rates, the method plan, the budget rule, the report."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.bench_lr import DEFAULTS, SELECT_ON, SETTING
from analysis.gpu import check, report
from analysis.gpu.bench_section import (
    Progress,
    choose_rates,
    family_choice,
    is_lcc_family,
    method_plan,
)
from analysis.gpu.config import GpuCheckArgs
from lcc_lens.errors import ConfigError
from lcc_lens.methods import METHOD_NAMES


def test_the_family_method_is_the_committed_tables_best_zero_keeping_one():
    name, why = family_choice(None)
    payload = json.loads((DEFAULTS / f"{SETTING}.json").read_text())
    eligible = {
        r["method"]: r[SELECT_ON]["mean"]
        for r in payload["rows"]
        if r.get("kind") == "trained"
        and r["method"] in METHOD_NAMES
        and r["method"] != "lcc"
        and r["sparsity_kept"]["mean"] == 1.0
        and is_lcc_family(r["method"])
    }
    assert eligible and name in eligible
    assert eligible[name] == max(eligible.values())
    assert name in why and SETTING in why
    assert not is_lcc_family("lora_r8") and not is_lcc_family("lost_component")
    assert family_choice("lcc_paper") == ("lcc_paper", "given by --family")


def test_the_method_plan_keeps_what_the_registry_has_and_notes_the_rest():
    present, notes = method_plan(None)
    assert present[0] == "lcc" and set(present) <= set(METHOD_NAMES)
    for name in ("lcc", "masked_lora_r8", "lora_r8"):
        assert name in notes
        assert (name in present) == (name in METHOD_NAMES)
        if name not in METHOD_NAMES:
            assert notes[name].startswith("skipped: not in the method registry")


def _point(method, steps, seconds, val=0.1, failed=None):
    return {
        "method": method,
        "steps": steps,
        "fit_seconds": seconds,
        SELECT_ON: val,
        "failed": failed,
        "lr": 0.01,
    }


def test_progress_projects_from_measured_calls_and_halves_a_budget_that_does_not_fit():
    progress = Progress(deadline=float("inf"))
    progress.add(10.0, [_point("a", 16, 4.0), _point("b", 16, 2.0)])
    assert progress.overhead() == pytest.approx(4.0)
    assert progress.fit_seconds("a", 256) == pytest.approx(64.0)  # proportional from one budget
    progress.add(30.0, [_point("a", 256, 20.0), _point("b", 256, 2.0)])
    slope = (20.0 - 4.0) / 240
    assert progress.fit_seconds("a", 2048) == pytest.approx(20.0 + slope * (2048 - 256))
    assert progress.plan(["a"], 2048, 256) == (2048, None)
    need = progress.projected(["a"], 512)
    progress.remaining = lambda: need + 1.0  # room for 512 steps, not for 1,024
    steps, note = progress.plan(["a"], 2048, 256)
    assert steps == 512 and "reduced from 2048 to 512" in note
    progress.remaining = lambda: 1.0
    steps, note = progress.plan(["a"], 2048, 256)
    assert steps is None and note.startswith("skipped: time budget")


def test_rates_are_chosen_on_validation_and_failed_points_never_win():
    points = [
        {**_point("a", 16, 1.0, val=0.2), "lr": 0.003},
        {**_point("a", 16, 1.0, val=0.5), "lr": 0.01},
        {**_point("a", 16, 1.0, val=0.9, failed="diverged"), "lr": 0.03},
        {**_point("b", 16, 1.0, val=None), "lr": 0.1},
    ]
    picks = choose_rates(points)
    assert picks["a"]["lr"] == 0.01 and "b" not in picks


def test_args_are_validated():
    with pytest.raises(ConfigError, match="budgets"):
        GpuCheckArgs(budgets=(256, 16))
    with pytest.raises(ConfigError, match="section"):
        GpuCheckArgs(section="everything")
    assert GpuCheckArgs(smoke=True).device_name == "cpu"
    assert GpuCheckArgs().device_name == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_full_size_without_a_gpu_exits_2_naming_the_smoke_size(tmp_path, capsys):
    assert check.main(["--out", str(tmp_path / "out")]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_foreign_out_folder_is_refused_and_left_alone(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert check.main(["--smoke", "--out", str(foreign)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def _readme(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\nbefore\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    return path


def test_the_blocked_note_replaces_only_the_block(tmp_path):
    readme = _readme(tmp_path)
    line = "status: not_drawn (no machine lent to this task)"
    assert (
        report.main(
            ["--results", str(tmp_path / "none"), "--readme", str(readme), "--blocked", line]
        )
        == 0
    )
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert f"**Blocked**: no GPU figures yet. {line}" in text and "old" not in text


def test_the_report_refuses_no_results_and_a_readme_without_markers(tmp_path, capsys):
    readme = _readme(tmp_path)
    assert report.main(["--results", str(tmp_path / "none"), "--readme", str(readme)]) == 2
    assert "no GPU check section files" in capsys.readouterr().err
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    assert report.main(["--results", str(tmp_path), "--readme", str(bare), "--blocked", "x"]) == 2
    assert "markers" in capsys.readouterr().err and bare.read_text() == "# no markers\n"
