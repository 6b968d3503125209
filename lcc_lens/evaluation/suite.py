"""An offline, held-out task suite built from the real text that ships, run by lm-eval as YAML tasks.

Every item comes from the ``"test"`` split of the held-out domain only (by default ``speeches``: U.S.
State of the Union addresses, public domain), a domain never used for pruning calibration or fitting by
default (leave-one-domain-out, :class:`lcc_lens.data.DataConfig`); the test split shares no word 13-gram
with any other split. Construction is deterministic in ``seed``.

Blocks. Each test document is cut into blocks of consecutive paragraphs (at least ``min_chars``, cut at
a space before ``max_chars``); blocks are interleaved across the domains
and shuffled with ``seed``. Each block records its source, document and character offset, and its text
is an exact substring of that document.

Tasks (names are what ``--tasks`` accepts):

* ``lcc_heldout_ppl`` (loglikelihood_rolling): one block per item, scored from scratch. Metrics:
  lm-eval's ``word_perplexity``, ``byte_perplexity``, ``bits_per_byte`` (corpus-level, no stderr) and
  ``doc_bits_per_byte``, the mean of per-item bits per byte, whose stderr lm-eval reports.
* ``lcc_next_passage`` (multiple_choice, HellaSwag-style): a block's first ~``context_chars`` characters
  (cut at a space) are the context; the true ending is the next ``ending_words`` words; the three
  distractors are the true endings of three other items of the same document (the same play or
  Python topic; of the same source when the document has too few items). All endings begin with a
  space, so whitespace gives no cue. Metrics ``acc`` and ``acc_norm`` (length-normalised, as HellaSwag).
* ``lcc_last_word`` (loglikelihood, LAMBADA-style): the target is the last sentence-final word (3+
  letters, followed by ``.``, ``!`` or ``?``) of a block that also occurs earlier in the block, so the
  context makes it recoverable; the context is the text before it. Metrics ``acc`` (the target is the
  greedy continuation) and ``perplexity`` of the target.

The directory gets one JSONL and one YAML per task (``data_files`` are absolute paths written at build
time), a small hook module that the held-out perplexity YAML names with ``!function``, and
``manifest.json`` (seed, sizes, corpus identity, content hashes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lcc_lens.atomic import atomic_dir
from lcc_lens.corpora import corpus_identity, split_documents
from lcc_lens.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

TASK_HELDOUT_PPL = "lcc_heldout_ppl"
TASK_NEXT_PASSAGE = "lcc_next_passage"
TASK_LAST_WORD = "lcc_last_word"
SUITE_TASKS: tuple[str, ...] = (TASK_HELDOUT_PPL, TASK_NEXT_PASSAGE, TASK_LAST_WORD)
SUITE_SPLIT = "test"
MIN_ITEMS = 4
"""Fewest items per task: a next-passage item needs three other items' endings as distractors."""
SUITE_DOMAINS: tuple[str, ...] = ("speeches",)
"""The held-out test domain (never calibrated or fitted on by default): the suite's only text."""
_HOOKS_MODULE = "lcc_suite_hooks"


@dataclass(frozen=True)
class SuiteSizes:
    """Items per task.

    The defaults are sized so that dense SmolLM2-135M and its Wanda-50 % prune differ by several
    standard errors on every task (measured on the earlier held-out text:
    analysis/results/eval_offline_suite.md); the held-out speeches domain holds at most 2607, 2259
    and 788 items (tests/unit/test_eval_suite.py checks that the defaults fit).
    """

    heldout_ppl: int = 300
    next_passage: int = 1000
    last_word: int = 750

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < MIN_ITEMS:
                raise ConfigError(f"SuiteSizes.{name} must be >= {MIN_ITEMS}, got {value}.")


@dataclass(frozen=True)
class Block:
    """A run of consecutive paragraphs of one test document, an exact substring of it."""

    source: str
    document: str
    offset: int
    text: str


_PARAGRAPH = re.compile(r"\S(?:.*?)(?=\n\s*\n|\Z)", re.S)


def text_blocks(
    min_chars: int,
    max_chars: int,
    split: str = SUITE_SPLIT,
    domains: tuple[str, ...] = SUITE_DOMAINS,
) -> list[Block]:
    """Blocks of ``split``'s documents of ``domains``, in document order (see module doc)."""
    blocks = []
    for doc in split_documents(split, domains):  # type: ignore[arg-type]
        start: int | None = None
        for match in _PARAGRAPH.finditer(doc.text):
            if start is None:
                start = match.start()
            if match.end() - start < min_chars:
                continue
            end = match.end()
            if end - start > max_chars:
                cut = doc.text.rfind(" ", start + min_chars, start + max_chars)
                end = cut if cut > 0 else start + max_chars
            blocks.append(Block(doc.source, doc.name, start, doc.text[start:end]))
            start = None
    return blocks


