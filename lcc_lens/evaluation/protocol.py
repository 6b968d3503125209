"""The one evaluation protocol: held-out NLL per domain, gap closed on the NLL scale, bootstrap intervals.

Used by the fit, the eval job, the analyses and the benchmark, so that every figure means the same:

* each domain's held-out documents are joined by blank lines, tokenized once (no special tokens) and
  cut into non-overlapping windows of ``context_length`` tokens; ``windows`` of them are drawn with
  ``seed`` from the WHOLE text (never "the first N"), the same windows for every model;
* a window is fed the token before it (the BOS/EOS prefix for the first one) plus its own tokens but
  the last, and every one of its tokens is scored once (lm-eval's rolling convention);
* per domain and model: mean NLL (nats/token), perplexity, token and window counts;
* per restored model: the NLL gap closed (the headline), a paired percentile bootstrap interval over
  windows, and the perplexity-scale gap as a secondary column (:mod:`lcc_lens.evaluation.gap`).

A model is a Hugging Face causal LM, a TransformerBridge, a ``(bridge, compensation)`` pair (any object
with an ``attach(bridge)`` context manager), or a callable ``ids -> logits``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lcc_lens.errors import ConfigError, DataError
from lcc_lens.evaluation.gap import bootstrap_nll_gap, nll_gap_closed, ppl_gap_closed

logger = logging.getLogger(__name__)

Scorer = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch pos vocab"]]
ROLE_ORDER = ("test", "validation", "in_domain")


@dataclass(frozen=True)
class ProtocolConfig:
    """How held-out text is scored (see the module doc)."""

    context_length: int = field(default=256, metadata={"help": "tokens per scored window"})
    windows: int = field(
        default=40, metadata={"help": "windows drawn per domain (all of them when fewer exist)"}
    )
    in_domain_windows: int | None = field(
        default=None,
        metadata={
            "help": "windows drawn per in-domain domain, at most windows (none: windows); the "
            "out-of-domain test and validation domains always get windows"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the window draw and the bootstrap"})
    batch_size: int = field(default=8, metadata={"help": "windows per forward pass"})
    bootstrap: int = field(
        default=1000, metadata={"help": "bootstrap resamples of the windows (0: no interval)"}
    )
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the interval"})

    def __post_init__(self) -> None:
        for name in ("context_length", "windows", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ProtocolConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.in_domain_windows is not None and self.in_domain_windows < 1:
            raise ConfigError(
                f"ProtocolConfig.in_domain_windows must be >= 1 or none, got {self.in_domain_windows}."
            )
        if self.bootstrap < 0:
            raise ConfigError(f"ProtocolConfig.bootstrap must be >= 0, got {self.bootstrap}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(
                f"ProtocolConfig.confidence must be in (0, 1), got {self.confidence}."
            )

    def windows_for(self, role: str) -> int:
        """How many windows a domain of ``role`` gets (fewer in domain, where the headline is not;
        never more than ``windows``)."""
        if role == "in_domain" and self.in_domain_windows is not None:
            return min(self.in_domain_windows, self.windows)
        return self.windows


@dataclass(frozen=True)
class Window:
    """Model input (``context_length`` tokens) and its targets (the next token at every position)."""

    input_ids: tuple[int, ...]
    targets: tuple[int, ...]
    start: int


def prefix_token(tokenizer: Any) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ConfigError("the tokenizer has neither a BOS nor an EOS token; set one before scoring.")


def sample_windows(
    tokenizer: Any, documents: Sequence[str], cfg: ProtocolConfig, role: str = "test"
) -> tuple[list[Window], int]:
    """``cfg.windows_for(role)`` windows drawn with ``cfg.seed`` across the whole text; also the number
    available."""
    text = "\n\n".join(d.strip() for d in documents if d.strip())
    if not text:
        raise DataError("no held-out text to score: the domain's documents are empty.")
    tokens = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    L = cfg.context_length
    starts = list(range(0, len(tokens) - L + 1, L)) or [0]
    chosen = sorted(random.Random(cfg.seed).sample(starts, min(cfg.windows_for(role), len(starts))))
    prefix = prefix_token(tokenizer)
    out = []
    for s in chosen:
        chunk = tokens[s : s + L]
        before = tokens[s - 1] if s > 0 else prefix
        out.append(Window((before, *chunk[:-1]), tuple(chunk), s))
    return out, len(starts)


def as_scorer(model: Any) -> Scorer:
    """A function ``ids -> logits`` for a HF model, a bridge, a (bridge, compensation) pair or a callable.

    A bridge is scored through its plain twin (:mod:`lcc_lens.twin`: the same weights and eager
    attention, the same logits bit for bit, without the bridge's per-module overhead) where it has one;
    a compensation with ``attach_for_training`` is added there at the output projections' input.
    """
    from lcc_lens.evaluation.perplexity import _is_bridge
    from lcc_lens.twin import PlainLogits, plain_twin

    if isinstance(model, tuple):
        bridge, comp = model
        attach = getattr(comp, "attach_for_training", None)
        if attach is None or plain_twin(bridge) is None:
            attach = comp.attach

        def with_comp(ids: Tensor) -> Tensor:
            with attach(bridge) as hooked:
                return hooked(ids, return_type="logits")

        return with_comp
    if _is_bridge(model):
        twin = plain_twin(model)
        if twin is not None:
            return PlainLogits(twin)
        return lambda ids: model(ids, return_type="logits")
    if hasattr(model, "config") and callable(getattr(model, "forward", None)):
        return lambda ids: model(ids).logits
    if callable(model):
        return model
    raise ConfigError(
        f"cannot score a {type(model).__name__}: pass a Hugging Face causal LM, a TransformerBridge, "
        "a (bridge, compensation) pair or a callable ids -> logits."
    )


def model_device(model: Any) -> torch.device:
    """Where the token ids go (the input embedding's device, also under a device map)."""
    from lcc_lens.placement import input_device

    target = model[0] if isinstance(model, tuple) else model
    target = getattr(target, "original_model", target)  # a bridge: its Hugging Face model
    if not hasattr(target, "parameters"):
        return torch.device("cpu")
    return input_device(target)


@torch.no_grad()
def score_windows(
    model: Any,
    windows: Sequence[Window],
    batch_size: int = 8,
    *,
    on_batch: Callable[[int], Any] | None = None,
) -> list[float]:
    """Per-window NLL sums (nats) of ``model`` on ``windows``; ``on_batch(n)`` after each batch."""
    scorer = as_scorer(model)
    device = model_device(model)
    sums: list[float] = []
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        ids = torch.tensor([w.input_ids for w in batch], device=device)
        targets = torch.tensor([w.targets for w in batch], device=device)
        logits = scorer(ids).float()
        for row, target in zip(logits, targets, strict=True):
            # one window's log-softmax at a time: the same values as the batch's, without a second
            # batch x pos x vocab tensor (400 MB at 8 x 256 tokens of a 49k vocabulary)
            picked = torch.log_softmax(row, dim=-1).gather(-1, target[:, None])[:, 0]
            sums.append(float(-picked.double().sum()))
        del logits
        if on_batch is not None:
            on_batch(len(batch))
    return sums


@dataclass(frozen=True)
class DomainScores:
    """One domain's windows and every model's per-window NLL sums on them."""

    domain: str
    role: str
    tokens_per_window: tuple[int, ...]
    windows_available: int
    nll_sums: Mapping[str, tuple[float, ...]]

    @property
    def n_tokens(self) -> int:
        return sum(self.tokens_per_window)

    def nll(self, label: str) -> float:
        """Mean NLL of ``label`` in nats per token."""
        return sum(self.nll_sums[label]) / self.n_tokens

    def ppl(self, label: str) -> float:
        return math.exp(self.nll(label))


@dataclass(frozen=True)
class GapEstimate:
    """Gap closed by one model on one domain: NLL scale (headline, with interval) and ppl scale."""

    nll: float | None
    nll_low: float | None
    nll_high: float | None
    ppl: float | None


@dataclass(frozen=True)
class ProtocolResult:
    """Scores of every model on every domain under one :class:`ProtocolConfig`."""

    config: ProtocolConfig
    domains: Mapping[str, DomainScores]

    def ordered(self) -> list[DomainScores]:
        """Domains with the out-of-domain test first, then validation, then in-domain."""
        rank = {r: i for i, r in enumerate(ROLE_ORDER)}
        return sorted(self.domains.values(), key=lambda d: (rank.get(d.role, 9), d.domain))

    def gap(
        self, restored: str, domain: str, *, dense: str = "dense", pruned: str = "pruned"
    ) -> GapEstimate:
        """Gap closed by ``restored`` on ``domain`` (NLL scale with bootstrap interval, ppl scale)."""
        d = self.domains[domain]
        nd, np_, nr = d.nll(dense), d.nll(pruned), d.nll(restored)
        ci = None
        if self.config.bootstrap:
            ci = bootstrap_nll_gap(
                d.nll_sums[dense],
                d.nll_sums[pruned],
                d.nll_sums[restored],
                d.tokens_per_window,
                n_boot=self.config.bootstrap,
                confidence=self.config.confidence,
                seed=self.config.seed,
            )
        low, high = ci if ci else (None, None)
        return GapEstimate(nll_gap_closed(nd, np_, nr), low, high, ppl_gap_closed(nd, np_, nr))

    def to_dict(self, *, dense: str = "dense", pruned: str = "pruned") -> dict[str, Any]:
        """JSON-ready: config, then per domain (test first) tokens, NLL/ppl per model, gap per model."""
        out: dict[str, Any] = {"protocol": asdict(self.config), "domains": {}}
        for d in self.ordered():
            labels = list(d.nll_sums)
            entry: dict[str, Any] = {
                "role": d.role,
                "n_tokens": d.n_tokens,
                "n_windows": len(d.tokens_per_window),
                "windows_available": d.windows_available,
                "nll": {m: d.nll(m) for m in labels},
                "ppl": {m: d.ppl(m) for m in labels},
            }
            if dense in labels and pruned in labels:
                entry["gap_closed"] = {
                    m: asdict(self.gap(m, d.domain, dense=dense, pruned=pruned))
                    for m in labels
                    if m not in (dense, pruned)
                }
            out["domains"][d.domain] = entry
        return out


def evaluate(
    models: Mapping[str, Any],
    tokenizer: Any,
    texts_by_domain: Mapping[str, Sequence[str]],
    cfg: ProtocolConfig | None = None,
    *,
    roles: Mapping[str, str] | None = None,
    cached: Collection[str] = (),
) -> ProtocolResult:
    """Score every model on the same sampled windows of every domain (see the module doc).

    ``models``: label -> model (HF model, bridge, (bridge, compensation), or callable ids -> logits);
    name the references ``"dense"`` and ``"pruned"`` to get gap-closed figures. ``roles``: domain ->
    ``"test"`` / ``"validation"`` / ``"in_domain"`` (e.g. :attr:`lcc_lens.data.FitData.eval_roles`).
    ``cached``: labels of fixed models (HF model or bridge) whose per-window sums may come from the
    on-disk score cache (:mod:`lcc_lens.evaluation.score_cache`, keyed by content).
    """
    from lcc_lens.evaluation.score_cache import cached_scores, model_weights_key
    from lcc_lens.progress import progress

    cfg = cfg or ProtocolConfig()
    if not models:
        raise ConfigError("no model to evaluate.")
    if not texts_by_domain:
        raise DataError("no held-out text: pass at least one domain's documents.")
    roles = roles or {}
    out: dict[str, DomainScores] = {}
    weights: dict[str, str] = {}  # content hashes of the cached models
    for domain, docs in texts_by_domain.items():
        role = roles.get(domain, "in_domain")
        windows, available = sample_windows(tokenizer, docs, cfg, role)
        sums = {}
        with progress(
            total=len(windows) * len(models), desc=f"evaluate {domain}", unit="win"
        ) as bar:
            for label, model in models.items():

                def score(model: Any = model, windows: list[Window] = windows) -> list[float]:
                    return score_windows(model, windows, cfg.batch_size, on_batch=bar.update)

                if label in cached:
                    before = bar.n
                    if label not in weights:  # hashed once per model, not once per domain
                        weights[label] = model_weights_key(model)
                    sums[label] = tuple(
                        cached_scores(model, windows, cfg.batch_size, score, weights[label])
                    )
                    bar.update(len(windows) - (bar.n - before))  # a cache hit scores nothing
                else:
                    sums[label] = tuple(score())
        out[domain] = DomainScores(
            domain,
            roles.get(domain, "in_domain"),
            tuple(len(w.targets) for w in windows),
            available,
            sums,
        )
        logger.info(
            "%s (%s): %d tokens, %s",
            domain,
            out[domain].role,
            out[domain].n_tokens,
            ", ".join(f"{m} nll {out[domain].nll(m):.4f}" for m in models),
        )
    return ProtocolResult(cfg, out)


def markdown(result: ProtocolResult, *, dense: str = "dense", pruned: str = "pruned") -> str:
    """A table, out-of-domain test first: tokens, NLL per model, NLL gap closed [CI], ppl-scale gap."""
    rows = []
    labels = [m for m in next(iter(result.domains.values())).nll_sums if m not in (dense, pruned)]
    head = ["domain", "role", "tokens", f"NLL {dense}", f"NLL {pruned}"]
    for m in labels:
        head += [f"NLL {m}", f"NLL gap closed {m} [CI]", f"ppl-scale gap {m}"]
    rows.append("| " + " | ".join(head) + " |")
    rows.append("|" + "---|" * len(head))
    for d in result.ordered():
        cells = [d.domain, d.role, str(d.n_tokens), f"{d.nll(dense):.4f}", f"{d.nll(pruned):.4f}"]
        for m in labels:
            g = result.gap(m, d.domain, dense=dense, pruned=pruned)
            ci = f" [{g.nll_low:.1%}, {g.nll_high:.1%}]" if g.nll_low is not None else ""
            cells += [
                f"{d.nll(m):.4f}",
                "-" if g.nll is None else f"{g.nll:.1%}{ci}",
                "-" if g.ppl is None else f"{g.ppl:.1%}",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
