"""Data-parallel execution on torch.distributed, as set up by ``torchrun`` or ``accelerate launch``.

Every rank runs the same program on its shard of the data; results are combined with collectives so that
every rank ends with the same numbers. With one process (no launcher) every helper is the identity, so
single-process numerics never change. Backends: gloo on CPU, nccl on CUDA.

The sharding convention: :func:`shard_range` gives each rank one contiguous block of a global sequence, in
rank order, so :func:`gather_rows` / :func:`gather_objects` of per-item results restore the global order.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Shaped
from torch import Tensor

from lcc_lens.errors import ConfigError

logger = logging.getLogger(__name__)

_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its rank on this host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs progress and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {name}={text!r} is not an integer; launch with torchrun or "
            "accelerate launch, or unset it."
        ) from exc


def context() -> DistContext:
    """The current process group (after :func:`init_from_env`), or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank())
        )
    return DistContext()


def launch_rank() -> int:
    """This process's rank as the launcher set it (``RANK``), known before the group is joined."""
    return context().rank if dist.is_available() and dist.is_initialized() else _env_int("RANK", 0)


def init_from_env(device: str | torch.device = "cpu", *, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group a launcher described in the environment; a no-op for one process.

    torchrun and ``accelerate launch`` both set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT. An already initialised group (e.g. by accelerate's ``Accelerator``) is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support.")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(
                f"WORLD_SIZE={world} but {name} is not set: launch with `torchrun --nproc_per_node N "
                "-m lcc_lens.fit ...` or `accelerate launch`."
            )
    on_cuda = torch.device(device).type == "cuda"
    backend = "nccl" if on_cuda and dist.is_nccl_available() else "gloo"
    if on_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    logger.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    if rank != 0:  # rank 0 reports progress; the others only warn
        logging.getLogger("lcc_lens").setLevel(logging.WARNING)
    return context()


def rank_device(device: str | torch.device, ctx: DistContext | None = None) -> torch.device:
    """The device this rank computes on: ``cuda`` becomes ``cuda:<local_rank>``; others unchanged."""
    ctx = ctx or context()
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and ctx.distributed:
        return torch.device("cuda", ctx.local_rank)
    return dev


def shutdown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n: int, ctx: DistContext | None = None) -> range:
    """This rank's contiguous block of ``range(n)``; block sizes differ by at most one, in rank order."""
    ctx = ctx or context()
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return range(start, start + base + (1 if ctx.rank < extra else 0))


def barrier() -> None:
    if context().distributed:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a cache), the other ranks after it (then hit the cache)."""
    ctx = context()
    if ctx.distributed and not ctx.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if ctx.distributed and ctx.is_main:
            dist.barrier()


def _comm_device(t: Tensor) -> torch.device:
    """nccl needs CUDA tensors; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: Tensor) -> Tensor:
    """The element-wise sum of ``t`` over all ranks (a new tensor on ``t``'s device)."""
    if not context().distributed:
        return t
    buf = t.detach().to(_comm_device(t)).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over all ranks, in place, in one flat buffer.

    A parameter without a gradient on this rank (e.g. its shard was empty) contributes zeros and
    receives the summed gradient.
    """
    if not context().distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1).float() for g in grads])
    flat = all_reduce_sum(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(dtype=p.dtype, device=p.device)
        offset += n


def gather_rows(t: Shaped[Tensor, "n_local ..."]) -> Shaped[Tensor, "n_total ..."]:
    """Concatenate every rank's ``t`` along dim 0 in rank order (ranks may hold different row counts).

    A rank with no rows may pass an empty tensor of another dtype; the result takes the dtype of the
    first rank that has rows. Trailing shapes must agree.
    """
    ctx = context()
    if not ctx.distributed:
        return t
    metas = gather_objects((int(t.shape[0]), tuple(t.shape[1:]), str(t.dtype)))
    filled = [m for m in metas if m[0] > 0] or metas
    rest, dtype_name = filled[0][1], filled[0][2]
    if any(m[1] != rest for m in metas if m[0] > 0):
        raise ValueError(f"gather_rows: ranks disagree on the trailing shape: {metas}")
    dtype = getattr(torch, dtype_name.removeprefix("torch."))
    counts = [m[0] for m in metas]
    dev = _comm_device(t)
    padded = torch.zeros((max(counts), *rest), dtype=dtype, device=dev)
    if t.shape[0]:
        padded[: t.shape[0]] = t.detach().to(device=dev, dtype=dtype)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(t.device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` with one process).

    Only for objects this program made itself (pickle travels between its own ranks, never from a file).
    """
    ctx = context()
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not context().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