def _interleaved(blocks: list[Block], rng: random.Random) -> list[Block]:
    """Shuffle within each source, then alternate sources while both last."""
    by_source: dict[str, list[Block]] = {}
    for block in blocks:
        by_source.setdefault(block.source, []).append(block)
    lanes = [rng.sample(v, len(v)) for _, v in sorted(by_source.items())]
    out = []
    for i in range(max((len(v) for v in lanes), default=0)):
        out.extend(v[i] for v in lanes if i < len(v))
    return out


def _origin(block: Block) -> dict[str, Any]:
    return {"source": block.source, "document": block.document, "offset": block.offset}


def heldout_ppl_items(
    n: int, seed: int, domains: tuple[str, ...] = SUITE_DOMAINS
) -> list[dict[str, Any]]:
    """``n`` blocks of 300-900 characters to score by rolling log-likelihood."""
    pool = _interleaved(
        text_blocks(300, 900, domains=domains), random.Random(f"{seed}/heldout_ppl")
    )
    _need(pool, n, TASK_HELDOUT_PPL)
    return [{"text": b.text, **_origin(b)} for b in pool[:n]]


WORD = re.compile(r"\S+")


def next_passage_items(
    n: int,
    seed: int,
    *,
    context_chars: int = 200,
    ending_words: int = 12,
    n_choices: int = 4,
    domains: tuple[str, ...] = SUITE_DOMAINS,
) -> list[dict[str, Any]]:
    """``n`` HellaSwag-style items: context, the true next words, and distractor endings."""
    rng = random.Random(f"{seed}/next_passage")
    cands = []
    for block in _interleaved(text_blocks(context_chars + 200, 1500, domains=domains), rng):
        cut = block.text.find(" ", context_chars)
        if cut < 0:
            continue
        rest = block.text[cut:]
        words = list(WORD.finditer(rest))
        if len(words) < ending_words:
            continue
        ending = rest[: words[ending_words - 1].end()]
        cands.append((block, block.text[:cut], ending))
    _need(cands, n, TASK_NEXT_PASSAGE)
    return with_distractors(
        [(_origin(block), context, ending) for block, context, ending in cands[:n]], n_choices, rng
    )


