"""Every committed analysis table is exactly what its generator makes today from the committed records.

Each case regenerates one file from the JSON records committed beside it, with no model run, and compares
it byte for byte with the committed file: a table edited by hand, or a generator changed without
regenerating its table, fails here. The out-of-domain report is run through its command line into a
temporary folder (with a copy of the README, whose results block it rewrites).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from analysis import (
    ablations,
    findings,
    gemma_memory_plan,
    gemma_pipeline,
    ood_report,
    prune_perplexity,
    race,
    selectors_report,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "analysis" / "results"
SELECTION = RESULTS / "selection"
GEMMA = RESULTS / "gemma"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _selectors_json() -> str:
    return json.dumps(selectors_report.summarise(SELECTION), indent=1) + "\n"


def _selectors_md() -> str:
    return selectors_report.report_markdown(selectors_report.summarise(SELECTION))


def _memory_plan_md() -> str:
    return gemma_memory_plan.markdown(json.loads(_read(GEMMA / "memory_plan.json")))


def _rendered(module, record: str) -> Callable[[], str]:
    return lambda: module.render(json.loads(_read(RESULTS / record)))


GENERATED: dict[str, tuple[Path, Callable[[], str]]] = {
    "prune_perplexity.md": (
        RESULTS / "prune_perplexity.md",
        _rendered(prune_perplexity, "prune_perplexity.json"),
    ),
    "ablations.md": (RESULTS / "ablations.md", _rendered(ablations, "ablations.json")),
    "ablations_lr2/ablations.md": (
        RESULTS / "ablations_lr2" / "ablations.md",
        _rendered(ablations, "ablations_lr2/ablations.json"),
    ),
    "findings.md": (RESULTS / "findings.md", _rendered(findings, "findings.json")),
    "race/summary.md": (
        RESULTS / "race" / "summary.md",
        lambda: race.race_markdown(race.SETTING, race.budgets(race.SETTING)),
    ),
    "selection/selectors.json": (SELECTION / "selectors.json", _selectors_json),
    "selection/selectors.md": (SELECTION / "selectors.md", _selectors_md),
    "gemma/gemma_results.md": (GEMMA / "gemma_results.md", lambda: gemma_pipeline.report(GEMMA)),
    "gemma/memory_plan.md": (GEMMA / "memory_plan.md", _memory_plan_md),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_table_is_generated_from_its_records(name):
    committed, generate = GENERATED[name]
    assert generate() == _read(committed), f"regenerate {name} with its generator"


def test_ood_report_and_readme_block_are_generated_from_the_records(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    out = tmp_path / "ood"
    assert ood_report.main(["--out", str(out), "--readme", str(readme)]) == 0
    committed = RESULTS / "ood"
    for file in ("results.md", "summary.json"):
        assert _read(out / file) == _read(committed / file), file
    # the README holds the block and the report has its setting: the block was rewritten
    assert ood_report.BEGIN in _read(readme)
    assert ood_report.README_SETTING in json.loads(_read(out / "summary.json"))
    assert _read(readme) == _read(ROOT / "README.md")


def test_readme_race_block_is_generated_from_the_race_records():
    from analysis.readme_block import current_block

    held = current_block(ROOT / "README.md", race.README_BEGIN, race.README_END)
    assert held is not None, "the README lost its race block markers"
    assert held == race.readme_block(race.SETTING), (
        "regenerate with python -m analysis.race --table-only"
    )


def test_ood_report_refuses_an_empty_records_folder(tmp_path, capsys):
    code = ood_report.main(["--records", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and capsys.readouterr().err.startswith("error: no records under")
    assert not (tmp_path / "o").exists()
