"""The eval job: evaluate dense / pruned / restored models side by side (lm-eval tasks + perplexity).

Perplexity follows the evaluation protocol (:mod:`lcc_lens.evaluation.protocol`): windows drawn with
a seed across each domain's whole text, the same windows for every model, NLL per domain (the
out-of-domain test domain first) and the NLL gap closed with a bootstrap interval.

:func:`compare` takes an :class:`~lcc_lens.evaluation.config.EvalConfig` and returns the report (a
JSON-ready dict with its markdown table); :func:`write_report` writes it. ``lcc eval`` is the command
line of this module. Inputs are checked before any model is loaded: model directories, the
perplexity text, and the suite directory (a folder lcc_lens did not write is never replaced).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lcc_lens.errors import DataError
from lcc_lens.evaluation.config import PERPLEXITY_TEXTS, EvalConfig

logger = logging.getLogger(__name__)


def perplexity_text(name: str) -> str:
    """The text named by ``--perplexity``: ``heldout``, ``wikitext2`` or a UTF-8 text file."""
    if name == "heldout":
        from lcc_lens.corpora import split_text

        return split_text("test")
    if name == "wikitext2":
        from lcc_lens.evaluation.perplexity import wikitext2_test_text

        return wikitext2_test_text()
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(
            f"--perplexity {name!r} is neither one of {PERPLEXITY_TEXTS} nor an existing text file."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"--perplexity file {path} is not UTF-8 text (undecodable byte at offset {exc.start}); "
            "pass a UTF-8 text file."
        ) from exc
    if not text.strip():
        raise DataError(f"--perplexity file {path} is empty. Pass a file with text.")
    return text


def perplexity_domains(name: str) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Documents per domain and each domain's role for ``--perplexity``.

    ``heldout``: the out-of-domain test and validation domains of the default data configuration
    (never used for calibration or fitting); ``wikitext2`` or a file: one domain of role ``test``.
    """
    if name == "heldout":
        from lcc_lens.data import DataConfig, domain_eval_texts

        data = DataConfig()
        pairs = ((data.test_domain, "test"), (data.validation_domain, "validation"))
        texts = {d: domain_eval_texts(d, role) for d, role in pairs}  # type: ignore[arg-type]
        return texts, dict(pairs)
    label = name if name in PERPLEXITY_TEXTS else f"file:{Path(name).name}"
    return {label: (perplexity_text(name),)}, {label: "test"}


def _check_inputs(config: EvalConfig) -> tuple[dict[str, tuple[str, ...]], dict[str, str]] | None:
    """Everything that can be checked without a model; returns the perplexity domains.

    No output (the suite folder, the report files) may lie in, be, or hold a model folder read.
    """
    from lcc_lens.atomic import check_apart, check_replaceable
    from lcc_lens.models import resolve_model_source

    read = {f"model {spec.label}": resolve_model_source(spec.source) for spec in config.models}
    outputs = [("--out", path) for path in report_paths(config.out)] if config.out else []
    if config.needs_suite and config.suite_dir is not None:
        outputs.append(("--suite-dir", config.suite_dir))
    for flag, path in outputs:
        check_apart(path, read, what=flag)
    if config.needs_suite and config.suite_dir is not None:
        check_replaceable(config.suite_dir, what="--suite-dir")
    return perplexity_domains(config.perplexity) if config.perplexity else None


