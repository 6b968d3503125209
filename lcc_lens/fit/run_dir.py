"""The run directory of a fit: refuse to mix runs, mark an unfinished run, write the outputs.

A run directory carries lcc_lens's ownership marker from the moment it is created and
:data:`COMPLETE_FILE` only once every output is written (written last), so an interrupted run is
recognisable and ``resume`` can finish it. Writers here only write: every figure is computed by the
stages before.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcc_lens.atomic import (
    OWNER_FILE,
    check_replaceable,
    ensure_writable_dir,
    is_owned,
    mark_owned,
    write_json,
    write_text,
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

logger = logging.getLogger(__name__)


def check_run_dir(run: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a ``run`` that cannot be used as asked, before anything is loaded or written.

    Fresh runs need an absent or empty directory; ``overwrite`` replaces only a directory lcc_lens
    wrote; ``resume`` needs an unfinished run of lcc_lens with a training checkpoint.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; pass one.")
    if run.exists() and not run.is_dir():
        raise OwnershipError(f"--out {run} is an existing file; pass a directory path.")
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


def open_run_dir(run: Path, *, resume: bool) -> None:
    """Create ``run`` (or clear what an earlier or interrupted run left) and mark it as lcc_lens's.

    Call after :func:`check_run_dir`. A resumed run keeps its checkpoint and configuration; its
    earlier, partial outputs are removed so they never mix with the finished ones.
    """
    ensure_writable_dir(run)
    clear(run, keep=_KEPT_ON_RESUME if resume else set())
    if not resume:
        mark_owned(run, RUN_KIND)


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


def _written_by_fit(name: str, outputs: frozenset[str] = RUN_OUTPUTS) -> bool:
    """One of ``outputs``, or an atomic writer's leftover temporary of one (``.<name>.<random>.tmp``)."""
    if name in outputs:
        return True
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0] in outputs
    return False


def _remove(child: Path) -> list[str]:
    """Remove one fit output; return what inside it was kept because lcc_lens did not write it.

    ``plots/`` is cleared file by file; ``model/`` is the export's own folder (it carries lcc_lens's
    marker, as every export does) and goes whole; a folder of that name without the marker is kept.
    """
    if child.is_symlink() or not child.is_dir():
        child.unlink()
        return []
    if child.name == "plots":
        kept = [f"plots/{n}" for n in _clear_names(child, PLOT_OUTPUTS)]
        if not kept:
            child.rmdir()
        return kept
    if child.name == "model" and not is_owned(child):
        return [f"{child.name}/ (no lcc_lens marker)"]
    shutil.rmtree(child)
    return []


def _clear_names(folder: Path, outputs: frozenset[str]) -> list[str]:
    """Unlink the files of ``folder`` named in ``outputs``; return the other names, untouched."""
    foreign = []
    for item in folder.iterdir():
        if _written_by_fit(item.name, outputs) and (item.is_file() or item.is_symlink()):
            item.unlink()
        else:
            foreign.append(item.name)
    return sorted(foreign)


def clear(run: Path, *, keep: set[str]) -> None:
    """Remove what a fit writes into ``run`` except the names in ``keep``; never anything else."""
    foreign = []
    for child in run.iterdir():
        if child.name in keep:
            continue
        if not _written_by_fit(child.name):
            foreign.append(child.name)
            continue
        foreign += _remove(child)
    if foreign:
        logger.warning(
            "left %s in %s untouched: lcc_lens did not write %s",
            ", ".join(sorted(foreign)),
            run,
            "it" if len(foreign) == 1 else "them",
        )


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
    return {"summary": result.metrics, "data": result.data_description, "history": result.history}


def write_plots(result: FitResult, folder: Path) -> None:
    """Training curves, the dense/pruned/restored comparison and per-head restoration, as HTML."""
    from lcc_lens import plots

    folder.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    curves, perplexity, restoration, attribution = PLOT_STEMS
    if result.history:  # nothing trained (zero heads or zero steps): no curve to draw
        plots.save_figure(plots.training_curves(result.history), folder / curves)
    ppl = {k: m[f"ppl_{k}"] for k in ("dense", "pruned", "restored") if f"ppl_{k}" in m}
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
