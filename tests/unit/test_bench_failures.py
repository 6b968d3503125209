"""A method that cannot run, or diverges, becomes a row with its reason and no figures; nothing aborts.

The motivating case is real: structured pruning (FLAP) zeroes whole heads' q/k/v output rows, and peft's
DoRA rescales every output row by magnitude / row norm, which is 0/0 there.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lcc_lens.bench.config import BenchConfig
from lcc_lens.bench.figure import gap_figure
from lcc_lens.bench.results import GAP_KEYS, aggregate_rows, failure_note, markdown_table
from lcc_lens.bench.run import run_method
from lcc_lens.bench.scoring import ScoringPlan
from lcc_lens.bench.summary import summary_markdown
from lcc_lens.data import DataConfig, encode, fit_data
from lcc_lens.errors import MethodNotApplicable
from lcc_lens.evaluation.protocol import ProtocolConfig
from lcc_lens.fit import FitConfig
from lcc_lens.fit.stages import EncodedData
from lcc_lens.methods import MethodContext, make_method
from lcc_lens.models import ModelPair, load_causal_lm
from lcc_lens.probe_data import ProbeDataConfig
from lcc_lens.training import TrainConfig

D_HEAD = 16  # the tiny Llama: 4 heads of 16


@pytest.fixture(scope="module")
def headless_dirs(llama_pair_dirs, tmp_path_factory):
    """The tiny pruned Llama with head 1 of layer 0 removed FLAP-style: its q/k/v rows all zero."""
    from transformers import AutoTokenizer

    dense, pruned = llama_pair_dirs
    model, _ = load_causal_lm(pruned)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[D_HEAD : 2 * D_HEAD] = 0
        n_kv = attn.k_proj.weight.shape[0] // D_HEAD
        kv = slice(0, D_HEAD) if n_kv == 1 else slice(D_HEAD, 2 * D_HEAD)
        attn.k_proj.weight[kv] = 0
        attn.v_proj.weight[kv] = 0
    out = tmp_path_factory.mktemp("headless") / "pruned"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(pruned).save_pretrained(out)
    return dense, out


@pytest.fixture(scope="module")
def ctx(headless_dirs) -> MethodContext:
    dense, pruned = headless_dirs
    data = fit_data(DataConfig(n_train=16, n_diff_prompts=16, n_probe=16), seed=0)
    pair = ModelPair.load(str(dense), str(pruned))
    enc = encode(pair.tokenizer, data.train, 64)
    fit = FitConfig(probe=ProbeDataConfig(n_pairs=24))
    cfg = TrainConfig(steps=2, batch_size=4)
    return MethodContext(pair, str(dense), str(pruned), data, enc, cfg, seed=0, fit=fit)


def test_peft_dora_is_nan_on_an_all_zero_row(headless_dirs):
    """The premise of the refusal: if a peft release fixes this, the refusal should go."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_causal_lm(headless_dirs[1])
    ids = torch.randint(1, 500, (1, 12), generator=torch.Generator().manual_seed(0))
    for dora, finite in ((False, True), (True, False)):
        cfg = LoraConfig(r=2, target_modules=["q_proj", "k_proj", "v_proj"], use_dora=dora)
        peft_model = get_peft_model(load_causal_lm(headless_dirs[1])[0], cfg)
        with torch.no_grad():
            logits = peft_model(input_ids=ids).logits
        assert bool(torch.isfinite(logits).all()) is finite
    del model


def test_dora_refuses_up_front_and_names_the_rows(ctx):
    method = make_method("dora_r8")
    with pytest.raises(MethodNotApplicable, match=r"layers\.0\.self_attn\.q_proj \(16 rows\)"):
        method.prepare(ctx)
    for name in ("lora_r8", "dora_matched"):  # o_proj's rows are not zero: DoRA runs there
        make_method(name).prepare(ctx)


def _unused_scoring(ctx: MethodContext) -> tuple[ScoringPlan, torch.Tensor, EncodedData]:
    """A failed run is never scored nor timed: an empty plan is enough; validation is real."""
    val = encode(ctx.pair.tokenizer, ctx.data.validation, 256)
    data = EncodedData(ctx.data, list(ctx.train_encoded), val)
    return ScoringPlan(ProtocolConfig(), {}, {}), torch.zeros(1, 4, dtype=torch.long), data


def test_run_method_records_a_refusal_instead_of_aborting(ctx):
    got = run_method("dora_r8", ctx, BenchConfig(quick=True), *_unused_scoring(ctx))
    assert got["failed"]["kind"] == "not_applicable"
    assert "0/0" in got["failed"]["reason"]
    assert got["trainable_params"] > 0 and "scores" not in got


