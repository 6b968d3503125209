"""The analysis scripts' argument parsing (argv -> frozen config), without running them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(
        f"analysis.{name}", ROOT / "analysis" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_ablations_parse_defaults_and_overrides(tmp_path):
    mod = _load("ablations")
    cfg = mod.parse_args([])
    assert cfg.setup.dense == "embedded" and cfg.steps == 16 and cfg.only == ()
    assert cfg.objective == "lm"  # the paper's objective and the library's default
    common = _load("common")
    fit = common.fit_record(
        mod.TrainConfig(objective=cfg.objective, steps=3), cfg.setup, fraction=0.1
    )
    assert (fit["objective"], fit["steps"], fit["fraction"]) == ("lm", 3, 0.1)
    assert fit["setup"]["n_train"] == cfg.setup.n_train
    assert common.describe_fit(fit).startswith("objective lm, 3 steps of batch")
    cfg = mod.parse_args(
        [
            "--steps",
            "3",
            "--n-train",
            "32",
            "--max-length",
            "64",
            "--only",
            "base,k10",
            "--out",
            str(tmp_path),
        ]
    )
    assert (cfg.steps, cfg.setup.n_train, cfg.setup.max_length) == (3, 32, 64)
    assert cfg.setup.n_diff == 32 and cfg.only == ("base", "k10") and cfg.out == tmp_path
    assert [mod.VARIANTS[mod.SHORT[s]].k for s in cfg.only] == [1, 10]


def test_ablations_rejects_unknown_variant():
    mod = _load("ablations")
    with pytest.raises(SystemExit):
        mod.parse_args(["--only", "base,nonsense"])


def test_findings_parse(tmp_path):
    mod = _load("findings")
    cfg = mod.parse_args(["--out", str(tmp_path), "--no-reuse", "--batch-size", "4"])
    assert cfg.reuse is None and cfg.batch_size == 4 and cfg.out == tmp_path
    assert cfg.objective == "lm"
    assert mod.parse_args(["--objective", "kl"]).objective == "kl"
    assert mod.parse_args(["--out", str(tmp_path)]).reuse == tmp_path / "base_fit"


def test_markdown_table():
    common = _load("common")
    text = common.markdown_table([{"a": 1.23456, "b": "x"}, {"a": float("nan")}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x |", "| nan |  |"]


def test_ablations_report_only_from_rows(tmp_path):
    import json

    from lcc_lens.tiny import save_tiny_checkpoint

    mod = _load("ablations")
    dense = save_tiny_checkpoint(tmp_path / "dense", "llama", seed=1)
    row = {
        "variant": mod.VARIANTS[0].name,
        "heads": "27 / 270",
        "K": 1,
        "trainable params": 3456,
        "final train loss": 0.5,
        "held-out PPL": 27.0,
        "gap closed": 0.25,
        "seconds": 60.0,
    }
    (tmp_path / "ablations.jsonl").write_text(json.dumps(row) + "\n")
    argv = ["--report-only", "--out", str(tmp_path), "--dense", str(dense)]
    with pytest.raises(Exception, match="ppl-dense"):
        mod.report_only(mod.parse_args(argv))
    cfg = mod.parse_args([*argv, "--ppl-dense", "17.0", "--ppl-pruned", "31.0"])
    text = mod.report_only(cfg).read_text()
    assert "| 27 |" in text and "0.25" in text and "Dense held-out PPL 17" in text
    assert "Not in this run" in text and "selection: random" in text
    # the log-perplexity gap is recomputed from the perplexities: ln(31/27) / ln(31/17)
    assert "gap closed (NLL)" in text and "| 0.23 |" in text
    assert (tmp_path / "figures" / "ablations_gap.html").is_file()
