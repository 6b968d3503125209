"""lm-eval on an in-memory model or a checkpoint directory: the paper's tasks and the offline suite.

The paper (RestoreLCC, following the LoRA-pruning literature) reports zero-shot lm-eval accuracy on seven
tasks. The metric per task is pinned here, as those papers report it:

=============  ==========
task           metric
=============  ==========
boolq          acc
rte            acc
hellaswag      acc_norm
winogrande     acc
arc_easy       acc
arc_challenge  acc_norm
openbookqa     acc_norm
=============  ==========

These tasks download their data from the Hugging Face hub. With ``HF_DATASETS_OFFLINE=1`` (or no network)
and no local copy, :func:`evaluate_lm_eval` fails fast with a :class:`~lcc_lens.errors.DataError` naming the
task instead of hanging. The offline suite (:mod:`lcc_lens.evaluation.suite`) runs anywhere.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lcc_lens.errors import ConfigError, DataError, LccError

logger = logging.getLogger(__name__)

PAPER_TASKS: dict[str, str] = {
    "boolq": "acc",
    "rte": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "openbookqa": "acc_norm",
}
"""The paper's seven zero-shot tasks and the metric reported for each."""

PRIMARY_METRICS: dict[str, str] = {
    **PAPER_TASKS,
    "wikitext": "word_perplexity",
    "lcc_heldout_ppl": "word_perplexity",
    "lcc_next_passage": "acc_norm",
    "lcc_last_word": "acc",
}
"""The metric a summary reports per task (other metrics are kept in full results)."""

_STDERR = "_stderr"


def primary_metric(task: str) -> str | None:
    """The pinned metric of ``task``, or None when the task has none pinned."""
    return PRIMARY_METRICS.get(task)


def task_manager(
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    include_defaults: bool = True,
):
    """An lm-eval TaskManager over ``include_path`` (e.g. the offline suite) and, by default, its
    built-in tasks. Indexing the built-in tasks takes seconds, so the manager without ``include_path``
    is built once per process."""
    paths = _include_paths(include_path)
    if not paths:
        return _default_task_manager()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=paths, include_defaults=include_defaults)


@functools.lru_cache(maxsize=1)
def _default_task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _include_paths(
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> list[str]:
    if include_path is None:
        return []
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    for path in paths:
        if not Path(path).is_dir():
            raise ConfigError(f"include_path {path} is not a directory of lm-eval YAML tasks.")
    return [str(p) for p in paths]


def _manager_for(tasks: Sequence[str], include_path: Any) -> Any:
    """The narrowest manager that knows every task: the local YAML tasks alone, lm-eval's built-in
    tasks alone (cached), or both; a manager that lacks some name is returned for the error message."""
    if isinstance(tasks, str):
        tasks = [tasks]
    if include_path is None:
        return task_manager()
    local = task_manager(include_path, include_defaults=False)
    local_names = set(local.all_tasks)
    if tasks and all(t in local_names for t in tasks):
        return local
    defaults = task_manager()
    if not any(t in local_names for t in tasks):
        return defaults
    return task_manager(include_path)


def check_task_names(tasks: Sequence[str], manager: Any) -> list[str]:
    """Return ``tasks`` unchanged if lm-eval knows each; otherwise raise ConfigError with suggestions."""
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ConfigError("no task given. Pass lm-eval task names, e.g. ['lcc_next_passage'].")
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(
            f"unknown lm-eval task {', '.join(hints)}. Use a name lm-eval lists "
            "(`lm_eval ls tasks`), one of the paper's tasks "
            f"{', '.join(PAPER_TASKS)}, or an offline suite task built by build_offline_suite "
            "and passed through include_path."
        )
    return tasks


def _hf_lm(
    model_or_path: Any, tokenizer: Any, batch_size: int, device: str | None, max_length: int | None
):
    """Wrap a model (in memory or a directory) as lm-eval's HFLM."""
    from lm_eval.models.huggingface import HFLM

    from lcc_lens.evaluation.perplexity import _is_bridge
    from lcc_lens.models import load_causal_lm, resolve_device

    if isinstance(model_or_path, (str, os.PathLike)):
        model, loaded_tok = load_causal_lm(model_or_path, device=device or "cpu")
        tokenizer = tokenizer or loaded_tok
    elif _is_bridge(model_or_path):
        raise ConfigError(
            "lm-eval needs a plain Hugging Face model, not a TransformerBridge. Export the "
            "compensation into a checkpoint (or merge it into a copy of the pruned model) and pass that."
        )
    else:
        model = model_or_path
        if device is not None:
            model.to(resolve_device(device))
    if tokenizer is None:
        raise ConfigError("an in-memory model needs its tokenizer: pass tokenizer=...")
    if not hasattr(model, "config") or not callable(getattr(model, "forward", None)):
        raise ConfigError(
            f"cannot evaluate a {type(model).__name__}: pass a Hugging Face causal LM, "
            "a checkpoint directory, or 'embedded'."
        )
    model.eval()
    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        trust_remote_code=False,
    )


