"""Training objectives for compensation: response-token cross-entropy, KL to the dense model, or a mix."""

from __future__ import annotations

from typing import Literal

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
    """Mean KL(teacher || student) of next-token distributions at the positions predicting response tokens."""
    mask = response_mask[:, 1:].float()
    kl = F.kl_div(
        student_logits.float().log_softmax(-1),
        teacher_logits.float().log_softmax(-1),
        log_target=True,
        reduction="none",
    ).sum(-1)[:, :-1]  # the last position predicts nothing; sliced after the vocabulary sum
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)


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
