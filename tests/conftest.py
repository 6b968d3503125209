"""Shared fixtures: tiny dense/pruned checkpoints built in-process (no hub access), and hermetic caches.

Every cache the suite could write (lcc_lens's own, Hugging Face hub/datasets/transformers, sentence-
transformers, torch) points at one temporary directory made for the session and removed after it, so tests
never read or write the user's ``~/.cache``. The slow real-model tests (``tests/slow``) use that temporary
cache too (a fresh clone converts the embedded model once, about a minute) unless ``LCC_LENS_TEST_CACHE``
names a directory: then they use it as their lcc_lens cache, so that repeated local runs reuse the converted
model and cached prunes (e.g. ``LCC_LENS_TEST_CACHE=~/.cache/lcc_lens pytest tests/slow``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Set before anything imports huggingface_hub / datasets, which read these once at import time.
_CACHE = tempfile.mkdtemp(prefix="lcc_lens_test_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
_CACHE_VARS = {
    "LCC_LENS_CACHE": "lcc_lens",
    "HF_HOME": "huggingface",
    "HF_HUB_CACHE": "huggingface/hub",
    "HF_DATASETS_CACHE": "huggingface/datasets",
    "HF_MODULES_CACHE": "huggingface/modules",
    "TRANSFORMERS_CACHE": "huggingface/hub",
    "SENTENCE_TRANSFORMERS_HOME": "sentence_transformers",
    "TORCH_HOME": "torch",
}
for _var, _sub in _CACHE_VARS.items():
    os.environ[_var] = os.path.join(_CACHE, _sub)
TEST_CACHE_ENV = "LCC_LENS_TEST_CACHE"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lcc_lens.tiny import save_tiny_checkpoint  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


TIERS = {"unit": "unit", "integration": "integration", "slow": "slow"}
"""Test folder -> tier marker: ``-m unit`` (tensors, no checkpoint on disk), ``-m integration`` (tiny
checkpoints, the CLIs), ``-m slow`` (the real embedded model)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the tier of the folder it lives in."""
    for item in items:
        tier = TIERS.get(Path(str(item.fspath)).parent.name)
        if tier is not None and item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test's fixtures: slow tests get ``$LCC_LENS_TEST_CACHE`` when set, others the temp cache."""
    chosen = os.environ.get(TEST_CACHE_ENV)
    slow = item.get_closest_marker("slow") is not None
    os.environ["LCC_LENS_CACHE"] = (
        os.path.expanduser(chosen) if chosen and slow else os.path.join(_CACHE, "lcc_lens")
    )


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


@pytest.fixture(scope="session")
def method_context():
    """Factory ``(dense_dir, pruned_dir) -> MethodContext`` with the small fit data the method tests share."""
    from lcc_lens.data import DataConfig, encode, fit_data
    from lcc_lens.fit import FitConfig
    from lcc_lens.methods import MethodContext
    from lcc_lens.models import ModelPair
    from lcc_lens.probe_data import ProbeDataConfig
    from lcc_lens.training import TrainConfig

    data = fit_data(DataConfig(n_train=24, n_diff_prompts=16, n_probe=16), seed=0)

    def make(dense: Path, pruned: Path) -> MethodContext:
        pair = ModelPair.load(str(dense), str(pruned))
        enc = encode(pair.tokenizer, data.train, 96)
        cfg = TrainConfig(steps=2, batch_size=4)
        fit = FitConfig(probe=ProbeDataConfig(n_pairs=24))
        return MethodContext(pair, str(dense), str(pruned), data, enc, cfg, seed=0, fit=fit)

    return make
