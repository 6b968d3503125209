"""``python -m lcc_lens.fit``: argument parsing and the terminal summary for the LCC fit."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lcc_lens.errors import ConfigError, LccError
from lcc_lens.fit import FitConfig, FitResult

DEFAULT_OUT = "runs/default"


@dataclass(frozen=True)
class FitArgs:
    config: FitConfig
    out: Path
    resume: bool
    verbose: bool


def _bool(text: str) -> bool:
    low = text.lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"none", "null", ""} else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lcc_lens.fit",
        description="Restore a pruned LLM with Lost Component Compensation (offline defaults: embedded "
        "SmolLM2-135M-Instruct, Wanda 50 %%, real text).",
    )
    p.add_argument("--config", type=Path, help="YAML file of FitConfig fields; flags override it")
    p.add_argument("--out", type=Path, help=f"run directory (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--dense", help="dense model: HF id, local directory or 'embedded'")
    p.add_argument(
        "--pruned", help="pruned model directory (default: cached Wanda prune of --dense)"
    )
    p.add_argument("--prune-method", dest="prune_method")
    p.add_argument("--prune-sparsity", dest="prune_sparsity", type=float)
    p.add_argument("--prune-pattern", dest="prune_pattern")
    p.add_argument(
        "--data", help="'offline', 'alpaca', a hub dataset, or a .json/.jsonl/.csv/.txt file"
    )
    p.add_argument("--n-train", dest="n_train", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--objective", choices=["lm", "kl", "mix"])
    p.add_argument("--kl-weight", dest="kl_weight", type=float)
    p.add_argument(
        "--heads", choices=["probe", "norm", "mse", "kl", "random", "all"], help="head selector"
    )
    p.add_argument("--head-fraction", dest="head_fraction", type=float)
    p.add_argument("--n-heads", dest="n_heads", type=_optional_int)
    p.add_argument("--k", type=int, help="rank of the lost component")
    p.add_argument("--positions", choices=["last", "all"])
    p.add_argument("--n-diff-prompts", dest="n_diff_prompts", type=int)
    p.add_argument("--n-probe", dest="n_probe", type=int)
    p.add_argument("--val-fraction", dest="val_fraction", type=float)
    p.add_argument("--warmup-fraction", dest="warmup_fraction", type=float)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=_optional_int, help="optimizer steps ('none' to use --epochs)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--grad-accum", dest="grad_accum", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--init", choices=["zeros", "lost_component"])
    p.add_argument("--use-directions", dest="use_directions", type=_bool)
    p.add_argument("--use-bias", dest="use_bias", type=_bool)
    p.add_argument("--eval-windows", dest="eval_windows", type=int)
    p.add_argument("--eval-context", dest="eval_context", type=int)
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    return p


def parse_args(argv: Sequence[str] | None = None) -> FitArgs:
    """argv -> FitArgs: YAML config first, then every flag given on the command line."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if ns.config is not None:
        values.update(_read_yaml(ns.config))
    names = {f.name for f in fields(FitConfig)}
    given = {k: v for k, v in vars(ns).items() if k in names and v is not None}
    if "n_heads" in vars(ns) and ns.n_heads is None and _flag_given(argv, "--n-heads"):
        given["n_heads"] = None
    if "steps" in vars(ns) and ns.steps is None and _flag_given(argv, "--steps"):
        given["steps"] = None
    values.update(given)
    config = FitConfig.from_dict(values)
    return FitArgs(config, ns.out or Path(DEFAULT_OUT), ns.resume, ns.verbose)


def _flag_given(argv: Sequence[str] | None, flag: str) -> bool:
    args = sys.argv[1:] if argv is None else list(argv)
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of FitConfig fields.")
    return data


def summary_table(result: FitResult) -> str:
    """The terminal summary: held-out perplexity of dense, pruned and restored, and the gap closed."""
    m = result.metrics
    rows = [
        ("dense", m.get("ppl_dense")),
        ("pruned", m.get("ppl_pruned")),
        ("restored (LCC)", m.get("ppl_restored")),
    ]
    lines = ["", "model            held-out PPL", "---------------  ------------"]
    lines += [f"{name:<15}  {val:>12.3f}" for name, val in rows if val is not None]
    gap = m.get("gap_closed", float("nan"))
    gap_nll = m.get("gap_closed_nll", float("nan"))
    lines.append(
        f"gap closed: {gap * 100:.1f} % of (pruned - dense) perplexity; "
        f"{gap_nll * 100:.1f} % in log-perplexity (NLL, as lcc_lens.eval reports)"
        if not math.isnan(gap)
        else "gap closed: n/a (the pruned model is not worse than the dense one on this text)"
    )
    lines.append(
        f"heads compensated: {m.get('n_selected_heads')} ({result.ranking.method}); trainable parameters: "
        f"{m.get('n_trainable_parameters')}; eval tokens: {m.get('eval_tokens')}"
    )
    if "export_max_abs_logit_diff" in m:
        lines.append(
            f"export check: max |logit(hooked) - logit(exported)| = {m['export_max_abs_logit_diff']:.2e}"
        )
    if "wall_time_s" in m:
        lines.append(f"wall time: {m['wall_time_s']:.0f} s")
    if result.out_dir is not None:
        lines.append(f"run directory: {result.out_dir}")
    return "\n".join(lines)


def run(args: FitArgs) -> FitResult:
    """Run the fit of parsed arguments (library call; no printing)."""
    from lcc_lens.fit import fit

    return fit(args.config, args.out, resume=args.resume)


def main(argv: Sequence[str] | None = None) -> int:
    from lcc_lens.cli import setup_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = parse_args(argv)
    except LccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    try:
        result = run(args)
    except LccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
