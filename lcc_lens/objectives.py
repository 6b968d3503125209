"""Training objectives for compensation: response-token cross-entropy, KL to the dense model, or a mix."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from lcc_lens.errors import ConfigError

Objective = Literal["lm", "kl", "mix"]
OBJECTIVES: tuple[str, ...] = ("lm", "kl", "mix")


def lm_loss(
    logits: Float[Tensor, "batch pos vocab"],
    input_ids: Int[Tensor, "batch pos"],
    response_mask: Int[Tensor, "batch pos"],
) -> Tensor:
    """Mean next-token cross-entropy over response tokens (token t is predicted at position t-1)."""
    # shift the labels, not the logits: slicing the [batch, pos, vocab] logits would copy them (and
    # their gradient); the last position's wrapped-around label is sliced off before the mask
    target_mask = response_mask[:, 1:].float()
    nll = F.cross_entropy(
        logits.flatten(0, 1).float(), input_ids.roll(-1, dims=1).flatten(), reduction="none"
    ).view(input_ids.shape)[:, :-1]
    return (nll * target_mask).sum() / target_mask.sum().clamp_min(1.0)


def kl_loss(
    student_logits: Float[Tensor, "batch pos vocab"],
    teacher_logits: Float[Tensor, "batch pos vocab"],
    response_mask: Int[Tensor, "batch pos"],
) -> Tensor:
    """Mean KL(teacher || student) of next-token distributions at the positions predicting response tokens.

    Lean in memory, where the fit's peak is: besides the two logits only p_t and log p_s are held. The
    gradient flows through -sum_v p_t log p_s (a batched dot product, no [batch, pos, vocab] product
    saved for backward); the value is the elementwise sum_v p_t (log p_t - log p_s), one sequence at a
    time without a graph.
    """
    mask = response_mask[:, 1:].float()
    with torch.no_grad():
        t_p = teacher_logits.float().log_softmax(-1).exp_()
    s_logp = student_logits.float().log_softmax(-1)
    cross = _vocab_dot(t_p, s_logp)
    with torch.no_grad():
        value = torch.stack(
            [
                (t_p[i] * (teacher_logits[i].float().log_softmax(-1) - s_logp[i])).sum(-1)
                for i in range(t_p.shape[0])
            ]
        )
    kl = (value + cross.detach() - cross)[:, :-1]  # the last position predicts nothing
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)


def _vocab_dot(
    a: Float[Tensor, "batch pos vocab"], b: Float[Tensor, "batch pos vocab"]
) -> Float[Tensor, "batch pos"]:
    """sum_v a[..., v] * b[..., v] as a matrix product (no elementwise product is materialised)."""
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def objective_loss(
    objective: Objective,
    student_logits: Tensor,
    input_ids: Tensor,
    response_mask: Tensor,
    teacher_logits: Tensor | None = None,
    kl_weight: float = 0.5,
) -> Tensor:
    """The configured loss; ``mix`` is (1 - kl_weight) * lm + kl_weight * kl."""
    if objective == "lm":
        return lm_loss(student_logits, input_ids, response_mask)
    if teacher_logits is None:
        raise ConfigError(f"objective {objective!r} needs the dense model's logits.")
    if objective == "kl":
        return kl_loss(student_logits, teacher_logits, response_mask)
    if objective == "mix":
        return (1 - kl_weight) * lm_loss(
            student_logits, input_ids, response_mask
        ) + kl_weight * kl_loss(student_logits, teacher_logits, response_mask)
    raise ConfigError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}.")


def needs_teacher(objective: Objective) -> bool:
    return objective in ("kl", "mix")
