"""The benchmark's result cache: one file per (method, rate, seed), keyed by what changes the result."""

from __future__ import annotations

import json

from lcc_lens.bench import BenchConfig
from lcc_lens.bench.cache import ResultCache
from lcc_lens.bench.run import method_lr


def test_each_rate_is_kept_apart_and_a_key_mismatch_recomputes(tmp_path):
    cache = ResultCache(tmp_path, "s", {"bench": {"steps": 16}})
    cache.put("lcc", 0, {"x": 1}, lr=5e-3)
    cache.put("lcc", 0, {"x": 2}, lr=1.5e-2)
    assert cache.get("lcc", 0, 5e-3) == {"x": 1} and cache.get("lcc", 0, 1.5e-2) == {"x": 2}
    assert cache.get("lcc", 1, 5e-3) is None and cache.get("lcc", 0, 1e-3) is None
    assert cache.path("lcc", 0, 5e-3).name == "lcc-lr0.005-seed0.json"
    assert cache.path("dense", 0).name == "dense-seed0.json"
    other = ResultCache(tmp_path, "s", {"bench": {"steps": 64}})
    assert other.get("lcc", 0, 5e-3) is None  # another budget never reads this result
    path = cache.path("lcc", 0, 5e-3)
    path.write_text("{not json")
    assert cache.get("lcc", 0, 5e-3) is None
    path.write_text(json.dumps({"format": "other", "key": "k", "result": {}}))
    assert cache.get("lcc", 0, 5e-3) is None


def test_one_methods_rate_does_not_change_anothers_key():
    """The identity leaves the rates out; each method's resolved rate is in its own key."""
    a = BenchConfig(methods=("lcc", "lora_r8"), method_lrs=("lora_r8=0.003",))
    b = BenchConfig(methods=("lcc", "lora_r8"), method_lrs=("lora_r8=0.01",))
    assert a.fingerprint_dict() == b.fingerprint_dict()
    assert method_lr(a, "lcc") == method_lr(b, "lcc") == 5e-3
    assert (method_lr(a, "lora_r8"), method_lr(b, "lora_r8")) == (0.003, 0.01)
    assert method_lr(BenchConfig(lr=0.02), "lcc") == 0.02
    assert method_lr(a, "lost_component") is None  # training-free: no rate in its key
    assert BenchConfig(steps=64).fingerprint_dict() != a.fingerprint_dict()
