"""One data-source specification for a whole run: calibration, fitting, probing and evaluation text.

:class:`DataConfig` and :func:`fit_data` choose every text a run uses, once, and record the domains of each
role (leave-one-domain-out: the test domain is never used for pruning calibration or fitting; a separate
validation domain chooses defaults). Examples and their encoding live in :mod:`lcc_lens.examples` (their
names are re-exported here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lcc_lens.corpora import DOMAINS, SOURCES, check_domains, passages, split_documents
from lcc_lens.errors import DataError
from lcc_lens.examples import (
    ALPACA_NO_INPUT,
    ALPACA_WITH_INPUT,
    CORPORA_SPECS,
    Encoded,
    Example,
    Targets,
    Template,
    collate,
    continuation_examples,
    encode,
    load_examples,
    render_alpaca,
    split_examples,
    text_file_passages,
)

__all__ = [
    "ALPACA_NO_INPUT",
    "ALPACA_WITH_INPUT",
    "CORPORA_SPECS",
    "DataConfig",
    "Encoded",
    "EvalRole",
    "FIT_TEXTS",
    "FitText",
    "Example",
    "FitData",
    "Targets",
    "Template",
    "collate",
    "continuation_examples",
    "domain_eval_texts",
    "encode",
    "fit_data",
    "load_examples",
    "render_alpaca",
    "split_examples",
    "text_file_passages",
]

EvalRole = Literal["test", "validation", "in_domain"]
FitText = Literal["corpus", "self", "corpus_self"]
FIT_TEXTS: tuple[str, ...] = ("corpus", "self", "corpus_self")


@dataclass(frozen=True)
class DataConfig:
    """Which text a run uses for each role, and how much (see :func:`fit_data`).

    Leave-one-domain-out: ``test_domain`` is never used for pruning calibration, fitting or choosing
    defaults; ``validation_domain`` (never the test domain) is the out-of-domain text that chooses them.
    """

    source: str = field(
        default="corpora",
        metadata={
            "help": "fit examples: 'corpora' (the shipped domains; 'offline' is an alias), a "
            ".json/.jsonl/.csv file of records, a .txt file (one document), or a hub dataset name"
        },
    )
    calibration_domains: tuple[str, ...] = field(
        default=SOURCES,
        metadata={"help": f"corpora domains for pruning calibration (from {DOMAINS})"},
    )
    fit_domains: tuple[str, ...] = field(
        default=SOURCES,
        metadata={"help": f"corpora domains for fitting, diffs and probing (from {DOMAINS})"},
    )
    validation_domain: str = field(
        default="dialogue",
        metadata={"help": "out-of-domain text that chooses defaults (never the test domain)"},
    )
    test_domain: str = field(
        default="speeches",
        metadata={"help": "held-out domain of the headline figure, never calibrated or fitted on"},
    )
    n_train: int = field(default=256, metadata={"help": "fit examples (prompt + continuation)"})
    val_fraction: float = field(
        default=0.125, metadata={"help": "in-domain validation examples as a fraction of n_train"}
    )
    n_diff_prompts: int = field(
        default=128, metadata={"help": "prompts for the dense-minus-pruned activation differences"}
    )
    n_probe: int = field(default=128, metadata={"help": "examples for probing head importance"})
    prompt_fraction: float = field(
        default=0.4, metadata={"help": "share of a passage (in characters) that forms the prompt"}
    )
    min_chars: int = field(default=200, metadata={"help": "shortest passage, characters"})
    max_chars: int = field(default=500, metadata={"help": "longest passage, characters"})
    targets: Targets = field(
        default="response",
        metadata={
            "help": "tokens the fit objective scores: 'response' (the continuation) or 'all' (every "
            "next token of prompt + continuation; what distillation on whole passages uses)"
        },
    )
    fit_text: FitText = field(
        default="corpus",
        metadata={
            "help": "what the compensation is fitted on: 'corpus' (the fit examples), 'self' (text "
            "the dense model samples itself from its BOS token, every token scored) or "
            "'corpus_self' (half each)"
        },
    )
    self_tokens: int = field(
        default=128, metadata={"help": "new tokens per self-written sample (fit_text self)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of every sample drawn"})

    def __post_init__(self) -> None:
        from lcc_lens.errors import ConfigError

        if self.targets not in ("response", "all"):
            raise ConfigError(f"targets must be 'response' or 'all', got {self.targets!r}.")
        if self.fit_text not in FIT_TEXTS:
            raise ConfigError(f"fit_text must be one of {FIT_TEXTS}, got {self.fit_text!r}.")
        if self.self_tokens < 1:
            raise ConfigError(f"self_tokens must be >= 1, got {self.self_tokens}.")

        try:
            for name in ("calibration_domains", "fit_domains"):
                object.__setattr__(self, name, check_domains(getattr(self, name)))
            check_domains((self.validation_domain, self.test_domain))
        except DataError as exc:
            raise ConfigError(str(exc)) from None
        if self.test_domain in (*self.calibration_domains, *self.fit_domains):
            raise ConfigError(
                f"test_domain {self.test_domain!r} is also a calibration or fit domain; the headline "
                "must be out of domain. Choose another test_domain or drop it from the others."
            )
        if self.validation_domain == self.test_domain:
            raise ConfigError(
                f"validation_domain equals test_domain ({self.test_domain!r}); choose another."
            )
        for name in ("n_train", "n_diff_prompts", "n_probe", "min_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_chars < self.min_chars:
            raise ConfigError(
                f"max_chars ({self.max_chars}) must be >= min_chars ({self.min_chars})."
            )
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if not 0 < self.prompt_fraction < 1:
            raise ConfigError(f"prompt_fraction must be in (0, 1), got {self.prompt_fraction}.")

    @property
    def uses_corpora(self) -> bool:
        return self.source in CORPORA_SPECS


@dataclass(frozen=True)
class FitData:
    """Every prompt / text set one run uses, chosen once, with the domain of each role recorded.

    ``calibration``: documents for pruning calibration; ``train`` / ``validation``: fit examples and
    in-domain validation examples; ``diff_prompts``: prompts for the activation differences; ``probe``:
    examples for probing; ``fit_passages``: the passages the fit examples were cut from (build other
    probe items from these); ``eval_texts``: domain -> held-out documents; ``eval_roles``: domain ->
    ``"test"`` (the headline, out of domain), ``"validation"`` (out of domain, chooses defaults) or
    ``"in_domain"`` (test split of a fit domain); ``domains``: role -> domains.
    """

    config: DataConfig
    calibration: tuple[str, ...]
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    diff_prompts: tuple[str, ...]
    probe: tuple[Example, ...]
    fit_passages: tuple[str, ...]
    eval_texts: Mapping[str, tuple[str, ...]]
    eval_roles: Mapping[str, EvalRole]
    domains: Mapping[str, tuple[str, ...]]

    def describe(self) -> dict[str, Any]:
        """What a report records: domains per role, sizes and content hashes."""
        h = hashlib.sha256()
        for ex in self.train:
            h.update(ex.prompt.encode() + b"\0" + ex.response.encode() + b"\1")
        return {
            "source": self.config.source,
            "domains": {k: list(v) for k, v in self.domains.items()},
            "eval_roles": dict(self.eval_roles),
            "n_calibration_documents": len(self.calibration),
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "n_diff_prompts": len(self.diff_prompts),
            "n_probe": len(self.probe),
            "eval_documents": {d: len(v) for d, v in self.eval_texts.items()},
            "eval_chars": {d: sum(map(len, v)) for d, v in self.eval_texts.items()},
            "train_sha256": h.hexdigest()[:16],
        }


def domain_eval_texts(domain: str, role: EvalRole) -> tuple[str, ...]:
    """Held-out documents of ``domain`` for an evaluation role.

    The test and in-domain roles score the domain's ``test`` split; the out-of-domain validation role
    scores every other split of its domain (none of it is fitted on, and the test split stays unseen).
    """
    splits = ("test",) if role != "validation" else ("calibration", "fit", "validation")
    return tuple(d.text for s in splits for d in split_documents(s, (domain,)))  # type: ignore[arg-type]


def fit_data(cfg: DataConfig, seed: int | None = None) -> FitData:
    """Choose every text a run uses (``seed`` overrides ``cfg.seed``), once, deterministically."""
    seed = cfg.seed if seed is None else seed
    n_val = max(1, round(cfg.n_train * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if cfg.uses_corpora:
        fit_passages = passages(
            "fit",
            cfg.n_train,
            min_chars=cfg.min_chars,
            max_chars=cfg.max_chars,
            seed=seed,
            sources=cfg.fit_domains,
        )
        train = continuation_examples(fit_passages, cfg.prompt_fraction)
        val_passages = (
            passages(
                "validation",
                n_val,
                min_chars=cfg.min_chars,
                max_chars=cfg.max_chars,
                seed=seed,
                sources=cfg.fit_domains,
            )
            if n_val
            else []
        )
        validation = continuation_examples(val_passages, cfg.prompt_fraction)
        fit_domains = cfg.fit_domains
    else:
        examples = load_examples(cfg.source, n=cfg.n_train + n_val, seed=seed)
        train, validation = split_examples(examples, n_val / max(1, len(examples)), seed)
        fit_passages = [e.prompt + e.response for e in train]
        fit_domains = (cfg.source,)
    if not train:
        raise DataError(f"data source {cfg.source!r} gave no training example.")
    eval_texts: dict[str, tuple[str, ...]] = {}
    roles: dict[str, EvalRole] = {}
    for domain, role in (
        (cfg.test_domain, "test"),
        (cfg.validation_domain, "validation"),
        *((d, "in_domain") for d in cfg.fit_domains if cfg.uses_corpora),
    ):
        if domain not in roles:
            eval_texts[domain] = domain_eval_texts(domain, role)  # type: ignore[arg-type]
            roles[domain] = role  # type: ignore[assignment]
    if not cfg.uses_corpora and validation:
        eval_texts[cfg.source] = tuple(e.prompt + e.response for e in validation)
        roles[cfg.source] = "in_domain"
    return FitData(
        config=cfg,
        calibration=tuple(d.text for d in split_documents("calibration", cfg.calibration_domains)),
        train=tuple(train),
        validation=tuple(validation),
        diff_prompts=tuple(e.prompt for e in train[: cfg.n_diff_prompts]),
        probe=tuple(train[: cfg.n_probe]),
        fit_passages=tuple(fit_passages),
        eval_texts=eval_texts,
        eval_roles=roles,
        domains={
            "calibration": cfg.calibration_domains,
            "fit": fit_domains,
            "validation": (cfg.validation_domain,),
            "test": (cfg.test_domain,),
        },
    )
