"""Peak memory of the default fit, stage by stage, with and without memory chunks (issue 11's 4 GB goal).

Each variant runs in its own process (peak RSS only grows): load the pair, choose the data, the lost
components, then ``--steps`` training steps of the default recipe. The peak RSS after each stage and the
training time are printed and written to ``analysis/results/fit_memory.json``. Run it alone on the
machine; the lcc_lens cache should be warm (the first run generates and caches the self-written text)::

    python -m analysis.fit_memory --steps 8
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "fit_memory.json"
logger = logging.getLogger("analysis.fit_memory")


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def measure(steps: int, chunk: int | None) -> dict[str, Any]:
    """The default fit's stages in this process; the peak RSS (GB) after each, and the train time."""
    from dataclasses import replace

    import torch

    from lcc_lens.fit import FitConfig
    from lcc_lens.fit import stages as st

    torch.set_num_threads(2)
    cfg = FitConfig()
    train = replace(cfg.train, steps=steps, checkpoint_every=10_000, memory_chunk=chunk)
    cfg = replace(cfg, train=train)
    peaks: dict[str, float] = {}
    pair = st.resolve_pair(cfg).pair
    peaks["load"] = _peak_gb()
    data = st.choose_data(cfg, pair)
    peaks["data"] = _peak_gb()
    lost = st.find_lost_components(pair, data, cfg.diff, cfg.compensation.k)
    peaks["lost_components"] = _peak_gb()
    ranking = st.select(pair, data, lost, cfg.select, cfg.probe)
    comp = st.build_compensation(pair, ranking.selected, lost.components, cfg.compensation)
    t0 = time.perf_counter()
    trained = st.train_compensation(pair, comp, data, cfg.train)
    seconds = time.perf_counter() - t0
    peaks["train"] = _peak_gb()
    return {
        "memory_chunk": chunk,
        "batch_size": cfg.train.batch_size,
        "steps": steps,
        "peak_rss_gb_after": peaks,
        "train_seconds": seconds,
        "losses": [row["loss"] for row in trained.history],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--chunks", default="none,4", help="memory_chunk values, one process each")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child is not None:
        chunk = None if args.child == "none" else int(args.child)
        print(json.dumps(measure(args.steps, chunk)))
        return 0
    runs = []
    for value in args.chunks.split(","):
        cmd = [sys.executable, "-m", "analysis.fit_memory", "--steps", str(args.steps)]
        out = subprocess.run([*cmd, "--child", value], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        logger.info("memory_chunk %s: %s", value, runs[-1]["peak_rss_gb_after"])
    # the passes sum the same gradient in another order: equal up to float rounding
    diff = max(
        abs(a - b) for r in runs for a, b in zip(r["losses"], runs[0]["losses"], strict=True)
    )
    record = {
        "command": "python -m analysis.fit_memory " + " ".join(argv or sys.argv[1:]),
        "runs": runs,
        "max_abs_loss_difference_across_chunks": diff,
    }
    from lcc_lens.atomic import write_text

    write_text(OUT, json.dumps(record, indent=1) + "\n")
    print("| memory_chunk | peak RSS after load / data / diffs / train (GB) | train s |")
    print("|---|---|---|")
    for r in runs:
        p = r["peak_rss_gb_after"]
        print(
            f"| {r['memory_chunk']} | {p['load']:.2f} / {p['data']:.2f} / "
            f"{p['lost_components']:.2f} / {p['train']:.2f} | {r['train_seconds']:.1f} |"
        )
    print(f"largest loss difference across chunk sizes: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
