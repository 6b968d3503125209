"""--resume never executes a checkpoint and refuses malformed ones with a CheckpointError.

The first cases plant a pickle whose unpickling would create a file; before the fix (``torch.load(...,
weights_only=False)`` on ``checkpoint.pt``) the file appeared.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from lcc_lens.checkpoint import CHECKPOINT, FORMAT, LEGACY_CHECKPOINT, load_checkpoint
from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.errors import CheckpointError
from lcc_lens.models import ModelPair
from lcc_lens.training import TrainConfig, train

CFG = TrainConfig(steps=2, batch_size=2, checkpoint_every=1)


class _Payload:
    """Unpickling this calls os.system, which creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def setup(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    data = encode(pair.tokenizer, load_examples("offline", n=4), 48)
    return pair, data


def _resume(setup, run):
    pair, data = setup
    comp = Compensation(pair.geometry, [(0, 0), (2, 1)], None, use_directions=False)
    return train(pair, comp, data, data[:2], CFG, run_dir=run, resume=True)


@pytest.mark.parametrize("name", [LEGACY_CHECKPOINT, CHECKPOINT])
def test_a_pickle_payload_is_never_executed(setup, tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    with open(run / name, "wb") as fh:
        pickle.dump({"key": _Payload(str(marker))}, fh)
    torch.save({"key": _Payload(str(marker))}, run / LEGACY_CHECKPOINT)
    with pytest.raises(CheckpointError) as err:
        _resume(setup, run)
    assert not marker.exists(), "the checkpoint executed code"
    assert str(run) in str(err.value)


def _legit(setup, run):
    pair, data = setup
    comp = Compensation(pair.geometry, [(0, 0), (2, 1)], None, use_directions=False)
    train(pair, comp, data, data[:2], CFG, run_dir=run)
    return run / CHECKPOINT


def _rewrite(path, mutate_state=None, mutate_tensors=None, meta=None):
    """Rewrite a legit checkpoint with its JSON state and/or tensors changed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    state = json.loads(header["lcc_lens.training_state"])
    if mutate_state:
        mutate_state(state)
    if mutate_tensors:
        mutate_tensors(tensors)
    header["lcc_lens.training_state"] = json.dumps(state)
    header.update(meta or {})
    save_file(tensors, str(path), metadata=header)


def _entry(state, key):
    return next(v for k, v in state["__dict__"] if k == key)


def _set(state, key, value):
    for pair in state["__dict__"]:
        if pair[0] == key:
            pair[1] = value


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


CASES = {
    "truncated": lambda p: _truncate(p),
    "empty": lambda p: p.write_bytes(b""),
    "not safetensors": lambda p: p.write_text("hello"),
    "wrong format tag": lambda p: _rewrite(p, meta={"format": "something/else"}),
    "state not json": lambda p: _rewrite(p, meta={"lcc_lens.training_state": "{not json"}),
    "unknown tag": lambda p: _rewrite(p, lambda s: _set(s, "history", {"__object__": "os.system"})),
    "missing tensor": lambda p: _rewrite(p, mutate_tensors=lambda t: t.pop("compensation/bias")),
    "wrong shape": lambda p: _rewrite(
        p, mutate_tensors=lambda t: t.update({"compensation/bias": torch.zeros(5, 16)})
    ),
    "nan parameters": lambda p: _rewrite(
        p, mutate_tensors=lambda t: t.update({"compensation/bias": torch.full((2, 16), torch.nan)})
    ),
    "bad optimizer state shape": lambda p: _rewrite(
        p,
        mutate_tensors=lambda t: t.update(
            {k: torch.zeros(3) for k in list(t) if k.endswith("exp_avg")}
        ),
    ),
    "hostile scheduler key": lambda p: _rewrite(
        p, lambda s: _entry(s, "scheduler")["__dict__"].append(["optimizer", None])
    ),
    "string learning rate": lambda p: _rewrite(
        p,
        lambda s: [
            pair.__setitem__(1, "0.1")
            for pair in _entry(s, "optimizer")["__dict__"][1][1][0]["__dict__"]
            if pair[0] == "lr"
        ],
    ),
    "step beyond the run": lambda p: _rewrite(p, lambda s: _set(s, "step", 99)),
    "short history": lambda p: _rewrite(p, lambda s: _set(s, "history", [])),
    "extra key": lambda p: _rewrite(p, lambda s: s["__dict__"].append(["code", "rm -rf /"])),
    "deep nesting": lambda p: _rewrite(
        p, meta={"lcc_lens.training_state": "[" * 100000 + "]" * 100000}
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_checkpoint_is_refused_clearly(setup, tmp_path, case):
    path = _legit(setup, tmp_path / "run")
    CASES[case](path)
    with pytest.raises(CheckpointError) as err:
        _resume(setup, tmp_path / "run")
    assert "checkpoint" in str(err.value) or "--resume" in str(err.value)


def test_the_legit_checkpoint_loads_without_pickle(setup, tmp_path):
    path = _legit(setup, tmp_path / "run")
    state = load_checkpoint(path)
    assert state["step"] == CFG.steps and len(state["history"]) == CFG.steps
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["format"] == FORMAT
