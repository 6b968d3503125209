"""The committed task-set measurement: its table is generated from its JSON, its intervals from its outcomes."""

from __future__ import annotations

import json

import pytest

from analysis.task_power import JSON_NAME, MD_NAME, RESULTS, expected, render

PAYLOAD = RESULTS / JSON_NAME
pytestmark = pytest.mark.skipif(not PAYLOAD.is_file(), reason="no committed measurement")


def test_table_is_generated_from_the_json():
    payload = json.loads(PAYLOAD.read_text(encoding="utf-8"))
    assert (RESULTS / MD_NAME).read_text(encoding="utf-8") == render(payload)


def test_intervals_recompute_from_the_committed_per_item_outcomes():
    payload = json.loads(PAYLOAD.read_text(encoding="utf-8"))
    models = payload["models"]
    sizes = {t: payload["task_set"][t] for t in ("next_passage", "last_word")}
    for m in models.values():
        assert {t: len(v["outcomes"]) for t, v in m["tasks"].items()} == sizes
        for v in m["tasks"].values():
            assert v["accuracy"] == pytest.approx(v["outcomes"].count("1") / len(v["outcomes"]))
    assert expected(models) == payload["expected"]
