"""Text the dense model writes itself: unconditional samples to distil on, from no domain in particular.

Fitting the compensation on two narrow corpora adapts the pruned model to those corpora; out of domain it
restores little. Samples that the dense model draws from its own distribution, started from its BOS token
alone, need no download and belong to no domain, and distilling the pruned model towards the dense one on
them measures better on the held-out validation domain (``analysis/results/ood``). They are drawn with the
bridge's plain twin (:mod:`lcc_lens.twin`: the bridge's own weights, a working KV cache) and cached on
disk by model, count, length and seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch

from lcc_lens.atomic import write_text
from lcc_lens.cache import cache_root
from lcc_lens.examples import Example
from lcc_lens.progress import progress

logger = logging.getLogger(__name__)

SELF_TEXT_VERSION = 2
"""Bumped when the sampling changes, so that cached samples of an older recipe are not reused."""

SAMPLE_BATCH = 64
"""Samples drawn together (64 per batch drew a sample in about half the time of 32 on 2 CPU cores;
the fit draws only the samples it uses)."""


def sample_texts(
    bridge: Any,
    tokenizer: Any,
    n: int,
    n_tokens: int,
    *,
    seed: int,
    model_key: str,
    batch_size: int = SAMPLE_BATCH,
    source: str | None = None,
) -> list[str]:
    """``n`` samples of up to ``n_tokens`` new tokens each (temperature 1, no truncation of the
    distribution), each starting with the model's BOS token (EOS when it has none).

    ``source``: the bridge's checkpoint; where the bridge has no plain twin (GPT-2), a plain copy is
    loaded from it to sample with a KV cache (without one each new token re-runs the whole prefix)."""
    from lcc_lens import distributed

    key = hashlib.sha256(
        json.dumps([SELF_TEXT_VERSION, model_key, n, n_tokens, seed, batch_size]).encode()
    ).hexdigest()[:16]
    path = cache_root() / "self_text" / f"{key}.json"
    if path.is_file():
        try:
            texts = json.loads(path.read_text())
            if (
                isinstance(texts, list)
                and len(texts) == n
                and all(isinstance(t, str) for t in texts)
            ):
                logger.info("self-written fit text read from cache %s", path)
                return texts
        except (OSError, ValueError):
            pass
        logger.warning("ignoring unreadable cache entry %s", path)
    texts = _sample(bridge, tokenizer, n, n_tokens, seed, batch_size, source)
    if distributed.context().is_main:
        write_text(path, json.dumps(texts))
    return texts


def _start_token(tokenizer: Any) -> int:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        from lcc_lens.errors import ConfigError

        raise ConfigError(
            "the tokenizer has neither a BOS nor an EOS token to start self-written text from; "
            "use --data-fit-text corpus."
        )
    return int(start)


@torch.no_grad()
def _sample(
    bridge: Any,
    tokenizer: Any,
    n: int,
    n_tokens: int,
    seed: int,
    batch_size: int,
    source: str | None = None,
) -> list[str]:
    from lcc_lens.placement import input_device

    model, cached = _generator(bridge, source)
    start = _start_token(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    device = input_device(model)
    out: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in progress(range(0, n, batch_size), desc="self-written text", unit="batch"):
            rows = min(batch_size, n - i)
            ids = torch.full((rows, 1), start, dtype=torch.long, device=device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=n_tokens,
                pad_token_id=pad,
                use_cache=cached,
            )
            out += tokenizer.batch_decode(gen[:, 1:], skip_special_tokens=True)
    return out


def _generator(bridge: Any, source: str | None) -> tuple[Any, bool]:
    """The model to sample with and whether its KV cache works: the plain twin, else a plain copy of
    ``source`` (not for device-mapped models, which would need a second placement), else the bridge's
    own model (a bridge-wrapped model has no working KV cache)."""
    from lcc_lens.placement import has_device_map, input_device
    from lcc_lens.twin import plain_twin

    twin = plain_twin(bridge)
    if twin is not None:
        return twin, True
    original = bridge.original_model
    if source is not None and _local_dir(source) and not has_device_map(original):
        from lcc_lens.models import load_causal_lm

        first = next(original.parameters())
        plain, _ = load_causal_lm(source, dtype=first.dtype, device=input_device(original))
        return plain.eval(), True
    return original, False


def _local_dir(source: str) -> bool:
    from pathlib import Path

    from lcc_lens.models import resolve_model_source

    try:
        return Path(resolve_model_source(source)).is_dir()
    except Exception:  # not a checkpoint lcc_lens can resolve offline: keep the bridge's model
        return False


def self_examples(tokenizer: Any, texts: list[str]) -> list[Example]:
    """Whole samples as fit examples: the start token as prompt (left empty when the tokenizer adds
    it itself), the sample as the scored text."""
    adds_start = bool(tokenizer("", add_special_tokens=True)["input_ids"])
    start = "" if adds_start else tokenizer.decode([_start_token(tokenizer)])
    return [Example(start, t) for t in texts if t.strip()]
