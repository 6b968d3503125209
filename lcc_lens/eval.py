"""``python -m lcc_lens.eval``: evaluate dense / pruned / restored models side by side.

Examples::

    python -m lcc_lens.eval --model embedded --model pruned=/ckpt/wanda50 --model lcc=/ckpt/restored \\
        --tasks offline --out results.json
    python -m lcc_lens.eval --model dense=/ckpt/dense --model /ckpt/pruned --tasks paper --limit 100 \\
        --perplexity wikitext2 --out paper.json          # needs the Hugging Face hub

Roles follow the order of ``--model``: the first is the dense reference, the second the pruned model,
every further one a restored model (``--model LABEL=PATH`` names a column; default labels are dense,
pruned, restored, restored2, ...). ``--tasks`` takes lm-eval task names and the aliases ``offline``
(the held-out suite built from the shipped text) and ``paper`` (boolq, rte, hellaswag, winogrande,
arc_easy, arc_challenge, openbookqa). ``--perplexity`` scores ``heldout`` (the offline test split),
``wikitext2`` or a text file. Writes ``--out`` (JSON) and the same name with ``.md`` (the table).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lcc_lens.errors import ConfigError, DataError, LccError
from lcc_lens.evaluation.config import (
    PERPLEXITY_TEXTS,
    TASK_ALIASES,
    EvalConfig,
    ModelSpec,
    expand_tasks,
)

logger = logging.getLogger(__name__)

_ROLES = ("dense", "pruned")


def _model_specs(values: Sequence[str]) -> tuple[ModelSpec, ...]:
    specs = []
    n_restored = 0
    for i, value in enumerate(values):
        role = _ROLES[i] if i < len(_ROLES) else "restored"
        if role == "restored":
            n_restored += 1
        default = role if role != "restored" or n_restored == 1 else f"restored{n_restored}"
        label, sep, source = value.partition("=")
        if not sep:
            label, source = default, value
        if not label or not source:
            raise ConfigError(f"--model {value!r} is malformed. Use PATH or LABEL=PATH.")
        specs.append(ModelSpec(label=label, source=source, role=role))  # type: ignore[arg-type]
    return tuple(specs)


def _limit(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--limit must be a number, got {text!r}") from exc
    return int(value) if value >= 1 and value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lcc_lens.eval",
        description="Evaluate dense / pruned / restored models side by side (lm-eval + perplexity).",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[LABEL=]PATH",
        help="checkpoint dir, hub id or 'embedded'; repeat: dense first, then pruned, then restored",
    )
    parser.add_argument(
        "--tasks",
        default="offline",
        help=f"comma-separated lm-eval tasks or aliases {sorted(TASK_ALIASES)}; '' for none",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (a .md table is written beside it)"
    )
    parser.add_argument(
        "--limit", type=_limit, default=None, help="items per task (int) or fraction (<1)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument(
        "--suite-dir", type=Path, default=None, help="keep the built offline suite here"
    )
    parser.add_argument("--suite-seed", type=int, default=0)
    parser.add_argument("--suite-items", type=int, default=None, help="items per offline task")
    parser.add_argument(
        "--perplexity",
        default=None,
        metavar="TEXT",
        help=f"also score perplexity on {' or '.join(PERPLEXITY_TEXTS)} or a UTF-8 text file",
    )
    parser.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="perplexity window (default min(max positions, 2048))",
    )
    parser.add_argument(
        "--max-windows", type=int, default=None, help="score only the first N windows"
    )
    parser.add_argument(
        "--include-path",
        type=Path,
        action="append",
        default=[],
        help="extra lm-eval YAML task dirs",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    """Parse command-line arguments into an :class:`EvalConfig` (no side effects)."""
    ns = build_parser().parse_args(argv)
    tasks = expand_tasks([t.strip() for t in ns.tasks.split(",") if t.strip()])
    return EvalConfig(
        models=_model_specs(ns.model),
        tasks=tasks,
        out=ns.out,
        limit=ns.limit,
        batch_size=ns.batch_size,
        device=ns.device,
        num_fewshot=ns.num_fewshot,
        suite_dir=ns.suite_dir,
        suite_seed=ns.suite_seed,
        suite_items=ns.suite_items,
        perplexity=ns.perplexity,
        context_length=ns.context_length,
        max_windows=ns.max_windows,
        include_path=tuple(ns.include_path),
    )


def perplexity_text(name: str) -> str:
    """The text named by ``--perplexity``: ``heldout``, ``wikitext2`` or a file path."""
    if name == "heldout":
        from lcc_lens.corpora import split_text

        return split_text("test")
    if name == "wikitext2":
        from lcc_lens.evaluation.perplexity import wikitext2_test_text

        return wikitext2_test_text()
    path = Path(name)
    if not path.is_file():
        raise DataError(
            f"--perplexity {name!r} is neither {PERPLEXITY_TEXTS} nor an existing text file."
        )
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"--perplexity file {path} is empty. Pass a file with text.")
    return text


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every model of ``config``; write the JSON and markdown reports; return the report."""
    from lcc_lens.atomic import ensure_writable_dir, write_json, write_text
    from lcc_lens.evaluation.harness import evaluate_lm_eval
    from lcc_lens.evaluation.perplexity import perplexity
    from lcc_lens.evaluation.report import ModelResult, markdown_table, report_dict
    from lcc_lens.evaluation.suite import SUITE_SPLIT, build_offline_suite
    from lcc_lens.models import describe, load_causal_lm, resolve_model_source

    for spec in config.models:  # fail on a bad directory before any model is loaded
        resolve_model_source(spec.source)
    if config.out is not None:
        ensure_writable_dir(config.out)
    text = perplexity_text(config.perplexity) if config.perplexity else None

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
            ppl = None
            if text is not None:
                ppl = perplexity(
                    model,
                    tokenizer,
                    text,
                    context_length=config.context_length,
                    batch_size=config.batch_size,
                    max_windows=config.max_windows,
                ).as_dict()
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
    report = report_dict(results, **extra)
    report["markdown"] = markdown_table(results)
    if config.out is not None:
        write_json(config.out, report)
        write_text(config.out.with_suffix(".md"), report["markdown"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = parse_args(argv)
        report = run(config)
    except LccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report["markdown"], end="")
    if config.out is not None:
        print(f"wrote {config.out} and {config.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
