"""Short held-out task sets: construction (held out, deterministic, no overlap), the paired accuracy
bootstrap on planted cases, and scoring on a tiny real (random) model."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
import torch

from lcc_lens.corpora import split_documents
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.evaluation.gap import bootstrap_accuracy_gap, gap_closed
from lcc_lens.evaluation.heldout_tasks import _pairs_scores, score_task_sets
from lcc_lens.evaluation.task_sets import (
    TaskSetConfig,
    short_last_word_items,
    short_next_passage_items,
)

SMALL = TaskSetConfig(next_passage=300, last_word=300)


@pytest.fixture(scope="module")
def items():
    return short_next_passage_items(SMALL), short_last_word_items(SMALL)


def test_items_are_deterministic_by_seed(items):
    passage, last = items
    assert short_next_passage_items(SMALL) == passage
    assert short_last_word_items(SMALL) == last
    other = replace(SMALL, seed=1)
    assert short_next_passage_items(other) != passage
    assert short_last_word_items(other) != last


def test_items_are_exact_text_of_the_heldout_test_split_and_never_overlap(items):
    passage, last = items
    docs = {d.name: d.text for d in split_documents("test", ("speeches",))}
    spans: dict[str, list[tuple[int, int]]] = {}
    for it in passage:
        assert it["source"] == "speeches"
        text, true = docs[it["document"]], it["choices"][it["label"]]
        whole = it["context"] + true
        assert text[it["offset"] : it["offset"] + len(whole)] == whole
        assert len(it["context"]) >= SMALL.context_chars and len(true.split()) == SMALL.ending_words
        assert len(set(it["choices"])) == SMALL.n_choices
        assert all(ch.startswith((" ", "\n")) for ch in it["choices"])  # no whitespace cue
        spans.setdefault(it["document"], []).append((it["offset"], it["offset"] + len(whole)))
    for it in last:
        text, word = docs[it["document"]], it["target"].strip()
        whole = it["context"] + it["target"]
        assert text[it["offset"] : it["offset"] + len(whole)] == whole
        assert re.search(rf"\b{word}\b", it["context"]) and len(word) >= 4
    for ranges in spans.values():  # no two next-passage items share text
        ranges.sort()
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_items_share_no_text_with_the_fit_domains(items):
    from lcc_lens.fit import FitConfig

    data = FitConfig().data
    assert data.test_domain == SMALL.domain not in data.fit_domains
    seen = (*data.fit_domains, *data.calibration_domains, data.validation_domain)
    fit_text = "\n".join(
        d.text
        for split in ("calibration", "fit", "validation")
        for d in split_documents(split, seen)
    )
    passage, last = items
    probes = [it["context"] for it in passage[:100]] + [it["context"] for it in last[:100]]
    assert not [p for p in probes if p in fit_text]


def test_too_many_items_is_a_clear_data_error():
    with pytest.raises(DataError, match="asked for 100000"):
        short_last_word_items(replace(SMALL, last_word=100000))
    with pytest.raises(ConfigError, match="n_choices"):
        TaskSetConfig(n_choices=1)


def _outcomes(n: int, acc: float, rng: random.Random) -> list[int]:
    return [int(rng.random() < acc) for _ in range(n)]


def test_paired_bootstrap_is_exact_when_restored_equals_a_reference():
    rng = random.Random(0)
    dense, pruned = _outcomes(800, 0.6, rng), _outcomes(800, 0.3, rng)
    for restored, want in ((dense, 1.0), (pruned, 0.0)):
        g = bootstrap_accuracy_gap([(dense, pruned, restored)], n_boot=500)
        # every resample draws the same items for the three models, so the ratio never moves
        assert g.closed == pytest.approx(want) and g.low == pytest.approx(want)
        assert g.high == pytest.approx(want) and g.reason is None


def test_paired_bootstrap_covers_a_planted_half_and_narrows_with_items():
    rng = random.Random(1)
    widths = []
    for n in (200, 3200):
        dense, pruned = _outcomes(n, 0.7, rng), _outcomes(n, 0.4, rng)
        # restored: the pruned model with every other dense-pruned disagreement taken from dense
        flip = [i for i in range(n) if dense[i] != pruned[i]][::2]
        restored = [dense[i] if i in set(flip) else pruned[i] for i in range(n)]
        tasks = [(dense, pruned, restored), (dense, pruned, pruned)]
        g = bootstrap_accuracy_gap(tasks, n_boot=800, seed=3)
        d, p, r = (sum(v) / n for v in (dense, pruned, restored))
        point = gap_closed(d, p, (r + p) / 2, higher_is_better=True)
        assert g.closed == pytest.approx(point)
        assert g.low < g.closed < g.high
        assert g.n_items == (n, n)
        widths.append(g.half_width)
    assert widths[1] < widths[0] / 2  # 16 x the items: about a quarter of the width


def test_gap_closed_is_refused_with_a_reason_when_dense_and_pruned_are_not_apart():
    rng = random.Random(2)
    pruned = _outcomes(1000, 0.5, rng)
    dense = list(pruned)
    dense[pruned.index(0)] = 1  # one item apart
    restored = _outcomes(1000, 0.5, rng)
    g = bootstrap_accuracy_gap([(dense, pruned, restored)], n_boot=300)
    assert g.closed is None and g.low is None and g.half_width is None
    assert "not told apart from zero" in g.reason
    assert g.dense_minus_pruned == pytest.approx(0.001)
    tie = bootstrap_accuracy_gap([(pruned, pruned, restored)], n_boot=50)
    assert tie.closed is None and tie.reason
    with pytest.raises(ConfigError):
        bootstrap_accuracy_gap([(dense, pruned, restored[:10])])


@pytest.fixture(scope="module")
def tiny(llama_pair_dirs):
    from lcc_lens.models import load_causal_lm

    return load_causal_lm(llama_pair_dirs[0])


def test_batched_scoring_matches_one_item_at_a_time(tiny):
    model, tok = tiny
    pairs = [
        (it["context"], ch) for it in short_next_passage_items(SMALL)[:5] for ch in it["choices"]
    ]
    batched = _pairs_scores(model, tok, pairs, batch_size=7)
    alone = _pairs_scores(model, tok, pairs, batch_size=1)
    assert [g for _, g in batched] == [g for _, g in alone]
    assert [ll for ll, _ in batched] == pytest.approx([ll for ll, _ in alone], abs=1e-4)
    ctx, cont = pairs[3]  # against a direct forward of the one sequence
    c = tok(ctx, add_special_tokens=False)["input_ids"]
    t = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id or tok.eos_token_id, *c, *t]])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    direct = sum(float(lp[len(c) + j, tok_id]) for j, tok_id in enumerate(t))
    assert batched[3][0] == pytest.approx(direct, abs=1e-4)


def test_score_task_sets_on_a_tiny_model(tiny):
    model, tok = tiny
    cfg = TaskSetConfig(next_passage=12, last_word=20)
    out = score_task_sets({"dense": model, "again": model}, tok, cfg, batch_size=5)
    assert out["task_set"]["version"] == "short/1" and out["n_items"] == {
        "next_passage": 12,
        "last_word": 20,
    }
    np_, lw = out["next_passage"]["dense"], out["last_word"]["dense"]
    assert len(np_["correct"]) == 12 and np_["acc_norm"] == sum(np_["correct"]) / 12
    assert len(lw["correct"]) == 20 and lw["acc"] == sum(lw["correct"]) / 20
    assert out["next_passage"]["again"] == np_  # deterministic
    only = score_task_sets({"m": model}, tok, replace(cfg, next_passage=0), batch_size=5)
    assert "next_passage" not in only and only["last_word"]["m"] == lw


def test_shared_context_scoring_matches_scoring_each_pair_whole(tiny):
    from lcc_lens.evaluation.heldout_tasks import _is_plain_hf, _shared_context_scores

    model, tok = tiny
    assert _is_plain_hf(model)
    items = short_next_passage_items(SMALL)[:9]
    groups = [(it["context"], it["choices"]) for it in items]
    shared = _shared_context_scores(model, tok, groups, batch_size=4)
    pairs = [(c, ch) for c, chs in groups for ch in chs]
    whole = _pairs_scores(model, tok, pairs, batch_size=4)
    flat = [s for per_item in shared for s in per_item]
    assert [g for _, g in flat] == [g for _, g in whole]
    assert [ll for ll, _ in flat] == pytest.approx([ll for ll, _ in whole], abs=1e-4)
