"""Measure per-layer memory of the LCC stages and scale it to 7B and 70B layouts (the README's memory plan).

Two kinds of figures, both counted from tensors a forward/backward actually creates:

* parameter bytes per decoder layer, embedding and head (from the modules);
* activation bytes per token: the residual stream, and the tensors autograd SAVES for the backward of a
  fit (a trainable offset at every layer's o_proj input, all weights frozen), counted with
  ``torch.autograd.graph.saved_tensors_hooks``; plus the logits row (vocab floats per token).

Every model runs the same instrumented forward. SmolLM2-135M and Gemma 3 270M run it with real weights on
the CPU with ``--real`` (under the real-model lock), otherwise on the ``meta`` device from their converted
checkpoints' configs; the 7B and 70B layouts (Llama-2-7B and Llama-3-70B shapes) always on ``meta``: shapes
and dtypes are exact, no memory is allocated. The meta count equals the real CPU count (checked by
``tests/unit/test_gemma_memory_plan.py`` on tiny Gemma 3 and Llama models, and by ``--real``), which is
what licenses the scaling.

    .venv/bin/python -m analysis.gemma_memory_plan [--real] [--out analysis/results/gemma]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

GIB = 1024**3
LENGTHS = (
    64,
    128,
)  # sequence lengths of the instrumented forwards (to split linear / quadratic terms)

LAYOUTS: dict[str, dict[str, Any]] = {
    "llama-7b": dict(
        arch="llama",
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
    "llama-70b": dict(
        arch="llama",
        vocab_size=128256,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
}


def _meta_model(layout: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in layout.items() if k != "arch"})
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


def _bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def parameter_figures(model: nn.Module) -> dict[str, Any]:
    """Bytes of one decoder layer (the largest), of the embedding and of the output head."""
    layers = model.model.layers
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    return {
        "n_layers": len(layers),
        "layer_bytes": max(_bytes(layer) for layer in layers),
        "embedding_bytes": _bytes(embed),
        "head_bytes": 0 if tied else _bytes(head),
        "total_bytes": _bytes(model),
        "total_params": sum(p.numel() for p in model.parameters()),
        "o_proj_bytes": _bytes(layers[0].self_attn.o_proj),
        "max_linear_in": max(
            m.in_features for m in model.model.layers[0].modules() if isinstance(m, nn.Linear)
        ),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def activation_figures(model: nn.Module, device: str) -> dict[str, Any]:
    """Per token: residual stream bytes, backward-saved bytes per layer of a fit, logits row bytes.

    Saved bytes per sequence are ``a T + b T^2`` (eager attention keeps [heads, T, T] scores): measured
    at two lengths, so that the plan can evaluate them at any length.
    """
    s1, s2 = (saved_bytes_per_layer(model, device, n) for n in LENGTHS)
    t1, t2 = LENGTHS
    quad = (s2 / t2 - s1 / t1) / (t2 - t1)
    cfg = model.config
    dtype = next(model.parameters()).dtype
    return {
        "residual_bytes_per_token": int(cfg.hidden_size) * torch.finfo(dtype).bits // 8,
        "saved_bytes_per_layer_linear": s1 / t1 - quad * t1,  # per token
        "saved_bytes_per_layer_quadratic": quad,  # per token per token of context
        "saved_bytes_per_token_per_layer": s2 / t2,  # at LENGTHS[-1]
        "logits_fp32_bytes_per_token": int(cfg.vocab_size) * 4,
    }


def saved_bytes_per_layer(model: nn.Module, device: str, tokens: int) -> float:
    """Bytes autograd saves per decoder layer for one sequence of ``tokens`` (offsets trainable)."""
    cfg = model.config
    dtype = next(model.parameters()).dtype
    d_attn = cfg.num_attention_heads * (
        getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    )
    offsets = [
        torch.zeros(d_attn, device=device, dtype=dtype, requires_grad=True)
        for _ in model.model.layers
    ]
    handles = [
        layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, args, off=off: (args[0] + off,))
        for layer, off in zip(model.model.layers, offsets, strict=True)
    ]
    saved: dict[int, int] = {}  # storage -> bytes (views of one storage counted once)
    # frozen weights autograd keeps for the input gradient are resident anyway: not counted. The
    # storage handle identifies a tensor's memory on every device, ``meta`` included.
    weights = {p.untyped_storage()._cdata for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in weights:
            saved[key] = max(saved.get(key, 0), t.untyped_storage().nbytes())
        return t

    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    # the logits are not saved by the head's matmul; the plan counts them apart (they scale with vocab)
    del logits
    return sum(saved.values()) / len(model.model.layers)


def _real_model(source: str) -> nn.Module:
    from lcc_lens.models import load_causal_lm

    model, _ = load_causal_lm(source, dtype=torch.float32)
    model.config._attn_implementation = "eager"  # the bridge runs eager attention
    return model


def _shipped_config(source: str) -> Any:
    """The config of a shipped model's converted checkpoint (no weights are read)."""
    from transformers import AutoConfig

    from lcc_lens.models import resolve_model_source

    cfg = AutoConfig.from_pretrained(resolve_model_source(source), local_files_only=True)
    cfg._attn_implementation = "eager"
    return cfg


