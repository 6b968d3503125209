"""The compensation training loop: only compensation parameters train; both models stay frozen.

AdamW with linear warm-up and cosine decay, gradient accumulation, validation each epoch, a seeded batch
order that depends only on (seed, epoch) so that a resumed run replays exactly, and atomic checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lcc_lens.atomic import atomic_file
from lcc_lens.compensation import Compensation, check_finite
from lcc_lens.data import Encoded, collate
from lcc_lens.errors import ConfigError, LccError
from lcc_lens.models import ModelPair
from lcc_lens.objectives import OBJECTIVES, Objective, needs_teacher, objective_loss

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``steps`` (optimizer steps) wins over ``epochs`` when set."""

    objective: Objective = "lm"
    kl_weight: float = 0.5
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_fraction: float = 0.1
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}.")

    def total_steps(self, n_train: int) -> int:
        per_epoch = math.ceil(n_train / (self.batch_size * self.grad_accum))
        return self.steps if self.steps is not None else per_epoch * self.epochs

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _micro_batches(n: int, cfg: TrainConfig, step: int) -> list[list[int]]:
    """Example indices of each micro-batch of optimizer step ``step`` (depends only on seed and step)."""
    per_step = cfg.batch_size * cfg.grad_accum
    out = []
    for a in range(cfg.grad_accum):
        idx = []
        for j in range(cfg.batch_size):
            flat = step * per_step + a * cfg.batch_size + j
            epoch, pos = divmod(flat, n)
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            )
            idx.append(int(perm[pos]))
        out.append(idx)
    return out


def _schedule(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch_loss(
    pair: ModelPair, comp: Compensation, batch: Sequence[Encoded], cfg: TrainConfig
) -> torch.Tensor:
    pad = pair.tokenizer.pad_token_id if pair.tokenizer.pad_token_id is not None else 0
    ids, attn, resp = (t.to(pair.device) for t in collate(batch, pad))
    teacher = None
    if needs_teacher(cfg.objective):
        with torch.no_grad():
            teacher = pair.dense(ids, attention_mask=attn, return_type="logits")
    with comp.attach(pair.pruned):
        student = pair.pruned(ids, attention_mask=attn, return_type="logits")
    return objective_loss(cfg.objective, student, ids, resp, teacher, cfg.kl_weight)


@torch.no_grad()
def evaluate_loss(
    pair: ModelPair, comp: Compensation | None, data: Sequence[Encoded], cfg: TrainConfig
) -> float:
    """Mean objective over ``data`` (token-weighted per batch); ``comp=None`` scores the pruned model."""
    if not data:
        return float("nan")
    total, weight = 0.0, 0
    for start in range(0, len(data), cfg.batch_size):
        batch = data[start : start + cfg.batch_size]
        if comp is None:
            empty = Compensation(pair.geometry, [], None, use_directions=False)
            loss = _batch_loss(pair, empty, batch, cfg)
        else:
            loss = _batch_loss(pair, comp, batch, cfg)
        n = sum(sum(e.response_mask) for e in batch)
        total += float(loss) * n
        weight += n
    return total / max(1, weight)


def train(
    pair: ModelPair,
    comp: Compensation,
    train_data: Sequence[Encoded],
    val_data: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    identity: str = "",
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Optimise ``comp`` in place; return the history (one row per step, with val_loss at epoch ends).

    With ``run_dir`` a checkpoint is written atomically every ``checkpoint_every`` steps and at the end;
    ``resume=True`` continues from it and refuses a checkpoint of another configuration (``identity``).
    """
    if not train_data:
        raise LccError("no training examples.")
    comp.to(pair.device)
    trainable = [p for p in comp.parameters() if p.requires_grad]
    total = cfg.total_steps(len(train_data))
    steps_per_epoch = max(1, math.ceil(len(train_data) / (cfg.batch_size * cfg.grad_accum)))
    history: list[dict[str, Any]] = []
    start = 0
    if not trainable or comp.n_selected == 0 or total == 0:
        logger.info("nothing to train (%d heads selected, %d steps)", comp.n_selected, total)
        return history
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = round(cfg.warmup_fraction * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    key = hashlib.sha256(f"{cfg.fingerprint()}|{identity}|{total}".encode()).hexdigest()[:16]
    ckpt_path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise LccError(
                f"--resume: no checkpoint at {ckpt_path}; start a fresh run without --resume."
            )
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["key"] != key:
            raise LccError(
                f"--resume: {ckpt_path} was written by another configuration (data, heads, objective or "
                "optimisation differ). Resume with the same settings or choose a new --out."
            )
        comp.load_state_dict(state["compensation"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
        start = state["step"]
        logger.info("resumed from step %d of %d", start, total)

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        with atomic_file(ckpt_path) as tmp:
            torch.save(
                {
                    "key": key,
                    "step": step,
                    "compensation": comp.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history,
                },
                tmp,
            )

    bar = tqdm(range(start, total), desc="fit", unit="step", initial=start, total=total)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in _micro_batches(len(train_data), cfg, step):
            loss = _batch_loss(pair, comp, [train_data[i] for i in micro], cfg) / cfg.grad_accum
            loss.backward()
            loss_sum += float(loss.detach())
        if not math.isfinite(loss_sum):
            raise LccError(f"loss became {loss_sum} at step {step}: lower the learning rate.")
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        sched.step()
        row: dict[str, Any] = {"step": step + 1, "loss": loss_sum, "lr": opt.param_groups[0]["lr"]}
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total:
            row["epoch"] = (step + 1) / steps_per_epoch
            row["val_loss"] = evaluate_loss(pair, comp, val_data, cfg)
            logger.info("step %d: loss %.4f, val_loss %.4f", step + 1, loss_sum, row["val_loss"])
        history.append(row)
        bar.set_postfix(loss=f"{loss_sum:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, row)
    check_finite(comp.z_offsets().detach())
    return history
