"""Evaluation: the one evaluation protocol (per-domain held-out NLL, gap closed, bootstrap intervals),
exact perplexity, lm-eval on in-memory models and checkpoints, the offline held-out suite,
and dense / pruned / restored comparison reports.

lm-eval is imported only inside the functions that run it.
"""

from __future__ import annotations

from lcc_lens.evaluation.config import TASK_ALIASES, EvalConfig, ModelSpec, expand_tasks
from lcc_lens.evaluation.gap import nll_gap_closed, ppl_gap_closed
from lcc_lens.evaluation.harness import (
    PAPER_TASKS,
    PRIMARY_METRICS,
    check_task_names,
    evaluate_lm_eval,
    primary_metric,
    task_manager,
)
from lcc_lens.evaluation.heldout_tasks import score_suite, task_gap_closed
from lcc_lens.evaluation.perplexity import PerplexityResult, wikitext2_test_text
from lcc_lens.evaluation.protocol import (
    DomainScores,
    GapEstimate,
    ProtocolConfig,
    ProtocolResult,
    evaluate,
)
from lcc_lens.evaluation.report import (
    ModelResult,
    comparison_rows,
    gap_closed,
    markdown_table,
    report_dict,
)
from lcc_lens.evaluation.suite import (
    SUITE_TASKS,
    TASK_HELDOUT_PPL,
    TASK_LAST_WORD,
    TASK_NEXT_PASSAGE,
    SuiteSizes,
    build_offline_suite,
)

__all__ = [
    "DomainScores",
    "GapEstimate",
    "ProtocolConfig",
    "ProtocolResult",
    "evaluate",
    "nll_gap_closed",
    "ppl_gap_closed",
    "score_suite",
    "task_gap_closed",
    "PAPER_TASKS",
    "PRIMARY_METRICS",
    "SUITE_TASKS",
    "TASK_ALIASES",
    "TASK_HELDOUT_PPL",
    "TASK_LAST_WORD",
    "TASK_NEXT_PASSAGE",
    "EvalConfig",
    "ModelResult",
    "ModelSpec",
    "PerplexityResult",
    "SuiteSizes",
    "build_offline_suite",
    "check_task_names",
    "comparison_rows",
    "evaluate_lm_eval",
    "expand_tasks",
    "gap_closed",
    "markdown_table",
    "primary_metric",
    "report_dict",
    "task_manager",
    "wikitext2_test_text",
]