class _ProtocolScores:
    """Scores the models one at a time on the same windows of every domain (the protocol)."""

    def __init__(
        self, config: EvalConfig, texts: dict[str, tuple[str, ...]], roles: dict[str, str]
    ):
        from lcc_lens.evaluation.protocol import ProtocolConfig

        kwargs: dict[str, Any] = {"batch_size": config.batch_size}
        if config.context_length is not None:
            kwargs["context_length"] = config.context_length
        if config.max_windows is not None:
            kwargs["windows"] = config.max_windows
        self.cfg = ProtocolConfig(**kwargs)
        self.texts, self.roles = texts, roles
        self.windows: dict[str, tuple[list[Any], int]] = {}
        self.sums: dict[str, dict[str, tuple[float, ...]]] = {d: {} for d in texts}
        self._probe: list[int] | None = None

    def score(self, label: str, model: Any, tokenizer: Any) -> dict[str, Any]:
        """Score one model; return its figures on the first (out-of-domain test) domain."""
        from lcc_lens.errors import ConfigError
        from lcc_lens.evaluation.perplexity import model_max_positions
        from lcc_lens.evaluation.protocol import sample_windows, score_windows

        limit = model_max_positions(model)
        if limit is not None and self.cfg.context_length > limit:
            raise ConfigError(
                f"--context-length {self.cfg.context_length} exceeds the {limit} positions of model "
                f"{label}; pass --context-length {limit} or less."
            )
        probe = list(tokenizer("The tokenizer check, 123.", add_special_tokens=False)["input_ids"])
        if self._probe is None:
            self._probe = probe
            for domain, docs in self.texts.items():
                self.windows[domain] = sample_windows(tokenizer, docs, self.cfg)
        elif probe != self._probe:
            raise DataError(
                f"model {label} uses a different tokenizer from the first model; perplexities on "
                "different tokens cannot be compared. Evaluate it in a separate run."
            )
        for domain, (windows, _available) in self.windows.items():
            self.sums[domain][label] = tuple(score_windows(model, windows, self.cfg.batch_size))
        first = self.result().ordered()[0]
        nll_sum = sum(first.nll_sums[label])
        return {
            "domain": first.domain,
            "role": first.role,
            "ppl": first.ppl(label),
            "nll": first.nll(label),
            "nll_sum": nll_sum,
            "n_tokens": first.n_tokens,
            "n_windows": len(first.tokens_per_window),
            "context_length": self.cfg.context_length,
        }

    def result(self) -> Any:
        from lcc_lens.evaluation.protocol import DomainScores, ProtocolResult

        domains = {
            d: DomainScores(
                d,
                self.roles.get(d, "in_domain"),
                tuple(len(w.targets) for w in windows),
                available,
                dict(self.sums[d]),
            )
            for d, (windows, available) in self.windows.items()
        }
        return ProtocolResult(self.cfg, domains)


def compare(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every model of ``config``; return the report (``report["markdown"]`` is the table)."""
    from lcc_lens.evaluation.harness import evaluate_lm_eval
    from lcc_lens.evaluation.protocol import markdown as protocol_markdown
    from lcc_lens.evaluation.report import ModelResult, markdown_table, report_dict
    from lcc_lens.evaluation.suite import SUITE_SPLIT, build_offline_suite
    from lcc_lens.models import describe, load_causal_lm

    domains = _check_inputs(config)
    scores = _ProtocolScores(config, *domains) if domains is not None else None
    with tempfile.TemporaryDirectory(prefix="lcc_suite_") as scratch:
        include = list(config.include_path)
        if config.needs_suite:
            suite_dir = config.suite_dir or Path(scratch) / "suite"
            build_offline_suite(suite_dir, seed=config.suite_seed, n_items=config.suite_items)
            include.append(suite_dir)
        results = []
        for spec in config.models:
            start = time.perf_counter()
            logger.info("evaluating %s (%s): %s", spec.label, spec.role, spec.source)
            model, tokenizer = load_causal_lm(spec.source, device=config.device)
            tasks = {}
            if config.tasks:
                tasks = evaluate_lm_eval(
                    model,
                    tokenizer,
                    config.tasks,
                    limit=config.limit,
                    batch_size=config.batch_size,
                    include_path=include or None,
                    num_fewshot=config.num_fewshot,
                )
            ppl = scores.score(spec.label, model, tokenizer) if scores is not None else None
            del model
            results.append(ModelResult(spec.label, spec.role, spec.source, tasks, ppl))
            logger.info("%s done in %.0f s", spec.label, time.perf_counter() - start)

    extra: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "model_identity": {s.label: describe(s.source) for s in config.models},
    }
    if config.needs_suite:
        from lcc_lens.corpora import corpus_identity

        extra["suite_corpus"] = corpus_identity(SUITE_SPLIT)  # type: ignore[arg-type]
    markdown = markdown_table(results)
    if scores is not None:
        roles = {s.role: s.label for s in config.models}
        dense, pruned = roles.get("dense", "dense"), roles.get("pruned", "pruned")
        protocol = scores.result()
        extra["protocol"] = protocol.to_dict(dense=dense, pruned=pruned)
        if "dense" in roles and "pruned" in roles:
            markdown += "\nHeld-out NLL (nats/token), out-of-domain test first:\n\n"
            markdown += protocol_markdown(protocol, dense=dense, pruned=pruned)
    report = report_dict(results, **extra)
    report["markdown"] = markdown
    return report


def report_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The JSON report path and the markdown table beside it."""
    out = Path(out)
    return out, out.with_suffix(".md")


def write_report(report: dict[str, Any], out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report`` as JSON to ``out`` and its markdown table beside it, atomically."""
    from lcc_lens.atomic import write_json, write_text

    json_path, md_path = report_paths(out)
    write_json(json_path, report)
    write_text(md_path, report["markdown"])
    return json_path, md_path
