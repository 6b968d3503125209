"""Hostile inputs (issue 12): every bad input to ``lcc fit``, ``lcc prune``, ``lcc eval`` and the library
gets a clear message naming the problem, a stable exit code (2 bad input, 1 failure, 130 Ctrl-C,
143 SIGTERM), no traceback, and leaves nothing behind and deletes nothing.

The command cases run in-process through :func:`lcc_lens.cli.main.main` on tiny random checkpoints;
only the signal cases start a subprocess. Each case snapshots its working folder (and the shared tiny
checkpoints) before and compares after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from lcc_lens.atomic import OWNER_FILE, atomic_dir, mark_owned
from lcc_lens.cache import CACHE_ENV, cache_root
from lcc_lens.cli.main import main
from lcc_lens.cli.policy import sigterm_raises
from lcc_lens.errors import (
    CheckpointError,
    CompensationFileError,
    ConfigError,
    DataError,
    Interrupted,
    OwnershipError,
    UnsafePathError,
)

PAYLOAD_FILE = "PWNED"


@dataclass
class Env:
    """The case's working folder and the shared tiny checkpoints."""

    tmp: Path
    dense: Path
    pruned: Path
    monkeypatch: pytest.MonkeyPatch | None = None
    undo: list[Callable[[], object]] = field(default_factory=list)

    def cache_here(self) -> Path:
        """Point lcc_lens's cache at ``cache/`` in the case's folder, for this test only."""
        assert self.monkeypatch is not None
        root = self.tmp / "cache"
        self.monkeypatch.setenv(CACHE_ENV, str(root))
        return root

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def user_folder(self, name: str = "mine") -> Path:
        """A folder with the user's own data in it."""
        folder = self.tmp / name
        folder.mkdir()
        (folder / "thesis.tex").write_text("years of work")
        (folder / "data").mkdir()
        (folder / "data" / "x.csv").write_text("1,2\n")
        return folder

    def broken_checkpoint(self, name: str, how: str) -> Path:
        """A copy of the tiny dense checkpoint, damaged ``how``."""
        target = self.tmp / name
        shutil.copytree(self.dense, target)
        if how == "truncated":
            weights = next(target.glob("*.safetensors"))
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 3])
        elif how == "config-types":
            cfg = json.loads((target / "config.json").read_text())
            cfg["num_hidden_layers"] = "three"
            cfg["hidden_size"] = [64]
            (target / "config.json").write_text(json.dumps(cfg))
        elif how == "config-json":
            (target / "config.json").write_text('{"model_type": "llama", ')
        else:  # pragma: no cover
            raise ValueError(how)
        return target


@dataclass(frozen=True)
class Case:
    """One hostile input: the command line (or library call), what must come out."""

    id: str
    argv: Callable[[Env], list[str]] | None
    code: int
    message: str
    setup: Callable[[Env], Any] | None = None
    call: Callable[[Env], Any] | None = None  # library case: must raise ``error``
    error: type[BaseException] | None = None
    owner: str = ""  # the helper whose module carries the fix (not the CLI)
    marks: tuple = field(default_factory=tuple)
    seconds: float | None = None  # the case must end within this many seconds (a crafted input)


BINARY = bytes(range(256)) * 4 + b"\xff\xfe\xc3\x28"


def PRUNE(env: Env, *extra: str) -> list[str]:
    out = ["prune", "--dense", str(env.dense), "--out", str(env.tmp / "pruned_out")]
    return [*out, "--n-samples", "2", "--seq-len", "16", "--batch-size", "2", "--quiet", *extra]


def EVAL(env: Env, *extra: str) -> list[str]:
    return ["eval", "--model", str(env.dense), "--tasks", "", *extra]


def FIT(env: Env, *extra: str) -> list[str]:
    return [
        "fit",
        "--dense",
        str(env.dense),
        "--pruned",
        str(env.pruned),
        "--device",
        "cpu",
        "--out",
        str(env.tmp / "run"),
        "--max-length",
        "128",
        "--n-train",
        "16",
        "--n-diff-prompts",
        "8",
        "--n-probe",
        "8",
        "--select-method",
        "norm",
        "--steps",
        "2",
        "--train-batch-size",
        "4",
        "--windows",
        "2",
        "--context-length",
        "32",
        *extra,
    ]


def _pickle_payload(target: Path) -> Any:
    """An object whose unpickling writes ``target``: what a crafted checkpoint would carry."""

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(target)!r}, 'w').write('pwned')",))

    return {"step": 3, "payload": Payload()}


def _planted_run(env: Env, name: str) -> Path:
    """A fit run directory carrying lcc_lens's marker and a crafted checkpoint."""
    run = env.tmp / "run"
    run.mkdir()
    mark_owned(run, "fit-run")
    (run / "config.yaml").write_text("seed: 0\n")
    torch.save(_pickle_payload(env.tmp / PAYLOAD_FILE), run / name)
    return run


def _bad_compensation(env: Env) -> Path:
    from safetensors.torch import save_file

    path = env.tmp / "compensation.safetensors"
    meta = {"format": "lcc_lens.compensation/1", "geometry": "{oops"}
    save_file({"z_offsets": torch.zeros(2, 2, 4)}, str(path), metadata=meta)
    return path


def _one_word(env: Env) -> Path:
    return env.file("one.txt", "hello")


# ---- run directories (issue 25 item 2, part B): helpers ---------------------------------------


def _model_copy(env: Env, name: str, *, owned: bool = False) -> Path:
    """A copy of the tiny pruned checkpoint in the case's folder; ``owned``: as lcc_lens writes one."""
    target = env.tmp / name
    shutil.copytree(env.pruned, target)
    if owned:
        mark_owned(target, "prune")
    return target


def _unloadable(env: Env) -> Path:
    """A dense checkpoint that passes the path checks but fails to load: a case that names another
    problem with it shows that problem was found before any model was loaded."""
    return env.broken_checkpoint("broken", "truncated")


