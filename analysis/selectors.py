"""Which head selector helps restoration out of domain: probe (paper / aligned) vs random, norm, MSE, KL
attribution and all heads, at the same head budget, over several seeds, on the embedded real model.

Three steps, each short enough for the shared lock (``fit`` stops between runs at ``--budget-min``
and skips runs already written, so repeat it, e.g. per group of selectors, until all are done)::

    flock -w 900 /tmp/lcc_real.lock .venv/bin/python -m analysis.selectors rank
    flock -w 900 /tmp/lcc_real.lock .venv/bin/python -m analysis.selectors fit --only probe,random
    .venv/bin/python -m analysis.selectors report

``rank`` builds the contrastive probe pairs from the fit split, captures the dense model's probe features
(cached under the lcc_lens cache), scores every selector for every seed and writes
``analysis/results/selection/rankings.json`` and ``heads_<probe>.json`` (the probe ranking with each
head's score, null and stability). ``fit`` trains one compensation per selector on the selected heads (the
default fit's data, objective and compensation form at reduced steps, the same for every selector) and
scores it with the evaluation protocol's windows on every domain: ``runs/<selector>_seed<seed>.json``.
``report`` writes ``selectors.json``, the generated ``selectors.md`` (NLL gap closed, out of domain first,
mean +- sd over seeds, and the Jaccard overlap of the selected sets across seeds) and the probe figures
(``figures/<probe>_null``, drawn from ``heads_<probe>.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.selectors_report import write_report
from lcc_lens.atomic import write_text

OUT = Path(__file__).resolve().parent / "results" / "selection"
SELECTORS = ("probe", "random", "probe_aligned", "kl", "norm", "mse", "all")  # run order
logger = logging.getLogger("analysis.selectors")


@dataclass(frozen=True)
class Setup:
    """Sizes of the comparison (reduced for a shared 2-core CPU; the report states them)."""

    fraction: float = 0.25
    seeds: tuple[int, ...] = (0, 1, 2)
    n_pairs: int = 1024
    context_words: int = 40
    response_words: int = 12
    probe_max_length: int = 128
    k: int = 1
    n_kl_prompts: int = 16
    steps: int = 12
    batch_size: int = 8
    max_length: int = 128
    windows: int = 8
    context_length: int = 256


def _pair_and_data():
    from lcc_lens.data import DataConfig, fit_data
    from lcc_lens.models import ModelPair
    from lcc_lens.pruning import PruneConfig, cached_pruned_checkpoint

    pruned_dir = cached_pruned_checkpoint("embedded", PruneConfig())
    pair = ModelPair.load("embedded", pruned_dir, device="cpu")
    return pair, fit_data(DataConfig(), seed=0), pruned_dir


def _components(pair, data, k: int):
    from lcc_lens.components import cached_lost_components
    from lcc_lens.diff import DiffConfig

    return cached_lost_components(
        pair, list(data.diff_prompts), DiffConfig(positions="last", max_length=128), k=k
    )


def _features(pair, data, setup: Setup):
    """Probe pairs from the fit split of the fit domains and the dense model's features (cached)."""
    from safetensors.torch import load_file, save_file

    from lcc_lens.cache import cache_root
    from lcc_lens.probe_data import ProbeDataConfig, fit_probe_items
    from lcc_lens.probing import ProbeConfig, ProbeFeatures, probe_features

    items = fit_probe_items(ProbeDataConfig(n_pairs=setup.n_pairs), sources=data.config.fit_domains)
    pcfg = ProbeConfig(max_length=setup.probe_max_length)
    key = hashlib.sha256(
        json.dumps([pair.dense_source, pcfg.max_length, [asdict(s) for s in items]]).encode()
    ).hexdigest()[:16]
    path = cache_root() / "selectors" / f"probe_features_{key}.safetensors"
    if path.is_file():
        return items, ProbeFeatures(load_file(str(path))["delta"])
    t0 = time.perf_counter()
    feats = probe_features(pair.dense, pair.tokenizer, items, pcfg)
    logger.info("probe features for %d pairs in %.0f s", len(items), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"delta": feats.delta.contiguous()}, str(path))
    return items, feats