def with_distractors(
    cands: Sequence[tuple[dict[str, Any], str, str]], n_choices: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Multiple-choice items from (origin, context, true ending): distractors are other items' endings.

    The distractors are distinct endings of other items of the same document (same style and topic,
    so only coherence with the context tells them apart), then of the same source, then any.
    """
    by_doc: dict[tuple[str, str], set[str]] = {}
    by_source: dict[str, set[str]] = {}
    for origin, _, ending in cands:
        by_doc.setdefault((origin["source"], origin["document"]), set()).add(ending)
        by_source.setdefault(origin["source"], set()).add(ending)
    everything = set().union(*by_source.values())
    items = []
    for origin, context, ending in cands:
        for pool in (
            by_doc[(origin["source"], origin["document"])],
            by_source[origin["source"]],
            everything,
        ):
            others = sorted(pool - {ending})
            if len(others) >= n_choices - 1:
                break
        choices = [ending, *rng.sample(others, n_choices - 1)]
        order = rng.sample(range(n_choices), n_choices)
        shuffled = [choices[k] for k in order]
        items.append({"context": context, "choices": shuffled, "label": order.index(0), **origin})
    return items


SENTENCE_END_WORD = re.compile(r"(?<= )([A-Za-z]{3,})(?=[.!?])")


def last_word_items(
    n: int,
    seed: int,
    *,
    min_context_chars: int = 150,
    domains: tuple[str, ...] = SUITE_DOMAINS,
) -> list[dict[str, Any]]:
    """``n`` LAMBADA-style items: context, and a sentence-final word that occurs in the context."""
    items = []
    blocks = text_blocks(300, 900, domains=domains)
    for block in _interleaved(blocks, random.Random(f"{seed}/last_word")):
        for match in reversed(list(SENTENCE_END_WORD.finditer(block.text))):
            context = block.text[: match.start() - 1]
            word = match.group(1)
            if len(context) < min_context_chars:
                break
            if re.search(rf"\b{re.escape(word)}\b", context):
                items.append({"context": context, "target": " " + word, **_origin(block)})
                break
    _need(items, n, TASK_LAST_WORD)
    return items[:n]


def _need(pool: list[Any], n: int, task: str) -> None:
    if len(pool) < n:
        raise DataError(
            f"the held-out text yields only {len(pool)} items for {task}; asked for {n}. "
            f"Ask for at most {len(pool)}."
        )


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def _yaml(task: str, data_file: Path, body: str) -> str:
    return (
        f"# Generated by lcc_lens.evaluation.suite; see its module docstring.\n"
        f"task: {task}\n"
        f"dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {_quote(str(data_file))}\n"
        f"test_split: test\n{body}"
        f"metadata:\n  version: 1.0\n"
    )


_BODIES = {
    TASK_HELDOUT_PPL: (
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        "doc_to_target: text\n"
        f"process_results: !function {_HOOKS_MODULE}.heldout_ppl_results\n"
        "metric_list:\n"
        "  - metric: word_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n"
        "  - metric: byte_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n"
        "  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n"
        "  - metric: doc_bits_per_byte\n    aggregation: mean\n    higher_is_better: false\n"
    ),
    TASK_NEXT_PASSAGE: (
        "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        'target_delimiter: ""\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    ),
    TASK_LAST_WORD: (
        "output_type: loglikelihood\n"
        "doc_to_text: context\n"
        "doc_to_target: target\n"
        'target_delimiter: ""\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
    ),
}

_HOOKS_SOURCE = (
    '"""Generated by lcc_lens.evaluation.suite: lm-eval loads this file by path for `!function`."""\n'
    "from lcc_lens.evaluation.suite import heldout_ppl_results  # noqa: F401\n"
)


def heldout_ppl_results(doc: dict[str, Any], results: Sequence[float]) -> dict[str, Any]:
    """lm-eval ``process_results`` for ``lcc_heldout_ppl``: the usual metrics plus per-item bits/byte."""
    (loglikelihood,) = results
    text = doc["text"]
    n_bytes = len(text.encode("utf-8"))
    n_words = len(re.split(r"\s+", text))
    return {
        "word_perplexity": (loglikelihood, n_words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
        "doc_bits_per_byte": -loglikelihood / n_bytes / 0.6931471805599453,
    }


def _sizes(n_items: int | SuiteSizes | None) -> SuiteSizes:
    if n_items is None:
        return SuiteSizes()
    if isinstance(n_items, SuiteSizes):
        return n_items
    return SuiteSizes(n_items, n_items, n_items)


def build_offline_suite(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_items: int | SuiteSizes | None = None,
    domains: tuple[str, ...] = SUITE_DOMAINS,
) -> list[str]:
    """Write the offline suite's JSONL data and YAML tasks into ``directory``; return the task names.

    ``n_items`` is one count for every task or a :class:`SuiteSizes`; ``None`` uses the defaults.
    Pass ``directory`` as lm-eval's ``include_path``. The directory is replaced atomically.
    """
    sizes = _sizes(n_items)
    builders = {
        TASK_HELDOUT_PPL: lambda: heldout_ppl_items(sizes.heldout_ppl, seed, domains),
        TASK_NEXT_PASSAGE: lambda: next_passage_items(sizes.next_passage, seed, domains=domains),
        TASK_LAST_WORD: lambda: last_word_items(sizes.last_word, seed, domains=domains),
    }
    final = Path(directory).expanduser().resolve()
    manifest: dict[str, Any] = {
        "seed": seed,
        "sizes": asdict(sizes),
        "corpus": corpus_identity(SUITE_SPLIT, domains),  # type: ignore[arg-type]
        "tasks": {},
    }
    with atomic_dir(final) as tmp:
        for task, build in builders.items():
            rows = build()
            payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (tmp / f"{task}.jsonl").write_text(payload, encoding="utf-8")
            # The YAML names the final path: lm-eval reads the data after the rename.
            yaml_text = _yaml(task, final / f"{task}.jsonl", _BODIES[task])
            (tmp / f"{task}.yaml").write_text(yaml_text, encoding="utf-8")
            manifest["tasks"][task] = {
                "n_items": len(rows),
                "sha256": hashlib.sha256(payload.encode()).hexdigest()[:16],
            }
        (tmp / f"{_HOOKS_MODULE}.py").write_text(_HOOKS_SOURCE, encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("offline suite (seed %d, %s) written to %s", seed, asdict(sizes), final)
    return list(SUITE_TASKS)
