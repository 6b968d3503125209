"""Merge invariants of every benchmark method on a tiny pruned Llama (PEFT-style).

For each method: the merged export reproduces the attached model (fp32, max |logit diff| <= 1e-4), the
attached model really differs from the pruned one, a zero (freshly initialised) compensation is a no-op,
attach always removes its hooks, the export survives save/load, and ``sparsity_kept`` is measured: the
head-level methods and the zero-keeping peers (masked LoRA, SPP, biases and norms, masked full retraining)
keep every zero, LoRA/DoRA merges fill some. For the peers every zero is also checked tensor by tensor.
"""

from __future__ import annotations

import pytest
import torch

from lcc_lens.bench.measure import sparsity_kept
from lcc_lens.methods import (
    FAMILY_METHODS,
    METHOD_NAMES,
    ZERO_KEEPING_PEERS,
    MethodContext,
    make_method,
)
from lcc_lens.models import load_causal_lm

TOL = 1e-4
KEEP_ZEROS = {
    "lcc",
    "lcc_paper",
    "lcc_random_heads",
    "bias_all_heads",
    "lost_component",
    "mean_bias",
    "lofit",
    *ZERO_KEEPING_PEERS,
    *FAMILY_METHODS,
}
FILL_ZEROS = {"lora_matched", "lora_r8", "dora_matched", "dora_r8"}


@pytest.fixture(scope="module")
def ctx(llama_pair_dirs, method_context) -> MethodContext:
    return method_context(*llama_pair_dirs)


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


@pytest.mark.parametrize("name", [*ZERO_KEEPING_PEERS, *FAMILY_METHODS])
def test_zero_keeping_peer_keeps_every_zero_and_changes_the_rest(name, ctx):
    method = make_method(name)
    method.prepare(ctx)
    _perturb(method)
    pruned = ctx.pruned_model()
    merged = dict(method.export(pruned).named_parameters())
    changed = 0
    for n, p in pruned.named_parameters():
        q = merged[n]
        zeros = p == 0
        if zeros.any():
            assert torch.all(q[zeros] == 0), f"{name} filled zeros of {n}"
        changed += int((q != p).sum())
    assert changed > 0, f"{name} changed nothing"


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
def test_training_free_method_is_a_no_op_without_pruning(
    name, llama_pair_dirs, method_context, ids
):
    dense, _ = llama_pair_dirs
    ctx = method_context(dense, dense)
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