def _earlier_run(env: Env, name: str = "run") -> Path:
    """A finished run as lcc_lens leaves it (model/ a real checkpoint), with the user's files in it."""
    run = env.tmp / name
    run.mkdir()
    mark_owned(run, "fit-run")
    for output in (
        "config.yaml",
        "heads.json",
        "metrics.json",
        "complete.json",
        "checkpoint.safetensors",
    ):
        (run / output).write_text(f"the earlier run's {output}")
    (run / "plots").mkdir()
    (run / "plots" / "perplexity.html").write_text("the earlier run's")
    (run / "plots" / "mine.html").write_text("the user's")
    shutil.copytree(env.pruned, run / "model")
    mark_owned(run / "model", "output")
    (run / "notes.txt").write_text("the user's")
    (run / ".plots.keep.tmp").mkdir()  # named like a temporary of lcc_lens's, without its marker
    (run / ".plots.keep.tmp" / "figure.png").write_bytes(b"the user's")
    return run


def _earlier_run_with_the_users_model(env: Env) -> Path:
    run = _earlier_run(env)
    shutil.rmtree(run / "model")
    (run / "model").mkdir()  # no marker: the user's own folder of that name
    (run / "model" / "weights.bin").write_bytes(b"the user's")
    return run


def _interrupted_run(env: Env) -> Path:
    """FIT (checkpoint every step) stopped after its first step, with a partial output of an export."""
    from lcc_lens.cli.fit import parse
    from lcc_lens.cli.policy import setup_logging
    from lcc_lens.fit import fit

    setup_logging()  # the handler an earlier case's command set up writes to that case's stderr
    args = parse(FIT(env, "--checkpoint-every", "1")[1:])

    def stop(step: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(args.config, args.out, on_step=stop)
    (args.out / "compensation.safetensors").write_bytes(b"partial")
    return args.out


def _read_only(env: Env) -> Path:
    """A folder nobody may write into: mode 0555, and immutable when the tests run as root (root
    ignores modes; ``chattr +i`` binds it too). The fixture makes it writable again afterwards."""
    _unloadable(env)
    folder = env.tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if _root():
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
        env.undo.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))
    return folder


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _user_folder_in_cache(env: Env) -> Path:
    (env.cache_here() / "pruned").mkdir(parents=True)
    return env.user_folder("cache/pruned/mine")


ROOT_WRITES_ANYWHERE = pytest.mark.skipif(
    _root() and shutil.which("chattr") is None,
    reason="root writes into read-only folders, and there is no chattr to make one immutable",
)


