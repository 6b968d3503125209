"""Read compensation vectors in token space: the logit lens and the per-head direct logit gain.

A compensation c (d_head) at head (l, h) writes delta = W_O[l, h]^T c (d_model) into the residual stream.
Its *direct* effect on the logits goes through the final norm and the unembedding. The final norm of a
residual x is N(x) = w * (x - mean(x) [LayerNorm only]) / s(x) (+ b), with s the RMS or standard deviation of
the whole residual at that position. Linearised in the small added delta, with the scale s fixed by the rest
of the residual, the direct logit change is ((w * centre(delta)) @ W_U) / s. Here:

* :func:`logit_lens` ranks tokens by ``(w * centre(delta)) @ W_U``: the final norm's elementwise weight (and,
  for LayerNorm, the centring) is applied; the per-position 1/s is a positive scalar common to every token,
  so it is dropped (it does not change which tokens are promoted or suppressed). The bias terms of the norm
  and the unembedding do not depend on delta and are left out.
* :func:`logit_gain` measures, on task prompts, each head's direct contribution to the correct-minus-wrong
  logit difference at the last prompt token, dividing by the actual scale s of the restored model's final
  residual at that position (read at :data:`lcc_lens.hooks.FINAL_NORM_IN`): the paper's per-head logit
  gain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lcc_lens.compensation import Compensation
from lcc_lens.diff import tokenize_prompts
from lcc_lens.errors import ConfigError, DataError
from lcc_lens.hooks import FINAL_NORM_IN, temporary_hooks
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.types import ZOffsets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readout:
    """The pieces of a bridge's direct path to the logits."""

    w_o: Float[Tensor, "n_layers n_heads d_head d_model"]
    norm_weight: Float[Tensor, " d_model"]
    centred: bool  # LayerNorm subtracts the mean; RMSNorm does not
    eps: float
    w_u: Float[Tensor, "d_model d_vocab"]


def readout(bridge) -> Readout:
    """W_O per head (as in Hugging Face: o_proj columns h*d_head:(h+1)*d_head), final norm weight, W_U."""
    w_o = torch.stack([blk.attn.W_O.detach().float().cpu() for blk in bridge.blocks])
    norm = bridge.ln_final.original_component
    weight = getattr(norm, "weight", None)
    d_model = w_o.shape[-1]
    w = (
        torch.ones(d_model)
        if weight is None
        else weight.detach().float().cpu() + float(_norm_offset(bridge))
    )
    centred = isinstance(norm, torch.nn.LayerNorm) or "LayerNorm" in type(norm).__name__
    eps = float(getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6))
    return Readout(w_o, w, centred, eps, bridge.W_U.detach().float().cpu())


def _norm_offset(bridge) -> float:
    """Gemma-style RMSNorm multiplies by (1 + w); every other supported family by w."""
    name = type(bridge.ln_final.original_component).__name__
    return 1.0 if name.startswith("Gemma") else 0.0


def residual_writes(ro: Readout, z_offsets: ZOffsets) -> Float[Tensor, "n_layers n_heads d_model"]:
    """delta[l, h] = W_O[l, h]^T c[l, h]: what each head's offset adds to the residual stream."""
    if tuple(z_offsets.shape) != tuple(ro.w_o.shape[:3]):
        raise ConfigError(
            f"z_offsets shape {tuple(z_offsets.shape)} does not fit the model's heads "
            f"{tuple(ro.w_o.shape[:3])}; pass the compensation fitted on this model."
        )
    return torch.einsum("lhd,lhdm->lhm", z_offsets.float().cpu(), ro.w_o)


