"""The training loop: only the restoration's parameters train; both models stay frozen.

AdamW with linear warm-up and cosine decay, gradient accumulation, validation each epoch, a seeded batch
order that depends only on (seed, step) so that a resumed run replays exactly, and atomic checkpoints
without pickle (:mod:`lcc_lens.checkpoint`).

What trains is any :class:`Trainable`: the LCC :class:`~lcc_lens.compensation.Compensation`, or a benchmark
method (``lcc_lens.methods``) with trainable parameters and an ``attach(model)`` context manager.

Data-parallel (``torchrun`` / ``accelerate launch``, see :mod:`lcc_lens.distributed`): ``batch_size`` is the
global batch; each rank computes its contiguous shard of every micro-batch, the loss is normalised by the
micro-batch's global number of target tokens and the gradients are summed over ranks, so the optimisation
is the same whatever the number of processes. Only rank 0 writes checkpoints and shows progress. With one
process the arithmetic is exactly the single-process loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor, nn

from lcc_lens import distributed as dist
from lcc_lens.checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    refuse_legacy,
    restore_state,
    save_checkpoint,
    training_state,
)
from lcc_lens.compensation import Compensation, check_finite
from lcc_lens.data import Encoded, collate
from lcc_lens.errors import ConfigError, DataError, DivergedError, LccError
from lcc_lens.models import ModelPair
from lcc_lens.objectives import OBJECTIVES, Objective, needs_teacher, objective_loss
from lcc_lens.progress import progress

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT",
    "TrainConfig",
    "Trainable",
    "evaluate_loss",
    "has_checkpoint",
    "step_gradients",
    "train",
    "train_step",
]


@runtime_checkable
class Trainable(Protocol):
    """What :func:`train` optimises: a module whose trainable tensors have ``requires_grad`` set.

    ``attach(model)`` is a context manager yielding a model that computes the restored logits as
    ``m(input_ids, attention_mask=..., return_type="logits")`` and undoes everything on exit. ``model``
    is the pruned TransformerBridge unless ``train(..., student=...)`` passes another (e.g. a plain HF
    model for adapter methods). ``state_dict`` / ``load_state_dict`` checkpoint it.
    """

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def attach(self, model: Any) -> contextlib.AbstractContextManager[Any]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(
        self, state_dict: Any, strict: bool = True, assign: bool = False
    ) -> Any: ...


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``steps`` (optimizer steps) wins over ``epochs`` when set."""

    objective: Objective = field(
        default="lm",
        metadata=_help(
            "training loss: lm (response cross-entropy), kl (to the dense model) or mix"
        ),
    )
    kl_weight: float = field(
        default=0.5, metadata=_help("weight of the KL term in the mix objective, in [0, 1]")
    )
    lr: float = field(default=1e-2, metadata=_help("AdamW peak learning rate, > 0"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW decoupled weight decay, >= 0"))
    warmup_fraction: float = field(
        default=0.1,
        metadata=_help("fraction of the steps with linear learning-rate warm-up, [0, 1]"),
    )
    epochs: int = field(default=1, metadata=_help("passes over the training data (unless --steps)"))
    steps: int | None = field(
        default=None, metadata=_help("optimizer steps; none = epochs x steps per epoch")
    )
    batch_size: int = field(
        default=8, metadata=_help("examples per micro-batch, global over all processes")
    )
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    memory_chunk: int | None = field(
        default=None,
        metadata=_help(
            "examples per forward/backward pass on each process, for memory only: the gradient "
            "stays the token-weighted mean over the whole batch; none = the whole batch at once"
        ),
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient-norm clipping, > 0"))
    seed: int = field(default=0, metadata=_help("seed of the batch order"))
    checkpoint_every: int = field(
        default=10, metadata=_help("optimizer steps between checkpoints of the run directory")
    )

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective={self.objective!r}; choose one of {OBJECTIVES}.")
        _check_float(self, "kl_weight", low=0.0, high=1.0)
        _check_float(self, "lr", low=0.0, low_open=True)
        _check_float(self, "weight_decay", low=0.0)
        _check_float(self, "warmup_fraction", low=0.0, high=1.0)
        _check_float(self, "max_grad_norm", low=0.0, low_open=True)
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every"):
            _check_int(self, name, low=1)
        _check_int(self, "seed", low=0)
        if self.steps is not None:
            _check_int(self, "steps", low=0)
        if self.memory_chunk is not None:
            _check_int(self, "memory_chunk", low=1)

    def total_steps(self, n_train: int) -> int:
        per_epoch = math.ceil(n_train / (self.batch_size * self.grad_accum))
        return self.steps if self.steps is not None else per_epoch * self.epochs

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_float(
    cfg: Any, name: str, *, low: float, high: float | None = None, low_open: bool = False
) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{name} ({_flag(name)}) must be a number, got {value!r} ({type(value).__name__}); "
            "write it as a plain decimal such as 0.01."
        )
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or (high is not None and value > high):
        bound = f"({low}, " if low_open else f"[{low}, "
        bound += f"{high}]" if high is not None else "inf)"
        raise ConfigError(
            f"{name} ({_flag(name)}) must be a finite number in {bound}, got {value}."
        )


def _check_int(cfg: Any, name: str, *, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name} ({_flag(name)}) must be a whole number, got {value!r} ({type(value).__name__})."
        )
    if value < low:
        raise ConfigError(f"{name} ({_flag(name)}) must be >= {low}, got {value}.")


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a training checkpoint that ``resume=True`` can continue."""
    return (Path(run_dir) / CHECKPOINT).is_file()


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


def _n_targets(batch: Sequence[Encoded]) -> int:
    """Tokens the objectives average over: response tokens after the first position."""
    return sum(sum(e.response_mask[1:]) for e in batch)


def _collate(pair: ModelPair, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor, Tensor]:
    pad = pair.tokenizer.pad_token_id if pair.tokenizer.pad_token_id is not None else 0
    ids, attn, resp = (t.to(pair.device) for t in collate(batch, pad))
    return ids, attn, resp


def _objective(
    pair: ModelPair,
    model: Any,
    ids: Int[Tensor, "batch pos"],
    attn: Int[Tensor, "batch pos"],
    resp: Int[Tensor, "batch pos"],
    cfg: TrainConfig,
) -> Tensor:
    """The objective of ``model`` (an attached model: restoration applied) on one padded batch."""
    teacher = None
    if needs_teacher(cfg.objective):
        with torch.no_grad():
            teacher = _teacher(pair)(ids, attention_mask=attn, return_type="logits")
    logits = model(ids, attention_mask=attn, return_type="logits")
    return objective_loss(cfg.objective, logits, ids, resp, teacher, cfg.kl_weight)


def train_step(
    pair: ModelPair,
    method: Trainable,
    ids: Int[Tensor, "batch pos"],
    attn: Int[Tensor, "batch pos"],
    resp: Int[Tensor, "batch pos"],
    cfg: TrainConfig,
    *,
    student: Any = None,
    weight: float | None = None,
) -> Tensor:
    """Forward and backward of one micro-batch; gradients accumulate into ``method``'s parameters.

    The loss is the objective (times ``weight``, this pass's share of the micro-batch's target tokens
    under torch.distributed or ``memory_chunk``) divided by ``cfg.grad_accum``; it is returned detached.
    """
    with _attached(method, pair, student) as model:
        loss = _objective(pair, model, ids, attn, resp, cfg)
    if weight is not None:
        loss = loss * weight
    loss = loss / cfg.grad_accum
    loss.backward()
    return loss.detach()


def _teacher(pair: ModelPair) -> Any:
    """The dense model's logits: its plain twin (same weights, no bridge wrappers) when it has one."""
    from lcc_lens.twin import PlainLogits, plain_twin

    twin = plain_twin(pair.dense)
    return pair.dense if twin is None else PlainLogits(twin)


def _attached(method: Trainable | None, pair: ModelPair, student: Any = None) -> Any:
    """A context manager yielding the model to run: the method attached, or the bare pruned model.

    A method with ``attach_for_training`` (the LCC compensation) runs on the pruned model's plain
    twin (:mod:`lcc_lens.twin`): the same logits without the bridge's per-module overhead.
    """
    base = pair.pruned if student is None else student
    if method is None:
        from lcc_lens.twin import PlainLogits, plain_twin

        twin = plain_twin(base)
        return contextlib.nullcontext(base if twin is None else PlainLogits(twin))
    fast = getattr(method, "attach_for_training", None)
    return fast(base) if fast is not None else method.attach(base)


@torch.no_grad()
def evaluate_loss(
    pair: ModelPair,
    comp: Trainable | None,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    student: Any = None,
) -> float:
    """Mean objective over ``data`` (token-weighted per batch); ``comp=None`` scores the pruned model.

    Under torch.distributed each rank scores its share of the batches and the sums are reduced.
    """
    if not data:
        return float("nan")
    ctx = dist.context()
    starts = list(range(0, len(data), cfg.batch_size))
    total, weight = 0.0, 0
    with _attached(comp, pair, student) as model:
        for i, start in enumerate(starts):
            if ctx.distributed and i % ctx.world_size != ctx.rank:
                continue
            batch = data[start : start + cfg.batch_size]
            loss = _objective(pair, model, *_collate(pair, batch), cfg)
            n = sum(sum(e.response_mask) for e in batch)
            total += float(loss) * n
            weight += n
    if ctx.distributed:
        sums = dist.all_reduce_sum(torch.tensor([total, float(weight)], dtype=torch.float64))
        total, weight = float(sums[0]), int(sums[1])
    return total / max(1, weight)


def _passes(
    batch: list[Encoded], cfg: TrainConfig, ctx: dist.DistContext
) -> list[tuple[list[Encoded], float | None]]:
    """The forward/backward passes of one micro-batch on this rank, each with its share of the batch's
    target tokens (None: the whole batch in one pass), so the gradients sum to the batch's mean."""
    total = _n_targets(batch)
    if ctx.distributed:
        batch = [batch[i] for i in dist.shard_range(len(batch), ctx)]
    size = cfg.memory_chunk or len(batch) or 1
    chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
    if not ctx.distributed and len(chunks) == 1:
        return [(batch, None)]  # the plain path, unweighted
    out = []
    for chunk in chunks:
        n = _n_targets(chunk)
        if n:
            out.append((chunk, n / max(1, total)))
    return out


def step_gradients(
    pair: ModelPair,
    method: Trainable,
    train_data: Sequence[Encoded],
    cfg: TrainConfig,
    step: int,
    *,
    student: Any = None,
) -> float:
    """Optimizer step ``step``'s gradient, left in ``method``'s trainable parameters; the step's loss.

    Clears the gradients, runs forward and backward on every micro-batch of the step (this rank's
    shard under torch.distributed) and sums the gradients over ranks: each pass is weighted by its
    share of the micro-batch's global target tokens, so the result is the token-weighted mean gradient
    over the whole global batch, the same for any number of processes.
    """
    trainable = [p for p in method.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = None
    ctx = dist.context()
    loss_sum = 0.0
    for micro in _micro_batches(len(train_data), cfg, step):
        batch = [train_data[i] for i in micro]
        for chunk, weight in _passes(batch, cfg, ctx):
            ids, attn, resp = _collate(pair, chunk)
            loss = train_step(pair, method, ids, attn, resp, cfg, student=student, weight=weight)
            loss_sum += float(loss)
    if ctx.distributed:
        loss_sum = float(dist.all_reduce_sum(torch.tensor([loss_sum], dtype=torch.float64))[0])
    dist.all_reduce_grads(trainable)
    return loss_sum


def _nonfinite_loss(loss: float, step: int, cfg: TrainConfig, method: Trainable) -> LccError:
    """Say why the loss is not finite: non-finite parameters, or a diverged optimisation."""
    bad = [n for n, p in _named(method) if not torch.isfinite(p.detach()).all()]
    if bad:
        return DivergedError(
            f"loss became {loss} at step {step}: parameters {bad[:3]} hold NaN or inf "
            f"(initialisation or a diverged update). Lower --lr (now {cfg.lr}) or check the init."
        )
    if step == 0:
        return DataError(
            f"loss is {loss} at the first step, before any update: the models produce non-finite "
            "logits on the training data (check --dtype; float16 overflows easily)."
        )
    return DivergedError(
        f"loss became {loss} at step {step}: the optimisation diverged. Lower --lr (now {cfg.lr}) "
        f"or --max-grad-norm (now {cfg.max_grad_norm})."
    )


def _named(method: Trainable) -> list[tuple[str, torch.Tensor]]:
    if isinstance(method, nn.Module):
        return list(method.named_parameters())
    return [(str(i), p) for i, p in enumerate(method.parameters())]


def _param_groups(
    comp: Trainable, trainable: list[nn.Parameter], lr: float
) -> list[dict[str, Any]]:
    """The optimizer's groups: one at ``lr``, or the method's own (``param_groups(lr)``: tensors that
    want another rate), which must cover exactly the trainable tensors."""
    groups_of = getattr(comp, "param_groups", None)
    if groups_of is None:
        return [{"params": trainable, "lr": lr}]
    groups = groups_of(lr)
    covered = sorted(id(p) for g in groups for p in g["params"])
    if covered != sorted(id(p) for p in trainable):
        raise ConfigError(
            f"{type(comp).__name__}.param_groups must list every trainable tensor exactly once."
        )
    return groups


def train(
    pair: ModelPair,
    comp: Trainable,
    train_data: Sequence[Encoded],
    val_data: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    identity: str = "",
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    student: Any = None,
) -> list[dict[str, Any]]:
    """Optimise ``comp`` in place; return the history (one row per step, with val_loss at epoch ends).

    With ``run_dir`` a checkpoint is written atomically every ``checkpoint_every`` steps and at the end
    (by rank 0 only); ``resume=True`` continues from it and refuses a checkpoint of another configuration
    (``identity``). ``student``: the model ``comp`` attaches to (default: the pruned bridge).
    ``on_step(step, row)`` runs on every rank with the same row.
    """
    if not train_data:
        raise DataError("no training examples: give at least one example with a response.")
    ctx = dist.context()
    if isinstance(comp, nn.Module):
        comp.to(pair.device)
    trainable = [p for p in comp.parameters() if p.requires_grad]
    total = cfg.total_steps(len(train_data))
    steps_per_epoch = max(1, math.ceil(len(train_data) / (cfg.batch_size * cfg.grad_accum)))
    history: list[dict[str, Any]] = []
    start = 0
    if sum(p.numel() for p in trainable) == 0 or total == 0:
        logger.info("nothing to train (%d trainable tensors, %d steps)", len(trainable), total)
        return history
    opt = torch.optim.AdamW(_param_groups(comp, trainable, cfg.lr), weight_decay=cfg.weight_decay)
    warmup = round(cfg.warmup_fraction * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    key = hashlib.sha256(f"{cfg.fingerprint()}|{identity}|{total}".encode()).hexdigest()[:16]
    ckpt_path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if resume:
        if ckpt_path is None:
            raise ConfigError("resume=True needs run_dir (the --out of the interrupted run).")
        refuse_legacy(ckpt_path.parent)
        state = load_checkpoint(ckpt_path)
        start, history = restore_state(state, key, total, comp, opt, sched, str(ckpt_path))
        logger.info("resumed from step %d of %d", start, total)

    def save(step: int) -> None:
        if ckpt_path is not None and ctx.is_main:
            save_checkpoint(ckpt_path, training_state(key, step, comp, opt, sched, history))

    bar = progress(range(start, total), desc="fit", unit="step", initial=start, total=total)
    for step in bar:
        t_step = time.perf_counter()
        loss_sum = step_gradients(pair, comp, train_data, cfg, step, student=student)
        if not math.isfinite(loss_sum):
            raise _nonfinite_loss(loss_sum, step, cfg, comp)
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        sched.step()
        row: dict[str, Any] = {"step": step + 1, "loss": loss_sum, "lr": opt.param_groups[0]["lr"]}
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total:
            row["epoch"] = (step + 1) / steps_per_epoch
            row["val_loss"] = evaluate_loss(pair, comp, val_data, cfg, student=student)
            if ctx.is_main:
                logger.info(
                    "step %d: loss %.4f, val_loss %.4f", step + 1, loss_sum, row["val_loss"]
                )
        history.append(row)
        tokens = sum(
            len(train_data[i].input_ids)
            for m in _micro_batches(len(train_data), cfg, step)
            for i in m
        )
        bar.set_postfix(  # shown at the bar's next refresh, not one log line per step
            loss=f"{loss_sum:.4f}",
            tok_s=f"{tokens / (time.perf_counter() - t_step):.0f}",
            refresh=False,
        )
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, row)
    if isinstance(comp, Compensation):
        check_finite(comp.z_offsets().detach())
    elif callable(getattr(comp, "check_finite", None)):
        comp.check_finite()
    return history
