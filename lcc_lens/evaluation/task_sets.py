"""Short held-out task items, many of them: task accuracy with an interval narrow enough to read.

The 40-item tasks the benchmark first used moved the accuracy gap closed by 5-8 points per item. These
sets trade length for count: each item is short (a forward is cheap) and the items do not overlap within
a task, so a few thousand come out of the held-out text and a paired bootstrap
(:func:`lcc_lens.evaluation.gap.bootstrap_accuracy_gap`) gives an interval of a useful width.

Every item comes from the ``"test"`` split of the out-of-domain test domain (``speeches`` by default;
never calibrated or fitted on), walking each document once from the start:

* next passage (HellaSwag-style, 4 choices): a context of at least ``context_chars`` characters that
  starts at a sentence start (cut at a space), then the true next ``ending_words`` words; distractors are
  the true endings of other chosen items of the same speech
  (:func:`lcc_lens.evaluation.suite.with_distractors`);
* last word (LAMBADA-style): a word of 4+ letters that also occurs in the ``last_word_context_chars``
  characters before it (starting after a space), which are the context; LAMBADA's premise (the context
  makes the target recoverable) without its sentence-final restriction, which leaves only about 600
  items in the held-out text. ``acc``: every token of the word is the greedy prediction.

Within a task no two items share a character of text. Candidates are shuffled with the seed and the first
``n`` are taken, so the sets are deterministic in (config, seed).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from lcc_lens.corpora import Document, split_documents
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.evaluation.suite import SUITE_SPLIT, WORD, with_distractors

TASK_SET_VERSION = "short/1"
"""Recorded with every score made on these sets (the benchmark's first runs used the 40-item "suite/1")."""
_SENTENCE_START = re.compile(r"(?:(?<=[.!?] )|(?<=\n)|^)[A-Z]")
_TARGET_WORD = re.compile(r"(?<= )[A-Za-z]{4,}(?![A-Za-z])")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TaskSetConfig:
    """How many short held-out items each task has, and how long they are.

    The defaults were chosen by measurement on SmolLM2-135M, its Wanda-50 % prune and a 16-step
    ``lcc`` fit (analysis/results/tasks/task_power.md, at a quarter of these counts): the paired 95 %
    half-width of the mean-accuracy gap closed was +-17 points at 200 + 400 items and shrinks as
    1/sqrt(items), so about +-9 at these counts, and 600 items took 40 s wall (77 CPU s) on 2 idle
    cores, so these take about 2.7 min per model.
    """

    next_passage: int = field(default=800, metadata=_help("next-passage items (0: none)"))
    last_word: int = field(default=1600, metadata=_help("last-word items (0: none)"))
    context_chars: int = field(
        default=120, metadata=_help("shortest next-passage context, characters")
    )
    ending_words: int = field(default=6, metadata=_help("words per next-passage ending"))
    n_choices: int = field(default=4, metadata=_help("choices per next-passage item"))
    last_word_context_chars: int = field(
        default=150, metadata=_help("characters of context before a last word")
    )
    domain: str = field(default="speeches", metadata=_help("held-out test domain of the items"))
    seed: int = field(default=0, metadata=_help("seed of the item draw and the distractors"))

    def __post_init__(self) -> None:
        for name in ("next_passage", "last_word"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TaskSetConfig.{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("context_chars", "ending_words", "last_word_context_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TaskSetConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.n_choices < 2:
            raise ConfigError(f"TaskSetConfig.n_choices must be >= 2, got {self.n_choices}.")

    def to_dict(self) -> dict[str, Any]:
        return {"version": TASK_SET_VERSION, **asdict(self)}


def _documents(cfg: TaskSetConfig) -> list[Document]:
    return split_documents(SUITE_SPLIT, (cfg.domain,))  # type: ignore[arg-type]


def _origin(doc: Document, offset: int) -> dict[str, Any]:
    return {"source": doc.source, "document": doc.name, "offset": offset}


def _passage_candidates(doc: Document, cfg: TaskSetConfig) -> Iterator[tuple[dict, str, str]]:
    """(origin, context, true ending) of one document, in order and without overlap."""
    text, free = doc.text, 0
    for start in _SENTENCE_START.finditer(text):
        if start.start() < free:
            continue
        cut = text.find(" ", start.start() + cfg.context_chars)
        if cut < 0:
            return
        words = []
        for word in WORD.finditer(text, cut):
            words.append(word)
            if len(words) == cfg.ending_words:
                break
        if len(words) < cfg.ending_words:
            return
        end = words[-1].end()
        yield _origin(doc, start.start()), text[start.start() : cut], text[cut:end]
        free = end


def _last_word_candidates(doc: Document, cfg: TaskSetConfig) -> Iterator[dict[str, Any]]:
    """Last-word items of one document, in order and without overlap."""
    text, free = doc.text, 0
    for match in _TARGET_WORD.finditer(text):
        before = match.start() - 1  # the space before the word
        first = before - cfg.last_word_context_chars
        if first < free:
            continue
        start = text.find(" ", first) + 1
        context, word = text[start:before], match.group(0)
        if word in context and re.search(rf"\b{re.escape(word)}\b", context):
            yield {"context": context, "target": " " + word, **_origin(doc, start)}
            free = match.end()


def _draw(cands: list[Any], n: int, rng: random.Random, task: str) -> list[Any]:
    if len(cands) < n:
        raise DataError(
            f"the held-out {task} text yields only {len(cands)} short items; asked for {n}. "
            f"Ask for at most {len(cands)} or shorten the items."
        )
    return rng.sample(cands, n)


def short_next_passage_items(cfg: TaskSetConfig) -> list[dict[str, Any]]:
    """``cfg.next_passage`` short 4-choice items (see the module doc)."""
    rng = random.Random(f"{cfg.seed}/short_next_passage")
    cands = [c for doc in _documents(cfg) for c in _passage_candidates(doc, cfg)]
    return with_distractors(_draw(cands, cfg.next_passage, rng, "next-passage"), cfg.n_choices, rng)


def short_last_word_items(cfg: TaskSetConfig) -> list[dict[str, Any]]:
    """``cfg.last_word`` short last-word items (see the module doc)."""
    rng = random.Random(f"{cfg.seed}/short_last_word")
    cands = [c for doc in _documents(cfg) for c in _last_word_candidates(doc, cfg)]
    return _draw(cands, cfg.last_word, rng, "last-word")
