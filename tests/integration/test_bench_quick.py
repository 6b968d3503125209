"""``lcc bench --quick``: every method end to end on a tiny random model, resume, outputs, CLI.

``--quick`` runs every registered method, the zero-keeping peers too (a full run leaves them out unless
``--methods`` names them: the committed tables predate them)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from lcc_lens.bench import BenchConfig, run_bench
from lcc_lens.bench.config import QUICK_SETTING
from lcc_lens.bench.results import GAP_KEYS, markdown_table
from lcc_lens.bench.summary import SUMMARY_NAME, load_payloads, summary_markdown
from lcc_lens.fit import FitConfig
from lcc_lens.methods import METHOD_NAMES, ZERO_KEEPING_PEERS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(quick=True, out=str(root / "out"), cache_dir=str(root / "cache"))
    t0 = time.perf_counter()
    payloads = run_bench(cfg)
    return cfg, payloads[0], time.perf_counter() - t0


def _gap(payload, method):
    g = {r["method"]: r for r in payload["rows"]}[method]["ood_nll_gap_closed"]
    return f"{g['mean']:.1%} ± {g['sd']:.1%} (n=2)"


def test_quick_runs_every_method_with_the_required_fields(quick):
    _cfg, payload, seconds = quick
    rows = {r["method"]: r for r in payload["rows"]}
    assert list(rows) == ["dense", "pruned", *METHOD_NAMES]
    for name in METHOD_NAMES:
        row = rows[name]
        for key in GAP_KEYS:
            assert set(row[key]) >= {"mean", "sd", "seeds"}
            assert len(row[key]["seeds"]) == 2
        assert row["ood_nll_gap_closed"]["mean"] is not None
        assert row["merged_forward_ratio"]["mean"] > 0
        assert row["fit_seconds"]["mean"] >= 0
        assert row["peak_memory_mb"]["mean"] is not None
        # the fit's export check: the merged model against the attached method, fp32
        assert row["export_max_abs_logit_diff"] < 1e-4, name
    # the fit's default: a free offset on each of the 3 x 4 heads of d_head 16
    assert rows["lcc"]["trainable_params"] == 3 * 4 * 16
    # the paper's form: 25 % of the heads (3), beta and b of 16 each
    assert rows["lcc_paper"]["trainable_params"] == 3 * 2 * 16
    assert rows["lost_component"]["trainable_params"] == 0
    assert rows["lora_r8"]["trainable_params"] > 50 * rows["lcc"]["trainable_params"]
    assert rows["lora_matched"]["trainable_params"] < 2 * rows["lcc"]["trainable_params"]
    # the zero-keeping peers: r = 8 on q, k, v, o has LoRA r8's count; matched is near lcc's
    assert rows["masked_lora_r8"]["trainable_params"] == rows["lora_r8"]["trainable_params"]
    assert rows["spp_r8"]["trainable_params"] == rows["lora_r8"]["trainable_params"]
    assert rows["masked_lora_matched"]["trainable_params"] < 2 * rows["lcc"]["trainable_params"]
    # 3 layers of d_model 64: o_proj and down_proj biases, 2 RMSNorms per layer and the final one
    assert rows["perp_bias_norm"]["trainable_params"] == 3 * 2 * 64 + 7 * 64
    assert rows["masked_full_ft"]["trainable_params"] > rows["lora_r8"]["trainable_params"]
    # every method trains on the fit's own examples: corpus plus self-written text
    assert payload["training_text"]["fit_text"] == FitConfig().data.fit_text == "corpus_self"
    assert payload["training_text"]["examples_per_seed_run_here"] == {0: 24, 1: 24}
    print(f"quick benchmark: {seconds:.1f} s")


def test_sparsity_kept_is_measured(quick):
    _cfg, payload, _ = quick
    rows = {r["method"]: r for r in payload["rows"]}
    assert rows["pruned"]["sparsity_kept"] == 1.0
    assert rows["dense"]["sparsity_kept"] < 0.01  # the dense weights are not zero there
    head_level = ("lcc", "lcc_paper", "lofit", "mean_bias", "lost_component", "bias_all_heads")
    for name in (*head_level, *ZERO_KEEPING_PEERS):
        assert rows[name]["sparsity_kept"]["mean"] == 1.0, name
    for name in ("lora_r8", "dora_r8", "lora_matched", "dora_matched"):
        assert rows[name]["sparsity_kept"]["mean"] < 1.0


def test_peers_moved_the_model(quick):
    """Each zero-keeping peer's merged export scores differently from the pruned model on every seed."""
    _cfg, payload, _ = quick
    rows = {r["method"]: r for r in payload["rows"]}
    for name in ZERO_KEEPING_PEERS:
        gap = rows[name]["ood_nll_gap_closed"]["seeds"]
        assert all(g is not None and g != 0.0 for g in gap), (name, gap)


