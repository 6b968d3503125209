"""``lcc eval`` / ``python -m lcc_lens.eval``: argument parsing, a tiny end-to-end run, and bad input."""

from __future__ import annotations

import json

import pytest

from lcc_lens.errors import ConfigError
from lcc_lens.eval import main, parse, parse_args
from lcc_lens.evaluation.compare import compare, write_report
from lcc_lens.evaluation.harness import PAPER_TASKS
from lcc_lens.evaluation.suite import SUITE_TASKS
from lcc_lens.tiny import save_tiny_checkpoint


def test_parse_roles_labels_and_aliases():
    cfg = parse_args(
        ["--model", "embedded", "--model", "/p", "--model", "lcc=/r", "--model", "/r2"]
    )
    assert [(m.label, m.role, m.source) for m in cfg.models] == [
        ("dense", "dense", "embedded"),
        ("pruned", "pruned", "/p"),
        ("lcc", "restored", "/r"),
        ("restored2", "restored", "/r2"),
    ]
    assert cfg.tasks == SUITE_TASKS and cfg.limit is None and cfg.batch_size == 8
    cfg = parse_args(["--model", "a", "--tasks", "paper,lcc_last_word,boolq", "--limit", "50"])
    assert cfg.tasks == (*PAPER_TASKS, "lcc_last_word") and cfg.limit == 50
    assert isinstance(cfg.limit, int)
    cfg = parse_args(["--model", "a", "--tasks", "", "--perplexity", "heldout", "--limit", "0.5"])
    assert cfg.tasks == () and cfg.perplexity == "heldout" and cfg.limit == 0.5
    cfg = parse_args(
        ["--model", "a", "--out", "r.json", "--context-length", "128", "--max-windows", "4"]
    )
    assert str(cfg.out) == "r.json" and cfg.context_length == 128 and cfg.max_windows == 4


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model", "=x"], "malformed"),
        (["--model", "a", "--model", "a=b", "--model", "a=c"], "unique"),
        (["--model", "a", "--batch-size", "0"], "batch size"),
        (["--model", "a", "--tasks", ""], "nothing to evaluate"),
        (["--model", "a", "--limit", "-3"], "limit"),
    ],
)
def test_parse_rejects_bad_arguments(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_args(argv)


def test_parse_requires_a_model():
    with pytest.raises(ConfigError, match="no model given"):
        parse_args([])


def test_parse_named_roles_and_out_suffix(tmp_path):
    cfg = parse_args(["--dense", "d", "--pruned", "p", "--restored", "a", "--restored", "x=b"])
    assert [(m.label, m.role, m.source) for m in cfg.models] == [
        ("dense", "dense", "d"),
        ("pruned", "pruned", "p"),
        ("restored", "restored", "a"),
        ("x", "restored", "b"),
    ]
    with pytest.raises(ConfigError, match="either with --model"):
        parse_args(["--dense", "d", "--model", "p"])
    with pytest.raises(ConfigError, match=".json file path"):
        parse(["--dense", "d", "--out", str(tmp_path / "results")])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return [save_tiny_checkpoint(root / f"m{seed}", "llama", seed=seed) for seed in (0, 1, 2)]


def test_run_end_to_end_on_tiny_checkpoints(tmp_path, checkpoints):
    out = tmp_path / "res" / "results.json"
    argv = [f"--model={c}" for c in checkpoints] + [
        "--tasks",
        "lcc_last_word,lcc_next_passage",
        "--suite-items",
        "10",
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--perplexity",
        "heldout",
        "--max-windows",
        "2",
        "--context-length",
        "64",
        "--out",
        str(out),
    ]
    report = compare(parse_args(argv))
    write_report(report, out)
    saved = json.loads(out.read_text())
    assert saved["comparison"] == json.loads(json.dumps(report["comparison"]))
    assert [m["role"] for m in saved["models"]] == ["dense", "pruned", "restored"]
    rows = {(r["task"], r["metric"]): r for r in saved["comparison"]}
    assert set(rows) >= {
        ("lcc_last_word", "acc"),
        ("lcc_next_passage", "acc_norm"),
        ("perplexity", "ppl"),
    }
    ppl = rows[("perplexity", "ppl")]
    assert set(ppl["values"]) == {"dense", "pruned", "restored"}
    assert "restored" in ppl["gap_closed"]
    assert saved["models"][0]["perplexity"]["n_windows"] == 2
    table = out.with_suffix(".md").read_text()
    assert "gap closed (restored)" in table and "dense (dense)" in table
    # perplexity follows the evaluation protocol: out-of-domain test domain first, paired windows
    protocol = saved["protocol"]
    first = next(iter(protocol["domains"].values()))
    assert first["role"] == "test" and first["n_windows"] == 2
    assert saved["models"][0]["perplexity"]["domain"] == next(iter(protocol["domains"]))
    assert set(first["gap_closed"]["restored"]) == {"nll", "nll_low", "nll_high", "ppl"}
    assert "NLL gap closed restored" in table


def test_main_exit_codes_on_bad_input(tmp_path, checkpoints, capsys):
    not_ckpt = tmp_path / "empty_dir"
    not_ckpt.mkdir()
    out = tmp_path / "r.json"
    assert main(["--model", str(not_ckpt), "--out", str(out)]) == 2
    assert "not a Hugging Face checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    code = main(
        [
            "--model",
            str(checkpoints[0]),
            "--tasks",
            "",
            "--perplexity",
            str(empty),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "is empty" in capsys.readouterr().err
    code = main(["--model", str(checkpoints[0]), "--tasks", "lcc_nope", "--out", str(out)])
    assert code == 2 and "unknown lm-eval task 'lcc_nope'" in capsys.readouterr().err
    assert not out.exists()
