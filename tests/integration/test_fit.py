"""The fit on tiny random models: zero heads, loss decrease, resume, run directory, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from lcc_lens.atomic import OWNER_FILE
from lcc_lens.cli.fit import main, parse_args
from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.errors import ConfigError, IncompatibleModelsError, LccError, OwnershipError
from lcc_lens.fit import FitConfig, FitDivergedError, fit
from lcc_lens.fit.run_dir import COMPLETE_FILE, PLOT_OUTPUTS
from lcc_lens.models import ModelPair
from lcc_lens.tiny import save_tiny_checkpoint
from lcc_lens.training import TrainConfig, has_checkpoint, train


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


@pytest.fixture(scope="module")
def base(llama_pair_dirs) -> dict[str, Any]:
    """A small fit on the tiny llama pair, as the nested mapping a YAML file would hold."""
    dense, pruned = llama_pair_dirs
    return {
        "dense": str(dense),
        "pruned": str(pruned),
        "device": "cpu",
        "max_length": 96,
        "data": {"n_train": 24, "n_diff_prompts": 12, "n_probe": 12},
        "select": {"method": "norm"},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 1},
        "eval": {"windows": 3, "context_length": 64, "bootstrap": 0},
    }


def cfg(base: dict[str, Any], **over: Any) -> FitConfig:
    return FitConfig.from_dict(_merge(base, over))


def test_zero_heads_leave_the_model_unchanged(base, tmp_path):
    res = fit(cfg(base, select={"n_heads": 0}), tmp_path / "run")
    assert res.compensation.n_selected == 0
    assert res.history == []
    head = res.metrics.headline
    assert head.ppl["restored"] == head.ppl["pruned"]
    if head.ppl["pruned"] > head.ppl["dense"]:  # otherwise the gap is undefined (nan)
        assert head.gap_closed == 0.0 and head.gap_closed_nll == 0.0
    else:
        assert math.isnan(head.gap_closed) and math.isnan(head.gap_closed_nll)
    assert torch.equal(
        load_file(str(tmp_path / "run" / "compensation.safetensors"))["z_offsets"],
        torch.zeros(3, 4, 16),
    )
    assert (tmp_path / "run" / COMPLETE_FILE).is_file()


def test_loss_decreases_on_a_fixed_batch(llama_pair_dirs):
    pair = ModelPair.load(*llama_pair_dirs)
    data = encode(pair.tokenizer, load_examples("offline", n=4), 96)
    comp = Compensation(
        pair.geometry, [(lay, h) for lay in range(3) for h in range(4)], None, use_directions=False
    )
    for objective in ("lm", "kl"):
        with torch.no_grad():
            comp.bias.zero_()
        tcfg = TrainConfig(
            objective=objective, lr=5e-2, steps=12, batch_size=4, warmup_fraction=0.0
        )
        hist = train(pair, comp, data, data, tcfg)
        assert hist[-1]["loss"] < 0.95 * hist[0]["loss"], (objective, [h["loss"] for h in hist])


def test_resume_reaches_the_same_parameters(base, tmp_path):
    config = cfg(
        base,
        select={"method": "random", "n_heads": 4},
        train={"steps": 5, "grad_accum": 2, "batch_size": 2},
    )
    full = fit(config)
    run = tmp_path / "interrupted"

    class Stop(Exception):
        pass

    def interrupt(step, row):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(config, run, on_step=interrupt)
    assert has_checkpoint(run)
    assert not (run / "model").exists()  # nothing final written by the interrupted run
    assert not (run / COMPLETE_FILE).exists()
    resumed = fit(config, run, resume=True)
    assert torch.equal(resumed.compensation.beta, full.compensation.beta)
    assert torch.equal(resumed.compensation.bias, full.compensation.bias)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert (run / COMPLETE_FILE).is_file()
    # a finished run is not resumed again, nor silently refitted over
    with pytest.raises(ConfigError, match="already complete"):
        fit(config, run, resume=True)
    with pytest.raises(ConfigError, match="not empty"):
        fit(config, run)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        fit(config, tmp_path / "fresh", resume=True)


def test_resume_refuses_another_configuration(base, tmp_path):
    config = cfg(base, select={"method": "random", "n_heads": 4}, train={"steps": 3})
    run = tmp_path / "run"

    def interrupt(step, row):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, run, on_step=interrupt)
    with pytest.raises(LccError, match="another configuration"):
        fit(
            cfg(base, select={"method": "random", "n_heads": 4}, train={"steps": 3, "lr": 0.123}),
            run,
            resume=True,
        )


def test_overwrite_replaces_only_a_run_of_lcc_lens(base, tmp_path):
    config = cfg(base, select={"n_heads": 1}, train={"steps": 1})
    run = tmp_path / "run"
    fit(config, run)
    (run / "plots" / "restoration.png").write_text("from an earlier run")
    (run / "plots" / "mine.html").write_text("the user's")
    (run / "notes.txt").write_text("the user's, dropped into the run")
    fit(config, run, overwrite=True)
    assert not (run / "plots" / "restoration.png").exists()  # an earlier run's outputs never mix in
    assert (run / "plots" / "mine.html").read_text() == "the user's"
    assert (run / "notes.txt").read_text() == "the user's, dropped into the run"  # never deleted
    assert (run / COMPLETE_FILE).is_file() and (run / OWNER_FILE).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(OwnershipError):
        fit(config, mine, overwrite=True)
    with pytest.raises(ConfigError, match="not empty"):
        fit(config, mine)
    assert (mine / "notes.txt").read_text() == "the user's"


def test_an_export_that_overflows_its_dtype_is_refused(base, tmp_path):
    """Absurd learning rate: finite but huge offsets; the pruned checkpoint declares float16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    half = tmp_path / "pruned-fp16"
    model = AutoModelForCausalLM.from_pretrained(base["pruned"], dtype=torch.float16)
    model.save_pretrained(half)
    AutoTokenizer.from_pretrained(base["pruned"]).save_pretrained(half)
    wild = {"lr": 1e6, "steps": 3, "warmup_fraction": 0.0}
    over = dict(pruned=str(half), select={"n_heads": 12}, train=wild, worse_margin=1e3)
    run = tmp_path / "diverged"
    with pytest.raises(FitDivergedError, match="float16"):
        fit(cfg(base, **over), run)
    assert not (run / "model").exists() and not (run / "compensation.safetensors").exists()
    assert not (run / COMPLETE_FILE).exists() and has_checkpoint(run)  # resumable, not "done"
    res = fit(cfg(base, allow_worse=True, **over), tmp_path / "forced")
    assert (tmp_path / "forced" / "model" / "config.json").is_file()
    assert float(res.compensation.z_offsets().detach().abs().max()) > 1e4


