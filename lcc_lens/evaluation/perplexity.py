"""Exact token-level perplexity over non-overlapping windows, with lm-eval's rolling conventions.

The text is tokenized once without special tokens and cut into consecutive, non-overlapping windows of
``context_length`` tokens (the pruning literature's protocol: WikiText-2 test, 2048-token windows). Every
token is scored exactly once, following lm-eval 0.4's ``loglikelihood_rolling``:

* the first window is fed ``[prefix] + tokens[:L-1]`` and scores ``tokens[:L]``, where ``prefix`` is the
  tokenizer's BOS token (EOS when there is no BOS), exactly lm-eval's ``HFLM.prefix_token_id``;
* window ``k > 0`` is fed ``tokens[kL-1 : (k+1)L-1]`` and scores ``tokens[kL : (k+1)L]``: its only context
  beyond the window is the one token before it;
* a shorter last window (when there are several) is fed the ``L`` tokens before its last token, so
  its tokens are scored with the preceding text as context (lm-eval does the same).

So ``nll_sum`` equals the sum lm-eval's ``HFLM(pretrained=model, max_length=L).loglikelihood_rolling``
returns (negated) for tokenizers that add no special tokens on ``encode`` (GPT-2, SmolLM2, Qwen, the tiny
tokenizer). For tokenizers that prepend BOS on ``encode`` (LLaMA-2), lm-eval additionally scores that BOS;
this function does not, which is the usual definition of text perplexity.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lcc_lens.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 2048
"""Upper bound of the default window: min(model's max positions, 2048)."""


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one text: ``ppl = exp(nll)``, ``nll = nll_sum / n_tokens`` (nats per token)."""

    ppl: float
    nll: float
    nll_sum: float
    n_tokens: int
    n_windows: int
    context_length: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ppl": self.ppl,
            "nll": self.nll,
            "nll_sum": self.nll_sum,
            "n_tokens": self.n_tokens,
            "n_windows": self.n_windows,
            "context_length": self.context_length,
        }


def _is_bridge(model: Any) -> bool:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TransformerLens is a dependency
        return False
    return isinstance(model, TransformerBridge)


def _hf_config(model: Any) -> Any:
    if _is_bridge(model):
        return model.original_model.config
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(
            f"cannot score a {type(model).__name__}: pass a Hugging Face PreTrainedModel or a "
            "TransformerLens TransformerBridge."
        )
    return config


def model_max_positions(model: Any) -> int | None:
    """The model's longest supported sequence, from its config (None when it does not say)."""
    config = _hf_config(model)
    config = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_context_length(model: Any, context_length: int | None) -> int:
    """``None`` gives min(model's max positions, 2048); an explicit value is checked against them."""
    limit = model_max_positions(model)
    if context_length is None:
        return min(limit, DEFAULT_MAX_CONTEXT) if limit else DEFAULT_MAX_CONTEXT
    if context_length < 1:
        raise ConfigError(f"context_length must be >= 1, got {context_length}.")
    if limit is not None and context_length > limit:
        raise ConfigError(
            f"context_length {context_length} exceeds the model's {limit} positions. "
            f"Pass context_length <= {limit}."
        )
    return context_length


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that conditions the first scored token: BOS, else EOS (lm-eval's convention)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ConfigError(
        "the tokenizer has neither a BOS nor an EOS token, so the first token has no context. "
        "Set tokenizer.bos_token (or eos_token) before scoring."
    )


def rolling_windows(
    tokens: list[int], prefix: int, context_length: int
) -> list[tuple[list[int], list[int]]]:
    """Split ``tokens`` into (model input, targets) pairs, lm-eval style.

    The targets are the last ``len(targets)`` next-token predictions of the input. A full chunk's input
    is ``[prev] + chunk[:-1]``, with ``prev`` the prefix token for the first chunk, else the token just
    before it. A short last chunk (when there is more than one) gets a full ``context_length`` input
    ending just before its last token, as lm-eval does: its tokens see the preceding text as context.
    """
    windows = []
    n = len(tokens)
    for start in range(0, n, context_length):
        chunk = tokens[start : start + context_length]
        if start == 0:
            windows.append(([prefix, *chunk[:-1]], chunk))
        elif len(chunk) < context_length:
            windows.append((tokens[n - context_length - 1 : n - 1], chunk))
        else:
            windows.append((tokens[start - 1 : start + context_length - 1], chunk))
    return windows


def _logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    if _is_bridge(model):
        return model(input_ids, return_type="logits")
    return model(input_ids).logits


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def perplexity(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    context_length: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    device: str | torch.device | None = None,
) -> PerplexityResult:
    """Exact perplexity of ``text`` under ``model`` over non-overlapping windows (see module doc).

    Args:
        model: a Hugging Face causal LM (``model(ids).logits``) or a TransformerBridge
            (``bridge(ids, return_type="logits")``), e.g. one with compensation hooks attached.
        tokenizer: the model's tokenizer; the text is encoded without special tokens.
        text: the text to score; must contain at least one token.
        context_length: window length L; ``None`` is min(model's max positions, 2048).
        batch_size: windows per forward pass.
        max_windows: score only the first ``max_windows`` windows (quick runs).
        device: where the token ids go; defaults to the model's device.
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError(
            "the text to score is empty. Pass a non-empty string (e.g. a held-out split)."
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if max_windows is not None and max_windows < 1:
        raise ConfigError(f"max_windows must be >= 1 or None, got {max_windows}.")
    length = resolve_context_length(model, context_length)
    tokens = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not tokens:
        raise DataError("the text tokenizes to zero tokens; pass a text with content.")
    windows = rolling_windows(tokens, prefix_token_id(tokenizer), length)
    if max_windows is not None:
        windows = windows[:max_windows]
    target_device = torch.device(device) if device is not None else _model_device(model)
    pad = prefix_token_id(tokenizer)

    from lcc_lens.progress import progress

    nll_sum = 0.0
    n_tokens = 0
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad(), progress(total=len(windows), desc="perplexity", unit="win") as bar:
            for i in range(0, len(windows), batch_size):
                batch = windows[i : i + batch_size]
                width = max(len(inp) for inp, _ in batch)
                # Right padding never changes a causal model's logits at earlier positions.
                ids = torch.tensor([inp + [pad] * (width - len(inp)) for inp, _ in batch])
                logprobs = torch.log_softmax(_logits(model, ids.to(target_device)).float(), dim=-1)
                for row, (inp, targets) in enumerate(batch):
                    target_ids = torch.tensor(targets, device=logprobs.device)
                    end = len(inp)
                    scored = logprobs[row, end - len(targets) : end]
                    picked = scored.gather(-1, target_ids[:, None])
                    nll_sum -= float(picked.double().sum())
                    n_tokens += len(targets)
                bar.update(len(batch))
    finally:
        if was_training:
            model.train()
    nll = nll_sum / n_tokens
    logger.info(
        "perplexity %.4f over %d tokens in %d windows of %d",
        math.exp(nll),
        n_tokens,
        len(windows),
        length,
    )
    return PerplexityResult(
        ppl=math.exp(nll),
        nll=nll,
        nll_sum=nll_sum,
        n_tokens=n_tokens,
        n_windows=len(windows),
        context_length=length,
    )


def wikitext2_test_text() -> str:
    """WikiText-2 (raw) test split joined by blank lines, the pruning literature's text (needs the hub).

    Offline this fails fast with a DataError instead of hanging.
    """
    try:
        from datasets import load_dataset

        data = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    except Exception as exc:  # datasets raises ConnectionError, DatasetNotFoundError, ...
        raise DataError(
            f"cannot load WikiText-2 from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Run online once to cache it, or score the offline held-out text (perplexity='heldout') "
            "or a text file of your own."
        ) from exc
    return "\n\n".join(data["text"])
