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
from lcc_lens.evaluation.task_sets import (
    TaskSetConfig,
    short_last_word_items,
    short_next_passage_items,
)


def _pairs_scores(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[tuple[float, bool]]:
    """(log-likelihood of the continuation, whether it is the greedy continuation) per pair.

    Pairs are batched by length (little padding; right padding never reaches a scored position under
    causal attention) and the softmax is taken only where a continuation token is scored.
    """
    from lcc_lens.progress import progress

    scorer = as_scorer(model)
    device = model_device(model)
    prefix = prefix_token(tokenizer)
    seqs = [([prefix, *_encode(tokenizer, c)], _encode(tokenizer, t)) for c, t in pairs]
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]) + len(seqs[k][1]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
    with torch.no_grad(), progress(total=len(seqs), desc="task items", unit="seq") as bar:
        for i in range(0, len(order), batch_size):
            batch = [seqs[k] for k in order[i : i + batch_size]]
            width = max(len(c) + len(t) for c, t in batch) - 1
            ids = torch.full((len(batch), width), prefix, dtype=torch.long)
            for row, (c, t) in enumerate(batch):
                full = (c + t)[:-1]
                ids[row, : len(full)] = torch.tensor(full)
            logits = scorer(ids.to(device))
            for row, ((ctx, cont), k) in enumerate(
                zip(batch, order[i : i + batch_size], strict=True)
            ):
                pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=logits.device)
                lp = torch.log_softmax(logits[row, pos].float(), dim=-1).cpu()
                target = torch.tensor(cont)
                ll = float(lp.gather(-1, target[:, None]).double().sum())
                out[k] = (ll, bool((lp.argmax(-1) == target).all()))
            bar.update(len(batch))
    return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _is_plain_hf(model: Any) -> bool:
    """A plain Hugging Face causal LM (not a bridge, pair or callable): it takes a KV cache."""
    from lcc_lens.evaluation.perplexity import _is_bridge

    return (
        not isinstance(model, tuple)
        and not _is_bridge(model)
        and hasattr(model, "config")
        and hasattr(model, "generation_config")
    )


def _shared_context_scores(
    model: Any, tokenizer: Any, groups: Sequence[tuple[str, Sequence[str]]], batch_size: int
) -> list[list[tuple[float, bool]]]:
    """Per context, (log-likelihood, greedy) of each of its continuations, the context run once.

    One forward over the (right-padded) contexts fills a KV cache; its rows are repeated once per
    continuation and one forward over the continuations continues from it (positions after the
    context's own, padded context slots masked). The same figures as scoring each pair whole.
    """
    from transformers import DynamicCache

    from lcc_lens.progress import progress

    device = model_device(model)
    prefix = prefix_token(tokenizer)
    enc = [
        ([prefix, *_encode(tokenizer, c)], [_encode(tokenizer, t) for t in ts]) for c, ts in groups
    ]
    order = sorted(range(len(enc)), key=lambda k: len(enc[k][0]))
    out: list[list[tuple[float, bool]]] = [[] for _ in enc]
    with torch.no_grad(), progress(total=len(enc), desc="task items", unit="item") as bar:
        for i in range(0, len(order), batch_size):
            picked = order[i : i + batch_size]
            batch = [enc[k] for k in picked]
            lens = torch.tensor([len(c) for c, _ in batch])
            ids = torch.full((len(batch), int(lens.max())), prefix, dtype=torch.long)
            for row, (c, _) in enumerate(batch):
                ids[row, : len(c)] = torch.tensor(c)
            mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
            cache = DynamicCache()
            first = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), cache=cache
            ).logits[torch.arange(len(batch)), lens - 1]
            first = torch.log_softmax(
                first.float(), dim=-1
            ).cpu()  # predicts each continuation's 1st
            rows = [(b, t) for b, (_, ts) in enumerate(batch) for t in ts]
            width = max(len(t) for _, t in rows) - 1
            rest = None
            if width > 0:
                src = torch.tensor([b for b, _ in rows])
                cache.batch_select_indices(src.to(device))
                cont = torch.full((len(rows), width), prefix, dtype=torch.long)
                cont_mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, (_, t) in enumerate(rows):
                    cont[r, : len(t) - 1] = torch.tensor(t[:-1])
                    cont_mask[r, : len(t) - 1] = 1
                rest = model(
                    input_ids=cont.to(device),
                    attention_mask=torch.cat([mask[src], cont_mask], 1).to(device),
                    position_ids=(lens[src][:, None] + torch.arange(width)).to(device),
                    cache=cache,
                ).logits
            for r, (b, t) in enumerate(rows):
                lp = first[b][None]
                if len(t) > 1:
                    lp = torch.cat([lp, torch.log_softmax(rest[r, : len(t) - 1].float(), -1).cpu()])
                target = torch.tensor(t)
                ll = float(lp.gather(-1, target[:, None]).double().sum())
                out[picked[b]].append((ll, bool((lp.argmax(-1) == target).all())))
            bar.update(len(batch))
    return out