def _hub_error(task: str, exc: BaseException) -> DataError:
    offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
    where = " (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)" if offline else ""
    return DataError(
        f"lm-eval could not load the data of task(s) {task}{where}: {type(exc).__name__}: {exc}. "
        "These tasks download from the Hugging Face hub: run online once to cache them, or use the "
        "offline suite (tasks lcc_heldout_ppl, lcc_next_passage, lcc_last_word)."
    )


def _flatten(raw: Mapping[str, Any]) -> dict[str, float | None]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s}`` to ``{"acc": v, "acc_stderr": s}``."""
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        if key == "alias" or "," not in key:
            continue
        metric, _filter = key.split(",", 1)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[metric] = float(value)
        else:
            out[metric] = None  # lm-eval writes "N/A" for metrics with no stderr
    return out


def evaluate_lm_eval(
    model_or_path: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str | None = None,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    num_fewshot: int = 0,
    max_length: int | None = None,
    bootstrap_iters: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Run lm-eval ``tasks`` zero-shot on a model; return ``{task: {metric: v, metric_stderr: s}}``.

    ``model_or_path`` is a Hugging Face causal LM (with ``tokenizer``), a checkpoint directory, or
    ``"embedded"``. ``limit`` caps the items per task (an int, or a fraction below 1). ``include_path``
    adds local YAML tasks (the offline suite). Each task's entry also holds ``"higher_is_better"``
    (metric -> bool) and ``"n_samples"``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be positive, got {limit}.")
    if isinstance(model_or_path, (str, os.PathLike)):
        from lcc_lens.models import resolve_model_source

        resolve_model_source(model_or_path)  # a bad directory fails before lm-eval indexes tasks
    manager = _manager_for(tasks, include_path)
    tasks = check_task_names(tasks, manager)
    lm = _hf_lm(model_or_path, tokenizer, batch_size, device, max_length)

    import lm_eval

    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            num_fewshot=num_fewshot,
            limit=limit,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
    except LccError:
        raise
    except (ConnectionError, OSError, FileNotFoundError) as exc:
        raise _hub_error(", ".join(tasks), exc) from exc
    except Exception as exc:  # datasets raises its own hierarchy (DatasetNotFoundError, ...)
        if type(exc).__module__.startswith(("datasets", "huggingface_hub", "requests", "urllib3")):
            raise _hub_error(", ".join(tasks), exc) from exc
        raise
    if results is None:  # pragma: no cover - only on non-zero ranks
        raise LccError("lm-eval returned no results.")
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task not in results["results"]:
            raise LccError(f"lm-eval returned no result for task {task!r} (is it a group?).")
        entry: dict[str, Any] = _flatten(results["results"][task])
        entry["higher_is_better"] = dict(results.get("higher_is_better", {}).get(task, {}))
        n = results.get("n-samples", {}).get(task, {})
        entry["n_samples"] = int(n.get("effective", n.get("original", 0))) if n else None
        out[task] = entry
    return out


def stderr_key(metric: str) -> str:
    """The key under which :func:`evaluate_lm_eval` stores ``metric``'s standard error."""
    return f"{metric}{_STDERR}"
