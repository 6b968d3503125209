"""The run directory of a fit: refuse to mix runs, mark an unfinished run, write the outputs.

A run directory carries lcc_lens's ownership marker from the moment it is created and
:data:`COMPLETE_FILE` only once every output is written (written last), so an interrupted run is
recognisable and ``resume`` can finish it. One fit at a time writes a run (:func:`run_lock`). A new
run is written in place; a run that replaces an earlier one (``overwrite``) is written in a temporary
sibling that takes the earlier run's place only once complete (:func:`finish_run`), so a failed or
interrupted overwrite leaves the earlier run as it was. A resumed run changes nothing until its
checkpoint is accepted (:func:`accept_resume`). Writers here only write: every figure is computed by
the stages before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcc_lens.atomic import (
    OWNER_FILE,
    check_apart,
    check_replaceable,
    check_writable,
    default_mode,
    ensure_writable_dir,
    is_owned,
    mark_owned,
    write_json,
    write_text,
    writer_lock,
)
from lcc_lens.checkpoint import LEGACY_CHECKPOINT
from lcc_lens.compensation import COMPENSATION_FILE
from lcc_lens.errors import ConfigError, OwnershipError
from lcc_lens.training import CHECKPOINT, has_checkpoint

if TYPE_CHECKING:
    from lcc_lens.fit import FitResult

RUN_KIND = "fit-run"
COMPLETE_FILE = "complete.json"
CONFIG_FILE = "config.yaml"
_KEPT_ON_RESUME = {OWNER_FILE, CHECKPOINT, CONFIG_FILE}
RUN_OUTPUTS = frozenset(
    {
        OWNER_FILE,
        CONFIG_FILE,
        CHECKPOINT,
        LEGACY_CHECKPOINT,
        COMPENSATION_FILE,
        "model",
        "heads.json",
        "metrics.json",
        "plots",
        COMPLETE_FILE,
    }
)
"""Every name a fit writes into its run directory: the only names clearing a run ever removes."""
PLOT_STEMS = ("training_curves", "perplexity", "restoration", "family_attribution")
PLOT_OUTPUTS = frozenset(f"{stem}.{ext}" for stem in PLOT_STEMS for ext in ("html", "png"))
"""The files a fit writes into ``plots/``: clearing removes these there, never the folder whole."""
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")
"""An atomic writer's temporary of ``name`` (``.<name>.<random>.tmp``)."""

logger = logging.getLogger(__name__)


