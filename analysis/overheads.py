"""What LCC's two hot loops cost over plain transformers, measured interleaved in one run (issue 10.7).

(a) fit step: one LM-objective forward + backward of the pruned model through the TransformerBridge with the
    compensation attached and only the compensation trainable (``lcc_lens.training.train_step``, the step
    the training loop runs per micro-batch: on the pruned bridge's plain twin, lcc_lens.twin),
    over a plain transformers forward + backward of the same pruned model (a clean Hugging Face copy) with
    only the o_proj biases trainable (the exported form of the same compensation).
(b) head diffs: capturing dz at hook_z for every position and accumulating the statistics and the reservoir
    (``lcc_lens.diff.accumulate_diffs``), over two plain transformers forwards (dense and pruned, no grad,
    with logits). The capture stops each forward after the last layer's hook_z, which a plain forward
    cannot: that saving (the last MLP, the final norm and the unembedding) is part of the ratio.

Both on the embedded model (SmolLM2-135M-Instruct and a magnitude-50 % prune of it; sparsity does not
change dense compute), batch 8 x 128 tokens of real text, fp32. Each round times the four measurements
in turn (order rotated each round) so that machine load hits all of them alike; the ratios are of the
medians. Run under the real-model lock: ``flock /tmp/lcc_real.lock .venv/bin/python -m analysis.overheads``.
Writes analysis/results/overheads.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.components import lost_components
from lcc_lens.corpora import passages
from lcc_lens.diff import DiffBatch, DiffConfig, accumulate_diffs
from lcc_lens.embedded import EMBEDDED_MODEL
from lcc_lens.export import with_output_bias
from lcc_lens.models import ModelPair, load_causal_lm, to_bridge
from lcc_lens.objectives import lm_loss
from lcc_lens.pruning import PruneConfig, cached_pruned_checkpoint
from lcc_lens.training import TrainConfig, train_step

logger = logging.getLogger("analysis.overheads")
RESULTS = Path(__file__).parent / "results" / "overheads.json"


def token_batch(tokenizer, batch: int, seq: int) -> torch.Tensor:
    """``batch`` windows of exactly ``seq`` tokens cut from real calibration text (no padding)."""
    ids: list[int] = []
    for text in passages("calibration", 400):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= batch * seq:
            break
    if len(ids) < batch * seq:
        raise RuntimeError(f"only {len(ids)} tokens of text for a {batch} x {seq} batch")
    return torch.tensor(ids[: batch * seq]).view(batch, seq)


def elapsed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=7, help="timed rounds (after 2 warm-up rounds)"
    )
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--fraction", type=float, default=0.25, help="share of heads compensated")
    parser.add_argument("--dense", default=EMBEDDED_MODEL, help="dense model (default: embedded)")
    parser.add_argument(
        "--pruned", default=None, help="pruned checkpoint (default: cached magnitude-50 %% prune)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(0)

    pruned_dir = args.pruned or cached_pruned_checkpoint(
        args.dense, PruneConfig(method="magnitude", sparsity=0.5)
    )
    dense_hf, tok = load_causal_lm(args.dense)
    pruned_hf, _ = load_causal_lm(pruned_dir)
    pair = ModelPair.from_bridges(
        to_bridge(load_causal_lm(args.dense)[0], tok),
        to_bridge(load_causal_lm(pruned_dir)[0], tok),
        tok,
    )
    ids = token_batch(tok, args.batch, args.seq)
    attn = torch.ones_like(ids)
    resp = torch.ones_like(ids)  # LM objective on every token

    # (b) head diffs at every position vs two plain forwards
    diff_cfg = DiffConfig(positions="all", batch_size=args.batch, max_length=args.seq)
    batch = DiffBatch(ids, attn, attn.bool(), 0)

    def diffs() -> None:
        accumulate_diffs(pair, [batch], diff_cfg, show_progress=False)

    @torch.no_grad()
    def two_forwards() -> None:
        dense_hf(ids, attention_mask=attn)
        pruned_hf(ids, attention_mask=attn)

    # (a) a fit step vs a plain forward+backward with only the o_proj biases trainable
    g = pair.geometry
    lost = lost_components(
        accumulate_diffs(pair, [batch], diff_cfg, show_progress=False).result().samples
    )
    n_heads = max(1, round(args.fraction * g.n_total_heads))
    heads = [g.unflatten(i) for i in torch.randperm(g.n_total_heads)[:n_heads].tolist()]
    comp = Compensation(g, heads, lost.directions)
    biased, _ = with_output_bias(pruned_hf)
    for name, p in biased.named_parameters():
        p.requires_grad_(name.endswith("o_proj.bias"))
    biases = [p for p in biased.parameters() if p.requires_grad]

    train_cfg = TrainConfig(objective="lm", grad_accum=1)

    def fit_step() -> None:
        comp.zero_grad(set_to_none=True)
        train_step(pair, comp, ids, attn, resp, train_cfg)

    def plain_step() -> None:
        for p in biases:
            p.grad = None
        logits = biased(ids, attention_mask=attn).logits
        lm_loss(logits, ids, resp).backward()

    jobs = {
        "fit_step": fit_step,
        "plain_step": plain_step,
        "diffs": diffs,
        "two_forwards": two_forwards,
    }
    names = list(jobs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds + 2):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t = elapsed(jobs[n])
            if r >= 2:
                times[n].append(t)
        logger.info(
            "round %d: %s", r, {n: round(times[n][-1], 3) if times[n] else None for n in names}
        )
    med = {n: statistics.median(v) for n, v in times.items()}
    result = {
        "dense": args.dense,
        "pruned": str(pruned_dir),
        "batch": args.batch,
        "seq": args.seq,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "compensated_heads": n_heads,
        "median_seconds": med,
        "fit_step_over_plain": med["fit_step"] / med["plain_step"],
        "diffs_over_two_forwards": med["diffs"] / med["two_forwards"],
        "target": 1.10,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"(a) fit step / plain fwd+bwd (o_proj biases trainable): {result['fit_step_over_plain']:.3f}\n"
        f"(b) head diffs (all positions) / two plain forwards:     "
        f"{result['diffs_over_two_forwards']:.3f}\n"
        f"median seconds: {json.dumps({k: round(v, 4) for k, v in med.items()})}"
    )
    return result


if __name__ == "__main__":
    main()
