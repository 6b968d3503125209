"""Data-parallel training on torch.distributed: 2 gloo processes on CPU equal one process.

The test launches this file under ``torchrun --nproc_per_node 2`` (the real launcher and process group);
run as a script, the file is the worker. ``batch_size`` is the global batch. The examples' response
lengths differ, so the two ranks' shards of a micro-batch hold different numbers of target tokens: the
mean over ranks of per-rank means differs from the token-weighted mean, and only the latter reaches the
single-process gradient. One step's gradient on two processes must equal one process's (tight
tolerance); the two-process run must reach the single-process offsets and validation losses (within
1e-5; the validation set spans two batches, one per rank, of different token counts); and a
two-process run interrupted after step 2 and resumed by a new two-process launch must reach the
uninterrupted two-process offsets exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = 4


def _setup(dense: str, pruned: str):
    from lcc_lens.compensation import Compensation
    from lcc_lens.data import encode, load_examples
    from lcc_lens.models import ModelPair
    from lcc_lens.training import TrainConfig

    pair = ModelPair.load(dense, pruned)
    data = encode(pair.tokenizer, load_examples("offline", n=16, seed=5), 128)
    assert len(data) == 16 and len({sum(e.response_mask) for e in data}) > 8
    directions = torch.linalg.qr(
        torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    )[0].transpose(-1, -2)
    comp = Compensation(pair.geometry, [(0, 1), (1, 0), (1, 3), (2, 2)], directions)
    cfg = TrainConfig(
        objective="mix", steps=STEPS, batch_size=4, grad_accum=2, lr=3e-2, checkpoint_every=1
    )
    return pair, comp, data[:10], data[10:], cfg  # 2 epochs of 2 steps; 6 validation examples


def _step_grads(pair, comp, train_data, cfg) -> dict[str, torch.Tensor]:
    """The first optimizer step's gradient of every offset tensor, and the step's loss."""
    from lcc_lens.training import step_gradients

    loss = step_gradients(pair, comp, train_data, cfg, 0)
    grads = {n: p.grad.detach().clone() for n, p in comp.named_parameters() if p.requires_grad}
    return {**grads, "loss": torch.tensor(loss, dtype=torch.float64)}


def _stages(pair) -> dict[str, torch.Tensor]:
    """The head diffs (all positions, a small reservoir) and the probe features: sharded, gathered."""
    from lcc_lens.data import load_examples
    from lcc_lens.diff import DiffConfig, head_diffs
    from lcc_lens.probe_data import ProbeSample
    from lcc_lens.probing import ProbeConfig, probe_features

    examples = load_examples("offline", n=9, seed=7)
    cfg = DiffConfig(positions="all", batch_size=2, max_length=48, max_samples=40, seed=3)
    diff = head_diffs(pair, [e.prompt for e in examples], cfg)
    samples = [
        ProbeSample(e.prompt, e.response, examples[-1 - i].response) for i, e in enumerate(examples)
    ]
    probe = probe_features(
        pair.dense, pair.tokenizer, samples, ProbeConfig(batch_size=2, max_length=48)
    )
    return {
        "diff_samples": diff.samples,
        "dz_norm": diff.dz_norm,
        "mean_dz": diff.mean_dz,
        "n_positions": torch.tensor(diff.n_positions),
        "probe_delta": probe.delta,
    }


def _save(path: Path, comp, history) -> None:
    from safetensors.torch import save_file

    save_file({"z_offsets": comp.z_offsets().detach().contiguous()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(history))


def worker(dense: str, pruned: str, out: Path, mode: str) -> None:
    """One rank: ``full`` (an uninterrupted run, then one stopped after step 2) or ``resume``."""
    from lcc_lens import distributed
    from lcc_lens.training import train

    ctx = distributed.init_from_env("cpu")
    assert ctx.world_size == 2, ctx
    # a rank with nothing to contribute may send an empty tensor of another dtype
    rows = torch.ones(2, 3, dtype=torch.bfloat16) if ctx.is_main else torch.zeros(0, 3)
    got = distributed.gather_rows(rows)
    assert got.shape == (2, 3) and got.dtype == torch.bfloat16, (got.shape, got.dtype)
    assert distributed.gather_objects(ctx.rank) == [0, 1]
    if mode == "full":
        from safetensors.torch import save_file

        pair, comp, train_data, val, cfg = _setup(dense, pruned)
        grads = _step_grads(pair, comp, train_data, cfg)
        stages = _stages(pair)
        if ctx.is_main:
            save_file(grads, str(out / "grads.safetensors"))
            save_file(
                {k: v.contiguous() for k, v in stages.items()}, str(out / "stages.safetensors")
            )
        history = train(pair, comp, train_data, val, cfg, run_dir=out / "full")
        if ctx.is_main:
            _save(out / "full.safetensors", comp, history)

        class Stop(Exception):
            pass

        def stop(step: int, row: dict) -> None:
            if step == 2:
                raise Stop

        pair, comp, train_data, val, cfg = _setup(dense, pruned)
        with contextlib.suppress(Stop):
            train(pair, comp, train_data, val, cfg, run_dir=out / "resumed", on_step=stop)
    else:
        pair, comp, train_data, val, cfg = _setup(dense, pruned)
        history = train(pair, comp, train_data, val, cfg, run_dir=out / "resumed", resume=True)
        if ctx.is_main:
            _save(out / "resumed.safetensors", comp, history)
    distributed.barrier()
    distributed.shutdown()


def _torchrun(dense, pruned, out: Path, mode: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [__file__, str(dense), str(pruned), str(out), mode]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def two_process_run(llama_pair_dirs, tmp_path_factory) -> Path:
    """One 2-process launch of the worker's ``full`` mode, shared by the tests below."""
    dense, pruned = llama_pair_dirs
    out = tmp_path_factory.mktemp("two_processes")
    _torchrun(dense, pruned, out, "full")
    return out


