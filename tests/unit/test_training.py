"""The training loop on a tiny model: config validation, exact resume, the trainable protocol, NaN reports."""

from __future__ import annotations

import contextlib
import math
from dataclasses import fields, replace

import pytest
import torch
from torch import nn

from lcc_lens.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from lcc_lens.compensation import Compensation
from lcc_lens.data import encode, load_examples
from lcc_lens.errors import ConfigError, LccError
from lcc_lens.models import ModelPair
from lcc_lens.training import Trainable, TrainConfig, evaluate_loss, has_checkpoint, train


@pytest.fixture(scope="module")
def pair(llama_pair_dirs) -> ModelPair:
    return ModelPair.load(*llama_pair_dirs)


@pytest.fixture(scope="module")
def data(pair):
    return encode(pair.tokenizer, load_examples("offline", n=12, seed=3), 64)


def _comp(pair: ModelPair) -> Compensation:
    heads = [(0, 1), (1, 2), (2, 0), (2, 3)]
    directions = torch.linalg.qr(
        torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    )[0]
    return Compensation(pair.geometry, heads, directions.transpose(-1, -2))


# ---- configuration --------------------------------------------------------------------------------
@pytest.fixture
def production_typing():
    """Turn off the test-time jaxtyping/beartype checks, so wrong types reach TrainConfig's own checks
    as they do for a library caller (the checker would otherwise refuse them first, as TypeCheckError)."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


def test_every_field_documents_itself():
    for f in fields(TrainConfig):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize(
    ("values", "field_name"),
    [
        ({"warmup_fraction": -0.1}, "warmup_fraction"),
        ({"warmup_fraction": 1.5}, "warmup_fraction"),
        ({"kl_weight": math.nan}, "kl_weight"),
        ({"kl_weight": 2.0}, "kl_weight"),
        ({"lr": math.inf}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr": "1e-3"}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"memory_chunk": 0}, "memory_chunk"),
        ({"steps": -1}, "steps"),
        ({"steps": 3.5}, "steps"),
        ({"seed": -2}, "seed"),
        ({"objective": "mse"}, "objective"),
    ],
)
def test_bad_values_name_the_field(values, field_name, production_typing):
    with pytest.raises(ConfigError, match=field_name):
        TrainConfig(**values)


def test_good_values_are_accepted(production_typing):
    cfg = TrainConfig(lr=1, warmup_fraction=0, kl_weight=1, steps=0)  # ints where floats are due
    assert cfg.total_steps(10) == 0


# ---- the checkpoint format ------------------------------------------------------------------------
def test_checkpoint_round_trip_is_exact(tmp_path):
    state = {
        "a": torch.randn(3, 2),
        "step": torch.tensor(4.0),
        "ints": {0: {"x": torch.arange(3)}, 7: "seven"},
        "tuple": (0.9, 0.999),
        "floats": [0.1 + 0.2, math.nan, math.inf, None, True, 3],
    }
    save_checkpoint(tmp_path / CHECKPOINT, state)
    back = load_checkpoint(tmp_path / CHECKPOINT)
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["step"], state["step"])
    assert set(back["ints"]) == {0, 7} and torch.equal(back["ints"][0]["x"], torch.arange(3))
    assert back["tuple"] == (0.9, 0.999) and isinstance(back["tuple"], tuple)
    f = back["floats"]
    assert f[0] == 0.1 + 0.2 and math.isnan(f[1]) and f[2] == math.inf and f[3:] == [None, True, 3]
    assert isinstance(f[4], bool) and isinstance(f[5], int)


def test_resume_is_bit_identical(pair, data, tmp_path):
    cfg = TrainConfig(steps=5, batch_size=3, grad_accum=2, lr=3e-2, checkpoint_every=1, seed=1)
    full = _comp(pair)
    full_hist = train(pair, full, data, data[:4], cfg)

    class Stop(Exception):
        pass

    def interrupt(step, row):
        if step == 2:
            raise Stop

    run = tmp_path / "run"
    part = _comp(pair)
    with pytest.raises(Stop):
        train(pair, part, data, data[:4], cfg, run_dir=run, on_step=interrupt)
    assert has_checkpoint(run) and not (run / "checkpoint.pt").exists()
    resumed = _comp(pair)  # a fresh process: nothing carried over but the file
    hist = train(pair, resumed, data, data[:4], cfg, run_dir=run, resume=True)
    assert torch.equal(resumed.beta, full.beta) and torch.equal(resumed.bias, full.bias)
    assert hist == full_hist
    with pytest.raises(LccError, match="another configuration"):
        train(
            pair,
            _comp(pair),
            data,
            data[:4],
            TrainConfig(steps=5, lr=0.5),
            run_dir=run,
            resume=True,
        )


@pytest.mark.parametrize("objective", ["kl", "lm"])
def test_memory_chunks_change_memory_not_the_optimisation(pair, data, objective):
    """Passes of 2 examples, token-weighted, give the whole batch's gradient and trajectory."""
    base = TrainConfig(objective=objective, steps=3, batch_size=5, lr=3e-2, seed=2)
    whole, split = _comp(pair), _comp(pair)
    hist_whole = train(pair, whole, data, [], base)
    hist_split = train(pair, split, data, [], replace(base, memory_chunk=2))
    assert torch.allclose(split.bias, whole.bias, atol=1e-6, rtol=0)
    assert torch.allclose(split.beta, whole.beta, atol=1e-6, rtol=0)
    assert [r["loss"] for r in hist_split] == pytest.approx(
        [r["loss"] for r in hist_whole], abs=1e-6
    )
    assert not torch.equal(whole.bias, _comp(pair).bias)  # it trained


