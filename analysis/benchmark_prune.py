"""Benchmark (not a test): pruning time and peak memory on the real embedded model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.benchmark_prune --method wanda --sparsity 0.5
    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.benchmark_prune --method sparsegpt --pattern 2:4

Prints the pruning wall time, the process's resident memory (baseline after imports, after loading the
model, peak while pruning, sampled every 20 ms), torch's CUDA peak when on a GPU, the model's own size
(parameter bytes) and the ratio of peak memory to model size. The layer-by-layer driver's goal is a peak of
about one model copy plus one layer's activations and statistics.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402

from lcc_lens.models import load_causal_lm  # noqa: E402
from lcc_lens.pruning import PruneConfig, prune_model  # noqa: E402

MB = 2**20


class PeakRss:
    """Sample this process's RSS in a background thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.02):
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--method", default="wanda")
    p.add_argument("--sparsity", type=float, default=None)
    p.add_argument("--pattern", default=None)
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sparsity = args.sparsity if (args.sparsity is not None or args.pattern) else 0.5
    cfg = PruneConfig(
        method=args.method,
        sparsity=sparsity,
        pattern=args.pattern,
        n_samples=args.n_samples,
        seq_len=args.seq_len,
        device=args.device,
    )
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    model, tok = load_causal_lm(args.model, device=args.device or "cpu")
    unique = {t.data_ptr(): t for t in model.state_dict().values()}  # tied embeddings count once
    size = sum(t.numel() * t.element_size() for t in unique.values())
    with torch.no_grad():  # fault in every weight page so "after load" is the resident model
        for t in unique.values():
            t.float().sum()
    loaded = proc.memory_info().rss
    on_cuda = next(model.parameters()).is_cuda
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with PeakRss() as peak:
        report = prune_model(model, tok, cfg, show_progress=False)
    seconds = time.perf_counter() - t0
    print(
        f"model            {args.model} ({type(model).__name__}), {size / MB:.1f} MiB of parameters"
    )
    print(
        f"setting          {cfg.method} sparsity={cfg.target_sparsity} pattern={cfg.pattern} "
        f"calibration={cfg.n_samples}x{cfg.seq_len} threads={torch.get_num_threads()}"
    )
    print(f"pruning time     {seconds:.1f} s (measured sparsity {report.total_sparsity:.4f})")
    print(f"RSS baseline     {baseline / MB:.0f} MiB (interpreter + libraries)")
    print(f"RSS after load   {loaded / MB:.0f} MiB (all weights touched)")
    print(f"RSS peak         {peak.peak / MB:.0f} MiB while pruning")
    print(
        f"pruning overhead {(peak.peak - loaded) / MB:.0f} MiB above the loaded model "
        f"= {(peak.peak - loaded) / size:.2f} x model size"
    )
    print(
        f"ratio            peak RSS / model size = {peak.peak / size:.2f}; "
        f"(peak - baseline) / model size = {(peak.peak - baseline) / size:.2f}"
    )
    if on_cuda:
        cuda_peak = torch.cuda.max_memory_allocated()
        print(
            f"CUDA peak        {cuda_peak / MB:.0f} MiB; ratio to model size {cuda_peak / size:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