def _next_passage_outcomes(
    model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], batch_size: int
) -> dict[str, Any]:
    """``acc``, ``acc_norm`` (log-likelihood per byte of the ending) and per-item ``correct`` (acc_norm)."""
    if _is_plain_hf(model):  # one forward of the context for all its choices
        groups = [(it["context"], it["choices"]) for it in items]
        per_item = _shared_context_scores(model, tokenizer, groups, batch_size)
    else:
        pairs = [(it["context"], ch) for it in items for ch in it["choices"]]
        flat = iter(_pairs_scores(model, tokenizer, pairs, batch_size))
        per_item = [[next(flat) for _ in it["choices"]] for it in items]
    acc, acc_norm = [], []
    for it, scores in zip(items, per_item, strict=True):
        n = len(it["choices"])
        lls = [ll for ll, _ in scores]
        norm = [ll / len(ch.encode("utf-8")) for ll, ch in zip(lls, it["choices"], strict=True)]
        acc.append(int(max(range(n), key=lls.__getitem__) == it["label"]))
        acc_norm.append(int(max(range(n), key=norm.__getitem__) == it["label"]))
    return {
        "acc": sum(acc) / len(acc),
        "acc_norm": sum(acc_norm) / len(acc_norm),
        "correct": acc_norm,
    }


def _last_word_outcomes(
    model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], batch_size: int
) -> dict[str, Any]:
    """``acc`` (greedy), the target's mean NLL and per-item ``correct``."""
    lw = _pairs_scores(
        model, tokenizer, [(it["context"], it["target"]) for it in items], batch_size
    )
    correct = [int(g) for _, g in lw]
    return {
        "acc": sum(correct) / len(correct),
        "target_nll": -sum(ll for ll, _ in lw) / len(lw),
        "correct": correct,
    }


def score_items(
    models: Mapping[str, Any],
    tokenizer: Any,
    items: Mapping[str, Sequence[Mapping[str, Any]]],
    batch_size: int = 16,
) -> dict[str, dict[str, Any]]:
    """Every model on the given ``{"next_passage": [...], "last_word": [...]}`` items (empty: skipped).

    Returns ``{task: {label: {metric: .., "correct": [...]}}}``; ``correct`` keeps the per-item outcome
    (next passage by acc_norm, last word by acc) for paired comparisons and bootstrap intervals.
    """
    scorers = {"next_passage": _next_passage_outcomes, "last_word": _last_word_outcomes}
    return {
        task: {
            label: scorers[task](m, tokenizer, items[task], batch_size)
            for label, m in models.items()
        }
        for task in scorers
        if items.get(task)
    }


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
    items = {
        "next_passage": next_passage_items(n_items, seed, domains=domains),
        "last_word": last_word_items(n_items, seed, domains=domains),
    }
    return {
        "domain": domain,
        "n_items": n_items,
        **score_items(models, tokenizer, items, batch_size),
    }


def score_task_sets(
    models: Mapping[str, Any], tokenizer: Any, cfg: TaskSetConfig, batch_size: int = 16
) -> dict[str, Any]:
    """Every model on the short held-out task sets of ``cfg`` (:mod:`lcc_lens.evaluation.task_sets`).

    Returns ``{"task_set": cfg.to_dict(), "domain", "n_items": {task: n}, task: {label: {...}}}``.
    """
    items = {
        "next_passage": short_next_passage_items(cfg) if cfg.next_passage else [],
        "last_word": short_last_word_items(cfg) if cfg.last_word else [],
    }
    return {
        "task_set": cfg.to_dict(),
        "domain": cfg.domain,
        "n_items": {task: len(v) for task, v in items.items()},
        **score_items(models, tokenizer, items, batch_size),
    }


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