def direct_logits(ro: Readout, delta: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """(w * centre(delta)) @ W_U: the unscaled direct logit effect of residual writes."""
    if ro.centred:
        delta = delta - delta.mean(-1, keepdim=True)
    return (delta * ro.norm_weight) @ ro.w_u


@dataclass(frozen=True)
class HeadTokens:
    """The tokens one head's compensation promotes and suppresses most (direct effect, unscaled)."""

    layer: int
    head: int
    name: str
    promoted: tuple[str, ...]
    promoted_logits: tuple[float, ...]
    suppressed: tuple[str, ...]
    suppressed_logits: tuple[float, ...]
    write_norm: float


@dataclass(frozen=True)
class LogitLens:
    """Logit-lens readings for the selected heads (ordered by write norm, largest first)."""

    heads: tuple[HeadTokens, ...]
    top_k: int
    geometry: HeadGeometry


@torch.no_grad()
def logit_lens(
    bridge,
    compensation: Compensation,
    tokenizer,
    top_k: int = 10,
    *,
    heads: Sequence[tuple[int, int]] | None = None,
    max_heads: int | None = None,
) -> LogitLens:
    """Top promoted and suppressed tokens of each selected head's compensation (see module docstring).

    heads: restrict to these (layer, head) pairs (default: the compensation's selected heads);
    max_heads: keep only the heads whose residual write is largest.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}.")
    ro = readout(bridge)
    delta = residual_writes(ro, compensation.z_offsets().detach())
    chosen = list(heads) if heads is not None else compensation.selected_heads()
    if not chosen:
        raise ConfigError(
            "no heads to read: the compensation selects none and heads= was not given."
        )
    chosen.sort(key=lambda lh: -float(delta[lh[0], lh[1]].norm()))
    if max_heads is not None:
        chosen = chosen[:max_heads]
    k = min(top_k, ro.w_u.shape[1])
    out = []
    g = compensation.geometry
    for layer, head in chosen:
        logits = direct_logits(ro, delta[layer, head])
        top = logits.topk(k)
        bottom = (-logits).topk(k)
        out.append(
            HeadTokens(
                layer=layer,
                head=head,
                name=g.head_name(layer, head),
                promoted=tuple(_token_text(tokenizer, i) for i in top.indices.tolist()),
                promoted_logits=tuple(top.values.tolist()),
                suppressed=tuple(_token_text(tokenizer, i) for i in bottom.indices.tolist()),
                suppressed_logits=tuple((-bottom.values).tolist()),
                write_norm=float(delta[layer, head].norm()),
            )
        )
    return LogitLens(tuple(out), k, g)


def _token_text(tokenizer, token_id: int) -> str:
    """A readable rendering of one token (leading spaces shown as a visible marker)."""
    text = tokenizer.decode([token_id])
    if text == "" or text.isspace():
        return repr(text)
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text.replace(" ", "\u2423", 1) if text.startswith(" ") else text


@dataclass(frozen=True)
class AnswerPair:
    """A task prompt with its correct and a wrong continuation (their first tokens are compared)."""

    prompt: str
    correct: str
    wrong: str


def answer_pairs_from_choices(items: Sequence[Mapping[str, Any]]) -> list[AnswerPair]:
    """Multiple-choice items (``context``, ``choices``, ``label``, as in lcc_lens.evaluation.suite) ->
    AnswerPairs: the labelled choice against the first other choice."""
    out = []
    for item in items:
        choices, label = list(item["choices"]), int(item["label"])
        wrong = next(c for i, c in enumerate(choices) if i != label)
        out.append(AnswerPair(str(item["context"]), str(choices[label]), str(wrong)))
    if not out:
        raise DataError("no multiple-choice items given.")
    return out


def _answer_token(tokenizer, prompt: str, answer: str) -> int:
    """The first token of ``answer`` as tokenised after ``prompt`` (so leading spaces merge correctly)."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    if n >= len(full):
        raise DataError(
            f"the answer {answer!r} adds no token after its prompt; give a non-empty answer."
        )
    return int(full[n])


def _capture_rows(store: dict[str, Tensor], rows: Tensor, cols: Tensor):
    """A hook storing x[rows, cols] (the last prompt token's residual) under store["resid"]."""

    def grab(x: Tensor, *, hook) -> None:
        store["resid"] = x[rows, cols].detach().float().cpu()

    return grab


@dataclass(frozen=True)
class LogitGain:
    """Per-head mean direct contribution to logit(correct) - logit(wrong), plus the model-level numbers."""

    gain: Float[Tensor, "n_layers n_heads"]
    logit_diff_pruned: float
    logit_diff_restored: float
    logit_diff_dense: float
    n_examples: int
    n_skipped: int
    geometry: HeadGeometry


@torch.no_grad()
def logit_gain(
    pair: ModelPair,
    compensation: Compensation,
    examples: Sequence[AnswerPair],
    *,
    batch_size: int = 8,
    max_length: int = 256,
) -> LogitGain:
    """Each head's compensation's direct effect on the correct-minus-wrong logit difference (mean).

    Examples whose correct and wrong answers start with the same token are skipped (and counted).
    """
    tok = pair.tokenizer
    usable: list[tuple[str, int, int]] = []
    for ex in examples:
        a, b = _answer_token(tok, ex.prompt, ex.correct), _answer_token(tok, ex.prompt, ex.wrong)
        if a != b:
            usable.append((ex.prompt, a, b))
    n_skipped = len(examples) - len(usable)
    if not usable:
        raise DataError(
            "every example's correct and wrong answers start with the same token; "
            "pick answers that differ in their first token."
        )
    ro = readout(pair.pruned)
    delta = residual_writes(ro, compensation.z_offsets().detach())  # [L, H, M]
    if ro.centred:
        delta = delta - delta.mean(-1, keepdim=True)
    weighted = delta * ro.norm_weight  # [L, H, M]
    device = pair.device
    total = torch.zeros(delta.shape[:2], dtype=torch.float64)
    sums = {"pruned": 0.0, "restored": 0.0, "dense": 0.0}
    for start in range(0, len(usable), batch_size):
        chunk = usable[start : start + batch_size]
        ids, attn = tokenize_prompts(tok, [c[0] for c in chunk], max_length, device)
        last = attn.sum(1) - 1
        rows = torch.arange(ids.shape[0], device=device)
        good = torch.tensor([c[1] for c in chunk], device=device)
        bad = torch.tensor([c[2] for c in chunk], device=device)
        captured: dict[str, Tensor] = {}
        grab = _capture_rows(captured, rows, last)

        with (
            compensation.attach(pair.pruned),
            temporary_hooks(pair.pruned, [(FINAL_NORM_IN, grab)]),
        ):
            restored = pair.pruned(ids, attention_mask=attn, return_type="logits")[rows, last]
        pruned = pair.pruned(ids, attention_mask=attn, return_type="logits")[rows, last]
        dense = pair.dense(ids, attention_mask=attn, return_type="logits")[rows, last]
        for key, lg in (("pruned", pruned), ("restored", restored), ("dense", dense)):
            sums[key] += float((lg[rows, good] - lg[rows, bad]).sum())
        resid = captured["resid"]
        if ro.centred:
            resid = resid - resid.mean(-1, keepdim=True)
        scale = (resid.square().mean(-1) + ro.eps).sqrt()  # [B]
        direction = (ro.w_u[:, good.cpu()] - ro.w_u[:, bad.cpu()]).T  # [B, M]
        per_head = torch.einsum("lhm,bm->blh", weighted, direction) / scale[:, None, None]
        total += per_head.sum(0).double()
    n = len(usable)
    logger.info("logit gain over %d examples (%d skipped)", n, n_skipped)
    return LogitGain(
        gain=(total / n).float(),
        logit_diff_pruned=sums["pruned"] / n,
        logit_diff_restored=sums["restored"] / n,
        logit_diff_dense=sums["dense"] / n,
        n_examples=n,
        n_skipped=n_skipped,
        geometry=pair.geometry,
    )
