"""The GPU check's benchmark section: restoration against training budget, rates chosen on validation.

Through the benchmark itself (:func:`lcc_lens.bench.run_bench`, one seed, Wanda 50 %): first a learning-
rate grid at the shortest budget (each method at 1, 0.3 and 3 times its default rate, as
``analysis.bench_lr`` does), each method's rate chosen on the out-of-domain validation domain
(:func:`analysis.bench_lr.chosen`: the test domain chooses nothing); then the longer budgets with every
method at its chosen rate (``BenchConfig.method_lrs``). Each benchmark call writes the section file
again, so a run stopped by the time budget keeps every figure it finished. A budget whose projected time
(from the calls so far) would pass the deadline is halved until it fits, or skipped with the reason.

Methods: ``lcc``, the best zero-keeping LCC-family configuration, ``masked_lora_r8`` and ``lora_r8``,
each when the method registry has it (a missing one is noted, never faked).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from analysis.bench_lr import DEFAULTS, SCALES, SELECT_ON, SETTING, chosen, default_lr, scaled_lr
from analysis.gpu.config import SMOKE_BENCH_SIZES, GpuCheckArgs
from analysis.gpu.record import new_record, write_record
from lcc_lens.bench.config import QUICK_SETTING

logger = logging.getLogger("analysis.gpu.bench")
WANTED = ("lcc", "<family>", "masked_lora_r8", "lora_r8")
"""The methods of issue 26, in its order; ``<family>`` is :func:`family_choice`'s."""
GRID = (1.0, *SCALES["lcc"])
"""Multiples of each method's default rate tried at the shortest budget (the default first)."""
MARGIN_S = 5.0
"""Seconds kept free before the deadline (writing the section file, process exit)."""


def is_lcc_family(name: str) -> bool:
    """A trained LCC-style method: one constant offset per head at hook_z (or named ``lcc_*``)."""
    from lcc_lens.methods import make_method
    from lcc_lens.methods.head_offsets import HeadOffsetMethod

    method = make_method(name)
    return method.trains and (isinstance(method, HeadOffsetMethod) or name.startswith("lcc"))


def family_choice(explicit: str | None) -> tuple[str | None, str]:
    """The LCC-family method beside ``lcc``: given, or the committed table's best that keeps zeros.

    Best = the highest NLL gap closed on the validation domain of the committed Wanda 50 % table among
    the registry's LCC-family methods other than ``lcc`` whose export kept every zero.
    """
    from lcc_lens.bench.summary import load_payloads
    from lcc_lens.methods import METHOD_NAMES

    if explicit is not None:
        return explicit, "given by --family"
    payloads = [p for p in load_payloads(DEFAULTS) if p["setting"] == SETTING]
    rows = [
        r
        for p in payloads
        for r in p["rows"]
        if r["method"] in METHOD_NAMES
        and r["method"] != "lcc"
        and r.get("kind") == "trained"
        and (r.get("sparsity_kept") or {}).get("mean") == 1.0
        and (r.get(SELECT_ON) or {}).get("mean") is not None
        and is_lcc_family(r["method"])
    ]
    if not rows:
        return None, f"no zero-keeping LCC-family row besides lcc in the committed {SETTING} table"
    best = max(rows, key=lambda r: r[SELECT_ON]["mean"])
    ranked = ", ".join(
        f"{r['method']} {r[SELECT_ON]['mean']:.1%}"
        for r in sorted(rows, key=lambda r: -r[SELECT_ON]["mean"])
    )
    return best["method"], f"best on the committed {SETTING} table's validation domain ({ranked})"


def method_plan(explicit_family: str | None) -> tuple[list[str], dict[str, str]]:
    """The wanted methods the registry has, and a note for each (why chosen, or why absent)."""
    from lcc_lens.methods import METHOD_NAMES

    family, why = family_choice(explicit_family)
    present: list[str] = []
    notes: dict[str, str] = {}
    for name in WANTED:
        label = family if name == "<family>" else name
        if label is None:
            notes["<family>"] = f"skipped: {why}"
        elif label not in METHOD_NAMES:
            notes[label] = "skipped: not in the method registry (lcc_lens.methods) at this commit"
        elif label not in present:
            present.append(label)
            notes[label] = why if name == "<family>" else "present"
    return present, notes


