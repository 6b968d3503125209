"""Contrastive probe items: real continuations against similar wrong ones, yes/no flips, fit split only."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.probe_data import (
    ProbeDataConfig,
    build_probe_items,
    fit_probe_items,
    probe_samples,
)


def bag_of_words(texts):
    """A deterministic stand-in for the sentence embedding: hashed bag of words, unit norm."""
    out = torch.zeros(len(texts), 256)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 256] += 1.0
    return torch.nn.functional.normalize(out, dim=-1)


def _docs():
    words = [f"w{i}" for i in range(400)]
    cats = " ".join(f"the cat sat on mat number {i} today" for i in range(60))
    return [
        ("src_a", "numbers", " ".join(words)),
        ("src_a", "cats", cats),
        ("src_b", "short", "one two three four five six seven eight nine ten " * 3),
    ]


def test_items_contrast_the_true_continuation_with_a_similar_one():
    cfg = ProbeDataConfig(n_pairs=20, context_words=8, response_words=4, yes_no_fraction=0.5)
    items = build_probe_items(_docs(), cfg, embed=bag_of_words)
    assert len(items) == 20
    kinds = [s.kind for s in items]
    assert kinds.count("yes_no") == 10 and kinds.count("continuation") == 10
    texts = {name: " ".join(text.split()) for _, name, text in _docs()}
    for s in items:
        assert s.positive != s.negative
        if s.kind == "continuation":
            # the true continuation follows the context in one document; the negative does not
            assert any(s.prompt + s.positive in t for t in texts.values())
            assert not any(s.prompt + s.negative in t for t in texts.values())
        else:
            assert {s.positive, s.negative} == {" yes", " no"}
    yes_no = [s for s in items if s.kind == "yes_no"]
    # both answers occur as the correct one, so the answer token alone cannot be the signal
    assert {s.positive for s in yes_no} == {" yes", " no"}


def test_negatives_come_from_the_same_document_when_it_has_enough():
    cfg = ProbeDataConfig(n_pairs=24, context_words=8, response_words=4, yes_no_fraction=0.0)
    items = build_probe_items(_docs(), cfg, embed=bag_of_words)
    for s in items:
        if s.prompt.startswith("w"):
            assert s.negative.strip().startswith("w")  # numbers document, not cats
        if "cat" in s.prompt:
            assert "cat" in s.negative or "mat" in s.negative or "today" in s.negative


def test_deterministic_in_seed_and_clear_errors():
    cfg = ProbeDataConfig(n_pairs=12, context_words=8, response_words=4)
    a = build_probe_items(_docs(), cfg, embed=bag_of_words)
    b = build_probe_items(_docs(), cfg, embed=bag_of_words)
    c = build_probe_items(
        _docs(),
        ProbeDataConfig(n_pairs=12, context_words=8, response_words=4, seed=1),
        embed=bag_of_words,
    )
    assert a == b and a != c
    with pytest.raises(DataError, match="n_pairs"):
        build_probe_items(_docs(), ProbeDataConfig(n_pairs=5000), embed=bag_of_words)
    for bad in ({"n_pairs": 2}, {"yes_no_fraction": 1.5}, {"context_words": 0}):
        with pytest.raises(ConfigError):
            ProbeDataConfig(**bad)


def test_fit_items_come_from_the_fit_split_only():
    from lcc_lens.corpora import SOURCES, split_documents

    items = fit_probe_items(ProbeDataConfig(n_pairs=16), embed=bag_of_words)
    fit = [" ".join(d.text.split()) for d in split_documents("fit", SOURCES)]
    other = [
        " ".join(d.text.split())
        for split in ("calibration", "validation", "test")
        for d in split_documents(split, SOURCES)
    ]
    for s in items:
        ctx = s.prompt.split("\n\nDoes the text")[0]
        assert any(ctx in t for t in fit)
        assert not any(ctx in t for t in other)


def test_task_examples_use_their_own_wrong_answers():
    from lcc_lens.data import Example

    ex = [
        Example("Q: 2+2?", " four", (" five", " four hundred")),
        Example("Q: sky?", " blue", (" green",)),
    ]
    s = probe_samples(ex, embed=bag_of_words)
    assert s[0].negative == " four hundred" and s[1].negative == " green"
    with pytest.raises(DataError, match="same response"):
        probe_samples([Example("a", " x"), Example("b", " x")], embed=bag_of_words)
