"""Corpora: four licence-clean domains, content deduplication, nested documents kept together."""

from __future__ import annotations

import pytest

from lcc_lens import corpora
from lcc_lens.corpora import DOMAINS, SPLITS, documents, passages, split_documents
from lcc_lens.errors import DataError


def _split_of(domain: str) -> dict[str, str]:
    return {d.name: s for s in SPLITS for d in split_documents(s, (domain,))}


def test_four_domains_install_offline():
    assert set(DOMAINS) == {"python_docs", "shakespeare", "speeches", "dialogue"}
    for domain in DOMAINS:
        docs = documents(domain)
        assert len(docs) > 10 and all(d.source == domain and d.text for d in docs)


def test_duplicates_are_dropped():
    docs = documents("dialogue")
    texts = [" ".join(d.text.lower().split()) for d in docs]
    assert len(set(texts)) == len(texts)
    assert len(docs) < len(corpora._dialogue())  # the raw corpus repeats conversations


def test_nested_python_topics_share_a_split():
    where = _split_of("python_docs")
    for outer, inner in (
        ("compound", "try"),
        ("execmodel", "naming"),
        ("typesseq", "typesseq-mutable"),
    ):
        assert where[outer] == where[inner], (outer, inner)


def test_default_sources_leave_the_test_and_validation_domains_out():
    assert set(corpora.SOURCES) == {"python_docs", "shakespeare"}
    got = {d.source for d in split_documents("calibration")}
    assert got == set(corpora.SOURCES)


def test_passages_are_deterministic_and_balanced():
    a = passages("fit", 40, seed=1, sources=("shakespeare", "dialogue"))
    assert a == passages("fit", 40, seed=1, sources=("shakespeare", "dialogue"))
    assert a != passages("fit", 40, seed=2, sources=("shakespeare", "dialogue"))
    assert all(len(p) >= 200 for p in a)
    dialogue = [p for p in a if p.startswith(("A: ", "B: "))]
    assert 10 <= len(dialogue) <= 30  # short conversations are merged into passages


def test_unknown_domain_is_a_clear_error():
    with pytest.raises(DataError, match="unknown text domain"):
        split_documents("test", ("wikipedia",))
    with pytest.raises(DataError, match="unknown split"):
        split_documents("train", ("dialogue",))  # type: ignore[arg-type]