def test_one_step_gradient_on_two_processes_equals_one(llama_pair_dirs, two_process_run):
    from safetensors.torch import load_file

    dense, pruned = llama_pair_dirs
    pair, comp, train_data, _, cfg = _setup(str(dense), str(pruned))
    single = _step_grads(pair, comp, train_data, cfg)
    two = load_file(str(two_process_run / "grads.safetensors"))
    assert sorted(two) == sorted(single)
    for name, value in single.items():
        assert value.abs().max() > 0, name
        assert torch.allclose(two[name], value, rtol=1e-5, atol=1e-9), (
            name,
            (two[name] - value).abs().max(),
        )


def test_two_processes_equal_one_and_resume(llama_pair_dirs, two_process_run):
    from safetensors.torch import load_file

    from lcc_lens.training import train

    dense, pruned = llama_pair_dirs
    out = two_process_run
    pair, comp, train_data, val, cfg = _setup(str(dense), str(pruned))
    single_history = train(pair, comp, train_data, val, cfg)
    single = comp.z_offsets().detach()
    assert single.abs().max() > 1e-3  # the fit moved the offsets
    single_stages = _stages(pair)

    gathered = load_file(str(out / "stages.safetensors"))
    for name, value in single_stages.items():  # every rank streamed its shard; the merge is global
        assert gathered[name].shape == value.shape, name
        assert torch.allclose(gathered[name], value, atol=1e-5, rtol=1e-5), name
    full = load_file(str(out / "full.safetensors"))["z_offsets"]
    assert torch.allclose(full, single, atol=1e-5, rtol=0), (full - single).abs().max()
    history = json.loads((out / "full.json").read_text())
    assert [round(h["loss"], 4) for h in history] == [round(h["loss"], 4) for h in single_history]
    # validation ran at both epoch ends, sharded over the ranks, and agrees with one process
    val_single = [h["val_loss"] for h in single_history if "val_loss" in h]
    val_two = [h["val_loss"] for h in history if "val_loss" in h]
    assert len(val_single) == 2 and all(math.isfinite(v) for v in val_single + val_two)
    assert val_two == pytest.approx(val_single, rel=1e-5, abs=0)
    assert (out / "full" / "checkpoint.safetensors").is_file()

    # the stopped run left a checkpoint at step 2; a new 2-process launch finishes it exactly
    from lcc_lens.checkpoint import load_checkpoint

    assert load_checkpoint(out / "resumed" / "checkpoint.safetensors")["step"] == 2
    _torchrun(dense, pruned, out, "resume")
    resumed = load_file(str(out / "resumed.safetensors"))["z_offsets"]
    assert torch.equal(resumed, full)
    assert json.loads((out / "resumed.json").read_text()) == history


if __name__ == "__main__":  # a rank under torchrun
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    "torchrun": ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # accelerate's multi-process launcher; on a machine without GPUs its ranks use gloo on CPU
    # (its --cpu flag with several processes expects MPI instead)
    "accelerate": [
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_fit_command_under_two_processes_equals_one(launcher, llama_pair_dirs, tmp_path):
    """`torchrun --nproc_per_node 2 -m lcc_lens.fit` and `accelerate launch --multi_gpu
    --num_processes 2 -m lcc_lens.fit`: diff, selection and training data-parallel, rank 0 writes
    the run directory and prints the summary; the offsets equal an in-process single fit within
    1e-5."""
    import yaml
    from safetensors.torch import load_file

    from lcc_lens.fit import FitConfig, fit

    dense, pruned = llama_pair_dirs
    settings = {
        "dense": str(dense),
        "pruned": str(pruned),
        "device": "cpu",
        "max_length": 96,
        "data": {"n_train": 16, "n_diff_prompts": 10, "n_probe": 8},
        "diff": {"batch_size": 2},
        "select": {"method": "norm", "n_heads": 4},
        "train": {"steps": 3, "batch_size": 5, "checkpoint_every": 1, "objective": "mix"},
        "eval": {"windows": 2, "context_length": 48, "bootstrap": 0},
    }
    single = fit(FitConfig.from_dict(settings)).compensation.z_offsets().detach()
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path.cwd()),
        "LCC_LENS_CACHE": str(tmp_path / "cache"),  # the two ranks compute the diff themselves
    }
    cmd = [sys.executable, "-m", *LAUNCHERS[launcher]]
    if launcher == "accelerate":
        cmd += ["--main_process_port", str(_free_port())]
    cmd += [
        "-m",
        "lcc_lens.fit",
        "--config",
        str(tmp_path / "run.yaml"),
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("held-out PPL") == 1, done.stdout  # rank 0 alone prints the summary
    two = load_file(str(tmp_path / "two" / "compensation.safetensors"))["z_offsets"]
    assert torch.allclose(two, single, atol=1e-5, rtol=0), (two - single).abs().max()
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["history"]
