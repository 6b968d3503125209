"""Data-parallel training on torch.distributed: 2 gloo processes on CPU equal one process.

The test launches this file under ``torchrun --nproc_per_node 2`` (the real launcher and process group);
run as a script, the file is the worker. ``batch_size`` is the global batch, so the two-process run must
reach the single-process offsets (within 1e-5), and a two-process run interrupted after step 2 and
resumed by a new two-process launch must reach the uninterrupted two-process offsets exactly.
"""

from __future__ import annotations

import contextlib
import json
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
    data = encode(pair.tokenizer, load_examples("offline", n=10, seed=5), 64)
    directions = torch.linalg.qr(
        torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    )[0].transpose(-1, -2)
    comp = Compensation(pair.geometry, [(0, 1), (1, 0), (1, 3), (2, 2)], directions)
    cfg = TrainConfig(
        objective="mix", steps=STEPS, batch_size=5, grad_accum=2, lr=3e-2, checkpoint_every=1
    )
    return pair, comp, data[:8], data[8:], cfg


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
        pair, comp, train_data, val, cfg = _setup(dense, pruned)
        stages = _stages(pair)
        if ctx.is_main:
            from safetensors.torch import save_file

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


def test_two_processes_equal_one_and_resume(llama_pair_dirs, tmp_path):
    from safetensors.torch import load_file

    from lcc_lens.training import train

    dense, pruned = llama_pair_dirs
    pair, comp, train_data, val, cfg = _setup(str(dense), str(pruned))
    single_history = train(pair, comp, train_data, val, cfg)
    single = comp.z_offsets().detach()
    assert single.abs().max() > 1e-3  # the fit moved the offsets
    single_stages = _stages(pair)

    _torchrun(dense, pruned, tmp_path, "full")
    gathered = load_file(str(tmp_path / "stages.safetensors"))
    for name, value in single_stages.items():  # every rank streamed its shard; the merge is global
        assert gathered[name].shape == value.shape, name
        assert torch.allclose(gathered[name], value, atol=1e-5, rtol=1e-5), name
    full = load_file(str(tmp_path / "full.safetensors"))["z_offsets"]
    assert torch.allclose(full, single, atol=1e-5, rtol=0), (full - single).abs().max()
    history = json.loads((tmp_path / "full.json").read_text())
    assert [round(h["loss"], 4) for h in history] == [round(h["loss"], 4) for h in single_history]
    assert (tmp_path / "full" / "checkpoint.safetensors").is_file()

    # the stopped run left a checkpoint at step 2; a new 2-process launch finishes it exactly
    from lcc_lens.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors")["step"] == 2
    _torchrun(dense, pruned, tmp_path, "resume")
    resumed = load_file(str(tmp_path / "resumed.safetensors"))["z_offsets"]
    assert torch.equal(resumed, full)
    assert json.loads((tmp_path / "resumed.json").read_text()) == history


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
