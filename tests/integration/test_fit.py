"""The fit on tiny random models: zero heads, loss decrease, resume, run directory, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from lcc_lens.cli.fit import main, parse_args
from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.errors import ConfigError, IncompatibleModelsError, LccError
from lcc_lens.fit import FitConfig, fit
from lcc_lens.models import ModelPair
from lcc_lens.tiny import save_tiny_checkpoint
from lcc_lens.training import TrainConfig, train


@pytest.fixture(scope="module")
def base_config(llama_pair_dirs) -> FitConfig:
    dense, pruned = llama_pair_dirs
    return FitConfig(
        dense=str(dense),
        pruned=str(pruned),
        n_train=24,
        n_diff_prompts=12,
        n_probe=12,
        steps=4,
        batch_size=4,
        max_length=96,
        eval_windows=3,
        eval_context=64,
        device="cpu",
        checkpoint_every=1,
        heads="norm",
    )


def test_zero_heads_leave_the_model_unchanged(base_config, tmp_path):
    res = fit(replace(base_config, n_heads=0), tmp_path / "run")
    assert res.compensation.n_selected == 0
    assert res.history == []
    assert res.metrics["ppl_restored"] == res.metrics["ppl_pruned"]
    if res.metrics["ppl_pruned"] > res.metrics["ppl_dense"]:  # otherwise the gap is undefined (nan)
        assert res.metrics["gap_closed"] == 0.0 and res.metrics["gap_closed_nll"] == 0.0
    else:
        assert math.isnan(res.metrics["gap_closed"]) and math.isnan(res.metrics["gap_closed_nll"])
    assert torch.equal(
        load_file(str(tmp_path / "run" / "compensation.safetensors"))["z_offsets"],
        torch.zeros(3, 4, 16),
    )


def test_loss_decreases_on_a_fixed_batch(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    data = encode(pair.tokenizer, load_examples("offline", n=4), 96)
    comp = Compensation(
        pair.geometry, [(lay, h) for lay in range(3) for h in range(4)], None, use_directions=False
    )
    for objective in ("lm", "kl"):
        with torch.no_grad():
            comp.bias.zero_()
        cfg = TrainConfig(objective=objective, lr=5e-2, steps=12, batch_size=4, warmup_fraction=0.0)
        hist = train(pair, comp, data, data, cfg)
        assert hist[-1]["loss"] < 0.95 * hist[0]["loss"], (objective, [h["loss"] for h in hist])


def test_resume_reaches_the_same_parameters(base_config, tmp_path):
    cfg = replace(base_config, steps=5, heads="random", n_heads=4, grad_accum=2, batch_size=2)
    full = fit(cfg)
    run = tmp_path / "interrupted"

    class Stop(Exception):
        pass

    def interrupt(step, row):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, run, on_step=interrupt)
    assert (run / "checkpoint.pt").is_file()
    assert not (run / "model").exists()  # nothing final written by the interrupted run
    resumed = fit(cfg, run, resume=True)
    assert torch.equal(resumed.compensation.beta, full.compensation.beta)
    assert torch.equal(resumed.compensation.bias, full.compensation.bias)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    # a different configuration refuses to resume from this checkpoint
    with pytest.raises(LccError, match="another configuration"):
        fit(replace(cfg, lr=0.123), run, resume=True)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        fit(cfg, tmp_path / "fresh", resume=True)


def test_cli_run_directory(base_config, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "--dense",
            base_config.dense,
            "--pruned",
            str(base_config.pruned),
            "--out",
            str(out),
            "--n-train",
            "16",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--heads",
            "probe",
            "--n-heads",
            "3",
            "--eval-windows",
            "2",
            "--eval-context",
            "64",
            "--max-length",
            "96",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out PPL" in printed and "gap closed" in printed
    for name in (
        "config.yaml",
        "compensation.safetensors",
        "heads.json",
        "metrics.json",
        "model/config.json",
    ):
        assert (out / name).is_file(), name
    heads = json.loads((out / "heads.json").read_text())
    assert heads["n_selected"] == 3 and len(heads["ranking"]) == 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["export_max_abs_logit_diff"] < 1e-4
    assert len(metrics["history"]) == 2
    assert any(p.suffix == ".html" for p in (out / "plots").iterdir())
    again = parse_args(["--config", str(out / "config.yaml")])
    assert again.config.steps == 2 and again.config.n_heads == 3


def test_parse_args_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\nsteps: 7\nheads: kl\n")
    a = parse_args(["--config", str(cfg), "--steps", "3"])
    assert (a.config.lr, a.config.steps, a.config.heads) == (0.5, 3, "kl")
    assert parse_args(["--steps", "none", "--epochs", "2"]).config.steps is None
    assert parse_args([]).config == FitConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown config keys"):
        parse_args(["--config", str(bad)])
    with pytest.raises(ConfigError, match="lr must be"):
        parse_args(["--lr", "0"])


def test_cli_bad_inputs_exit_nonzero_and_write_nothing(base_config, tmp_path, capsys):
    other = save_tiny_checkpoint(tmp_path / "other", "llama", n_heads=2, n_kv_heads=1)
    out = tmp_path / "out"
    common = ["--device", "cpu", "--steps", "1", "--out", str(out)]
    assert main(["--dense", base_config.dense, "--pruned", str(other), *common]) == 1
    assert "cannot be paired" in capsys.readouterr().err
    assert (
        main(
            [
                "--dense",
                base_config.dense,
                "--pruned",
                str(base_config.pruned),
                "--n-heads",
                "99",
                *common,
            ]
        )
        == 1
    )
    assert "only 12" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert (
        main(
            [
                "--dense",
                base_config.dense,
                "--pruned",
                str(base_config.pruned),
                "--data",
                str(empty),
                *common,
            ]
        )
        == 1
    )
    assert "empty" in capsys.readouterr().err
    assert (
        main(
            ["--dense", base_config.dense, "--pruned", str(base_config.pruned), "--resume", *common]
        )
        == 1
    )
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--dense", base_config.dense, "--lr", "-1"]) == 2
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(IncompatibleModelsError):
        fit(replace(base_config, pruned=str(other)))


def test_module_entry_point_runs_as_a_program():
    import subprocess
    import sys

    ok = subprocess.run(
        [sys.executable, "-m", "lcc_lens.fit", "--help"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "--objective" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lcc_lens.fit", "--lr", "-1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "lr must be > 0" in bad.stderr
