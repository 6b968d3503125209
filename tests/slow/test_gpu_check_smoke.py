"""``scripts/gpu_check.sh --smoke`` end to end on CPU (issue 26), then its report.

The smoke size runs every section's code: the default fit on the real embedded model at a few steps
(after tests/slow/test_ci_real.py in ``scripts/test.sh`` its Wanda prune is already cached), the
benchmark's rate grid and budgets on ``lcc bench --quick``'s tiny model, the Gemma section (skipped with
its reason unless the extra is installed). About 90 s on 2 cores with the prune cached (88 s measured).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.bench_lr import SELECT_ON
from analysis.gpu import report
from analysis.gpu.bench_section import GRID, is_lcc_family
from analysis.gpu.config import SMOKE_BUDGETS
from analysis.gpu.record import SECTIONS
from lcc_lens.methods import METHOD_NAMES

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STAGES = ("load", "data", "lost_components", "selection", "training", "evaluation", "restoration")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    out = root / "out"
    env = dict(os.environ, LCC_PYTHON=sys.executable)  # LCC_LENS_CACHE: the test session's cache
    argv = ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", "--out", str(out)]
    done = subprocess.run(
        [*argv, "--work", str(root / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = {s: json.loads((out / f"{s}.json").read_text()) for s in SECTIONS}
    return out, records, done.stdout


def test_every_section_file_is_written_with_its_device_and_status(smoke):
    out, records, stdout = smoke
    run = json.loads((out / "run.json").read_text())
    assert run["smoke"] is True and list(run["sections"]) == list(SECTIONS)
    for section, record in records.items():
        assert record["section"] == section
        assert record["environment"]["device"] == "cpu"
        assert record["status"] == run["sections"][section]["status"]
        assert section in stdout
    assert records["fit"]["status"] == records["bench"]["status"] == "done"
    gemma = records["gemma_fit"]
    assert gemma["status"] == "done" or "gemma extra" in gemma["reason"]
    for section in ("fit", "bench"):
        assert _finite(records[section]["wall_s"]) and records[section]["wall_s"] > 0
        assert records[section]["peak_memory"]["mb"] > 0
        assert records[section]["environment"]["versions"]["torch"]


def test_the_fit_reports_every_stage_the_export_check_and_the_cpu_figures(smoke):
    fit = smoke[1]["fit"]
    f = fit["figures"]
    assert fit["command"].startswith("python -m lcc_lens.fit --dense embedded --device cpu")
    assert "--dtype bfloat16" in fit["command"]
    assert set(STAGES) <= set(f["stages"]) and "export" in f["stages"]
    assert all(_finite(s["seconds"]) and s["peak_memory_mb"] > 0 for s in f["stages"].values())
    assert _finite(f["ood_nll_gap_closed"]) and f["steps"] == 2
    assert _finite(f["export_max_abs_logit_diff"])
    assert f["export_max_abs_logit_diff_fp32"] < 1e-3  # the export is exact; bf16 is the rest
    cmp_ = f["cpu_comparison"]
    assert cmp_["available"] and cmp_["protocol_shrunk_for_smoke"]
    assert list(cmp_["domains"])[0] == "speeches"
    for d in cmp_["domains"].values():
        for key in ("gpu_nll_gap_closed", "cpu_same_seed", "cpu_mean", "delta_points_vs_same_seed"):
            assert _finite(d[key]), key
        assert d["delta_points_vs_same_seed"] == pytest.approx(
            100 * (d["gpu_nll_gap_closed"] - d["cpu_same_seed"])
        )
    assert "train.steps" in cmp_["recipe_differences"]  # the smoke fit is shorter than the record's


def test_the_bench_runs_the_grid_then_every_budget_at_the_chosen_rates(smoke):
    f = smoke[1]["bench"]["figures"]
    methods = f["methods"]
    assert methods[0] == "lcc" and "lora_r8" in methods and set(methods) <= set(METHOD_NAMES)
    assert ("masked_lora_r8" in methods) == ("masked_lora_r8" in METHOD_NAMES)
    grid = [p for p in f["points"] if p["phase"] == "grid"]
    budget = [p for p in f["points"] if p["phase"] == "budget"]
    assert len(grid) == len(GRID) * len(methods)
    assert {(p["method"], p["steps"]) for p in budget} == {
        (m, s) for m in methods for s in SMOKE_BUDGETS[1:]
    }
    for method in methods:
        rated = [p for p in grid if p["method"] == method and p[SELECT_ON] is not None]
        best = max(rated, key=lambda p: p[SELECT_ON])
        assert (
            f["chosen_lr"][method] == best["lr"]
        )  # chosen on validation, never on the test domain
        assert {p["lr"] for p in budget if p["method"] == method} == {best["lr"]}
    for p in f["points"]:
        assert p["failed"] is None
        for key in ("ood_nll_gap_closed", SELECT_ON, "indomain_nll_gap_closed", "tokens"):
            assert _finite(p[key]), key
        assert p["tokens"] == p["steps"] * p["batch_size"] * p["max_length"]
    zero_keeping = [m for m in methods if is_lcc_family(m)]
    assert all(p["sparsity_kept"] == 1.0 for p in f["points"] if p["method"] in zero_keeping)


def test_the_report_renders_the_smoke_run_but_never_into_the_repository_readme(smoke, tmp_path):
    out, records, _ = smoke
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\n{report.END}\nend\n")
    assert report.main(["--results", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "smoke run (CPU sizes, not measurements)" in text and "device **cpu**" in text
    for method in records["bench"]["figures"]["methods"]:
        assert f"`{method}`" in text
    assert "speeches" in text and text.startswith("intro\n") and text.endswith("\nend\n")
    assert (out / "report.md").is_file() and (out / f"{report.FIGURE}.html").is_file()
    before = report.README.read_text()
    assert report.main(["--results", str(out)]) == 2
    assert report.README.read_text() == before