CASES: list[Case] = [
    # ---- lcc prune -----------------------------------------------------------------------------
    Case("prune-sparsity-above-1", lambda e: PRUNE(e, "--sparsity", "1.5"), 2, "strictly between"),
    Case(
        "prune-sparsity-negative", lambda e: PRUNE(e, "--sparsity", "-0.1"), 2, "strictly between"
    ),
    Case("prune-sparsity-word", lambda e: PRUNE(e, "--sparsity", "half"), 2, "--sparsity must be"),
    Case("prune-pattern-reversed", lambda e: PRUNE(e, "--pattern", "4:2"), 2, "N:M"),
    Case(
        "prune-pattern-with-flap",
        lambda e: PRUNE(e, "--method", "flap", "--pattern", "2:4"),
        2,
        "unstructured methods only",
    ),
    Case("prune-unknown-method", lambda e: PRUNE(e, "--method", "lottery"), 2, "must be one of"),
    Case("prune-zero-samples", lambda e: PRUNE(e, "--n-samples", "0"), 2, "positive integer"),
    Case("prune-percdamp-1", lambda e: PRUNE(e, "--percdamp", "1"), 2, "percdamp must lie"),
    Case(
        "prune-seq-len-beyond-positions",
        lambda e: PRUNE(e, "--seq-len", "100000"),
        2,
        "exceeds the 256 positions",
    ),
    Case("prune-bad-regex", lambda e: PRUNE(e, "--layers", "(mlp"), 2, "not a valid regular"),
    Case("prune-regex-matches-nothing", lambda e: PRUNE(e, "--layers", "nope"), 2, "matches no"),
    Case(
        "prune-calibration-missing",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "no.txt")),
        2,
        "does not exist",
    ),
    Case(
        "prune-calibration-binary-txt",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "bin.txt")),
        2,
        "not UTF-8",
        setup=lambda e: e.file("bin.txt", BINARY),
    ),
    Case(
        "prune-calibration-binary-json",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "bin.json")),
        2,
        "not UTF-8",
        setup=lambda e: e.file("bin.json", BINARY),
    ),
    Case(
        "prune-calibration-one-word",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "one.txt")),
        2,
        "fewer than one sequence",
        setup=_one_word,
    ),
    Case(
        "prune-calibration-bad-json",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "c.json")),
        2,
        "not valid JSON",
        setup=lambda e: e.file("c.json", '["a", '),
    ),
    Case(
        "prune-calibration-json-without-text",
        lambda e: PRUNE(e, "--calibration", str(e.tmp / "c.json")),
        2,
        "holds no texts",
        setup=lambda e: e.file("c.json", '[{"body": 1}]'),
    ),
    Case(
        "prune-model-missing",
        lambda e: [*PRUNE(e), "--dense", str(e.tmp / "nowhere")],
        2,
        "does not exist",
    ),
    Case(
        "prune-model-is-a-file",
        lambda e: [*PRUNE(e), "--dense", str(e.tmp / "m.bin")],
        2,
        "is a file",
        setup=lambda e: e.file("m.bin", b"\0" * 10),
    ),
    Case(
        "prune-model-without-config",
        lambda e: [*PRUNE(e), "--dense", str(e.tmp / "empty")],
        2,
        "no config.json",
        setup=lambda e: (e.tmp / "empty").mkdir(),
    ),
    Case(
        "prune-model-truncated-weights",
        lambda e: [*PRUNE(e, "--method", "magnitude"), "--dense", str(e.tmp / "broken")],
        2,
        "cannot load model",
        setup=lambda e: e.broken_checkpoint("broken", "truncated"),
        owner="H6",
    ),
    Case(
        "prune-model-config-wrong-types",
        lambda e: [*PRUNE(e, "--method", "magnitude"), "--dense", str(e.tmp / "broken")],
        2,
        "cannot (load|read)",
        setup=lambda e: e.broken_checkpoint("broken", "config-types"),
    ),
    Case(
        "prune-model-config-not-json",
        lambda e: [*PRUNE(e, "--method", "magnitude"), "--dense", str(e.tmp / "broken")],
        2,
        "cannot (load|read)",
        setup=lambda e: e.broken_checkpoint("broken", "config-json"),
    ),
    Case(
        "prune-out-user-folder",
        lambda e: [*PRUNE(e), "--out", str(e.tmp / "mine")],
        2,
        "--overwrite",
        setup=lambda e: e.user_folder(),
    ),
    Case(
        "prune-overwrite-user-folder",
        lambda e: [*PRUNE(e, "--overwrite"), "--out", str(e.tmp / "mine")],
        2,
        "did not write.*thesis.tex",
        setup=lambda e: e.user_folder(),
    ),
    Case(
        "prune-overwrite-user-file",
        lambda e: [*PRUNE(e, "--overwrite"), "--out", str(e.tmp / "notes.txt")],
        2,
        "existing file",
        setup=lambda e: e.file("notes.txt", "mine"),
    ),
    Case(
        "prune-out-under-a-file",
        lambda e: [*PRUNE(e), "--out", str(e.tmp / "notes.txt" / "out")],
        2,
        "is a file, not a directory",
        setup=lambda e: e.file("notes.txt", "mine"),
    ),
    Case(
        "prune-failure-creates-no-parent-folders",
        lambda e: [*PRUNE(e, "--layers", "nope"), "--out", str(e.tmp / "a" / "b" / "out")],
        2,
        "matches no",
    ),
    Case("prune-device-unknown", lambda e: PRUNE(e, "--device", "tpu"), 2, "not a device name"),
    Case(
        "prune-device-absent",
        lambda e: PRUNE(e, "--device", "cuda:7"),
        2,
        "CUDA",
        marks=(pytest.mark.skipif(torch.cuda.device_count() > 7, reason="8+ GPUs"),),
    ),
    Case(
        "prune-yaml-string-for-int",
        lambda e: [*PRUNE(e), "--config", str(e.tmp / "c.yaml")],
        2,
        "n_samples must be integer",
        setup=lambda e: e.file("c.yaml", "n_samples: '8'\n"),
    ),
    Case(
        "prune-yaml-fraction-for-int",
        lambda e: ["prune", "--config", str(e.tmp / "c.yaml")],
        2,
        "seq_len must be integer",
        setup=lambda e: e.file("c.yaml", f"dense: {e.dense}\nout: {e.tmp / 'o'}\nseq_len: 2.5\n"),
    ),
    Case(
        "prune-yaml-unknown-key",
        lambda e: [*PRUNE(e), "--config", str(e.tmp / "c.yaml")],
        2,
        "unknown field 'sparsty'.*did you mean 'sparsity'",
        setup=lambda e: e.file("c.yaml", "sparsty: 0.5\n"),
    ),
    Case(
        "prune-yaml-binary",
        lambda e: [*PRUNE(e), "--config", str(e.tmp / "c.yaml")],
        2,
        "not UTF-8",
        setup=lambda e: e.file("c.yaml", BINARY),
    ),
    Case(
        "prune-yaml-missing",
        lambda e: [*PRUNE(e), "--config", str(e.tmp / "none.yaml")],
        2,
        "does not exist",
    ),
    Case("prune-unknown-flag", lambda e: PRUNE(e, "--sparsity-level", "3"), 2, "unrecognized"),
    Case("prune-missing-out", lambda e: ["prune", "--dense", str(e.dense)], 2, "--out"),
    # ---- lcc eval ------------------------------------------------------------------------------
    Case(
        "eval-out-without-suffix",
        lambda e: EVAL(e, "--perplexity", "heldout", "--out", str(e.tmp / "results")),
        2,
        r"\.json file path",
    ),
    Case(
        "eval-out-is-a-folder",
        lambda e: EVAL(e, "--perplexity", "heldout", "--out", str(e.tmp / "r.json")),
        2,
        "is a directory",
        setup=lambda e: (e.tmp / "r.json").mkdir(),
    ),
    Case(
        "eval-out-exists",
        lambda e: EVAL(e, "--perplexity", "heldout", "--out", str(e.tmp / "r.json")),
        2,
        "already exists",
        setup=lambda e: e.file("r.json", "{}"),
    ),
    Case(
        "eval-suite-dir-user-folder",
        lambda e: ["eval", "--model", str(e.dense), "--suite-dir", str(e.tmp / "mine")],
        2,
        "did not write.*thesis.tex",
        setup=lambda e: e.user_folder(),
    ),
    Case(
        "eval-suite-items-too-small",
        lambda e: ["eval", "--model", str(e.dense), "--suite-items", "3"],
        2,
        "suite.items",
        owner="H4",
    ),
    Case(
        "eval-perplexity-binary",
        lambda e: EVAL(e, "--perplexity", str(e.tmp / "bin.txt")),
        2,
        "not UTF-8",
        setup=lambda e: e.file("bin.txt", BINARY),
    ),
    Case(
        "eval-perplexity-empty",
        lambda e: EVAL(e, "--perplexity", str(e.tmp / "e.txt")),
        2,
        "is empty",
        setup=lambda e: e.file("e.txt", " \n"),
    ),
    Case(
        "eval-perplexity-missing",
        lambda e: EVAL(e, "--perplexity", str(e.tmp / "none.txt")),
        2,
        "neither one of",
    ),
    Case("eval-nothing-to-do", lambda e: EVAL(e), 2, "nothing to evaluate"),
    Case(
        "eval-batch-size-0",
        lambda e: EVAL(e, "--perplexity", "heldout", "--batch-size", "0"),
        2,
        "batch size",
    ),
    Case(
        "eval-negative-limit",
        lambda e: EVAL(e, "--perplexity", "heldout", "--limit", "-3"),
        2,
        "limit must be positive",
    ),
    Case("eval-device-unknown", lambda e: EVAL(e, "--device", "npu:3"), 2, "device"),
    Case(
        "eval-model-missing",
        lambda e: ["eval", "--model", str(e.tmp / "nowhere"), "--perplexity", "heldout"],
        2,
        "does not exist",
    ),
    Case(
        "eval-model-truncated-weights",
        lambda e: [
            "eval",
            "--model",
            str(e.tmp / "broken"),
            "--tasks",
            "",
            "--perplexity",
            "heldout",
        ],
        2,
        "cannot load model",
        setup=lambda e: e.broken_checkpoint("broken", "truncated"),
        owner="H6",
    ),
    Case(
        "eval-model-and-roles",
        lambda e: EVAL(e, "--dense", str(e.dense), "--perplexity", "heldout"),
        2,
        "either with --model",
    ),
    Case(
        "eval-yaml-wrong-type",
        lambda e: EVAL(e, "--perplexity", "heldout", "--config", str(e.tmp / "c.yaml")),
        2,
        "batch_size must be integer",
        setup=lambda e: e.file("c.yaml", "batch_size: eight\n"),
    ),
    # ---- lcc fit -------------------------------------------------------------------------------
    Case("fit-negative-lr", lambda e: FIT(e, "--lr", "-1"), 2, "lr"),
    Case(
        "fit-negative-warmup",
        lambda e: FIT(e, "--warmup-fraction", "-0.1"),
        2,
        "warmup_fraction",
    ),
    Case("fit-nan-kl-weight", lambda e: FIT(e, "--kl-weight", "nan"), 2, "NaN"),
    Case(
        "fit-yaml-fractional-n-heads",
        lambda e: [*FIT(e), "--config", str(e.tmp / "c.yaml")],
        2,
        "n_heads must be integer",
        setup=lambda e: e.file("c.yaml", "select:\n  n_heads: 2.5\n"),
    ),
    Case(
        "fit-yaml-string-steps",
        lambda e: [*FIT(e), "--config", str(e.tmp / "c.yaml")],
        2,
        "steps must be integer",
        setup=lambda e: e.file("c.yaml", "train:\n  steps: ten\n"),
    ),
    Case("fit-device-unknown", lambda e: FIT(e, "--device", "tpu"), 2, "not a device name"),
    Case(
        "fit-dense-missing",
        lambda e: [*FIT(e), "--dense", str(e.tmp / "nowhere")],
        2,
        "does not exist",
    ),
    Case(
        "fit-out-user-folder",
        lambda e: [*FIT(e), "--out", str(e.tmp / "mine")],
        2,
        "not empty",
        setup=lambda e: e.user_folder(),
    ),
    Case(
        "fit-overwrite-user-folder",
        lambda e: [*FIT(e, "--overwrite"), "--out", str(e.tmp / "mine")],
        2,
        "did not write",
        setup=lambda e: e.user_folder(),
    ),
    Case(
        "fit-eval-context-too-long",
        lambda e: FIT(e, "--context-length", "100000"),
        2,
        "exceeds the model's 256 positions",
        owner="H1",
    ),
    Case(
        "fit-data-binary",
        lambda e: FIT(e, "--source", str(e.tmp / "bin.txt")),
        2,
        "UTF-8",
        setup=lambda e: e.file("bin.txt", BINARY),
        owner="H4",
    ),
    Case(
        "fit-resume-legacy-pickle",
        lambda e: FIT(e, "--resume"),
        2,
        "checkpoint",
        setup=lambda e: _planted_run(e, "checkpoint.pt"),
    ),
    # ---- the library ---------------------------------------------------------------------------
    Case(
        "lib-pickle-as-safetensors-checkpoint",
        None,
        2,
        "not a readable lcc_lens checkpoint",
        setup=lambda e: torch.save(_pickle_payload(e.tmp / PAYLOAD_FILE), e.tmp / "ck.safetensors"),
        call=lambda e: __import__("lcc_lens.checkpoint").checkpoint.load_checkpoint(
            e.tmp / "ck.safetensors"
        ),
        error=CheckpointError,
    ),
    Case(
        "lib-atomic-dir-user-folder",
        None,
        2,
        "did not write",
        setup=lambda e: e.user_folder(),
        call=lambda e: atomic_dir(e.tmp / "mine").__enter__(),
        error=OwnershipError,
    ),
    Case(
        "lib-suite-into-user-folder",
        None,
        2,
        "did not write",
        setup=lambda e: e.user_folder(),
        call=lambda e: __import__("lcc_lens.evaluation.suite", fromlist=["x"]).build_offline_suite(
            e.tmp / "mine", n_items=8
        ),
        error=OwnershipError,
    ),
    Case(
        "lib-calibration-one-word",
        None,
        2,
        "fewer than one sequence",
        call=lambda e: __import__("lcc_lens.pruning.data", fromlist=["x"]).calibration_tokens(
            __import__("lcc_lens.tiny", fromlist=["x"]).tiny_tokenizer(), ["hello"], 4, 16
        ),
        error=DataError,
    ),
    Case(
        "lib-prune-config-device",
        None,
        2,
        "not a device name",
        call=lambda e: __import__("lcc_lens.pruning", fromlist=["x"]).PruneConfig(device="tpu"),
        error=ConfigError,
    ),
    Case(
        "lib-compensation-corrupt-metadata",
        None,
        2,
        "metadata|geometry",
        setup=_bad_compensation,
        call=lambda e: __import__("lcc_lens.compensation", fromlist=["x"]).Compensation.load(
            e.tmp / "compensation.safetensors"
        ),
        error=CompensationFileError,
        owner="H1",
    ),
    Case(
        "lib-data-answer-not-a-choice",
        None,
        2,
        "not among|not one of|choices",
        setup=lambda e: e.file(
            "mc.json", '[{"question": "q", "choices": ["a", "b"], "answer": "c"}]'
        ),
        call=lambda e: __import__("lcc_lens.data", fromlist=["x"]).load_examples(
            str(e.tmp / "mc.json")
        ),
        error=DataError,
        owner="H4",
    ),
    Case(
        "lib-data-alpaca-without-output",
        None,
        2,
        "output",
        setup=lambda e: e.file(
            "a.json",
            '[{"instruction": "i", "output": "o"}, {"instruction": "j", "output": null}]',
        ),
        call=lambda e: __import__("lcc_lens.data", fromlist=["x"]).load_examples(
            str(e.tmp / "a.json")
        ),
        error=DataError,
        owner="H4",
    ),
    Case(
        "lib-data-binary-file",
        None,
        2,
        "UTF-8",
        setup=lambda e: e.file("d.jsonl", BINARY),
        call=lambda e: __import__("lcc_lens.data", fromlist=["x"]).load_examples(
            str(e.tmp / "d.jsonl")
        ),
        error=DataError,
        owner="H4",
    ),
    # ---- begin: run directories (issue 25 item 2, part B) ----------------------------------------
    # an output over, into or around an input folder: refused before any model is loaded
    Case(
        "fit-out-holds-the-pruned-input",
        lambda e: [
            *FIT(e, "--overwrite"),
            *("--pruned", str(e.tmp / "run" / "model"), "--dense", str(e.tmp / "broken")),
        ],
        2,
        r"--out \S+run holds --pruned \S+model, which this command reads",
        setup=lambda e: (_earlier_run(e), _unloadable(e)),
    ),
    Case(
        "fit-out-is-the-dense-input",
        lambda e: (
            [*FIT(e, "--overwrite"), *("--dense", str(e.tmp / "broken"))]
            + ["--out", str(e.tmp / "broken")]
        ),
        2,
        "is --dense",
        setup=_unloadable,
    ),
    Case(
        "fit-out-inside-the-pruned-input",
        lambda e: [
            *FIT(e),
            *("--pruned", str(e.tmp / "p"), "--out", str(e.tmp / "p" / "run")),
            *("--dense", str(e.tmp / "broken")),
        ],
        2,
        "lies inside --pruned",
        setup=lambda e: (_model_copy(e, "p"), _unloadable(e)),
    ),
    Case(
        "fit-out-a-symlink-to-the-pruned-input",
        lambda e: [
            *FIT(e, "--overwrite"),
            *("--pruned", str(e.tmp / "p"), "--out", str(e.tmp / "alias")),
            *("--dense", str(e.tmp / "broken")),
        ],
        2,
        "alias is --pruned",
        setup=lambda e: (
            _model_copy(e, "p", owned=True),
            (e.tmp / "alias").symlink_to(e.tmp / "p"),
            _unloadable(e),
        ),
    ),
    Case(
        "prune-out-is-the-dense-input",
        lambda e: (
            [*PRUNE(e, "--overwrite"), "--dense", str(e.tmp / "p")] + ["--out", str(e.tmp / "p")]
        ),
        2,
        "is the model to prune",
        setup=lambda e: _model_copy(e, "p", owned=True),
    ),
    Case(
        "prune-out-inside-the-dense-input",
        lambda e: [*PRUNE(e), "--dense", str(e.tmp / "p"), "--out", str(e.tmp / "p" / "again")],
        2,
        "lies inside the model to prune",
        setup=lambda e: _model_copy(e, "p"),
    ),
    Case(
        "eval-suite-dir-inside-the-model",
        lambda e: ["eval", "--model", str(e.tmp / "p"), "--suite-dir", str(e.tmp / "p" / "suite")],
        2,
        "--suite-dir .* lies inside model",
        setup=lambda e: _model_copy(e, "p"),
    ),
    Case(
        "eval-out-inside-the-model",
        lambda e: [
            *("eval", "--model", str(e.tmp / "p"), "--tasks", "", "--perplexity", "heldout"),
            *("--out", str(e.tmp / "p" / "results.json")),
        ],
        2,
        "--out .*results.json lies inside model",
        setup=lambda e: _model_copy(e, "p"),
    ),
    # --overwrite builds the new run beside the earlier one: a failure leaves the earlier run intact
    Case(
        "fit-overwrite-that-fails-keeps-the-earlier-run",
        lambda e: FIT(e, "--overwrite", "--n-heads", "99"),
        2,
        "only 12",
        setup=_earlier_run,
    ),
    Case(
        "fit-overwrite-that-diverges-keeps-the-earlier-run",
        lambda e: FIT(e, "--overwrite", "--lr", "100", "--worse-margin", "0"),
        1,
        "the fit diverged",
        setup=_earlier_run,
    ),
    Case(
        "fit-overwrite-over-the-users-model-folder",
        lambda e: FIT(e, "--overwrite"),
        2,
        "holds a model/ folder lcc_lens did not write",
        setup=_earlier_run_with_the_users_model,
    ),
    # a refused --resume changes nothing: not config.yaml, not the partial outputs
    Case(
        "fit-resume-with-other-settings-changes-nothing",
        lambda e: FIT(e, "--checkpoint-every", "1", "--resume", "--lr", "0.123"),
        2,
        "another configuration",
        setup=_interrupted_run,
    ),
    Case(
        "fit-worse-margin-inf",
        lambda e: FIT(e, "--worse-margin", "inf"),
        2,
        "worse_margin must be a finite number.*--allow-worse",
    ),
    Case(
        "fit-out-in-a-read-only-folder",
        lambda e: [*FIT(e), "--out", str(e.tmp / "ro" / "run"), "--dense", str(e.tmp / "broken")],
        2,
        "ro is not writable",
        setup=_read_only,
        marks=(ROOT_WRITES_ANYWHERE,),
    ),
    Case(
        "lib-atomic-dir-unmarked-folder-in-the-cache",
        None,
        2,
        "did not write",
        setup=_user_folder_in_cache,
        call=lambda e: atomic_dir(cache_root() / "pruned" / "mine").__enter__(),
        error=OwnershipError,
    ),
    # ---- end: run directories (issue 25 item 2, part B) ------------------------------------------
]