def check_out(run: Path, *, inputs: Mapping[str, str | None]) -> None:
    """Checks of the path ``run`` alone, before the lock and before anything is loaded: not over,
    into or around an input model folder (``inputs``: flag -> source), a folder, writable."""
    check_apart(run, inputs)
    if run.exists() and not run.is_dir():
        raise OwnershipError(f"--out {run} is an existing file; pass a directory path.")
    check_writable(run, what="--out")
    if run.is_dir() and not os.access(run, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {run} is not writable. Choose a writable directory.")


def run_lock(run: Path) -> contextlib.AbstractContextManager[Path]:
    """The exclusive lock of one fit writing ``run`` (a hidden file beside it, removed after)."""
    return writer_lock(
        run, busy=f"another lcc fit is writing {run}; wait for it or choose another --out."
    )


def check_run_dir(run: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a ``run`` that cannot be used as asked, before anything is loaded or written.

    Fresh runs need an absent or empty directory; ``overwrite`` replaces only a directory lcc_lens
    wrote; ``resume`` needs an unfinished run of lcc_lens with a training checkpoint.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; pass one.")
    entries = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    if resume:
        if not has_checkpoint(run):
            raise ConfigError(f"--resume: {run} holds no {CHECKPOINT}; start without --resume.")
        if not is_owned(run):
            raise OwnershipError(
                f"--resume: {run} does not carry lcc_lens's marker ({OWNER_FILE}); it is not a fit "
                "run directory. Choose the directory of the interrupted run."
            )
        if is_complete(run):
            raise ConfigError(
                f"--resume: the run in {run} is already complete; pass --overwrite to fit again."
            )
    elif entries:
        if not overwrite:
            raise ConfigError(
                f"--out {run} is not empty (it holds {', '.join(entries[:5])}"
                f"{', ...' if len(entries) > 5 else ''}); pass --resume to finish an interrupted run, "
                "--overwrite to replace an earlier run, or choose a new --out."
            )
        check_replaceable(run, what="--out")
        model = run / "model"
        if model.exists() and not _ours(model):
            raise OwnershipError(
                f"--out {run} holds a model/ folder lcc_lens did not write, where the new run "
                "writes its model; move it out of the run directory, or choose another --out."
            )


def start_run(run: Path, *, resume: bool, overwrite: bool, config_dict: dict[str, Any]) -> Path:
    """Open the directory this fit writes and return it (call after :func:`check_run_dir`).

    A new run is ``run`` itself, created and marked as lcc_lens's. ``resume`` returns ``run``
    untouched. ``overwrite`` of an earlier run returns a new temporary sibling, marked, that replaces
    the earlier run once complete (:func:`finish_run`). A new run's ``config.yaml`` is written first.
    """
    if resume:
        return run
    fresh = not (overwrite and run.is_dir() and any(run.iterdir()))
    existed = run.exists()
    if fresh:
        work = ensure_writable_dir(run)
    else:
        where = _absolute(run)
        work = Path(tempfile.mkdtemp(prefix=f".{where.name}.", suffix=".tmp", dir=where.parent))
    try:
        if not fresh:
            work.chmod(default_mode(directory=True))
        mark_owned(work, RUN_KIND)
        write_config(work, config_dict)
    except BaseException:
        if fresh:
            discard(work, existed=existed)
        else:
            shutil.rmtree(work, ignore_errors=True)  # made just now: nothing else is in it
        raise
    return work


def accept_resume(run: Path, config_dict: dict[str, Any]) -> None:
    """The checkpoint of the interrupted run in ``run`` was accepted: remove its earlier, partial
    outputs (so they never mix with the finished ones) and record the settings it finishes with."""
    clear(run, keep=_KEPT_ON_RESUME)
    write_config(run, config_dict)


def finish_run(run: Path, work: Path) -> None:
    """The complete run in ``work`` becomes ``run`` (nothing to do when it was written in place)."""
    if work != run:
        _replace(run, work)


def abandon(run: Path, work: Path, *, existed: bool, resume: bool) -> None:
    """After a failure: remove an overwrite's temporary run, or a new run that never reached its
    first checkpoint; an earlier run, and a resumable one, stay as they are."""
    if work != run:
        discard(work, existed=False)
    elif not resume and not has_checkpoint(run):
        discard(run, existed=existed)


def discard(run: Path, *, existed: bool) -> None:
    """Remove what this call wrote into ``run`` (and ``run`` itself when this call created it)."""
    if not is_owned(run):
        return
    clear(run, keep=set())
    if not existed:
        try:
            run.rmdir()
        except OSError:  # something not written by lcc_lens appeared there meanwhile: keep it
            logger.warning("kept %s: it holds files lcc_lens did not write", run)


def _replace(run: Path, work: Path) -> None:
    """Put the finished run ``work`` in place of the earlier run ``run`` by two renames; the user's
    entries of the earlier run move into the new one first. On any failure all moves are undone."""
    run = _absolute(run)
    moved: list[tuple[Path, Path]] = []
    backup = run.with_name(f".{run.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        for src in _entries(run, ours=False):
            dst = work / src.relative_to(run)
            if dst.exists() or dst.is_symlink():
                raise OwnershipError(
                    f"{src} was not written by lcc_lens, but the new run writes "
                    f"{dst.relative_to(work)}; move it out of {run} and fit again (the earlier run "
                    "is kept as it was)."
                )
            dst.parent.mkdir(exist_ok=True)
            src.rename(dst)
            moved.append((src, dst))
        run.rename(backup)
        try:
            work.rename(run)
        except BaseException:
            backup.rename(run)
            raise
    except BaseException:
        for src, dst in reversed(moved):
            dst.rename(src)
        raise
    if moved:
        logger.warning(
            "moved %s from the earlier run in %s into the new one: lcc_lens did not write %s",
            ", ".join(str(src.relative_to(run)) for src, _ in moved),
            run,
            "it" if len(moved) == 1 else "them",
        )
    discard(backup, existed=False)


def _absolute(run: Path) -> Path:
    """``run`` as an absolute path with ``.`` and ``..`` resolved (symlinks kept), so that it has
    a name and a parent to put siblings in (``--out .`` included)."""
    return Path(os.path.abspath(run))


def _temporary_of(name: str, outputs: frozenset[str]) -> bool:
    """Whether ``name`` is an atomic writer's temporary of one of ``outputs``."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and match["name"] in outputs


def _is_plots_dir(path: Path) -> bool:
    return path.name == "plots" and path.is_dir() and not path.is_symlink()


def _ours(child: Path) -> bool:
    """Whether clearing may remove ``child`` (an entry of a run directory) as a whole.

    A name the fit writes, or a temporary of one; a folder among them only when it carries
    lcc_lens's marker (``model/`` is an export, which carries it; an empty one may go too).
    ``plots/`` is never removed whole: see :func:`_entries`.
    """
    if child.is_symlink() or not child.is_dir():
        return child.name in RUN_OUTPUTS or _temporary_of(child.name, RUN_OUTPUTS)
    if child.name == "model":
        return is_owned(child) or not any(child.iterdir())
    if child.name in RUN_OUTPUTS - {"plots"}:
        return True
    return _temporary_of(child.name, RUN_OUTPUTS) and is_owned(child)


def _plot_output(item: Path) -> bool:
    """Whether ``item`` in ``plots/`` is a file the fit writes there (or a temporary of one)."""
    named = item.name in PLOT_OUTPUTS or _temporary_of(item.name, PLOT_OUTPUTS)
    return named and (item.is_file() or item.is_symlink())


def _entries(run: Path, *, ours: bool) -> Iterator[Path]:
    """The entries of ``run`` that are (``ours``) or are not the fit's own, ``plots/`` item by item."""
    for child in sorted(run.iterdir()):
        if _is_plots_dir(child):
            yield from (item for item in sorted(child.iterdir()) if _plot_output(item) == ours)
        elif _ours(child) == ours:
            yield child


def clear(run: Path, *, keep: set[str]) -> None:
    """Remove what a fit writes into ``run`` except the names in ``keep``; never anything else."""
    for path in list(_entries(run, ours=True)):
        if path.parent != run or path.name not in keep:
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            else:
                shutil.rmtree(path)
    plots = run / "plots"
    if _is_plots_dir(plots) and "plots" not in keep and not any(plots.iterdir()):
        plots.rmdir()
    foreign = [_label(path, run) for path in _entries(run, ours=False)]
    if foreign:
        logger.warning(
            "left %s in %s untouched: lcc_lens did not write %s",
            ", ".join(foreign),
            run,
            "it" if len(foreign) == 1 else "them",
        )


def _label(path: Path, run: Path) -> str:
    name = str(path.relative_to(run))
    return f"{name}/ (no lcc_lens marker)" if name == "model" and path.is_dir() else name


def is_complete(run: Path) -> bool:
    """Whether every output of the run in ``run`` was written."""
    return (run / COMPLETE_FILE).is_file()


def write_config(run: Path, config_dict: dict[str, Any]) -> None:
    """config.yaml: the full nested configuration (loadable with ``FitConfig.from_dict``)."""
    import yaml

    write_text(run / CONFIG_FILE, yaml.safe_dump(config_dict, sort_keys=False))


def write_outputs(result: FitResult, run: Path) -> None:
    """heads.json, metrics.json and the plots (the compensation and model/ are written by export)."""
    heads = result.ranking.to_json(result.pair.geometry)
    if result.attribution is not None:
        heads["family_attribution"] = result.attribution.to_json()
    write_json(run / "heads.json", heads)
    write_json(run / "metrics.json", metrics_json(result))
    write_plots(result, run / "plots")


def metrics_json(result: FitResult) -> dict[str, Any]:
    """What metrics.json holds: the summary metrics, the data used and the training history."""
    return {
        "summary": result.metrics.to_dict(),
        "data": result.data_description,
        "history": result.history,
    }


def write_plots(result: FitResult, folder: Path) -> None:
    """Training curves, the dense/pruned/restored comparison and per-head restoration, as HTML."""
    from lcc_lens import plots

    folder.mkdir(parents=True, exist_ok=True)
    ppl = result.metrics.headline.ppl
    curves, perplexity, restoration, attribution = PLOT_STEMS
    if result.history:  # nothing trained (zero heads or zero steps): no curve to draw
        plots.save_figure(plots.training_curves(result.history), folder / curves)
    ppl = {k: ppl[k] for k in ("dense", "pruned", "restored") if k in ppl}
    plots.save_figure(plots.comparison_bar(ppl, "held-out perplexity"), folder / perplexity)
    if result.restoration is not None:
        fig = plots.restoration_heatmap(
            result.restoration, result.pair.geometry, result.compensation.selected_heads()
        )
        plots.save_figure(fig, folder / restoration)
    if result.attribution is not None:
        fig = plots.family_attribution_figure(result.attribution)
        plots.save_figure(fig, folder / attribution)


def mark_complete(run: Path, summary: dict[str, Any]) -> None:
    """Written last: the run finished and every output beside it belongs to this run."""
    from lcc_lens import __version__

    write_json(run / COMPLETE_FILE, {"lcc_lens": __version__, "summary": _plain(summary)})


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
