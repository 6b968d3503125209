"""The GPU check's fit sections: the default ``lcc fit`` on the GPU in bf16, beside the CPU fp32 figures.

The fit runs in this process through the command line's own parser (``lcc_lens.cli.fit.parse``) and
:func:`lcc_lens.fit.fit`, so the recorded command is exactly what ran. It reports the wall time and peak
memory of every stage (``metrics["stages"]``), the NLL gap closed per domain under the fit's own
protocol, the export check (hooked bridge against the plain transformers reload of ``model/``), and, for
the embedded model, the same restored model scored again under the protocol of the committed CPU records
(``analysis/results/ood/records/fit_default_seed*.json``), so that the GPU and CPU figures are computed on
the same windows. The export check is repeated with the pair in fp32, which isolates the export's
exactness from bf16 rounding.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from analysis.gpu.config import SMOKE_FIT_FLAGS, SMOKE_PROTOCOL, GpuCheckArgs
from analysis.gpu.record import new_record, write_record
from analysis.ood_report import README_SETTING
from analysis.ood_report import ROOT as OOD_ROOT

logger = logging.getLogger("analysis.gpu.fit")
AGREEMENT_POINTS = 1.0
"""Issue 26: the GPU bf16 and CPU fp32 gaps closed should agree within about one point."""
IGNORED_SETTINGS = ("device", "device_map", "dtype", "pruned", "eval", "prune.device")
"""Where a GPU run may differ from the CPU records without changing the recipe."""


def fit_argv(args: GpuCheckArgs, dense: str, run_dir: Path) -> list[str]:
    """The ``lcc fit`` arguments of the section: the defaults, on the device and dtype asked for.

    ``--prune-device`` puts Wanda's layer-by-layer calibration on the same device (the default
    calibrates on the CPU); the device is not part of the prune's cache key, so the result is the same.
    """
    device = args.device_name
    argv = ["--dense", dense, "--device", device, "--prune-device", device, "--dtype", args.dtype]
    argv += ["--out", str(run_dir), "--overwrite"]
    return argv + (list(SMOKE_FIT_FLAGS) if args.smoke else [])


def _domains(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per domain (test first): role, tokens, NLL of each model and the NLL gap closed with its CI."""
    out = {}
    for name, d in evaluation["domains"].items():
        gap = d.get("gap_closed", {}).get("restored", {})
        out[name] = {
            "role": d["role"],
            "n_tokens": d["n_tokens"],
            "nll": d["nll"],
            "nll_gap_closed": gap.get("nll"),
            "nll_gap_ci": [gap.get("nll_low"), gap.get("nll_high")],
        }
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def recipe_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The settings (``section.field``) where two fit configurations differ, device and eval aside."""
    a, b = _flat(ours), _flat(theirs)
    names = sorted(set(a) | set(b))
    ignored = [n for n in names if any(n == i or n.startswith(i + ".") for i in IGNORED_SETTINGS)]
    return [n for n in names if n not in ignored and a.get(n) != b.get(n)]


def cpu_reference() -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The committed CPU default fit: its summary over seeds and the seed-0 record, or None."""
    summary_file, record_file = (
        OOD_ROOT / "summary.json",
        OOD_ROOT / "records" / "fit_default_seed0.json",
    )
    if not (summary_file.is_file() and record_file.is_file()):
        return None
    summary = json.loads(summary_file.read_text(encoding="utf-8")).get(README_SETTING)
    record = json.loads(record_file.read_text(encoding="utf-8"))
    return (summary, record) if summary else None


