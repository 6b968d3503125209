"""Merge invariants of every benchmark method on a tiny pruned Llama (PEFT-style).

For each method: the merged export reproduces the attached model (fp32, max |logit diff| <= 1e-4), the
attached model really differs from the pruned one, a zero (freshly initialised) compensation is a no-op,
attach always removes its hooks, the export survives save/load, and ``sparsity_kept`` is measured: the
head-level methods keep every zero, LoRA/DoRA merges fill some.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.bench.measure import sparsity_kept
from lcc_lens.data import DataConfig, encode, fit_data
from lcc_lens.fit import FitConfig
from lcc_lens.methods import METHOD_NAMES, MethodContext, make_method
from lcc_lens.models import ModelPair, load_causal_lm
from lcc_lens.probe_data import ProbeDataConfig
from lcc_lens.training import TrainConfig

TOL = 1e-4
KEEP_ZEROS = {
    "lcc",
    "lcc_paper",
    "lcc_random_heads",
    "bias_all_heads",
    "lost_component",
    "mean_bias",
    "lofit",
}
FILL_ZEROS = {"lora_matched", "lora_r8", "dora_matched", "dora_r8"}


@pytest.fixture(scope="module")
def data():
    return fit_data(DataConfig(n_train=24, n_diff_prompts=16, n_probe=16), seed=0)


def _context(dense, pruned, data) -> MethodContext:
    pair = ModelPair.load(str(dense), str(pruned))
    enc = encode(pair.tokenizer, data.train, 96)
    cfg = TrainConfig(steps=2, batch_size=4)
    fit = FitConfig(probe=ProbeDataConfig(n_pairs=24))
    return MethodContext(pair, str(dense), str(pruned), data, enc, cfg, seed=0, fit=fit)


@pytest.fixture(scope="module")
def ctx(llama_pair_dirs, data) -> MethodContext:
    return _context(*llama_pair_dirs, data)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(1, 500, (2, 24), generator=torch.Generator().manual_seed(0))


def _perturb(method) -> None:
    """Give every trainable tensor a non-trivial value (as training would)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen).to(p))


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, return_type="logits").float()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_export_reproduces_attached_model_and_keeps_or_fills_zeros(name, ctx, ids, tmp_path):
    method = make_method(name)
    method.prepare(ctx)
    _perturb(method)
    bare = _logits(ctx.pair.pruned, ids)
    with method.attach(ctx.pair.pruned) as model:
        hooked = _logits(model, ids)
    assert torch.equal(_logits(ctx.pair.pruned, ids), bare), "attach left something behind"
    assert (hooked - bare).abs().max() > 1e-3, "the method does not change the model"
    pruned_hf = ctx.pruned_model()
    before = {k: v.clone() for k, v in pruned_hf.state_dict().items()}
    merged = method.export(pruned_hf)
    with torch.no_grad():
        exported = merged(ids).logits.float()
    assert (exported - hooked).abs().max() <= TOL
    for k, v in pruned_hf.state_dict().items():
        assert torch.equal(v, before[k]), f"export modified the input model ({k})"
    kept = sparsity_kept(pruned_hf, merged)
    if name in KEEP_ZEROS:
        assert kept == 1.0
    else:
        assert kept is not None and kept < 0.999, f"{name} merge should fill pruned zeros"
    merged.save_pretrained(tmp_path / "m")
    ctx.pair.tokenizer.save_pretrained(tmp_path / "m")
    reloaded, _ = load_causal_lm(tmp_path / "m")
    with torch.no_grad():
        again = reloaded(ids).logits.float()
    assert (again - exported).abs().max() <= 1e-5


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if make_method(n).trains])
def test_fresh_trainable_method_is_a_no_op(name, ctx, ids):
    method = make_method(name)
    method.prepare(ctx)
    assert method.n_trainable > 0
    bare = _logits(ctx.pair.pruned, ids)
    with method.attach(ctx.pair.pruned) as model:
        assert (_logits(model, ids) - bare).abs().max() <= 1e-5
    with torch.no_grad():
        merged = method.export(ctx.pruned_model())(ids).logits.float()
    assert (merged - bare).abs().max() <= TOL


@pytest.mark.parametrize("name", ["lost_component", "mean_bias"])
def test_training_free_method_is_a_no_op_without_pruning(name, llama_pair_dirs, data, ids):
    dense, _ = llama_pair_dirs
    ctx = _context(dense, dense, data)
    method = make_method(name)
    method.prepare(ctx)
    assert method.n_trainable == 0
    bare = _logits(ctx.pair.pruned, ids)
    with method.attach(ctx.pair.pruned) as model:
        assert (_logits(model, ids) - bare).abs().max() <= 1e-6


def test_attach_removes_hooks_on_error(ctx, ids):
    method = make_method("lcc_random_heads")
    method.prepare(ctx)
    _perturb(method)
    bare = _logits(ctx.pair.pruned, ids)
    with pytest.raises(RuntimeError), method.attach(ctx.pair.pruned):
        raise RuntimeError("boom")
    assert torch.equal(_logits(ctx.pair.pruned, ids), bare)


def test_unprepared_method_is_refused(ctx):
    from lcc_lens.errors import ConfigError

    with pytest.raises(ConfigError, match="prepare"):
        make_method("lofit").export(ctx.pruned_model())
    with pytest.raises(ConfigError, match="unknown restoration method"):
        make_method("qlora")


@pytest.mark.parametrize(
    "name", [n for n in METHOD_NAMES if hasattr(make_method(n), "attach_for_training")]
)
def test_training_path_matches_attach(name, ctx, ids):
    """A method's fast training path (the plain twin) gives the attached model's logits."""
    method = make_method(name)
    method.prepare(ctx)
    _perturb(method)
    with method.attach(ctx.pair.pruned) as model:
        hooked = _logits(model, ids)
    with method.attach_for_training(ctx.pair.pruned) as model:
        fast = _logits(model, ids)
    assert (fast - hooked).abs().max() <= 1e-5
    assert (hooked - _logits(ctx.pair.pruned, ids)).abs().max() > 1e-3