def measure(real: bool) -> dict[str, Any]:
    """Figures of SmolLM2 and Gemma (real weights with ``real``, else their shapes on meta), 7B, 70B."""
    from transformers import AutoModelForCausalLM

    from lcc_lens.embedded import EMBEDDED_MODEL, GEMMA_MODEL

    out: dict[str, Any] = {"lengths": list(LENGTHS), "models": {}}
    for label, source in (("smollm2-135m", EMBEDDED_MODEL), ("gemma3-270m", GEMMA_MODEL)):
        cfg = _shipped_config(source)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(cfg).eval()
        row = {
            "how": "its fp32 shapes on meta",
            **parameter_figures(meta),
            **activation_figures(meta, "meta"),
        }
        if real:
            model = _real_model(source)
            row = {
                "how": "real weights on CPU (fp32)",
                **parameter_figures(model),
                **activation_figures(model, "cpu"),
                "meta_saved_bytes_per_token_per_layer": row["saved_bytes_per_token_per_layer"],
            }
            del model
        out["models"][label] = row
    for label, layout in LAYOUTS.items():
        model = _meta_model(layout, torch.bfloat16)
        out["models"][label] = {
            "how": "meta device, bf16 (exact shapes, no data)",
            **parameter_figures(model),
            **activation_figures(model, "meta"),
        }
    return out


PLAN = {"batch": 8, "seq": 512, "calib_samples": 128, "calib_seq": 2048}
"""Settings of the plan: fit/diff/eval batches of 8 x 512 tokens; calibration as in the papers."""


def stage_plan(fig: dict[str, Any]) -> dict[str, float]:
    """GiB resident per stage for one model in ``fig``'s dtype (see the README's memory plan)."""
    b, t = PLAN["batch"], PLAN["seq"]
    model, layer = fig["total_bytes"], fig["layer_bytes"]
    tokens = b * t
    act = fig["saved_bytes_per_layer_linear"] + fig["saved_bytes_per_layer_quadratic"] * t
    logits = fig["logits_fp32_bytes_per_token"]
    calib = PLAN["calib_samples"] * PLAN["calib_seq"] * fig["residual_bytes_per_token"]
    hessian = 3 * fig["max_linear_in"] ** 2 * 4  # SparseGPT: H, its inverse Cholesky, a work copy
    return {
        "prune_device": (layer + 2 * calib + hessian) / GIB,
        "prune_host": model / GIB,
        "diff_probe": (2 * model + tokens * logits) / GIB,
        "fit": (2 * model + tokens * (fig["n_layers"] * act + 3 * logits)) / GIB,
        "fit_micro1": (2 * model + t * (fig["n_layers"] * act + 3 * logits)) / GIB,
        "eval": (2 * model + tokens * logits) / GIB,
        "export_shards": 2 * fig["o_proj_bytes"] / GIB,  # one o_proj weight + its float64 product
        "export_in_memory": 2 * fig["total_params"] * 4 / GIB,  # two fp32 copies on the host
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "Per-layer figures (`python -m analysis.gemma_memory_plan`; the how column says on what):",
        "",
        "| model | how measured | layers | GiB / layer | GiB embed+head | GiB total | "
        "fit backward: saved KiB / token / layer at 128 tokens | KiB logits / token (fp32) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in result["models"].items():
        lines.append(
            f"| {name} | {f['how']} | {f['n_layers']} | {f['layer_bytes'] / GIB:.3f} | "
            f"{(f['embedding_bytes'] + f['head_bytes']) / GIB:.3f} | {f['total_bytes'] / GIB:.2f} | "
            f"{f['saved_bytes_per_token_per_layer'] / 1024:.1f} | "
            f"{f['logits_fp32_bytes_per_token'] / 1024:.0f} |"
        )
    checks = [
        (n, f) for n, f in result["models"].items() if "meta_saved_bytes_per_token_per_layer" in f
    ]
    if checks:
        lines += [
            "",
            "Meta-device count vs real CPU count of the saved activations (same model):",
            "",
        ]
        for name, f in checks:
            lines.append(
                f"- {name}: real {f['saved_bytes_per_token_per_layer']:.0f} B, meta "
                f"{f['meta_saved_bytes_per_token_per_layer']:.0f} B per token per layer"
            )
    lines += [
        "",
        f"GiB resident per stage (weights in the listed dtype; batch {PLAN['batch']} x {PLAN['seq']} "
        f"tokens; calibration {PLAN['calib_samples']} x {PLAN['calib_seq']} tokens):",
        "",
        "| model | prune: device (1 layer + calibration + SparseGPT Hessian) | prune: host | "
        "diff / probe | fit | fit, micro-batch 1 | eval | export: shards | export: in memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in result["models"].items():
        p = stage_plan(f)
        lines.append(
            f"| {name} ({f['dtype']}) | {p['prune_device']:.1f} | {p['prune_host']:.1f} | "
            f"{p['diff_probe']:.1f} | {p['fit']:.1f} | {p['fit_micro1']:.1f} | {p['eval']:.1f} | "
            f"{p['export_shards']:.2f} | {p['export_in_memory']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real", action="store_true", help="run SmolLM2 and Gemma with real weights on the CPU"
    )
    parser.add_argument("--out", type=Path, default=Path("analysis/results/gemma"))
    parser.add_argument("--from-json", action="store_true", help="only regenerate the markdown")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "memory_plan.json"
    if args.from_json:
        result = json.loads(path.read_text())
    else:
        torch.manual_seed(0)
        result = measure(args.real)
        path.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "memory_plan.md").write_text(markdown(result))
    print((args.out / "memory_plan.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