def test_a_validation_set_scores_the_fit_without_moving_it(pair, data):
    """The benchmark trains with the fit's validation set (for its guard): the trajectory is the same."""
    cfg = TrainConfig(objective="kl", steps=4, batch_size=2, lr=3e-2, seed=1)
    assert len(data) == 6  # 4 to train on (2 epochs of 2 steps), 2 to validate on
    without, with_val = _comp(pair), _comp(pair)
    hist_without = train(pair, without, data[:4], [], cfg)
    hist_with = train(pair, with_val, data[:4], data[4:], cfg)
    assert torch.equal(with_val.bias, without.bias) and torch.equal(with_val.beta, without.beta)
    assert [r["loss"] for r in hist_with] == [r["loss"] for r in hist_without]
    assert all(math.isfinite(r["val_loss"]) for r in hist_with if "val_loss" in r), hist_with
    assert any("val_loss" in r for r in hist_with)


# ---- reporting a non-finite loss as what it is ---------------------------------------------------
def test_nan_parameters_are_named_not_blamed_on_the_learning_rate(pair, data):
    comp = _comp(pair)
    with torch.no_grad():
        comp.bias[0, 0] = math.nan
    with pytest.raises(LccError, match="bias") as err:
        train(pair, comp, data, data[:2], TrainConfig(steps=1, batch_size=4))
    assert "NaN or inf" in str(err.value)


def test_nan_kl_weight_is_a_config_error_before_training():
    with pytest.raises(ConfigError, match="kl_weight"):
        TrainConfig(objective="mix", kl_weight=math.nan)


# ---- any trainable: a method that is not a Compensation ----------------------------------------
class LogitBias(nn.Module):
    """A toy restoration: a trainable bias on the logits, attached by wrapping the model."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    @contextlib.contextmanager
    def attach(self, model):
        def run(ids, attention_mask=None, return_type="logits"):
            return model(ids, attention_mask=attention_mask, return_type=return_type) + self.bias

        yield run


def test_a_generic_trainable_trains_and_checkpoints(pair, data, tmp_path):
    method = LogitBias(pair.pruned.cfg.d_vocab)
    assert isinstance(method, Trainable)
    cfg = TrainConfig(steps=6, batch_size=4, lr=5e-2, warmup_fraction=0.0, checkpoint_every=3)
    before = evaluate_loss(pair, method, data, cfg)
    hist = train(pair, method, data, data, cfg, run_dir=tmp_path)
    assert hist[-1]["val_loss"] < before
    assert has_checkpoint(tmp_path)
    assert evaluate_loss(pair, None, data, cfg) == pytest.approx(before)  # zero bias == pruned


# ---- the distributed helpers with one process (the multi-process case: tests/integration) ------------
def test_shards_cover_the_sequence_in_rank_order():
    from lcc_lens.distributed import DistContext, shard_range

    for n in (0, 1, 5, 7, 16):
        for world in (1, 2, 3, 4):
            blocks = [shard_range(n, DistContext(r, world)) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_one_process_collectives_are_the_identity():
    from lcc_lens import distributed

    ctx = distributed.init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    t = torch.randn(3, 2)
    assert distributed.gather_rows(t) is t and distributed.all_reduce_sum(t) is t
    assert distributed.gather_objects("x") == ["x"]
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.all_reduce_grads([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_passes_cover_the_batch_once_with_weights_summing_to_one(data, chunk, world):
    """Every example is in exactly one pass of one rank; the token shares add up to the batch."""
    from lcc_lens.distributed import DistContext
    from lcc_lens.training import _passes

    batch = list(data[:7])
    cfg = TrainConfig(memory_chunk=chunk)
    seen, share = [], 0.0
    for rank in range(world):
        for chunk_, weight in _passes(batch, cfg, DistContext(rank=rank, world_size=world)):
            seen += [id(e) for e in chunk_]
            share += 1.0 if weight is None else weight
            assert chunk is None or len(chunk_) <= chunk
    assert sorted(seen) == sorted(id(e) for e in batch)
    assert share == pytest.approx(1.0)
