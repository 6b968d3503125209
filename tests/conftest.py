"""Shared fixtures: tiny dense/pruned checkpoints built in-process (no hub access)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lcc_lens.tiny import save_tiny_checkpoint  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def magnitude_prune_dir(src: Path, dst: Path, sparsity: float = 0.5) -> Path:
    """An independent, test-local 50 % per-row magnitude prune of every 2-D block weight."""
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


@pytest.fixture(scope="session")
def tok():
    """The tiny 512-token BPE tokenizer shared by the tiny models."""
    from lcc_lens.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """24 calibration passages of real text."""
    from lcc_lens.corpora import passages

    return passages("calibration", 24)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """layout -> (dense checkpoint dir, 50 %-magnitude-pruned checkpoint dir); 3 layers x 4 heads."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for layout in ("llama", "qwen2", "qwen3", "mistral", "gpt2"):
        dense = save_tiny_checkpoint(root / f"{layout}-dense", layout, seed=1)
        pruned = magnitude_prune_dir(dense, root / f"{layout}-pruned")
        out[layout] = (dense, pruned)
    return out


@pytest.fixture(scope="session")
def llama_pair_dirs(tiny_dirs) -> tuple[Path, Path]:
    return tiny_dirs["llama"]
