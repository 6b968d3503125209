"""The training objectives against a direct, loop-by-loop computation of their definitions.

Token t of the response is predicted by the logits at position t - 1; the KL is KL(teacher || student)
= sum_v p_teacher(v) (log p_teacher(v) - log p_student(v)). An off-by-one response mask or a reversed
KL disagrees with these references on random logits.
"""

from __future__ import annotations

import math

import pytest
import torch

from lcc_lens.errors import ConfigError
from lcc_lens.objectives import kl_loss, lm_loss, needs_teacher, objective_loss

B, T, V = 3, 7, 11


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(B, T, V, generator=gen) * 2
    teacher = torch.randn(B, T, V, generator=gen) * 2
    ids = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.tensor(
        [[0, 0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.long
    )
    return student, teacher, ids, mask


def _reference_lm(logits, ids, mask) -> float:
    total, n = 0.0, 0
    for b in range(B):
        for t in range(1, T):
            if mask[b, t]:
                logp = logits[b, t - 1].double().log_softmax(-1)
                total += -float(logp[ids[b, t]])
                n += 1
    return total / n


def _reference_kl(student, teacher, mask) -> float:
    total, n = 0.0, 0
    for b in range(B):
        for t in range(1, T):
            if mask[b, t]:
                p = teacher[b, t - 1].double().softmax(-1)
                log_q = student[b, t - 1].double().log_softmax(-1)
                total += float((p * (p.log() - log_q)).sum())
                n += 1
    return total / n


def test_lm_loss_scores_each_response_token_from_the_previous_position(batch):
    student, _, ids, mask = batch
    assert math.isclose(
        float(lm_loss(student, ids, mask)), _reference_lm(student, ids, mask), rel_tol=1e-5
    )
    # the same mask shifted by one position gives a different value: the test sees an off-by-one
    shifted = torch.roll(mask, shifts=-1, dims=1)
    assert not math.isclose(
        _reference_lm(student, ids, shifted), _reference_lm(student, ids, mask), rel_tol=1e-3
    )


def test_lm_loss_ignores_prompt_tokens(batch):
    student, _, ids, mask = batch
    other_prompt = ids.clone()
    other_prompt[mask == 0] = (ids[mask == 0] + 1) % V  # change only tokens that are not scored
    other_prompt[:, 0] = ids[:, 0]
    before = lm_loss(student, ids, mask)
    after = lm_loss(student, other_prompt, mask)
    assert torch.equal(before, after)


def test_kl_loss_is_teacher_to_student(batch):
    student, teacher, _, mask = batch
    got = float(kl_loss(student, teacher, mask))
    assert math.isclose(got, _reference_kl(student, teacher, mask), rel_tol=1e-5)
    reversed_kl = _reference_kl(teacher, student, mask)  # KL(student || teacher)
    assert not math.isclose(got, reversed_kl, rel_tol=1e-3)
    assert float(kl_loss(teacher, teacher, mask)) == pytest.approx(0.0, abs=1e-6)


def test_mix_weights_the_two_objectives(batch):
    student, teacher, ids, mask = batch
    w = 0.3
    got = float(objective_loss("mix", student, ids, mask, teacher, kl_weight=w))
    want = (1 - w) * _reference_lm(student, ids, mask) + w * _reference_kl(student, teacher, mask)
    assert math.isclose(got, want, rel_tol=1e-5)
    assert float(objective_loss("lm", student, ids, mask)) == pytest.approx(
        _reference_lm(student, ids, mask), rel=1e-5
    )


def test_the_loss_is_differentiable_in_the_student_only(batch):
    student, teacher, ids, mask = batch
    s = student.clone().requires_grad_(True)
    objective_loss("kl", s, ids, mask, teacher).backward()
    assert (
        s.grad is not None and s.grad[:, -1].abs().sum() == 0
    )  # the last position predicts nothing


def test_no_response_token_gives_zero_and_kl_needs_a_teacher(batch):
    student, teacher, ids, mask = batch
    none = torch.zeros_like(mask)
    assert float(lm_loss(student, ids, none)) == 0.0
    assert float(kl_loss(student, teacher, none)) == 0.0
    assert needs_teacher("kl") and needs_teacher("mix") and not needs_teacher("lm")
    with pytest.raises(ConfigError, match="dense model's logits"):
        objective_loss("kl", student, ids, mask)
    with pytest.raises(ConfigError, match="unknown objective"):
        objective_loss("bogus", student, ids, mask, teacher)  # type: ignore[arg-type]
