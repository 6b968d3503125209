"""Clean splits: the test split shares no word 13-gram with calibration, fit or validation text.

The 13-grams are computed here independently of the library (lower-cased ``\\w+`` words joined into
strings), over every shipped domain.
"""

from __future__ import annotations

import re

from lcc_lens.corpora import DOMAINS, split_documents

_WORD = re.compile(r"\w+")


def _grams(text: str, n: int = 13) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def test_no_word_13gram_is_shared_with_the_test_split():
    test: set[int] = set()
    for doc in split_documents("test", DOMAINS):
        test |= _grams(doc.text)
    assert len(test) > 100_000  # the test split is real text of every domain
    for split in ("calibration", "fit", "validation"):
        docs = split_documents(split, DOMAINS)
        assert docs
        shared = {(d.source, d.name) for d in docs if _grams(d.text) & test}
        assert not shared, f"{split} shares word 13-grams with test: {sorted(shared)[:5]}"


def test_every_domain_has_text_in_every_split():
    for domain in DOMAINS:
        for split in ("calibration", "fit", "validation", "test"):
            assert sum(len(d.text) for d in split_documents(split, (domain,))) > 5_000, (
                domain,
                split,
            )
