"""Measure the merge invariants: hooked pruned model + compensation vs the exported plain HF checkpoint.

For each layout (tiny random models, fp32) and optionally the real embedded model, prints the max |logit|
difference, whether every pruned weight (zeros included) is unchanged, and the zero-compensation difference.

    .venv/bin/python -m analysis.export_invariants [--real PRUNED_DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.export import export_checkpoint
from lcc_lens.models import HeadGeometry, load_bridge, load_causal_lm
from lcc_lens.tiny import LAYOUTS, save_tiny_checkpoint


def measure(pruned_dir: Path, work: Path, seed: int = 0) -> dict[str, float]:
    bridge, tok = load_bridge(pruned_dir)
    g = HeadGeometry.of(bridge)
    gen = torch.Generator().manual_seed(seed)
    n = max(1, g.n_total_heads // 4)
    heads = [g.unflatten(int(i)) for i in torch.randperm(g.n_total_heads, generator=gen)[:n]]
    v = torch.linalg.qr(torch.randn(g.n_layers, g.n_heads, g.d_head, g.d_head, generator=gen))[0]
    comp = Compensation(g, heads, v)
    with torch.no_grad():
        comp.beta.copy_(0.5 * torch.randn(comp.beta.shape, generator=gen))
        comp.bias.copy_(0.5 * torch.randn(comp.bias.shape, generator=gen))
    x = torch.randint(0, min(g.d_vocab, 30000), (2, 48), generator=gen)
    with torch.no_grad():
        base = bridge(x, return_type="logits")
        with comp.attach(bridge):
            hooked = bridge(x, return_type="logits")
    out = export_checkpoint(pruned_dir, comp, work / "export")
    exported, _ = load_causal_lm(out)
    pruned, _ = load_causal_lm(pruned_dir)
    src, dst = pruned.state_dict(), exported.state_dict()
    same = all(
        torch.equal(dst[k], w)
        for k, w in src.items()
        if not k.endswith(("o_proj.bias", "c_proj.bias"))
    )
    zeros = sum(int((w == 0).sum()) for w in src.values() if w.dim() == 2)
    with torch.no_grad():
        merged = exported(x).logits
    return {
        "max_abs_diff": float((hooked - merged).abs().max()),
        "effect_of_compensation": float((hooked - base).abs().max()),
        "weights_unchanged": float(same),
        "zero_weights": float(zeros),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--real", type=Path, help="a pruned checkpoint of the real model to measure as well"
    )
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for layout in LAYOUTS:
            d = save_tiny_checkpoint(root / layout, layout, seed=2)
            rows.append((layout, measure(d, root / f"{layout}-w")))
        if args.real:
            rows.append(("real:" + args.real.name, measure(args.real, root / "real-w")))
    print(
        "| model | max abs logit diff (hooked vs exported) | max logit change from compensation | weights unchanged | zero weights |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['max_abs_diff']:.2e} | {r['effect_of_compensation']:.2e} | "
            f"{'yes' if r['weights_unchanged'] else 'NO'} | {int(r['zero_weights'])} |"
        )
    return 0 if all(r["max_abs_diff"] <= 1e-4 and r["weights_unchanged"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
