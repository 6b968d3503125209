"""The analysis package: argument parsing, reports, and the ablations + findings run on a tiny pair."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lcc_lens.fit import FitConfig

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("ablations", "findings", "prune_perplexity", "benchmark_prune", "perplexity_agreement")


@pytest.fixture
def analysis(monkeypatch):
    """Import ``analysis.<name>`` as ``python -m`` does from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    return lambda name: importlib.import_module(f"analysis.{name}")


def test_ablations_parse_defaults_and_overrides(analysis, tmp_path):
    mod, common = analysis("ablations"), analysis("common")
    cfg = mod.parse_args([])
    assert cfg.fit.dense == "embedded" and cfg.fit.train.steps == 16 and cfg.only == ()
    assert cfg.fit.train.objective == "lm"  # the paper's objective and the library's default
    fit = common.fit_record(cfg.fit, fraction=0.1)
    assert (fit["objective"], fit["steps"], fit["fraction"]) == ("lm", 16, 0.1)
    assert fit["n_train"] == cfg.fit.data.n_train == 128
    assert common.describe_fit(fit).startswith("objective lm, 16 steps of batch")
    argv = ["--steps", "3", "--n-train", "32", "--max-length", "64", "--only", "base,k10"]
    cfg = mod.parse_args([*argv, "--out", str(tmp_path)])
    assert (cfg.fit.train.steps, cfg.fit.data.n_train, cfg.fit.max_length) == (3, 32, 64)
    assert cfg.fit.data.n_diff_prompts == 32 and cfg.only == ("base", "k10")
    assert cfg.out == tmp_path
    assert [mod.VARIANTS[mod.SHORT[s]].k for s in cfg.only] == [1, 10]
    v = mod.variant_config(cfg.fit, mod.VARIANTS[mod.SHORT["no_b"]])
    assert v.compensation.use_bias is False and v.train == cfg.fit.train


def test_ablations_rejects_unknown_variant(analysis):
    with pytest.raises(SystemExit):
        analysis("ablations").parse_args(["--only", "base,nonsense"])


def test_findings_parse(analysis, tmp_path):
    mod = analysis("findings")
    cfg = mod.parse_args(["--out", str(tmp_path), "--no-reuse", "--batch-size", "4"])
    assert cfg.reuse is None and cfg.fit.train.batch_size == 4 and cfg.out == tmp_path
    assert cfg.fit.train.objective == "lm"
    assert mod.parse_args(["--objective", "kl"]).fit.train.objective == "kl"
    assert mod.parse_args(["--out", str(tmp_path)]).reuse == tmp_path / "base_fit"


def test_markdown_table(analysis):
    text = analysis("common").markdown_table(
        [{"a": 1.23456, "b": "x"}, {"a": float("nan")}], ["a", "b"]
    )
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x |", "| nan |  |"]


def test_ablations_report_only_from_rows(analysis, tmp_path):
    from lcc_lens.tiny import save_tiny_checkpoint

    mod = analysis("ablations")
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


def test_ablations_then_findings_run_on_a_tiny_pair(analysis, llama_pair_dirs, tmp_path):
    """The scripts run end to end through the fit's stages; findings reuses the ablations' base fit."""
    dense, pruned = llama_pair_dirs
    fit = FitConfig.from_dict(
        {
            "dense": str(dense),
            "pruned": str(pruned),
            "device": "cpu",
            "max_length": 128,
            "data": {
                "n_train": 16,
                "n_diff_prompts": 8,
                "n_probe": 8,
                "fit_domains": ["python_docs"],  # three held-out domains instead of four
            },
            "probe": {"n_pairs": 12},
            "select": {"probe_permutations": 4, "probe_splits": 2},
            "train": {"steps": 2, "batch_size": 4},
            "eval": {"windows": 2, "context_length": 64, "bootstrap": 0},
        }
    )
    ablations = analysis("ablations")
    cfg = ablations.AblationConfig(fit, only=("base", "lc"), out=tmp_path)
    rows = ablations.run(cfg)
    assert [r["variant"] for r in rows] == [ablations.VARIANTS[i].name for i in (0, 10)]
    assert all(r["held-out PPL"] > 0 for r in rows)
    assert (tmp_path / "ablations.md").is_file() and (
        tmp_path / "base_fit" / "ranking.json"
    ).is_file()
    findings = analysis("findings")
    fcfg = findings.FindingsConfig(
        fit, n_task=4, n_heldout=4, component_windows=1, reuse=tmp_path / "base_fit", out=tmp_path
    )
    report = findings.run(fcfg).read_text()
    assert "the ablations' base fit" in report and "Logit lens" in report


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_run_as_modules(name):
    """``python -m analysis.<name> --help`` from the repository root (no sys.path edits)."""
    out = subprocess.run(
        [sys.executable, "-m", f"analysis.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout


def test_prune_perplexity_report_only_needs_its_record(analysis, tmp_path, capsys):
    mod = analysis("prune_perplexity")
    out = tmp_path / "pp.md"
    assert mod.main(["--report-only", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: no record at")
    assert not out.exists()


def test_race_parse_and_rate_choice_on_validation(analysis):
    mod = analysis("race")
    args = mod.parse_args(["--phase", "grid", "--methods", "lcc,masked_lora_r8", "--steps", "64"])
    assert args.methods == ("lcc", "masked_lora_r8") and args.steps == 64
    with pytest.raises(SystemExit):
        mod.parse_args(["--methods", "lcc,nonsense"])
    assert all(len(rates) == 3 for rates in mod.GRID.values())  # at least 3 rates per method
    cmd = mod.command("s", 16, ["lcc", "lora_r8"], {"lcc": 5e-3, "lora_r8": 3e-3}, (0,))
    assert "--method-lrs lcc=0.005,lora_r8=0.003" in cmd and "--seeds 0 " in cmd


def test_race_rate_is_chosen_on_validation_never_on_test(analysis, monkeypatch):
    mod = analysis("race")
    rows = [
        {"lr": 1e-3, mod.SELECT_ON: {"mean": 0.3}, mod.TEST: {"mean": 0.1}},
        {"lr": 1e-2, mod.SELECT_ON: {"mean": 0.2}, mod.TEST: {"mean": 0.5}},
    ]
    monkeypatch.setattr(mod, "grid_rows", lambda setting, steps: {"lcc": rows})
    assert mod.chosen_rates("s", 16) == {"lcc": 1e-3}


def test_race_pick_leaves_out_the_ceiling_and_dense_merges(analysis):
    mod = analysis("race")

    def row(test: float, params: int, kept: float) -> dict:
        return {
            "seeds": [0],
            mod.TEST: {"mean": test, "seeds": [test]},
            "trainable_params": params,
            "sparsity_kept": {"mean": kept},
        }

    rows = {
        "masked_full_ft": row(0.9, 10**8, 1.0),
        "lora_r8": row(0.8, 1000, 0.75),
        "masked_lora_r8": row(0.5, 1000, 1.0),
        "lcc": row(0.3, 100, 1.0),
    }
    lines = mod._pick_lines(rows, "speeches")
    assert "`masked_lora_r8`" in lines[0] and "masked_full_ft`: " not in lines[0]
    assert "(200): `lcc`, -50.0 points" in lines[1]