def test_run_method_records_a_divergence(ctx):
    """A real divergence: a learning rate (3e37) whose second Adam step overflows the offsets to inf."""
    ctx = replace(ctx, train_config=replace(ctx.train_config, steps=4))
    got = run_method("bias_all_heads", ctx, BenchConfig(quick=True, lr=3e37), *_unused_scoring(ctx))
    assert got["failed"]["kind"] == "diverged"
    assert "diverged" in got["failed"]["reason"]


def test_run_method_applies_the_fits_divergence_guard(ctx):
    """Finite, but worse than pruned on the validation set by more than worse_margin: the fit's guard
    refuses it in the benchmark too (and the row passes with the guard off: checked by hand)."""
    assert ctx.data.validation, "the guard needs the fit's validation examples"
    one_token = [replace(e, response=" zebra" * 24) for e in ctx.data.train[:4]]
    ctx = replace(
        ctx,
        train_encoded=encode(ctx.pair.tokenizer, one_token, 64),
        train_config=replace(ctx.train_config, steps=8, objective="lm"),
    )  # every training target one token: the weights learn it, real validation text gets worse
    got = run_method("masked_full_ft", ctx, BenchConfig(quick=True, lr=3e-2), *_unused_scoring(ctx))
    assert "failed" in got, got.get("val_loss")
    assert got["failed"]["kind"] == "diverged"
    assert "restored validation loss" in got["failed"]["reason"]
    assert "worse_margin" in got["failed"]["reason"]


def _run(method, seed, value=None, failed=None):
    if failed:
        return {"method": method, "seed": seed, "failed": failed, "trainable_params": 7,
                "fit_seconds": 1.0, "describe": {"name": method}}  # fmt: skip
    domains = {"speeches": {"role": "test", "nll": 3.0, "nll_sum": 3.0, "n_tokens": 1}}
    return {
        "method": method,
        "seed": seed,
        "trainable_params": 5,
        "gaps": dict.fromkeys(GAP_KEYS, value),
        "sparsity_kept": 1.0,
        "forward": {"ratio": 1.0},
        "fit_seconds": 2.0,
        "peak_memory_mb": 10.0,
        "scores": {"domains": domains, "tasks": {}},
        "describe": {"name": method},
    }


def test_failed_rows_have_reasons_and_no_figures():
    ref = {
        "sparsity_kept": 1.0,
        "forward": {"ratio": 1.0},
        "scores": {"domains": {"speeches": {"nll": 3.0}}, "tasks": {}},
    }
    refused = {"kind": "not_applicable", "reason": "dora_r8: 0/0 on zero rows."}
    diverged = {"kind": "diverged", "reason": "loss became nan at step 3."}
    results = [
        *(_run("lcc", s, 0.3) for s in (0, 1, 2)),
        *(_run("dora_r8", s, failed=refused) for s in (0, 1, 2)),
        _run("lora_r8", 0, 0.2),
        _run("lora_r8", 1, failed=diverged),
        _run("lora_r8", 2, 0.4),
    ]
    rows = {
        r["method"]: r
        for r in aggregate_rows(
            {"dense": ref, "pruned": ref}, results, ["lcc", "dora_r8", "lora_r8"]
        )
    }
    dora, lora = rows["dora_r8"], rows["lora_r8"]
    assert dora["kind"] == "failed" and dora["trainable_params"] == 7
    assert all(dora[k]["mean"] is None and dora[k]["seeds"] == [] for k in GAP_KEYS)
    assert [f["seed"] for f in dora["failures"]] == [0, 1, 2]
    assert lora["kind"] == "trained" and lora["seeds"] == [0, 2]
    assert lora["ood_nll_gap_closed"]["mean"] == pytest.approx(0.3)
    assert failure_note(lora).startswith("`lora_r8`, seeds 1: diverged.")
    assert failure_note(rows["lcc"]) is None

    payload = {
        "setting": "s",
        "command": "python -m lcc_lens.bench",
        "config": {
            "seeds": [0, 1, 2],
            "steps": 2,
            "batch_size": 4,
            "max_length": 64,
            "objective": "lm",
            "eval_windows": 2,
            "eval_context": 64,
            "task_items": 0,
        },  # fmt: skip
        "protocol": {"domains": {"speeches": "test"}, "tasks": [], "task_domain": "speeches"},
        "rows": list(rows.values()),
    }
    table = markdown_table(payload)
    assert "| `dora_r8` (failed, below) | 7 | - |" in table
    assert "- `dora_r8`, seeds 0, 1, 2: not applicable. dora_r8: 0/0 on zero rows." in table
    summary = summary_markdown([payload])
    assert "| `dora_r8` | failed |" in summary
    assert "## Failed runs" in summary and "- s: `lora_r8`, seeds 1: diverged." in summary
    drawn = [t.name for t in gap_figure(payload).data]
    assert drawn and not any(n.startswith("dora_r8") for n in drawn)  # nothing drawn for it
