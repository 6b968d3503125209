"""``lcc eval``: evaluate dense / pruned / restored models side by side (lm-eval + perplexity).

Examples::

    lcc eval --dense embedded --pruned /ckpt/wanda50 --restored lcc=/ckpt/restored \\
        --tasks offline --out results.json
    lcc eval --model dense=/ckpt/dense --model /ckpt/pruned --tasks paper --limit 100 \\
        --perplexity wikitext2 --out paper.json          # needs the Hugging Face hub

``--dense``, ``--pruned`` and ``--restored`` (repeatable) name the roles; ``--model`` instead assigns
roles by order (dense, pruned, then restored). ``LABEL=PATH`` names a column. ``--tasks`` takes
lm-eval task names and the aliases ``offline`` (the held-out suite built from the shipped text) and
``paper`` (boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa). Writes ``--out``
(JSON) and the same name with ``.md`` (the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lcc_lens.cli.config import command_parser, parse_command, verbose_field
from lcc_lens.cli.policy import execute
from lcc_lens.errors import ConfigError
from lcc_lens.evaluation.config import TASK_ALIASES, EvalConfig, ModelSpec
from lcc_lens.pruning.config import check_device

PROG = "lcc eval"
SUMMARY = "evaluate dense / pruned / restored models side by side (lm-eval tasks + perplexity)"
_ORDER_ROLES = ("dense", "pruned")


@dataclass(frozen=True)
class EvalArgs:
    """The ``lcc eval`` command line."""

    dense: str | None = field(
        default=None,
        metadata={
            "help": "dense reference: [LABEL=]PATH, hub id or 'embedded'",
            "metavar": "MODEL",
        },
    )
    pruned: str | None = field(
        default=None, metadata={"help": "pruned model: [LABEL=]PATH", "metavar": "MODEL"}
    )
    restored: tuple[str, ...] = field(
        default=(),
        metadata={"help": "restored model(s): [LABEL=]PATH; repeatable", "metavar": "MODEL"},
    )
    model: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "[LABEL=]PATH; repeat: roles by order (dense, pruned, restored...); instead of "
            "--dense/--pruned/--restored",
            "metavar": "MODEL",
        },
    )
    tasks: tuple[str, ...] = field(
        default=("offline",),
        metadata={
            "help": f"comma-separated lm-eval tasks or aliases {sorted(TASK_ALIASES)}; '' for none",
            "metavar": "TASKS",
        },
    )
    out: Path | None = field(
        default=None,
        metadata={"help": "results .json file (a .md table is written beside it)"},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing --out file and its .md table"}
    )
    limit: int | float | None = field(
        default=None,
        metadata={"help": "items per task: a count (>= 1) or a fraction (< 1)", "metavar": "N"},
    )
    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N, mps or auto"})
    num_fewshot: int = field(default=0, metadata={"help": "few-shot examples per task item"})
    suite_dir: Path | None = field(
        default=None,
        metadata={
            "help": "keep the built offline suite in this folder (new, empty, or an earlier suite; "
            "none: a temporary folder)"
        },
    )
    suite_seed: int = field(default=0, metadata={"help": "seed of the offline suite's items"})
    suite_items: int | None = field(
        default=None, metadata={"help": "items per offline task (none: the suite's defaults)"}
    )
    perplexity: str | None = field(
        default=None,
        metadata={
            "help": "also score held-out NLL / perplexity (the evaluation protocol): 'heldout' (the "
            "out-of-domain test and validation domains), 'wikitext2' (needs the hub) or a UTF-8 "
            "text file",
            "metavar": "TEXT",
        },
    )
    context_length: int | None = field(
        default=None,
        metadata={"help": "perplexity window, tokens", "default_text": "256 (the protocol's)"},
    )
    windows: int | None = field(
        default=None,
        metadata={
            "help": "perplexity windows drawn (seeded) per domain, count",
            "aliases": ("--max-windows",),
            "default_text": "40 (the protocol's)",
        },
    )
    include_path: tuple[Path, ...] = field(
        default=(), metadata={"help": "extra folders of lm-eval YAML tasks; repeatable"}
    )
    verbose: bool = verbose_field()

    def __post_init__(self) -> None:
        if self.out is not None and self.out.suffix != ".json":
            raise ConfigError(
                f"--out {self.out} must be a .json file path (e.g. {self.out.with_suffix('.json')}); "
                "the markdown table is written beside it."
            )
        check_device(self.device, what="--device")

    def eval_config(self) -> EvalConfig:
        """The library's :class:`EvalConfig` of these arguments (validated there)."""
        from lcc_lens.evaluation.config import expand_tasks

        limit = self.limit
        if isinstance(limit, float) and limit >= 1 and limit.is_integer():
            limit = int(limit)
        return EvalConfig(
            models=self.model_specs(),
            tasks=expand_tasks(list(self.tasks)),
            out=self.out,
            limit=limit,
            batch_size=self.batch_size,
            device=self.device,
            num_fewshot=self.num_fewshot,
            suite_dir=self.suite_dir,
            suite_seed=self.suite_seed,
            suite_items=self.suite_items,
            perplexity=self.perplexity,
            context_length=self.context_length,
            max_windows=self.windows,
            include_path=self.include_path,
        )

    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models to evaluate with their roles and labels, in table order."""
        named = [("dense", self.dense), ("pruned", self.pruned)]
        by_role = [(r, v) for r, v in named if v is not None]
        by_role += [("restored", v) for v in self.restored]
        if by_role and self.model:
            raise ConfigError(
                "pass models either with --model or with --dense/--pruned/--restored."
            )
        if self.model:
            by_role = [
                (_ORDER_ROLES[i] if i < len(_ORDER_ROLES) else "restored", v)
                for i, v in enumerate(self.model)
            ]
        specs = []
        n_restored = 0
        for role, value in by_role:
            if role == "restored":
                n_restored += 1
            default = role if role != "restored" or n_restored == 1 else f"restored{n_restored}"
            label, sep, source = value.partition("=")
            if not sep:
                label, source = default, value
            if not label or not source:
                raise ConfigError(f"model {value!r} is malformed. Use PATH or LABEL=PATH.")
            specs.append(ModelSpec(label=label, source=source, role=role))  # type: ignore[arg-type]
        return tuple(specs)


def build_parser():
    """The ``lcc eval`` parser and its field flags."""
    doc = __doc__.split("\n\n", 1)[1]
    return command_parser(PROG, SUMMARY + ".\n\n" + doc, EvalArgs)


def parse(argv: Sequence[str] | None = None) -> EvalArgs:
    """argv -> validated EvalArgs (no side effects); ConfigError for any bad value."""
    parser, specs = build_parser()
    args: EvalArgs = parse_command(EvalArgs, parser, specs, [] if argv is None else argv)
    args.eval_config()  # validates the whole configuration now, before any model is loaded
    return args


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    """argv -> the library's EvalConfig (kept for callers of the old ``lcc_lens.eval``)."""
    return parse(argv).eval_config()


def run(args: EvalArgs) -> int:
    """Check inputs and outputs, evaluate, write the reports, print the table."""
    from lcc_lens.cli.sources import check_model_source, check_output_file
    from lcc_lens.evaluation.compare import compare, report_paths, write_report

    config = args.eval_config()
    if config.out is not None:
        for path in report_paths(config.out):
            check_output_file(path, overwrite=args.overwrite, suffix=path.suffix)
    for spec in config.models:
        check_model_source(spec.source, f"model {spec.label}")
    report = compare(config)
    print(report["markdown"], end="")
    if config.out is not None:
        json_path, md_path = write_report(report, config.out)
        print(f"wrote {json_path} and {md_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse, run, argv)