# ==== issue 25, part A: hostile model folders, configs and compensation files ===================
# Crafted checkpoints (custom code, pickles, shard names and links leading out, configs that do not
# match their weights, NaN weights), YAML bombs and malformed compensation files.

PAYLOAD_CODE = f"open({PAYLOAD_FILE!r}, 'w').write('pwned')\n"
"""A module that writes PAYLOAD_FILE (relative: into the case's working folder) when imported."""


def _crafted(env: Env, how: str) -> Path:
    """A copy of the tiny dense checkpoint under ``crafted/``, made hostile ``how``."""
    from safetensors.torch import load_file, save_file

    target = env.tmp / "crafted"
    shutil.copytree(env.dense, target)
    config_file = target / "config.json"
    config = json.loads(config_file.read_text())
    weights = target / "model.safetensors"
    if how in ("custom-code", "custom-code-known-type"):
        (target / "payload.py").write_text(PAYLOAD_CODE)
        config["auto_map"] = {
            "AutoConfig": "payload.PayloadConfig",
            "AutoModelForCausalLM": "payload.PayloadModel",
        }
        if how == "custom-code":
            config["model_type"] = "lcc_payload"
        tok_file = target / "tokenizer_config.json"
        tok = json.loads(tok_file.read_text())
        tok["auto_map"] = {"AutoTokenizer": ["payload.PayloadTokenizer", None]}
        tok_file.write_text(json.dumps(tok))
    elif how == "pickle-only":
        weights.unlink()
        torch.save(_pickle_payload(env.tmp / PAYLOAD_FILE), target / "pytorch_model.bin")
    elif how == "pickle-beside-safetensors":
        torch.save(_pickle_payload(env.tmp / PAYLOAD_FILE), target / "pytorch_model.bin")
    elif how == "index-out":
        tensors = load_file(str(weights))
        weights.rename(target / "model-00001-of-00001.safetensors")
        weight_map = dict.fromkeys(tensors, "model-00001-of-00001.safetensors")
        weight_map["model.norm.weight"] = "../victim.safetensors"
        index = {"metadata": {}, "weight_map": weight_map}
        (target / "model.safetensors.index.json").write_text(json.dumps(index))
        env.file("victim.safetensors", "the user's file beside the checkpoint")
    elif how == "link-out":
        (target / "notes.md").symlink_to(env.file("secret.txt", "the user's private notes"))
    elif how in ("nan-weight", "missing-tensor"):
        tensors = load_file(str(weights))
        if how == "nan-weight":
            tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
        else:
            del tensors["model.layers.1.self_attn.q_proj.weight"]
        save_file(tensors, str(weights), metadata={"format": "pt"})
    elif how in ("one-layer-more", "billion-layers", "wrong-width"):
        if how == "wrong-width":
            config["hidden_size"] = 4096
        else:
            config["num_hidden_layers"] = 4 if how == "one-layer-more" else 1_000_000_000
    else:  # pragma: no cover
        raise ValueError(how)
    config_file.write_text(json.dumps(config))
    return target


