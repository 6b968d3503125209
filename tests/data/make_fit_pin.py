"""Generate ``fit_pin.json``: the pre-refactor fit's offsets and losses on a tiny model (issue 10 pin).

This script ran once against the pre-refactor code, commit 4d4897f650371042a326e3c21c9efbbea2fd66d9
(the frozen copy of the repository before the fit became a package of stages), with::

    cd /tmp/lcc_base && PYTHONPATH=/tmp/lcc_base .venv/bin/python /path/to/tests/data/make_fit_pin.py

It writes ``fit_pin_examples.jsonl`` (prompt/response pairs of the shipped corpora, so that a later change of
the default data cannot move the pin) and ``fit_pin.json``: for each case, the z offsets, the per-step
training losses, the validation losses and the selected heads (and, once, the ordered train and
validation examples the old data stage drew from the fixture) of ``fit()`` with the default settings on the
tiny llama pair of ``tests/conftest.py`` (dense seed 1, 50 % per-row magnitude prune), on CPU in float32.
``tests/integration/test_fit_pin.py`` asserts that the current pipeline reproduces them bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "fit_pin_examples.jsonl"
PIN = HERE / "fit_pin.json"
# Every case runs the default FitConfig except for these fields (data is given explicitly).
CASES: dict[str, dict[str, object]] = {"default": {}, "norm_heads": {"heads": "norm"}}


def magnitude_prune_dir(src: Path, dst: Path, sparsity: float = 0.5) -> Path:
    """The 50 % per-row magnitude prune of tests/conftest.py (copied so this script stands alone)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and ("layers" in name or ".h." in name):
                k = int(p.shape[1] * sparsity)
                idx = p.abs().argsort(dim=1)[:, :k]
                p.scatter_(1, idx, 0.0)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def write_examples() -> None:
    """64 continuation examples of the shipped corpora's fit split (pre-refactor ``offline`` data)."""
    from lcc_lens.data import load_examples

    examples = load_examples("offline", split="train", n=64, seed=0)
    with EXAMPLES.open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps({"prompt": e.prompt, "response": e.response}) + "\n")


def main() -> int:
    from lcc_lens.fit import FitConfig, fit
    from lcc_lens.tiny import save_tiny_checkpoint

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # as tests/conftest.py
    if not EXAMPLES.is_file():
        write_examples()
    from lcc_lens.fit import _data

    # the ordered train / validation examples the pre-refactor data stage chose from the fixture, so that
    # the pin can hand the same data to the refactored stages whatever the data defaults become
    train, val = _data(FitConfig(data=str(EXAMPLES)))
    out: dict[str, object] = {
        "examples": EXAMPLES.name,
        "train": [[e.prompt, e.response] for e in train],
        "validation": [[e.prompt, e.response] for e in val],
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        dense = save_tiny_checkpoint(Path(tmp) / "llama-dense", "llama", seed=1)
        pruned = magnitude_prune_dir(dense, Path(tmp) / "llama-pruned")
        for name, overrides in CASES.items():
            cfg = FitConfig(
                dense=str(dense), pruned=str(pruned), data=str(EXAMPLES), device="cpu", **overrides
            )
            res = fit(cfg)
            out["cases"][name] = {  # type: ignore[index]
                "overrides": overrides,
                "selected": [list(h) for h in res.ranking.selected],
                "z_offsets": res.compensation.z_offsets().detach().cpu().tolist(),
                "loss": [row["loss"] for row in res.history],
                "val_loss": [row.get("val_loss") for row in res.history],
                "val_loss_pruned": res.metrics.val_loss_pruned,
                "val_loss_restored": res.metrics.val_loss_restored,
            }
            print(name, res.ranking.selected, res.history[-1], file=sys.stderr)
    PIN.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