def _points(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else 100 * value


@torch.no_grad()
def fp32_export_check(result: Any, config: Any, texts: Any) -> float | None:
    """The export check again with the pair in fp32: hooked pruned bridge + the same compensation
    against ``model/`` reloaded by plain transformers, which separates the export's exactness from
    bf16 rounding (the fit's own check compares a bf16 bridge with the fp32 reload)."""
    from lcc_lens.fit.exporting import export_check, export_check_text
    from lcc_lens.models import ModelPair

    if result.out_dir is None:
        return None
    pair = ModelPair.load(
        config.dense, result.pruned_source, dtype=torch.float32, device=result.pair.device
    )
    model_dir = result.out_dir / "model"
    text = export_check_text(texts)
    diff = export_check(
        pair,
        result.compensation,
        model_dir,
        text,
        allow_worse=config.allow_worse,
        target=torch.float32,
    )
    del pair
    return diff


def compare_with_cpu(result: Any, config: Any, texts: Any, smoke: bool) -> dict[str, Any]:
    """Score the fit's restored model under the CPU records' protocol; the gaps side by side."""
    from lcc_lens.evaluation.protocol import ProtocolConfig
    from lcc_lens.fit.evaluate import heldout_evaluation
    from lcc_lens.fit.stages import EncodedData

    reference = cpu_reference()
    if reference is None:
        return {"available": False, "reason": "no committed CPU records of the default fit"}
    summary, record = reference
    protocol = dict(record["protocol"]["protocol"])
    if smoke:
        protocol.update(SMOKE_PROTOCOL)
    rescored = heldout_evaluation(
        result.pair,
        result.compensation,
        EncodedData(texts, [], []),
        ProtocolConfig(**protocol),
    )
    gpu = _domains(rescored.to_dict())
    domains = {}
    for name, cpu in summary["domains"].items():
        ours = gpu.get(name, {}).get("nll_gap_closed")
        by_seed = dict(zip(summary["seeds"], cpu["nll_gap_closed"]["values"], strict=True))
        seed0 = by_seed.get(config.seed)
        delta = None if ours is None or seed0 is None else _points(ours - seed0)
        domains[name] = {
            "role": cpu["role"],
            "gpu_nll_gap_closed": ours,
            "cpu_same_seed": seed0,
            "cpu_mean": cpu["nll_gap_closed"]["mean"],
            "cpu_sd": cpu["nll_gap_closed"]["sd"],
            "cpu_n": cpu["nll_gap_closed"]["n"],
            "delta_points_vs_same_seed": delta,
            "within_1_point": None if delta is None else abs(delta) <= AGREEMENT_POINTS,
        }
    return {
        "available": True,
        "protocol": protocol,
        "protocol_shrunk_for_smoke": smoke,
        "cpu_commands": summary["commands"],
        "cpu_fit_seconds": summary["fit_seconds"],
        "cpu_peak_rss_mb": summary["peak_rss_mb"],
        "recipe_differences": recipe_differences(config.to_dict(), summary["settings"]),
        "domains": domains,
        "restored_scores": gpu,
    }


def fit_figures(result: Any) -> dict[str, Any]:
    """What the fit measured: stages, wall time, gaps per domain, export check, validation losses."""
    m = result.metrics.to_dict()
    return {
        "stages": m.get("stages", {}),
        "wall_time_s": m.get("wall_time_s"),
        "ood_nll_gap_closed": m.get("gap_closed_nll"),
        "domains": _domains(m["evaluation"]),
        "export_max_abs_logit_diff": m.get("export_max_abs_logit_diff"),
        "export_check": "max |logit difference|, hooked pruned bridge (the fit's dtype) + "
        "compensation against model/ reloaded by plain transformers (fp32), one 64-token batch",
        "val_loss_pruned": m.get("val_loss_pruned"),
        "val_loss_restored": m.get("val_loss_restored"),
        "n_selected_heads": m.get("n_selected_heads"),
        "steps": len(result.history),
        "final_loss": result.history[-1]["loss"] if result.history else None,
    }


def run_fit_section(args: GpuCheckArgs, section: str, dense: str, compare: bool) -> int:
    """One default fit of ``dense``; its record is written when the fit ends (then with the CPU check)."""
    from lcc_lens.cli.fit import parse
    from lcc_lens.cli.sources import check_model_source
    from lcc_lens.data import fit_data
    from lcc_lens.fit import fit

    t0 = time.perf_counter()
    run_dir = args.work_dir() / section
    argv = fit_argv(args, dense, run_dir)
    fit_args = parse(argv)
    device = torch.device(args.device_name)
    record = new_record(section, device, shlex.join(["python", "-m", "lcc_lens.fit", *argv]))
    check_model_source(fit_args.config.dense, "--dense")
    result = fit(fit_args.config, fit_args.out, overwrite=fit_args.overwrite)
    figures = record["figures"] = fit_figures(result)
    # each stage resets CUDA's peak counter: the process's peak is the largest stage peak
    floor = max((s["peak_memory_mb"] for s in figures["stages"].values()), default=0.0)
    write_record(args.out, record, device, time.perf_counter() - t0, floor)
    config = fit_args.config
    texts = fit_data(config.data, seed=config.seed)
    figures["export_max_abs_logit_diff_fp32"] = fp32_export_check(result, config, texts)
    if compare:
        figures["cpu_comparison"] = compare_with_cpu(result, config, texts, args.smoke)
    record["status"] = "done"
    write_record(args.out, record, device, time.perf_counter() - t0, floor)
    logger.info("%s: OOD NLL gap closed %s", section, record["figures"]["ood_nll_gap_closed"])
    return 0
