"""The training checkpoint without pickle: tensors in safetensors, everything else as JSON in its header.

A checkpoint is one file, ``checkpoint.safetensors``. Its tensors are the training state's tensors, named by
their place in the state (``compensation/beta``, ``optimizer/state/0/exp_avg``); the header metadata holds
the format tag and the JSON skeleton of the state, in which each tensor is a reference by name. Dicts keep
integer keys and tuples stay tuples, so a state round-trips exactly. Reading never executes anything from
the file: a malformed or hostile file is refused with a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from lcc_lens.atomic import atomic_file
from lcc_lens.errors import CheckpointError

CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
FORMAT = "lcc_lens.checkpoint/1"
_FORMAT_KEY = "format"
_STATE_KEY = "lcc_lens.training_state"
_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        name = path or "tensor"
        while name in tensors:
            name += "_"
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {_TENSOR: name}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise TypeError(f"checkpoint keys must be str or int, got {key!r} at {path}")
            items.append([key, _encode(value, f"{path}/{key}".lstrip("/"), tensors)])
        return {_DICT: items}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {path})")


def _decode(obj: Any, tensors: dict[str, Tensor], where: str) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if not isinstance(obj, dict) or len(obj) != 1:
        raise CheckpointError(f"{where}: unexpected entry {str(obj)[:80]!r} in the training state.")
    ((tag, value),) = obj.items()
    if tag == _TENSOR:
        if not isinstance(value, str) or value not in tensors:
            raise CheckpointError(f"{where}: the state refers to a missing tensor {value!r}.")
        return tensors[value]
    if tag == _TUPLE and isinstance(value, list):
        return tuple(_decode(v, tensors, where) for v in value)
    if tag == _DICT and isinstance(value, list):
        out: dict[Any, Any] = {}
        for pair in value:
            ok = isinstance(pair, list) and len(pair) == 2
            if not ok or not isinstance(pair[0], str | int) or isinstance(pair[0], bool):
                raise CheckpointError(f"{where}: malformed mapping entry {str(pair)[:80]!r}.")
            out[pair[0]] = _decode(pair[1], tensors, where)
        return out
    raise CheckpointError(f"{where}: unknown entry tag {tag!r} in the training state.")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists/tuples of tensors, numbers, strings) atomically."""
    tensors: dict[str, Tensor] = {}
    skeleton = _encode(state, "", tensors)
    meta = {_FORMAT_KEY: FORMAT, _STATE_KEY: json.dumps(skeleton)}
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`; anything else raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start a fresh run without --resume.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable lcc_lens checkpoint ({exc}). Delete it and start the run "
            "again without --resume."
        ) from exc
    if meta.get(_FORMAT_KEY) != FORMAT or _STATE_KEY not in meta:
        raise CheckpointError(
            f"{path} is not an lcc_lens training checkpoint (format {meta.get(_FORMAT_KEY)!r}, "
            f"expected {FORMAT!r}). Start the run again without --resume."
        )
    try:
        skeleton = json.loads(meta[_STATE_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the training state is not valid JSON ({exc}).") from exc
    try:
        state = _decode(skeleton, tensors, str(path))
    except RecursionError as exc:
        raise CheckpointError(f"{path}: the training state is nested too deeply.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the training state must be a mapping.")
    return state


def refuse_legacy(run_dir: str | os.PathLike[str]) -> None:
    """A pickled ``checkpoint.pt`` (lcc_lens < 0.2, or planted) is never loaded: say so and how to go on."""
    legacy = Path(run_dir) / LEGACY_CHECKPOINT
    if legacy.exists() and not (Path(run_dir) / CHECKPOINT).exists():
        raise CheckpointError(
            f"{legacy} is a pickled checkpoint; lcc_lens no longer loads pickles because they can run "
            f"code. Start the run again without --resume (it writes {CHECKPOINT})."
        )


def expect_tensor(value: Any, shape: torch.Size | tuple[int, ...], where: str) -> Tensor:
    """``value`` as a finite float tensor of ``shape``, or a CheckpointError naming ``where``."""
    if not isinstance(value, Tensor) or tuple(value.shape) != tuple(shape):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckpointError(
            f"checkpoint entry {where} is {got}, expected a tensor {tuple(shape)}."
        )
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise CheckpointError(
            f"checkpoint entry {where} holds NaN or inf; the checkpoint is corrupt."
        )
    return value


def training_state(
    key: str,
    step: int,
    module: Any,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything a resumed run needs to continue bit-identically after optimizer step ``step``."""
    return {
        "key": key,
        "step": step,
        "compensation": module.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "history": history,
    }


def _same_kind(saved: Any, template: Any) -> bool:
    if isinstance(template, bool) or isinstance(saved, bool):
        return type(saved) is type(template)
    if isinstance(template, int | float) and isinstance(saved, int | float):
        return math.isfinite(saved)
    if isinstance(template, tuple | list) and isinstance(saved, tuple | list):
        return len(saved) == len(template) and all(map(_same_kind, saved, template))
    return type(saved) is type(template)


def _like(saved: Any, template: dict[str, Any], where: str) -> dict[str, Any]:
    """``saved`` checked to be a mapping with ``template``'s keys and value kinds."""
    if not isinstance(saved, dict) or set(saved) != set(template):
        keys = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(
            f"checkpoint entry {where} has keys {keys}, expected {sorted(template)}."
        )
    for k, v in template.items():
        if not _same_kind(saved[k], v):
            raise CheckpointError(
                f"checkpoint entry {where}/{k} is {saved[k]!r}, expected like {v!r}."
            )
    return saved


def _check_optimizer(saved: Any, opt: torch.optim.Optimizer, where: str) -> dict[str, Any]:
    template = opt.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise CheckpointError(f"checkpoint entry {where} must hold 'state' and 'param_groups'.")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(template["param_groups"]):
        raise CheckpointError(f"checkpoint entry {where}/param_groups does not fit this optimizer.")
    for i, (g, t) in enumerate(zip(groups, template["param_groups"], strict=True)):
        _like(g, t, f"{where}/param_groups/{i}")
        if g["params"] != t["params"]:
            raise CheckpointError(
                f"checkpoint entry {where}/param_groups/{i} has other parameters."
            )
    params = [p for group in opt.param_groups for p in group["params"]]
    state = saved["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint entry {where}/state must be a mapping.")
    for idx, entry in state.items():
        if not isinstance(idx, int) or not 0 <= idx < len(params) or not isinstance(entry, dict):
            raise CheckpointError(
                f"checkpoint entry {where}/state/{idx} does not fit this optimizer."
            )
        for name, value in entry.items():
            shape = () if isinstance(value, Tensor) and value.dim() == 0 else params[idx].shape
            expect_tensor(value, shape, f"{where}/state/{idx}/{name}")
    return saved


def restore_state(
    state: dict[str, Any],
    key: str,
    total: int,
    module: Any,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    where: str,
) -> tuple[int, list[dict[str, Any]]]:
    """Validate ``state`` against this run and load it into module, optimizer and scheduler.

    Returns (optimizer steps already done, history so far). Every mismatch is a CheckpointError.
    """
    expected = {"key", "step", "compensation", "optimizer", "scheduler", "history"}
    if set(state) != expected:
        raise CheckpointError(
            f"{where}: the training state has keys {sorted(state)}, expected "
            f"{sorted(expected)}. Start the run again without --resume."
        )
    if state["key"] != key:
        raise CheckpointError(
            f"--resume: {where} was written by another configuration (data, heads, objective or "
            "optimisation differ). Resume with the same settings or choose a new --out."
        )
    step, history = state["step"], state["history"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total:
        raise CheckpointError(f"{where}: step {step!r} is not in [0, {total}].")
    rows_ok = isinstance(history, list) and len(history) == step
    if not rows_ok or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{where}: the history does not hold one row per step done ({step}).")
    own = module.state_dict()
    saved = state["compensation"]
    if not isinstance(saved, dict) or set(saved) != set(own):
        raise CheckpointError(f"{where}: the stored parameters do not match this run's method.")
    for name, value in own.items():
        expect_tensor(saved[name], value.shape, f"compensation/{name}")
        if saved[name].dtype != value.dtype:
            raise CheckpointError(
                f"{where}: compensation/{name} is {saved[name].dtype}, expected {value.dtype}."
            )
    module.load_state_dict(saved)
    opt.load_state_dict(_check_optimizer(state["optimizer"], opt, "optimizer"))
    sched_template = sched.state_dict()
    sched_state = _like(state["scheduler"], sched_template, "scheduler")
    sched.load_state_dict({**sched_state, "lr_lambdas": sched_template["lr_lambdas"]})
    return step, history
