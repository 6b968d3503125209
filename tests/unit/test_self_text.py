"""Self-written fit text: the dense model's own samples, seeded, cached, and usable as fit data."""

from __future__ import annotations

import json

import torch

from lcc_lens.cache import cache_root
from lcc_lens.data import DataConfig
from lcc_lens.examples import encode
from lcc_lens.models import load_bridge
from lcc_lens.self_text import sample_texts, self_examples


def test_samples_are_seeded_cached_and_do_not_touch_the_global_rng(llama_pair_dirs):
    bridge, tok = load_bridge(llama_pair_dirs[0])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sample_texts(bridge, tok, 5, 12, seed=0, model_key="tiny-a", batch_size=2)
    assert torch.equal(torch.rand(1), before)  # sampling forked the RNG
    assert len(a) == 5 and len(set(a)) > 1
    cached = list((cache_root() / "self_text").glob("*.json"))
    assert any(json.loads(p.read_text()) == a for p in cached)
    b = sample_texts(bridge, tok, 5, 12, seed=0, model_key="tiny-b", batch_size=2)
    assert a == b  # recomputed (another cache key): the same seed gives the same samples
    assert sample_texts(bridge, tok, 5, 12, seed=1, model_key="tiny-a") != a


def test_self_examples_score_every_token_after_the_start(llama_pair_dirs):
    bridge, tok = load_bridge(llama_pair_dirs[0])
    texts = sample_texts(bridge, tok, 4, 10, seed=0, model_key="tiny-c")
    enc = encode(tok, self_examples(tok, texts), 64, targets="all")
    assert enc and all(e.response_mask[0] == 0 and all(e.response_mask[1:]) for e in enc)


def test_fit_on_self_text_trains_and_records_its_choice(llama_pair_dirs):
    from lcc_lens.fit import FitConfig, fit

    dense, pruned = llama_pair_dirs
    cfg = FitConfig.from_dict(
        {
            "dense": str(dense),
            "pruned": str(pruned),
            "device": "cpu",
            "max_length": 48,
            "data": {
                "n_train": 8,
                "n_diff_prompts": 6,
                "n_probe": 6,
                "fit_text": "corpus_self",
                "targets": "all",
            },
            "select": {"method": "all"},
            "compensation": {"use_directions": False},
            "train": {"steps": 2, "batch_size": 4, "objective": "kl"},
            "eval": {"windows": 2, "context_length": 32, "bootstrap": 0},
        }
    )
    result = fit(cfg)
    assert result.compensation.z_offsets().abs().max() > 0
    assert FitConfig.from_dict(cfg.to_dict()).data == DataConfig(
        n_train=8, n_diff_prompts=6, n_probe=6, fit_text="corpus_self", targets="all"
    )


def test_a_bridge_without_twin_samples_from_a_plain_copy_with_a_kv_cache(tiny_dirs):
    from lcc_lens.self_text import _generator
    from lcc_lens.twin import plain_twin

    source = str(tiny_dirs["gpt2"][0])
    bridge, tok = load_bridge(source)
    assert plain_twin(bridge) is None  # GPT-2's bridge renames its attention modules
    model, cached = _generator(bridge, source)
    assert cached and model is not bridge.original_model
    assert _generator(bridge, None) == (bridge.original_model, False)  # no checkpoint to copy
    assert _generator(bridge, "not/a/checkpoint")[1] is False
    texts = sample_texts(bridge, tok, 3, 8, seed=0, model_key="tiny-gpt2", source=source)
    assert len(texts) == 3