def test_outputs_are_generated_from_the_json(quick):
    cfg, payload, _ = quick
    stem = Path(cfg.out) / QUICK_SETTING
    stored = json.loads(stem.with_suffix(".json").read_text())
    assert stored["format"] == "lcc_lens.bench/1"
    assert stem.with_suffix(".md").read_text() == markdown_table(stored)
    assert "plotly" in stem.with_suffix(".html").read_text()
    assert stored["rows"] == json.loads(json.dumps(payload["rows"]))
    summary = (Path(cfg.out) / SUMMARY_NAME).read_text()
    assert summary == summary_markdown(load_payloads(Path(cfg.out)))
    assert f"| `lcc` | {_gap(stored, 'lcc')}" in summary


def test_resume_uses_the_cache_and_same_seed_is_deterministic(quick, monkeypatch, tmp_path):
    cfg, payload, _ = quick

    def refuse(*args, **kwargs):
        raise AssertionError("a finished (method, seed) was recomputed")

    import lcc_lens.bench.run as run_mod

    with monkeypatch.context() as m:
        m.setattr(run_mod, "run_method", refuse)
        again = run_bench(cfg)[0]
    assert again["rows"] == payload["rows"]
    from dataclasses import replace

    fresh = replace(cfg, methods=("lcc_random_heads",), seeds=(0,), cache_dir=str(tmp_path / "c"))
    fresh = replace(fresh, out=str(tmp_path / "o"))
    rerun = {r["method"]: r for r in run_bench(fresh)[0]["rows"]}["lcc_random_heads"]
    before = {r["method"]: r for r in payload["rows"]}["lcc_random_heads"]
    assert rerun["ood_nll_gap_closed"]["seeds"][0] == pytest.approx(
        before["ood_nll_gap_closed"]["seeds"][0], abs=1e-9
    )


def test_a_foreign_output_file_is_never_replaced(quick, tmp_path):
    from dataclasses import replace

    from lcc_lens.errors import OwnershipError

    cfg, _, _ = quick
    out = tmp_path / "mine"
    out.mkdir()
    foreign = out / f"{QUICK_SETTING}.json"
    foreign.write_text('{"my": "notes"}')
    with pytest.raises(OwnershipError):
        run_bench(replace(cfg, out=str(out)))
    assert foreign.read_text() == '{"my": "notes"}'


def test_a_foreign_summary_is_never_replaced_and_nothing_is_written(quick, tmp_path):
    from dataclasses import replace

    from lcc_lens.errors import OwnershipError

    cfg, _, _ = quick
    out = tmp_path / "mine"
    out.mkdir()
    (out / SUMMARY_NAME).write_text("my summary")
    with pytest.raises(OwnershipError, match="summary.md"):
        run_bench(replace(cfg, out=str(out)))
    assert (out / SUMMARY_NAME).read_text() == "my summary"
    assert sorted(p.name for p in out.iterdir()) == [SUMMARY_NAME]


@pytest.fixture
def restore_logging():
    """The CLI logs to the stderr it finds (capsys's); take its handler off again afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_cli_exit_codes(quick, capsys, restore_logging):
    from lcc_lens.cli.bench import main

    cfg, _, _ = quick
    assert main(["--methods", "qlora"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["--seeds", "1,1"]) == 2
    argv = ["--quick", "--out", cfg.out, "--cache-dir", cfg.cache_dir, "--methods", "lcc"]
    assert main(argv) == 0
    assert "lcc" in capsys.readouterr().out
