"""The pruning CLI (`lcc prune` / `python -m lcc_lens.prune`) on a tiny checkpoint: argument parsing, a full run, the cache, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lcc_lens.errors import ConfigError
from lcc_lens.prune import main, parse
from lcc_lens.pruning import PruneConfig, PruneReport, cached_pruned_checkpoint, pruned_cache_key
from lcc_lens.tiny import save_tiny_checkpoint

FAST = ["--n-samples", "4", "--seq-len", "32", "--batch-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("prune") / "dense", "llama", seed=11)


def test_parse_args_builds_the_config(tmp_path):
    args = parse(
        [
            "--model",
            "embedded",
            "--method",
            "sparsegpt",
            "--pattern",
            "4:8",
            "--out",
            str(tmp_path / "o"),
            "--layers",
            r"mlp\.",
            "--n-samples",
            "16",
            "--seq-len",
            "128",
            "--percdamp",
            "0.05",
        ]
    )
    assert args.dense == "embedded" and args.out == tmp_path / "o"
    cfg = args.prune
    assert (cfg.method, cfg.pattern, cfg.sparsity, cfg.target_sparsity) == (
        "sparsegpt",
        "4:8",
        None,
        0.5,
    )
    assert (cfg.include, cfg.n_samples, cfg.seq_len, cfg.percdamp) == (r"mlp\.", 16, 128, 0.05)
    default = parse(["--dense", "m", "--out", str(tmp_path / "p")]).prune
    assert (default.method, default.target_sparsity, default.pattern) == ("wanda", 0.5, None)
    assert default.to_dict()["sparsity"] == 0.5
    flap = parse(
        [
            "--model",
            "m",
            "--out",
            str(tmp_path / "q"),
            "--method",
            "flap",
            "--sparsity",
            "0.2",
            "--structured-mode",
            "remove",
            "--no-bias-compensation",
        ]
    ).prune
    assert flap.structured_mode == "remove" and not flap.bias_compensation


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sparsity", "1.5"], "strictly between 0 and 1"),
        (["--sparsity", "0"], "strictly between 0 and 1"),
        (["--pattern", "4:2"], "N:M"),
        (["--pattern", "2:4", "--sparsity", "0.3"], "contradicts"),
        (
            ["--method", "flap", "--structured-mode", "remove", "--ratio-mode", "adaptive"],
            "uniform",
        ),
    ],
)
def test_parse_args_rejects_bad_values(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse(["--model", "m", "--out", str(tmp_path / "o"), *extra])


def test_existing_output_needs_overwrite_and_lcc_ownership(ckpt, tmp_path, capsys):
    user = tmp_path / "o"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    argv = ["--dense", str(ckpt), "--method", "magnitude", "--out", str(user), "--quiet"]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 2  # a folder lcc_lens did not write is never replaced
    err = capsys.readouterr().err
    assert "did not write" in err and "keep.txt" in err
    assert sorted(p.name for p in user.iterdir()) == ["keep.txt"]
    assert parse([*argv, "--overwrite"]).overwrite  # parsing alone checks nothing on disk
    own = tmp_path / "own"
    assert main(["--dense", str(ckpt), "--method", "magnitude", "--out", str(own), "--quiet"]) == 0
    assert main(["--dense", str(ckpt), "--method", "magnitude", "--out", str(own), "--quiet"]) == 2
    rc = main(
        ["--dense", str(ckpt), "--method", "magnitude", "--sparsity", "0.25", "--out", str(own)]
        + ["--quiet", "--overwrite"]
    )
    assert rc == 0
    assert json.loads((own / "prune_report.json").read_text())["config"]["sparsity"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "own"]  # no temporary left


def test_cli_writes_checkpoint_and_report(ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "wanda24"
    rc = main(
        ["--model", str(ckpt), "--method", "wanda", "--pattern", "2:4", "--out", str(out), *FAST]
    )
    assert rc == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "wanda" and report["config"]["pattern"] == "2:4"
    assert report["total_sparsity"] == pytest.approx(0.5)
    assert len(report["modules"]) == 3 * 7 and all(m["sparsity"] == 0.5 for m in report["modules"])
    assert (
        report["calibration"]["split"] == "calibration" and report["calibration"]["n_samples"] == 4
    )
    assert report["model"]["fingerprint"] and report["seconds"] > 0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    w = model.model.layers[1].mlp.down_proj.weight
    assert ((w == 0).view(w.shape[0], -1, 4).sum(-1) == 2).all()
    assert PruneReport.load(out).total_sparsity == pytest.approx(0.5)


def test_python_dash_m_entry_point(ckpt, tmp_path):
    out = tmp_path / "mag"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lcc_lens.prune",
            "--model",
            str(ckpt),
            "--method",
            "magnitude",
            "--sparsity",
            "0.25",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "total sparsity 0.2500" in proc.stdout
    assert (out / "config.json").is_file() and (out / "prune_report.json").is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sparsity", "1.2"], "strictly between 0 and 1"),
        (["--pattern", "5:4"], "N:M"),
        (["--layers", "no_such_module"], "matches no linear layer"),
        (["--calibration", "/nonexistent/calib.txt"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_nonzero_and_writes_nothing(ckpt, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc = main(["--model", str(ckpt), "--out", str(out), *FAST, *extra])
    assert rc != 0
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind


def test_cli_model_without_expected_modules(tmp_path, capsys):
    gpt2 = save_tiny_checkpoint(tmp_path / "gpt2", "gpt2", seed=1)
    out = tmp_path / "out"
    rc = main(
        ["--model", str(gpt2), "--method", "flap", "--sparsity", "0.2", "--out", str(out), *FAST]
    )
    assert rc != 0 and "Llama-style" in capsys.readouterr().err
    assert not out.exists()
    rc = main(["--model", str(tmp_path / "missing"), "--out", str(out), *FAST])
    assert rc != 0 and "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2"]


def test_cached_pruned_checkpoint_prunes_once(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("LCC_LENS_CACHE", str(tmp_path / "cache"))
    cfg = PruneConfig(method="sparsegpt", sparsity=0.5, n_samples=4, seq_len=32, batch_size=2)
    first = cached_pruned_checkpoint(ckpt, cfg, show_progress=False)
    stamp = (first / "prune_report.json").stat().st_mtime_ns
    again = cached_pruned_checkpoint(ckpt, cfg, show_progress=False)
    assert again == first and (again / "prune_report.json").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "cache" / "pruned"
    other = PruneConfig(method="sparsegpt", sparsity=0.5, n_samples=4, seq_len=32, seed=1)
    assert pruned_cache_key(ckpt, other) != pruned_cache_key(ckpt, cfg)
    # batch size and device do not change the key
    same = PruneConfig(method="sparsegpt", sparsity=0.5, n_samples=4, seq_len=32, batch_size=4)
    assert pruned_cache_key(ckpt, same) == pruned_cache_key(ckpt, cfg)
