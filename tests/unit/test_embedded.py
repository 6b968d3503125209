"""The embedded-model registry and the cache root (conversion itself runs in tests/slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcc_lens import embedded
from lcc_lens.cache import cache_root
from lcc_lens.embedded import EMBEDDED_MODEL, EmbeddedModel, embedded_model_dir, is_embedded
from lcc_lens.errors import LccError
from lcc_lens.models import resolve_model_source


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LCC_LENS_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("LCC_LENS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "lcc_lens"


def test_tests_never_use_the_real_home_cache():
    """conftest points every cache the suite could write at a temporary directory."""
    import datasets.config
    import huggingface_hub.constants

    home_cache = Path.home() / ".cache"
    for path in (
        cache_root(),
        Path(huggingface_hub.constants.HF_HOME),
        Path(huggingface_hub.constants.HF_HUB_CACHE),
        Path(datasets.config.HF_DATASETS_CACHE),
    ):
        assert home_cache not in path.parents, path


def test_alias_registry():
    assert is_embedded(EMBEDDED_MODEL)
    assert not is_embedded("gpt2")
    with pytest.raises(LccError, match="unknown embedded model 'nope'"):
        embedded_model_dir("nope")


def test_missing_wheel_names_the_install_command(monkeypatch):
    fake = EmbeddedModel("fake", "no_such_pkg_lcc", "x.gguf", "Fake", "pip install no-such-pkg")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake", fake)
    with pytest.raises(LccError, match="pip install no-such-pkg"):
        resolve_model_source("fake")


def test_converted_directory_is_reused_without_conversion(monkeypatch):
    """A complete cached directory is returned as is; the GGUF is not touched."""
    fake = EmbeddedModel("fake", "no_such_pkg_lcc", "x.gguf", "Fake", "pip install no-such-pkg")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake", fake)
    target = cache_root() / "models" / "Fake"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    assert embedded_model_dir("fake") == target
    assert resolve_model_source("fake") == str(target)