def PRUNE_CRAFTED(env: Env) -> list[str]:
    return [*PRUNE(env, "--method", "magnitude"), "--dense", str(env.tmp / "crafted")]


TINY_GEOMETRY = ("LlamaForCausalLM", 3, 4, 2, 16, 64, 512)  # the tiny llama's layers, heads, sizes


def _export(env: Env, source: Path) -> Path:
    """Export a one-head zero compensation into a copy of ``source`` (the shard-level route)."""
    from lcc_lens.compensation import Compensation
    from lcc_lens.export import export_checkpoint
    from lcc_lens.models import HeadGeometry

    comp = Compensation(HeadGeometry(*TINY_GEOMETRY), [(0, 0)], use_directions=False)
    return export_checkpoint(source, comp, env.tmp / "export")


def _compensation_file(env: Env, *, meta: dict[str, str] | None = None, **tensors: Any) -> Path:
    """A valid compensation file of the tiny geometry with some tensors or metadata replaced."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lcc_lens.compensation import Compensation
    from lcc_lens.models import HeadGeometry

    good = Compensation(HeadGeometry(*TINY_GEOMETRY), [(0, 1), (2, 3)], use_directions=False)
    path = good.save(env.tmp / "good.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        stored_meta = dict(fh.metadata())
    stored = {**load_file(str(path)), **tensors}
    path.unlink()
    bad = env.tmp / "compensation.safetensors"
    save_file(stored, str(bad), metadata={**stored_meta, **(meta or {})})
    return bad


def _load_compensation(env: Env) -> Any:
    from lcc_lens.compensation import Compensation

    return Compensation.load(env.tmp / "compensation.safetensors")


def _yaml_bomb(levels: int = 8) -> str:
    """A few hundred bytes of YAML that name 9**levels strings through aliases."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    lines.append(f"n_samples: [{', '.join([f'*a{levels - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _crafted_yaml(name: str, text: str) -> Case:
    return Case(
        f"prune-yaml-{name}",
        lambda e: [*PRUNE(e), "--config", str(e.tmp / "c.yaml")],
        2,
        {"alias-bomb": "anchor or alias", "deep": "nests deeper"}.get(name, "beyond 64 bits"),
        setup=lambda e: e.file("c.yaml", text),
        seconds=2.0,
    )


def _crafted_prune(how: str, message: str, seconds: float | None = None) -> Case:
    return Case(
        f"prune-model-{how}",
        PRUNE_CRAFTED,
        2,
        message,
        setup=lambda e: _crafted(e, how),
        seconds=seconds,
    )


def _crafted_export(how: str, message: str) -> Case:
    return Case(
        f"lib-export-{how}",
        None,
        2,
        message,
        setup=lambda e: _crafted(e, how),
        call=lambda e: _export(e, e.tmp / "crafted"),
        error=UnsafePathError,
    )


def _bad_compensation_file(name: str, message: str, **changes: Any) -> Case:
    return Case(
        f"lib-compensation-{name}",
        None,
        2,
        message,
        setup=lambda e: _compensation_file(e, **changes),
        call=_load_compensation,
        error=CompensationFileError,
    )


LOADING_CASES: list[Case] = [
    _crafted_prune("custom-code", "own Python code.*never runs code"),
    _crafted_prune(
        "pickle-only", "only pickle weights \\(pytorch_model.bin\\).*safetensors only.*Convert"
    ),
    _crafted_prune("index-out", "'../victim.safetensors' leads out of the folder"),
    _crafted_prune("link-out", "notes.md is a link to .*secret.txt, outside"),
    _crafted_prune("one-layer-more", "describes 4 layers but the weights hold 3"),
    _crafted_prune(
        "billion-layers", "describes 1000000000 layers but the weights hold 3", seconds=5.0
    ),
    _crafted_prune(
        "wrong-width",
        "does not match the weights: model.embed_tokens.weight is \\[512, 64\\] in the weights, "
        "\\[512, 4096\\] by the config",
        seconds=5.0,
    ),
    _crafted_prune(
        "missing-tensor", "missing from the weights: model.layers.1.self_attn.q_proj.weight"
    ),
    _crafted_prune("nan-weight", "1 NaN or inf value\\(s\\) in model.layers.1.mlp.up_proj.weight"),
    _crafted_yaml("alias-bomb", _yaml_bomb()),
    _crafted_yaml("int-31-digits", "seed: " + "9" * 31 + "\n"),
    _crafted_yaml("int-5000-digits", "seed: " + "7" * 5000 + "\n"),
    _crafted_yaml("deep", "n_samples: " + "[" * 5000 + "]" * 5000 + "\n"),
    _crafted_export("index-out", "'../victim.safetensors' leads out of the folder"),
    _crafted_export("link-out", "notes.md is a link to .*secret.txt, outside"),
    _bad_compensation_file(
        "fractional-heads",
        "'heads' holds torch.float32 values, not integers",
        heads=torch.tensor([[0.0, 1.5], [2.0, 3.0]]),
    ),
    _bad_compensation_file(
        "heads-flat",
        "'heads' has shape \\(4,\\), not \\[n_selected, 2\\]",
        heads=torch.tensor([0, 1, 2, 3]),
    ),
    _bad_compensation_file(
        "head-out-of-range",
        "names head \\(7, 1\\) outside the recorded 3 layers x 4 heads",
        heads=torch.tensor([[7, 1], [2, 3]]),
    ),
    _bad_compensation_file(
        "head-twice", "names a head twice", heads=torch.tensor([[2, 3], [2, 3]])
    ),
    _bad_compensation_file(
        "flag-not-a-bool",
        "metadata 'use_bias' is 'maybe', not 'True' or 'False'",
        meta={"use_bias": "maybe"},
    ),
]
CASES += LOADING_CASES


def _run_lcc(env: Env, *argv: str) -> subprocess.CompletedProcess:
    """``python -m lcc_lens.cli.main ARGV`` in the case's folder, answering "y" to any prompt."""
    return subprocess.run(
        [sys.executable, "-m", "lcc_lens.cli.main", *argv],
        input="y\n" * 8,
        capture_output=True,
        text=True,
        cwd=env.tmp,
        timeout=300,
    )


def test_custom_code_never_runs_even_when_answered_yes(env: Env):
    """transformers asks "run the custom code? [y/N]" for an unknown architecture with an auto_map;
    lcc_lens never lets it ask: with "y" waiting on stdin the payload still does not run."""
    _crafted(env, "custom-code")
    before = _snapshot(env.tmp, env.dense)
    done = _run_lcc(env, *PRUNE_CRAFTED(env))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
    assert "never runs code" in done.stderr and "[y/N]" not in done.stdout + done.stderr
    assert not (env.tmp / PAYLOAD_FILE).exists(), "the checkpoint's code ran"
    assert _snapshot(env.tmp, env.dense) == before


def test_custom_code_of_a_known_architecture_is_ignored_and_not_copied(env: Env):
    """A llama checkpoint that also names custom code loads with transformers' own class; neither
    the prune nor the export carries the code file or its auto_map into what they write."""
    crafted = _crafted(env, "custom-code-known-type")
    done = _run_lcc(env, *PRUNE_CRAFTED(env))
    assert done.returncode == 0, done.stderr
    assert "never runs it" in done.stderr
    pruned = env.tmp / "pruned_out"
    exported = _export(env, crafted)
    for out in (pruned, exported):
        assert not list(out.rglob("*.py")), sorted(p.name for p in out.iterdir())
        for name in ("config.json", "tokenizer_config.json"):
            assert "auto_map" not in json.loads((out / name).read_text()), (out, name)
    assert not (env.tmp / PAYLOAD_FILE).exists(), "the checkpoint's code ran"


def test_pickle_beside_safetensors_is_never_read(env: Env):
    from lcc_lens.models import load_causal_lm

    model, _ = load_causal_lm(_crafted(env, "pickle-beside-safetensors"))
    assert model.config.num_hidden_layers == 3
    assert not (env.tmp / PAYLOAD_FILE).exists(), "pytorch_model.bin was unpickled"


def test_compensation_with_huge_d_head_loads_without_allocating(env: Env):
    """A small file recording d_head 65536 and no selected head: the loader used to allocate
    n_layers x n_heads x d_head x d_head floats (17 GB) before looking at the stored tensors."""
    import resource

    from safetensors.torch import save_file

    from lcc_lens.compensation import Compensation

    d = 65536
    geometry = {"architecture": "X", "n_layers": 1, "n_heads": 1, "n_kv_heads": 1}
    geometry.update(d_head=d, d_model=d, d_vocab=8)
    meta = {"format": "lcc_lens.compensation/1", "geometry": json.dumps(geometry)}
    meta.update(use_directions="True", use_bias="True")
    tensors = {
        "z_offsets": torch.zeros(1, 1, d),
        "beta": torch.zeros(0, d),
        "bias": torch.zeros(0, d),
        "directions": torch.zeros(0, d, d),
        "heads": torch.zeros(0, 2, dtype=torch.long),
    }
    save_file(tensors, str(env.tmp / "c.safetensors"), metadata=meta)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.monotonic()
    comp = Compensation.load(env.tmp / "c.safetensors")
    assert time.monotonic() - start < 2.0
    assert comp.n_selected == 0 and comp.z_offsets().shape == (1, 1, d)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 512, f"loading allocated about {grown_mib:.0f} MiB"


# ==== end of issue 25, part A ====================================================================


def _params():
    for case in CASES:
        yield pytest.param(case, id=case.id, marks=list(case.marks))


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` with a hash of its content."""
    out: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            key = str(path)
            if path.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def env(tmp_path, llama_pair_dirs, monkeypatch) -> Iterator[Env]:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written to a default relative path shows up in the snapshot
    dense, pruned = llama_pair_dirs
    made = Env(work, dense, pruned, monkeypatch)
    yield made
    for undo in made.undo:
        undo()


def test_enough_cases():
    assert len(CASES) >= 40
    assert {c.argv(Env(Path("/t"), Path("/d"), Path("/p")))[0] for c in CASES if c.argv} == {
        "fit",
        "prune",
        "eval",
    }


@pytest.mark.parametrize("case", list(_params()))
def test_hostile_input(case: Case, env: Env, capsys):
    if case.setup is not None:
        case.setup(env)
    before = _snapshot(env.tmp, env.dense, env.pruned)
    start = time.monotonic()
    if case.call is not None:
        assert case.error is not None
        with pytest.raises(case.error) as info:
            case.call(env)
        assert re.search(case.message, str(info.value), re.IGNORECASE), str(info.value)
    else:
        assert case.argv is not None
        code = main(case.argv(env))
        err = capsys.readouterr().err
        assert code == case.code, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: "), err
        assert re.search(case.message, last, re.IGNORECASE), last
    if case.seconds is not None:
        assert time.monotonic() - start < case.seconds, "a crafted input was not refused quickly"
    assert not (env.tmp / PAYLOAD_FILE).exists(), "a crafted checkpoint ran code"
    assert _snapshot(env.tmp, env.dense, env.pruned) == before


# ---- signals: a subprocess each -----------------------------------------------------------------


def _start_prune(env: Env, out: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lcc_lens.prune", "--dense", str(env.dense), "--out", str(out)]
    argv += [
        "--method",
        "sparsegpt",
        "--n-samples",
        "1024",
        "--seq-len",
        "128",
        "--batch-size",
        "1",
    ]
    with log.open("w") as fh:
        return subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            cwd=env.tmp,
            preexec_fn=_default_sigint,  # a background job (nohup, CI runners) inherits SIGINT ignored
        )


def _default_sigint() -> None:
    """Give the child Python's own Ctrl-C handling even when this test runs with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until_pruning(proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Wait until the prune has loaded the model and started calibrating (stderr shows progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "sparsegpt" in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"prune did not start: {log.read_text()[-2000:]}")


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_signal_during_prune_exits_cleanly(env: Env, tmp_path, sig, code, word):
    out = env.tmp / "out"
    log = tmp_path / "stderr.log"
    before = _snapshot(env.tmp)
    proc = _start_prune(env, out, log)
    try:
        _wait_until_pruning(proc, log)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {word}"), err
    assert _snapshot(env.tmp) == before  # no output, no temporary directory


def test_sigterm_while_writing_removes_the_temporary_directory(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Interrupted), sigterm_raises(), atomic_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 100)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this returns
    assert list(tmp_path.iterdir()) == []


def test_replacing_an_owned_output_keeps_nothing_stale(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, kind="prune") as tmp:
        (tmp / "old.txt").write_text("1")
    assert (out / OWNER_FILE).is_file()
    with atomic_dir(out, kind="prune") as tmp:
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_crafted_checkpoint_on_resume_does_not_run(env: Env, capsys):
    """The pickle case through the whole command: a run directory of lcc_lens whose training
    checkpoint was replaced by a pickle that writes a file when unpickled. ``--resume`` reaches the
    training stage, refuses the file with a message, and the payload never runs."""
    run = _planted_run(env, "checkpoint.safetensors")
    code = main(FIT(env, "--resume"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not a readable lcc_lens checkpoint" in last, last
    assert not (env.tmp / PAYLOAD_FILE).exists(), "a crafted checkpoint ran code"
    assert (run / "checkpoint.safetensors").is_file()  # the evidence is kept, not deleted


def test_an_earlier_suite_dir_is_replaced_not_a_users(tmp_path):
    from lcc_lens.atomic import owner_kind
    from lcc_lens.evaluation.suite import build_offline_suite

    suite = tmp_path / "suite"
    build_offline_suite(suite, n_items=8)
    first = sorted(p.name for p in suite.iterdir())
    assert owner_kind(suite) is not None
    build_offline_suite(suite, seed=1, n_items=8)  # lcc_lens's own folder: replaced in place
    assert sorted(p.name for p in suite.iterdir()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]  # no temporary or backup left


# ---- begin: run directories (issue 25 item 2, part B): a real earlier run, real processes ------


def test_overwrite_moves_the_users_files_into_the_new_run(env: Env, capsys):
    """A successful ``--overwrite``: the new run takes the earlier one's place whole; the user's
    entries there (a file, a figure in plots/, a folder named like a temporary) move into it; a
    temporary lcc_lens left (it carries the marker) goes; nothing is left beside the run."""
    import yaml

    assert main(FIT(env)) == 0
    run = env.tmp / "run"
    (run / "notes.txt").write_text("the user's")
    (run / "plots" / "mine.html").write_text("the user's")
    (run / ".plots.keep.tmp").mkdir()
    (run / ".plots.keep.tmp" / "figure.png").write_bytes(b"the user's")
    left = run / ".model.k3j2ab8x.tmp"  # what an export killed mid-way leaves
    left.mkdir()
    mark_owned(left, "output")
    capsys.readouterr()
    assert main(FIT(env, "--overwrite", "--seed", "1")) == 0
    err = capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1  # the new run
    assert (run / "notes.txt").read_text() == "the user's"
    assert (run / "plots" / "mine.html").read_text() == "the user's"
    assert (run / ".plots.keep.tmp" / "figure.png").read_bytes() == b"the user's"
    assert not left.exists()
    assert re.search(r"moved .*notes\.txt.* into the new one", err), err
    assert sorted(p.name for p in env.tmp.iterdir()) == ["run"]  # no lock, temporary or backup


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"the first fit did not start training: {log.read_text()[-2000:]}")


def test_a_second_fit_is_refused_while_the_first_writes_and_sigterm_keeps_the_earlier_run(
    env: Env, tmp_path, capsys
):
    """Two processes: the first ``--overwrite`` of a finished run trains in its temporary sibling;
    a second ``lcc fit`` into the same --out is refused by the lock (exit 2); SIGTERM to the first
    leaves the earlier run byte for byte as it was, and no lock file or temporary beside it."""
    assert main(FIT(env)) == 0
    before = _snapshot(env.tmp)
    log = tmp_path / "first.log"
    slow = FIT(env, "--overwrite", "--steps", "1000", "--checkpoint-every", "1")
    with log.open("w") as fh:
        first = subprocess.Popen(
            [sys.executable, "-m", "lcc_lens.fit", *slow[1:]],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            cwd=env.tmp,
            preexec_fn=_default_sigint,
        )
    try:
        _wait_for(lambda: any(env.tmp.glob(".run.*.tmp/checkpoint.safetensors")), first, log)
        capsys.readouterr()
        assert main(FIT(env, "--overwrite")) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: another lcc fit is writing"), last
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    err = log.read_text()
    assert first.returncode == 143, err
    assert "Traceback" not in err
    assert _snapshot(env.tmp) == before


# ---- end: run directories (issue 25 item 2, part B) --------------------------------------------
