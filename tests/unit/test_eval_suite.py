"""The offline suite: deterministic, held-out only (test split of the held-out domain), well-formed items,
clear errors."""

from __future__ import annotations

import json

import pytest

from lcc_lens.corpora import DOMAINS, SPLITS, split_documents
from lcc_lens.errors import DataError
from lcc_lens.evaluation.suite import (
    SUITE_DOMAINS,
    SUITE_TASKS,
    SuiteSizes,
    build_offline_suite,
    heldout_ppl_items,
    last_word_items,
    next_passage_items,
)

N = 40


def _rows(directory, task):
    return [json.loads(line) for line in (directory / f"{task}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def docs():
    return {
        split: {(d.source, d.name): d.text for d in split_documents(split, DOMAINS)}
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    directory = tmp_path_factory.mktemp("suite") / "s"
    names = build_offline_suite(directory, seed=3, n_items=N)
    return directory, names


def test_writes_yaml_and_jsonl_with_absolute_paths(suite):
    directory, names = suite
    assert names == list(SUITE_TASKS)
    for task in names:
        yaml_text = (directory / f"{task}.yaml").read_text()
        assert f"task: {task}" in yaml_text
        assert json.dumps(str((directory / f"{task}.jsonl").resolve())) in yaml_text
        assert len(_rows(directory, task)) == N
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["corpus"]["split"] == "test"
    assert (directory / "lcc_suite_hooks.py").is_file()


def test_deterministic_in_seed(suite, tmp_path):
    directory, _ = suite
    again = tmp_path / "again"
    build_offline_suite(again, seed=3, n_items=N)
    other = tmp_path / "other"
    build_offline_suite(other, seed=4, n_items=N)
    for task in SUITE_TASKS:
        same = (again / f"{task}.jsonl").read_bytes()
        assert same == (directory / f"{task}.jsonl").read_bytes()
        assert same != (other / f"{task}.jsonl").read_bytes()


def test_items_come_only_from_the_test_split(suite, docs):
    directory, _ = suite
    held_out = docs["test"]
    others = {key for split in SPLITS if split != "test" for key in docs[split]}
    for task in SUITE_TASKS:
        for row in _rows(directory, task):
            key = (row["source"], row["document"])
            assert key in held_out and key not in others
            assert row["source"] in SUITE_DOMAINS  # only the held-out domain
            doc, at = held_out[key], row["offset"]
            if task == "lcc_heldout_ppl":
                assert doc[at : at + len(row["text"])] == row["text"]
            elif task == "lcc_next_passage":
                true = row["context"] + row["choices"][row["label"]]
                assert doc[at : at + len(true)] == true
            else:
                full = row["context"] + row["target"]
                assert doc[at : at + len(full)] == full


def test_item_structure(suite):
    directory, _ = suite
    labels = set()
    for row in _rows(directory, "lcc_next_passage"):
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert all(c.startswith(" ") for c in row["choices"])
        labels.add(row["label"])
    assert len(labels) > 1  # the true ending is not always in the same slot
    for row in _rows(directory, "lcc_last_word"):
        word = row["target"].strip()
        assert row["target"] == " " + word and word.isalpha() and len(word) >= 3
        assert word in row["context"]
    for row in _rows(directory, "lcc_heldout_ppl"):
        assert 300 <= len(row["text"]) <= 900


def test_builders_match_sizes():
    assert len(heldout_ppl_items(5, 0)) == 5
    assert len(next_passage_items(6, 0)) == 6
    assert len(last_word_items(7, 0)) == 7


def test_too_many_items_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="asked for 100000"):
        build_offline_suite(tmp_path / "x", n_items=SuiteSizes(last_word=100000))
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_default_sizes_fit_the_held_out_text():
    """`lcc eval --tasks offline` with no size flags must build every task from the held-out domain."""
    from lcc_lens.evaluation.suite import (
        SuiteSizes,
        heldout_ppl_items,
        last_word_items,
        next_passage_items,
    )

    sizes = SuiteSizes()
    assert len(heldout_ppl_items(sizes.heldout_ppl, 0)) == sizes.heldout_ppl
    assert len(next_passage_items(sizes.next_passage, 0)) == sizes.next_passage
    assert len(last_word_items(sizes.last_word, 0)) == sizes.last_word
