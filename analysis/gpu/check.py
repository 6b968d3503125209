"""``python -m analysis.gpu.check`` (``scripts/gpu_check.sh``): every GPU figure under one time budget.

    bash scripts/gpu_check.sh                  # one GPU: fit, benchmark budgets, Gemma (about 7.5 min)
    bash scripts/gpu_check.sh --smoke --out D  # the CPU smoke size (the CI test)

Each section runs in its own process (a clean peak-memory counter, and a section that runs out of time
is stopped without losing the others) and writes ``<out>/<section>.json`` itself. Sections run in
order of value (``fit``, ``bench``, ``gemma_fit``); one that cannot start before the deadline is
recorded as skipped with the reason, one stopped at the deadline as ``cut`` (keeping what it wrote).
``<out>/run.json``, written last, lists every section's status, and the budget.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from analysis.gpu.config import GpuCheckArgs
from analysis.gpu.record import SECTIONS, new_record, read_record, section_path
from lcc_lens.atomic import check_replaceable, mark_owned, write_json
from lcc_lens.cli.config import command_parser, parse_command
from lcc_lens.cli.policy import execute

PROG = "python -m analysis.gpu.check"
logger = logging.getLogger("analysis.gpu.check")
MIN_SECTION_S = 20.0
"""A section is not started with less time than this left."""
GRACE_S = 20.0
"""After SIGTERM at the deadline, how long a section may take to clean up before it is killed."""
RUN_FILE = "run.json"


def parse(argv: Sequence[str]) -> GpuCheckArgs:
    parser, specs = command_parser(PROG, __doc__.split("\n\n")[0], GpuCheckArgs, yaml=False)
    args = parse_command(GpuCheckArgs, parser, specs, argv)
    from lcc_lens.errors import ConfigError
    from lcc_lens.pruning.config import check_device

    try:
        check_device(args.device_name, what="--device")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} For the CPU size pass --smoke; on a GPU machine use a CUDA build of torch "
            "(LCC_PYTHON or LCC_TORCH_SPEC, see scripts/gpu_check.sh)."
        ) from exc
    return args


def child_argv(args: GpuCheckArgs, section: str, deadline: float) -> list[str]:
    """The command that runs ``section`` alone in a new process, with every setting of this run."""
    argv = [sys.executable, "-m", "analysis.gpu.check", "--section", section]
    argv += [
        "--deadline",
        f"{deadline:.3f}",
        "--out",
        str(args.out),
        "--work",
        str(args.work_dir()),
    ]
    argv += ["--device", args.device_name, "--dtype", args.dtype, "--bench-dtype", args.bench_dtype]
    argv += [
        "--budgets",
        ",".join(map(str, args.step_budgets)),
        "--bench-n-train",
        str(args.n_train),
    ]
    argv += ["--smoke"] if args.smoke else []
    argv += ["--family", args.family] if args.family else []
    return argv + (["--verbose"] if args.verbose else [])


def gemma_installed() -> bool:
    from lcc_lens.embedded import EMBEDDED_MODELS, GEMMA_MODEL

    return importlib.util.find_spec(EMBEDDED_MODELS[GEMMA_MODEL].package) is not None


def skip_reason(section: str, left: float, walls: dict[str, float]) -> str | None:
    """Why ``section`` does not start now (None: it starts)."""
    if section == "gemma_fit":
        if not gemma_installed():
            return "the gemma extra is not installed (LCC_EXTRAS=gemma bash scripts/setup.sh)"
        need = walls.get("fit", MIN_SECTION_S)  # a larger model than the embedded fit's
        if left < need:
            return f"time budget ({left:.0f} s left, the embedded fit took {need:.0f} s)"
    if left < MIN_SECTION_S:
        return f"time budget ({left:.0f} s left)"
    return None


def _relay(stream: Any, tail: collections.deque[str]) -> None:
    """Echo a section's stderr as it comes, keeping its last lines for the record."""
    for line in iter(stream.readline, ""):
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))