def rank(setup: Setup) -> Path:
    """Every selector's ranking for every seed; heads.json and the figure for the probe."""
    from lcc_lens.selection import SelectConfig, select_heads

    t0 = time.perf_counter()
    pair, data, pruned_dir = _pair_and_data()
    g = pair.geometry
    lost, diff = _components(pair, data, setup.k)
    items, feats = _features(pair, data, setup)
    kl_prompts = [e.prompt + e.response for e in data.train[: setup.n_kl_prompts]]
    rankings: dict[str, dict[str, Any]] = {}
    timing: dict[str, float] = {}
    for name in SELECTORS:
        method = "probe" if name.startswith("probe") else name
        mode = "aligned" if name == "probe_aligned" else "paper"
        seeds = setup.seeds if name in ("probe", "probe_aligned", "random") else (0,)
        for seed in seeds:
            t1 = time.perf_counter()
            cfg = SelectConfig(method=method, fraction=setup.fraction, seed=seed, probe_mode=mode)  # type: ignore[arg-type]
            r = select_heads(
                pair, cfg, components=lost, diff=diff, features=feats, kl_prompts=kl_prompts
            )
            timing[f"{name}/{seed}"] = time.perf_counter() - t1
            rankings[f"{name}/{seed}"] = r.to_json(g)
            if name.startswith("probe") and seed == setup.seeds[0]:
                # the figures are drawn from these files by ``report``
                write_text(OUT / f"heads_{name}.json", r.dumps(g) + "\n")
    ridge_check = _ridge_check(feats, SelectConfig(fraction=setup.fraction).count(g))
    kinds: dict[str, int] = {}
    for s in items:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    record = {
        "setup": asdict(setup),
        "data": data.describe(),
        "pruned": str(pruned_dir),
        "probe_pairs": kinds,
        "probe_examples": [asdict(s) for s in items[:4]],
        "ridge_check": ridge_check,
        "selector_seconds": timing,
        "wall_seconds": time.perf_counter() - t0,
        "rankings": rankings,
        "command": "python -m analysis.selectors " + " ".join(sys.argv[1:]),
    }
    path = OUT / "rankings.json"
    write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _ridge_check(feats, n: int) -> dict[str, dict[str, float]]:
    """The probe's signal and stability for several ridge penalties (paper mode, 20 shuffles)."""
    from lcc_lens.probing import ProbeConfig, rank_order, score_probes

    out = {}
    for ridge in (0.01, 0.1, 1.0, 10.0):
        r = score_probes(feats, None, ProbeConfig(ridge=ridge, n_permutations=20))
        top = rank_order(r.score)[:n]
        out[str(ridge)] = {
            "mean_accuracy": float(r.accuracy.mean()),
            "top_n_mean_accuracy": float(r.accuracy.flatten()[top].mean()),
            "max_accuracy": float(r.accuracy.max()),
            "heads_z_above_3": int((r.accuracy_z > 3).sum()),
            "top_n_jaccard_across_splits": r.split_jaccard(n),
        }
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _nll(model, windows, batch_size: int = 8) -> float:
    from lcc_lens.evaluation.protocol import score_windows

    sums = score_windows(model, windows, batch_size)
    return sum(sums) / sum(len(w.targets) for w in windows)


def _fit_config(setup: Setup, seed: int, pruned_dir: Path) -> Any:
    """The library's default fit configuration with this comparison's sizes."""
    from dataclasses import replace

    from lcc_lens.fit import FitConfig

    base = FitConfig()
    return replace(
        base,
        seed=seed,
        pruned=str(pruned_dir),
        max_length=setup.max_length,
        train=replace(
            base.train, steps=setup.steps, batch_size=setup.batch_size, checkpoint_every=10_000
        ),
    )