def bench_config(
    args: GpuCheckArgs, methods: Sequence[str], steps: int, rates: dict[str, float], label: str
) -> Any:
    """One benchmark call: one seed, this budget, these per-method rates, its own folder and cache."""
    from lcc_lens.bench import BenchConfig

    root = args.work_dir() / "bench" / label
    return BenchConfig(
        settings=(SETTING,),
        methods=tuple(methods),
        seeds=(0,),
        steps=steps,
        n_train=args.n_train,
        method_lrs=tuple(f"{m}={rates[m]:g}" for m in methods),
        out=str(root / "out"),
        cache_dir=str(root / "cache"),
        quick=args.smoke,
        device=args.device_name,
        dtype=args.bench_dtype,
        **(SMOKE_BENCH_SIZES if args.smoke else {}),
    )


def _mean(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return value.get("mean") if isinstance(value, dict) else value


def points_of(payload: dict[str, Any], phase: str, scale: float | None) -> list[dict[str, Any]]:
    """One point per method row of a benchmark payload: budget, rate and the figures."""
    cfg = payload["config"]
    examples = next(iter(payload["training_text"]["examples_per_seed_run_here"].values()), None)
    out = []
    for row in payload["rows"]:
        if row.get("kind") == "reference":
            continue
        failed = row.get("failures") if row.get("kind") == "failed" else None
        out.append(
            {
                "phase": phase,
                "method": row["method"],
                "lr_scale": scale,
                "lr": row.get("lr"),
                "steps": cfg["steps"],
                "batch_size": cfg["batch_size"],
                "max_length": cfg["max_length"],
                "tokens": cfg["steps"] * cfg["batch_size"] * cfg["max_length"],
                "passes": cfg["steps"] * cfg["batch_size"] / examples if examples else None,
                "ood_nll_gap_closed": _mean(row, "ood_nll_gap_closed"),
                SELECT_ON: _mean(row, SELECT_ON),
                "indomain_nll_gap_closed": _mean(row, "indomain_nll_gap_closed"),
                "sparsity_kept": _mean(row, "sparsity_kept"),
                "trainable_params": row.get("trainable_params"),
                "fit_seconds": _mean(row, "fit_seconds"),
                "peak_memory_mb": _mean(row, "peak_memory_mb"),
                "peak_memory_kind": row.get("peak_memory_kind"),
                "failed": failed[0]["reason"] if failed else None,
            }
        )
    return out


class Progress:
    """Measured benchmark calls, and the projected time of the next one (issue 26's budget rule)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.calls: list[tuple[float, list[dict[str, Any]]]] = []

    def remaining(self) -> float:
        return self.deadline - time.time() - MARGIN_S

    def add(self, wall: float, points: list[dict[str, Any]]) -> None:
        self.calls.append((wall, points))

    def overhead(self) -> float:
        """Seconds of a call outside the methods' fits (loading, references, scoring), median."""
        rest = [w - sum(p["fit_seconds"] or 0.0 for p in pts) for w, pts in self.calls]
        return statistics.median(rest) if rest else 0.0

    def fit_seconds(self, method: str, steps: int) -> float:
        """Linear in steps through the two measured budgets furthest apart; else proportional."""
        seen = sorted(
            {
                (p["steps"], p["fit_seconds"])
                for _, pts in self.calls
                for p in pts
                if p["method"] == method and p["fit_seconds"] is not None
            }
        )
        if not seen:
            return 0.0
        (s0, t0), (s1, t1) = seen[0], seen[-1]
        if s1 > s0 and t1 > t0:
            return t1 + (t1 - t0) / (s1 - s0) * (steps - s1)
        return max(t for s, t in seen if s == s1) * steps / s1

    def projected(self, methods: Sequence[str], steps: int) -> float:
        return self.overhead() + sum(self.fit_seconds(m, steps) for m in methods)

    def plan(
        self, methods: Sequence[str], target: int, floor: int
    ) -> tuple[int | None, str | None]:
        """The budget to run for ``target``: itself, else halved (above ``floor``) until it fits."""
        steps = target
        while self.projected(methods, steps) > self.remaining() and steps // 2 > floor:
            steps //= 2
        need = self.projected(methods, steps)
        if need > self.remaining():
            return None, (
                f"skipped: time budget ({need:.0f} s projected for {steps} steps, "
                f"{max(0.0, self.remaining()):.0f} s left)"
            )
        if steps == target:
            return steps, None
        return steps, (
            f"reduced from {target} to {steps} steps by the time budget "
            f"({self.projected(methods, target):.0f} s projected for {target})"
        )


def run_call(cfg: Any, progress: Progress, phase: str, scale: float | None) -> list[dict[str, Any]]:
    """One benchmark call; its points, also added to ``progress``."""
    from lcc_lens.bench import run_bench
    from lcc_lens.cli.bench import command_line

    t0 = time.perf_counter()
    payload = run_bench(cfg, command=command_line(cfg))[0]
    points = points_of(payload, phase, scale)
    for p in points:
        p["command"] = payload["command"]
        p["setting"] = payload["setting"]
    progress.add(time.perf_counter() - t0, points)
    return points


def choose_rates(points: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each method's grid point with the best validation gap (``analysis.bench_lr.chosen``'s rule)."""
    by_method: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for p in points:
        if p["failed"] is None and p[SELECT_ON] is not None:
            row = {SELECT_ON: {"mean": p[SELECT_ON]}}  # the benchmark row's shape
            by_method.setdefault(p["method"], []).append((row, p))
    picks = {}
    for method, rows in by_method.items():
        best = chosen(rows)
        picks[method] = next(p for row, p in rows if row is best)
    return picks


def run_bench_section(args: GpuCheckArgs, deadline: float) -> int:
    """The grid at the shortest budget, the choice, then the longer budgets at the chosen rates."""
    t0 = time.perf_counter()
    device = torch.device(args.device_name)
    record = new_record("bench", device, "python -m analysis.gpu.check --section bench")
    methods, notes = method_plan(args.family)
    budgets = args.step_budgets
    setting = QUICK_SETTING if args.smoke else SETTING  # --smoke: lcc bench --quick's tiny model
    fig: dict[str, Any] = {"setting": setting, "methods": methods, "method_notes": notes}
    fig.update(budgets_requested=list(budgets), grid_scales=list(GRID), points=[], notes=[])
    record["figures"] = fig
    progress = Progress(deadline)

    def save() -> None:
        write_record(args.out, record, device, time.perf_counter() - t0)

    for i, scale in enumerate(GRID):
        if i and progress.projected(methods, budgets[0]) > progress.remaining():
            fig["notes"].append(f"grid scale {scale:g} skipped: time budget")
            continue
        rates = {m: scaled_lr(m, scale) for m in methods}
        cfg = bench_config(args, methods, budgets[0], rates, f"grid_s{budgets[0]}_x{scale:g}")
        fig["points"] += run_call(cfg, progress, "grid", scale)
        save()
    picks = choose_rates(fig["points"])
    fig["chosen_lr"] = {m: picks[m]["lr"] for m in picks}
    fig["default_lr"] = {m: default_lr(m) for m in methods}
    trained = [m for m in methods if m in picks]
    if not trained:
        fig["notes"].append("no method finished the grid with a validation figure: no budget run")
    previous = budgets[0]
    for target in budgets[1:] if trained else ():
        steps, note = progress.plan(trained, target, previous)
        if note:
            fig["notes"].append(f"budget {target}: {note}")
        if steps is None:
            continue
        cfg = bench_config(args, trained, steps, fig["chosen_lr"], f"budget_s{steps}")
        fig["points"] += run_call(cfg, progress, "budget", None)
        previous = steps
        save()
    record["status"] = "done"
    save()
    return 0


def curve(points: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """method -> its points at the chosen rate, by budget (the grid's point at the chosen rate first)."""
    picks = choose_rates([p for p in points if p["phase"] == "grid"])
    out: dict[str, list[dict[str, Any]]] = {}
    for method, pick in picks.items():
        first = [pick]
        later = [p for p in points if p["phase"] == "budget" and p["method"] == method]
        out[method] = sorted(first + later, key=lambda p: p["steps"])
    return out