def run_child(argv: list[str], timeout: float) -> tuple[int | None, list[str]]:
    """Run one section; (exit code or None when stopped at the deadline, its last stderr lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace")
    relay = threading.Thread(target=_relay, args=(proc.stderr, tail), daemon=True)
    relay.start()
    try:
        code: int | None = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = None
    relay.join(timeout=5)
    return code, list(tail)


def _finish(
    args: GpuCheckArgs, section: str, code: int | None, tail: list[str], wall: float
) -> str:
    """The section's final status in its file: as written by it, or marked cut / failed here."""
    record = read_record(args.out, section)
    if code == 0 and record is not None:
        return record["status"]
    import torch

    if record is None:
        record = new_record(section, torch.device(args.device_name), "", status="partial")
        record["wall_s"] = wall
    errors = [line for line in tail if line.startswith("error:")]
    if code is None:
        record["status"] = "cut"
        record["reason"] = f"time budget: stopped at the deadline after {wall:.0f} s"
    else:
        record["status"] = "failed"
        record["reason"] = f"exit {code}: " + (errors[-1] if errors else " | ".join(tail[-3:]))
    write_json(section_path(args.out, section), record)
    return record["status"]


def orchestrate(args: GpuCheckArgs, argv: Sequence[str]) -> int:
    """Run every section in order under the budget; write run.json; 1 if a section failed."""
    import torch

    check_replaceable(args.out, what="--out")
    args.out.mkdir(parents=True, exist_ok=True)
    mark_owned(args.out, "gpu-check")
    start = time.time()
    deadline = start + args.total_budget_s
    summary: dict[str, Any] = {
        "format": "lcc_lens.gpu_check.run/1",
        "command": shlex.join([*PROG.split(), *argv]),
        "smoke": args.smoke,
        "budget_s": args.total_budget_s,
        "sections": {},
    }
    walls: dict[str, float] = {}
    for section in SECTIONS:
        left = deadline - time.time()
        reason = skip_reason(section, left, walls)
        if reason is not None:
            stub = new_record(section, torch.device(args.device_name), "", "skipped", reason)
            write_json(section_path(args.out, section), stub)
            summary["sections"][section] = {"status": "skipped", "reason": reason, "wall_s": 0.0}
            logger.info("%s: %s", section, reason)
            continue
        logger.info("%s: starting (%.0f s left)", section, left)
        t0 = time.time()
        code, tail = run_child(child_argv(args, section, deadline), left)
        walls[section] = time.time() - t0
        status = _finish(args, section, code, tail, walls[section])
        summary["sections"][section] = {"status": status, "exit": code, "wall_s": walls[section]}
    summary["wall_s"] = time.time() - start
    write_json(args.out / RUN_FILE, summary)
    for section, s in summary["sections"].items():
        print(f"{section:<10} {s['status']:<8} {s['wall_s']:6.0f} s  {s.get('reason') or ''}")
    print(f"total {summary['wall_s']:.0f} s of {args.total_budget_s:.0f}; figures in {args.out}")
    return 1 if any(s["status"] == "failed" for s in summary["sections"].values()) else 0


def run_section(args: GpuCheckArgs) -> int:
    """The body of one section's process."""
    from lcc_lens.embedded import EMBEDDED_MODEL, GEMMA_MODEL

    if args.section == "fit":
        from analysis.gpu.fit_section import run_fit_section

        return run_fit_section(args, "fit", EMBEDDED_MODEL, compare=True)
    if args.section == "gemma_fit":
        from analysis.gpu.fit_section import run_fit_section

        return run_fit_section(args, "gemma_fit", GEMMA_MODEL, compare=False)
    from analysis.gpu.bench_section import run_bench_section

    deadline = args.deadline if args.deadline is not None else time.time() + args.total_budget_s
    return run_bench_section(args, deadline)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def run(args: GpuCheckArgs) -> int:
        return run_section(args) if args.section else orchestrate(args, argv)

    return execute(parse, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
