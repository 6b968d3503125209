"""The frozen configuration of an evaluation run (what ``python -m lcc_lens.eval`` parses into)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lcc_lens.errors import ConfigError
from lcc_lens.evaluation.harness import PAPER_TASKS
from lcc_lens.evaluation.report import Role
from lcc_lens.evaluation.suite import MIN_ITEMS, SUITE_TASKS

TASK_ALIASES: dict[str, tuple[str, ...]] = {
    "offline": SUITE_TASKS,
    "paper": tuple(PAPER_TASKS),
}
"""Names that expand to several tasks: the offline suite, and the paper's seven (need the hub)."""

PERPLEXITY_TEXTS = ("heldout", "wikitext2")
"""Named texts for perplexity: the offline held-out split, or WikiText-2 test (needs the hub)."""


def expand_tasks(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Expand aliases, keep order, drop duplicates."""
    out: list[str] = []
    for name in names:
        for task in TASK_ALIASES.get(name, (name,)):
            if task not in out:
                out.append(task)
    return tuple(out)


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: a label for the table, its source (directory, hub id, 'embedded'), a role."""

    label: str
    source: str
    role: Role


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation run needs.

    ``tasks`` are lm-eval task names (aliases already expanded); ``perplexity`` is ``None``, one of
    :data:`PERPLEXITY_TEXTS`, or a path to a UTF-8 text file. ``suite_dir`` keeps the built offline suite
    (a temporary directory otherwise); ``suite_items`` overrides the per-task item counts.
    """

    models: tuple[ModelSpec, ...]
    tasks: tuple[str, ...] = SUITE_TASKS
    out: Path | None = None
    limit: int | float | None = None
    batch_size: int = 8
    device: str = "cpu"
    num_fewshot: int = 0
    suite_dir: Path | None = None
    suite_seed: int = 0
    suite_items: int | None = None
    perplexity: str | None = None
    context_length: int | None = None
    max_windows: int | None = None
    include_path: tuple[Path, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError(
                "no model given. Pass --model PATH (dense first, then pruned, restored)."
            )
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"model labels must be unique, got {labels}. Use --model LABEL=PATH.")
        if not self.tasks and self.perplexity is None:
            raise ConfigError("nothing to evaluate: pass --tasks and/or --perplexity.")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}.")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be positive, got {self.limit}.")
        if self.num_fewshot < 0:
            raise ConfigError(f"--num-fewshot must be >= 0, got {self.num_fewshot}.")
        if self.suite_items is not None and self.suite_items < MIN_ITEMS:
            raise ConfigError(
                f"--suite-items must be >= {MIN_ITEMS} (a next-passage item needs three "
                f"distractors from other items), got {self.suite_items}."
            )
        if self.context_length is not None and self.context_length < 1:
            raise ConfigError(f"--context-length must be >= 1, got {self.context_length}.")
        if self.max_windows is not None and self.max_windows < 1:
            raise ConfigError(f"--max-windows must be >= 1, got {self.max_windows}.")

    @property
    def needs_suite(self) -> bool:
        return any(t in SUITE_TASKS for t in self.tasks)