def fit(
    setup: Setup, seeds: tuple[int, ...], only: tuple[str, ...], budget_s: float = 1e9
) -> list[Path]:
    """Train and score one compensation per selector and seed; dense/pruned scored once.

    Runs already written with the same setup are skipped; no new run starts once the time left of
    ``budget_s`` is shorter than the slowest run so far (so a job ends on time, between runs).
    """
    from lcc_lens.evaluation.gap import nll_gap_closed
    from lcc_lens.evaluation.protocol import ProtocolConfig, sample_windows
    from lcc_lens.fit import stages as st

    rankings = json.loads((OUT / "rankings.json").read_text())["rankings"]
    pair, data, pruned_dir = _pair_and_data()
    lost, _ = _components(pair, data, setup.k)
    pcfg = ProtocolConfig(context_length=setup.context_length, windows=setup.windows, seed=0)
    windows = {d: sample_windows(pair.tokenizer, t, pcfg)[0] for d, t in data.eval_texts.items()}
    base_path = OUT / "runs" / "baseline.json"
    base = json.loads(base_path.read_text()) if base_path.is_file() else {}
    if base.get("protocol") != asdict(pcfg):
        base = {
            "protocol": asdict(pcfg),
            "roles": dict(data.eval_roles),
            "dense": {d: _nll(pair.dense, w) for d, w in windows.items()},
            "pruned": {d: _nll(pair.pruned, w) for d, w in windows.items()},
        }
        write_text(base_path, json.dumps(base, indent=1) + "\n")
    paths = []
    start, slowest = time.perf_counter(), 0.0
    for name, seed in [(n, s) for n in only or SELECTORS for s in seeds]:
        if time.perf_counter() - start + slowest > budget_s:
            logger.info("time budget reached: %s seed %d and later runs not started", name, seed)
            break
        path = OUT / "runs" / f"{name}_seed{seed}.json"
        if path.is_file() and json.loads(path.read_text()).get("setup") == _jsonable(asdict(setup)):
            logger.info("%s seed %d: already done", name, seed)
            continue
        key = f"{name}/{seed}" if f"{name}/{seed}" in rankings else f"{name}/0"
        heads = [tuple(h) for h in rankings[key]["selected"]]
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        # the default fit's data, objective and compensation form on these heads, at setup.steps
        config = _fit_config(setup, seed, pruned_dir)
        encoded = st.choose_data(config, pair)
        comp = st.build_compensation(pair, heads, lost, config.compensation)
        history = st.train_compensation(pair, comp, encoded, config.train).history
        fit_s = time.perf_counter() - t0
        nll = {d: _nll((pair.pruned, comp), w) for d, w in windows.items()}
        gap = {d: nll_gap_closed(base["dense"][d], base["pruned"][d], nll[d]) for d in nll}
        record = {
            "selector": name,
            "seed": seed,
            "n_heads": len(heads),
            "heads": [list(h) for h in heads],
            "nll": nll,
            "gap_closed_nll": gap,
            "roles": dict(data.eval_roles),
            "history": history,
            "fit_seconds": fit_s,
            "wall_seconds": time.perf_counter() - t0,
            "setup": asdict(setup),
            "fit_config": config.to_dict(),
            "command": "python -m analysis.selectors " + " ".join(sys.argv[1:]),
        }
        write_text(path, json.dumps(record, indent=1) + "\n")
        slowest = max(slowest, record["wall_seconds"])
        logger.info("%s seed %d: gap closed %s (%.0f s)", name, seed, gap, record["wall_seconds"])
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["rank", "fit", "report"])
    ap.add_argument("--seeds", default="0,1,2", help="fit: comma-separated seeds of this job")
    ap.add_argument("--budget-min", type=float, default=13.0, help="fit: start no run after this")
    ap.add_argument("--only", default="", help=f"fit: comma-separated subset of {SELECTORS}")
    ap.add_argument("--n-pairs", type=int, default=Setup.n_pairs)
    ap.add_argument("--n-kl-prompts", type=int, default=Setup.n_kl_prompts)
    ap.add_argument("--context-words", type=int, default=Setup.context_words)
    ap.add_argument("--response-words", type=int, default=Setup.response_words)
    ap.add_argument("--probe-max-length", type=int, default=Setup.probe_max_length)
    ap.add_argument("--steps", type=int, default=Setup.steps)
    ap.add_argument("--batch-size", type=int, default=Setup.batch_size)
    ap.add_argument("--max-length", type=int, default=Setup.max_length)
    ap.add_argument("--windows", type=int, default=Setup.windows)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(2)
    only = tuple(s for s in args.only.split(",") if s)
    bad = [s for s in only if s not in SELECTORS]
    if bad:
        ap.error(f"unknown selectors {bad}; choose from {SELECTORS}")
    setup = Setup(
        n_pairs=args.n_pairs,
        n_kl_prompts=args.n_kl_prompts,
        context_words=args.context_words,
        response_words=args.response_words,
        probe_max_length=args.probe_max_length,
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        windows=args.windows,
    )
    if args.step == "rank":
        logger.info("wrote %s", rank(setup))
    elif args.step == "fit":
        seeds = tuple(int(x) for x in args.seeds.split(",") if x)
        fit(setup, seeds, only, budget_s=60 * args.budget_min)
    else:
        logger.info("wrote %s", write_report(OUT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