def test_lengths_beyond_the_model_are_refused_before_training(base, tmp_path):
    with pytest.raises(
        ConfigError, match=r"eval.context_length=4096 exceeds the model's 256 positions"
    ):
        fit(cfg(base, eval={"context_length": 4096}), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_config_round_trips_and_rejects_bad_yaml_values():
    import yaml

    c = FitConfig.from_dict({"train": {"lr": 0.5}, "select": {"n_heads": 3}, "seed": 4})
    assert c.train.steps == 48 and c.train.seed == 4 and c.select.seed == 4
    assert FitConfig.from_dict(yaml.safe_load(yaml.safe_dump(c.to_dict()))) == c
    for bad, match in (
        ({"select": {"n_heads": 2.5}}, "select.n_heads must be integer"),
        ({"train": {"lr": "fast"}}, "train.lr must be number"),
        ({"train": {"learning_rate": 1}}, "unknown field .train.learning_rate."),
        ({"data": {"seed": 1}}, "top-level 'seed'"),
        ({"compensation": {"use_bias": "yes"}}, "use_bias must be true/false"),
        ({"train": {"warmup_fraction": -0.1}}, "warmup_fraction"),
        ({"worse_margin": -1.0}, "worse_margin"),
    ):
        with pytest.raises(ConfigError, match=match):
            FitConfig.from_dict(bad)


def test_cli_run_directory(base, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--dense", base["dense"], "--pruned", base["pruned"], "--out", str(out)]
    argv += [
        "--n-train",
        "16",
        "--steps",
        "2",
        "--train-batch-size",
        "4",
        "--select-method",
        "probe",
    ]
    argv += [
        "--n-heads",
        "3",
        "--windows",
        "2",
        "--context-length",
        "64",
        "--n-pairs",
        "24",
        "--max-length",
        "96",
    ]
    argv += ["--device", "cpu"]
    rc = main(argv)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out PPL" in printed and "gap closed" in printed
    for name in (
        "config.yaml",
        "compensation.safetensors",
        "heads.json",
        "metrics.json",
        "model/config.json",
        COMPLETE_FILE,
    ):
        assert (out / name).is_file(), name
    heads = json.loads((out / "heads.json").read_text())
    assert heads["n_selected"] == 3 and len(heads["ranking"]) == 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["export_max_abs_logit_diff"] < 1e-4
    assert len(metrics["history"]) == 2
    assert metrics["data"]["n_train"] > 0
    stages = metrics["summary"]["stages"]  # every stage timed, in the order it ran
    assert list(stages) == [
        "prune", "load", "data", "lost_components", "selection", "training", "evaluation",
        "restoration",
        "export",
    ]  # fmt: skip
    assert all(s["seconds"] > 0 and s["peak_memory_mb"] > 0 for s in stages.values())
    assert sum(s["seconds"] for s in stages.values()) <= metrics["summary"]["wall_time_s"]
    plots = {p.name for p in (out / "plots").iterdir()}
    assert plots and plots <= PLOT_OUTPUTS  # what clearing a run removes there, and nothing else
    again = parse_args(["--config", str(out / "config.yaml")])
    assert again.config.train.steps == 2 and again.config.select.n_heads == 3
    assert main(argv) == 2  # the same --out again without --resume / --overwrite
    assert "not empty" in capsys.readouterr().err


def test_cli_bad_inputs_exit_nonzero_and_write_nothing(base, tmp_path, capsys):
    other = save_tiny_checkpoint(tmp_path / "other", "llama", n_heads=2, n_kv_heads=1)
    out = tmp_path / "out"
    common = ["--device", "cpu", "--steps", "1", "--out", str(out)]
    pair = ["--dense", base["dense"], "--pruned", base["pruned"]]
    assert main(["--dense", base["dense"], "--pruned", str(other), *common]) == 2
    assert "cannot be paired" in capsys.readouterr().err
    assert main([*pair, "--n-heads", "99", *common]) == 2
    assert "only 12" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main([*pair, "--source", str(empty), *common]) == 2
    assert "empty" in capsys.readouterr().err
    assert main([*pair, "--resume", *common]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--dense", base["dense"], "--lr", "-1"]) == 2
    assert not out.exists() or not any(p.name != OWNER_FILE for p in out.iterdir())
    with pytest.raises(IncompatibleModelsError):
        fit(cfg(base, pruned=str(other)))


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
    assert bad.returncode == 2 and "lr" in bad.stderr


def test_cli_family_fit_exports_exactly(base, tmp_path):
    """--compensate heads,mlp,norms,scales: every term trained, exported and reloaded exactly."""
    from lcc_lens.family import CompensationFamily, load_compensation

    out = tmp_path / "family"
    argv = ["--dense", base["dense"], "--pruned", base["pruned"], "--out", str(out)]
    argv += ["--n-train", "16", "--steps", "3", "--train-batch-size", "4", "--n-heads", "3"]
    argv += ["--windows", "2", "--context-length", "64", "--max-length", "96", "--device", "cpu"]
    argv += ["--select-method", "norm", "--compensate", "heads,mlp,norms,scales", "--lr", "1e-2"]
    assert main(argv) == 0
    comp = load_compensation(out / "compensation.safetensors")
    assert isinstance(comp, CompensationFamily) and comp.n_selected == 3
    for name in ("mlp_offset", "head_scale", "channel_scale"):
        assert getattr(comp, name).abs().max() > 0, name  # trained away from zero
    assert all(p.abs().max() > 0 for p in comp.norm_gain.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["export_max_abs_logit_diff"] < 1e-4
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["mlp_bias"] is True and config["attention_bias"] is True
    attribution = json.loads((out / "heads.json").read_text())["family_attribution"]
    assert set(attribution["loss_rise_removed"]) == {"heads", "mlp", "norms", "scales"}
    rows = attribution["per_layer"]
    assert len(rows) == 4 * 3 and all(math.isfinite(r["loss_rise"]) for r in rows)
    assert any(r["loss_rise"] != 0 for r in rows)
    assert (out / "plots" / "family_attribution.html").is_file()
    per_head = attribution["per_head"]
    assert {r["component"] for r in per_head} == {"heads", "scales"}
    assert sum(r["component"] == "heads" for r in per_head) <= 3  # the selected heads only


@pytest.mark.parametrize("method", ["perp_bias_norm", "masked_lora_r8", "lcc_lowrank"])
def test_cli_fit_of_a_peer_method_exports_exactly_and_keeps_zeros(base, tmp_path, method):
    """--method NAME trains a zero-keeping peer through the fit's stages and its one export path."""
    from safetensors.torch import load_file as read

    out = tmp_path / method
    argv = ["--dense", base["dense"], "--pruned", base["pruned"], "--out", str(out)]
    argv += ["--n-train", "16", "--steps", "3", "--train-batch-size", "4", "--method", method]
    argv += ["--windows", "2", "--context-length", "64", "--max-length", "96", "--device", "cpu"]
    argv += ["--lr", "5e-3"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["export_max_abs_logit_diff"] < 1e-4
    assert len(metrics["history"]) == 3
    assert not (out / "compensation.safetensors").exists()
    assert json.loads((out / "model" / "lcc_export.json").read_text())["method"] == method
    (pruned_file,) = Path(base["pruned"]).glob("*.safetensors")
    pruned = read(str(pruned_file))
    exported = read(str(out / "model" / "model.safetensors"))
    changed = False
    for name, w in pruned.items():
        if w.dim() == 2 and name in exported:
            assert (exported[name][w == 0] == 0).all(), name
            changed |= not torch.equal(exported[name], w)
    assert changed or method == "perp_bias_norm"  # biases and norms only: no weight matrix moves


@pytest.mark.parametrize(
    ("method", "message"),
    [("lora_r8", "benchmark-only: its merge fills the pruned zeros"), ("nope", "unknown method")],
)
def test_fit_refuses_methods_that_fill_zeros(base, method, message):
    with pytest.raises(ConfigError, match=message):
        cfg(base, method=method)
