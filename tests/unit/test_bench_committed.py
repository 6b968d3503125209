"""The committed benchmark tables are exactly what the code generates from the committed JSON beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcc_lens.bench.results import FORMAT, markdown_table
from lcc_lens.bench.summary import SUMMARY_NAME, load_payloads, summary_markdown

BENCH = Path(__file__).resolve().parents[2] / "analysis" / "results" / "bench"
PAYLOADS = [*sorted(BENCH.glob("*.json")), *sorted((BENCH.parent / "bench_lr").glob("*/*.json"))]


@pytest.mark.parametrize("path", PAYLOADS, ids=[f"{p.parent.name}/{p.stem}" for p in PAYLOADS])
def test_setting_table_is_generated_from_its_json(path):
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload["format"] == FORMAT
    assert path.with_suffix(".md").read_text(encoding="utf-8") == markdown_table(payload)
    for row in payload["rows"]:
        if row["kind"] == "failed":  # a committed failure was tried, and failed, on 3+ seeds
            assert len(row["failures"]) >= 3 and all(f["reason"] for f in row["failures"])
        elif row["kind"] != "reference":
            assert len(row["ood_nll_gap_closed"]["seeds"]) >= 3  # a committed result has 3+ seeds


def test_summary_is_generated_from_the_jsons():
    if not PAYLOADS:
        pytest.skip("no committed benchmark")
    text = (BENCH / SUMMARY_NAME).read_text(encoding="utf-8")
    assert text == summary_markdown(load_payloads(BENCH))


def test_the_full_run_default_methods_are_the_committed_tables():
    """Each committed table's ``command`` relies on the default methods, so new methods stay out of them."""
    from lcc_lens.bench.config import DEFAULT_METHODS, BenchConfig, with_quick_defaults
    from lcc_lens.methods import METHOD_NAMES, ZERO_KEEPING_PEERS

    for path in sorted(BENCH.glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        if "--methods" not in payload["command"]:
            assert tuple(payload["config"]["methods"]) == DEFAULT_METHODS, path.name
    assert BenchConfig().methods == DEFAULT_METHODS
    assert not set(DEFAULT_METHODS) & set(ZERO_KEEPING_PEERS)
    assert with_quick_defaults(BenchConfig(quick=True)).methods == METHOD_NAMES
    chosen = BenchConfig(quick=True, methods=("spp_r8",))
    assert with_quick_defaults(chosen).methods == ("spp_r8",)
