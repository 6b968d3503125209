"""The held-out task suite scored in process, on any model the protocol accepts (hooks included).

The items are :mod:`lcc_lens.evaluation.suite`'s (next-passage choice and last word, built from the
held-out domain only); the scoring follows lm-eval's definitions, so a bridge with a compensation
attached is scored without merging or exporting it:

* next passage: the ending with the highest log-likelihood given the context (``acc``), and with the
  highest log-likelihood per byte of the ending (``acc_norm``, as lm-eval's HellaSwag);
* last word: ``acc`` is 1 when every token of the target is the greedy prediction.

Context and continuation are tokenized separately and concatenated, as lm-eval does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lcc_lens.evaluation.protocol import as_scorer, model_device, prefix_token
from lcc_lens.evaluation.suite import last_word_items, next_passage_items


def _pairs_scores(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[tuple[float, bool]]:
    """(log-likelihood of the continuation, whether it is the greedy continuation) per pair."""
    scorer = as_scorer(model)
    device = model_device(model)
    prefix = prefix_token(tokenizer)
    seqs = []
    for ctx, cont in pairs:
        c = list(tokenizer(ctx, add_special_tokens=False)["input_ids"])
        t = list(tokenizer(cont, add_special_tokens=False)["input_ids"])
        seqs.append(([prefix, *c], t))
    out: list[tuple[float, bool]] = []
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            batch = seqs[i : i + batch_size]
            width = max(len(c) + len(t) for c, t in batch) - 1
            ids = torch.full((len(batch), width), prefix, dtype=torch.long)
            for row, (c, t) in enumerate(batch):
                full = (c + t)[:-1]
                ids[row, : len(full)] = torch.tensor(full)
            logprobs = torch.log_softmax(scorer(ids.to(device)).float(), dim=-1).cpu()
            for row, (c, t) in enumerate(batch):
                pos = torch.arange(len(c) - 1, len(c) - 1 + len(t))
                lp = logprobs[row, pos]
                target = torch.tensor(t)
                ll = float(lp.gather(-1, target[:, None]).double().sum())
                greedy = bool((lp.argmax(-1) == target).all())
                out.append((ll, greedy))
    return out


def score_suite(
    models: Mapping[str, Any],
    tokenizer: Any,
    *,
    domain: str = "speeches",
    n_items: int = 100,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Accuracy of each model on ``n_items`` next-passage and last-word items of ``domain``.

    Returns ``{"domain", "n_items", task: {label: {"acc": .., "acc_norm": .., "correct": [...]}}}``;
    ``correct`` keeps the per-item outcome (for paired comparisons and bootstrap intervals).
    """
    domains = (domain,)
    passage = next_passage_items(n_items, seed, domains=domains)
    last = last_word_items(n_items, seed, domains=domains)
    out: dict[str, Any] = {
        "domain": domain,
        "n_items": n_items,
        "next_passage": {},
        "last_word": {},
    }
    for label, model in models.items():
        pairs = [(it["context"], ch) for it in passage for ch in it["choices"]]
        scores = _pairs_scores(model, tokenizer, pairs, batch_size)
        acc, acc_norm = [], []
        k = 0
        for it in passage:
            n = len(it["choices"])
            lls = [scores[k + j][0] for j in range(n)]
            norm = [ll / len(ch.encode("utf-8")) for ll, ch in zip(lls, it["choices"], strict=True)]
            acc.append(int(max(range(n), key=lls.__getitem__) == it["label"]))
            acc_norm.append(int(max(range(n), key=norm.__getitem__) == it["label"]))
            k += n
        out["next_passage"][label] = {
            "acc": sum(acc) / len(acc),
            "acc_norm": sum(acc_norm) / len(acc_norm),
            "correct": acc_norm,
        }
        lw = _pairs_scores(
            model, tokenizer, [(it["context"], it["target"]) for it in last], batch_size
        )
        correct = [int(g) for _, g in lw]
        out["last_word"][label] = {
            "acc": sum(correct) / len(correct),
            "target_nll": -sum(ll for ll, _ in lw) / len(lw),
            "correct": correct,
        }
    return out


def task_gap_closed(
    tasks: Mapping[str, Any], restored: str, *, dense: str = "dense", pruned: str = "pruned"
) -> dict[str, float | None]:
    """Accuracy gap closed per task (next passage by acc_norm, last word by acc) and their mean."""
    from lcc_lens.evaluation.gap import gap_closed

    out: dict[str, float | None] = {}
    for task, metric in (("next_passage", "acc_norm"), ("last_word", "acc")):
        t = tasks[task]
        out[task] = gap_closed(
            t[dense][metric], t[pruned][metric], t[restored][metric], higher_is_better=True
        )
    # the mean accuracy over tasks, as the paper reports
    mean = {
        m: sum(tasks[tk][m][k] for tk, k in (("next_passage", "acc_norm"), ("last_word", "acc")))
        / 2
        for m in (dense, pruned, restored)
    }
    out["mean_accuracy"] = gap_closed(
        mean[dense], mean[pruned], mean[restored], higher_is_better=True
    )
    if out["mean_accuracy"] is not None and not math.isfinite(out["mean_accuracy"]):
        out["mean_accuracy"] = None
    return out
