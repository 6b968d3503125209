"""Writing one setting's benchmark outputs: the JSON record, its table, its figure and the summary.

The writer sits apart from :mod:`lcc_lens.bench.results` (aggregation and the table) and
:mod:`lcc_lens.bench.summary` (the cross-setting view), which both read records: neither of those imports
the other's writer, so the modules form no import circle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lcc_lens.atomic import write_json, write_text
from lcc_lens.bench.figure import gap_figure
from lcc_lens.bench.results import FORMAT, check_ours, markdown_table
from lcc_lens.bench.summary import check_summary_ours, write_summary

logger = logging.getLogger(__name__)


def write_outputs(payload: dict[str, Any], out: Path) -> list[Path]:
    """Write ``<setting>.json``, ``<setting>.md`` and the figure (HTML, PNG when possible)."""
    stem = out / payload["setting"]
    targets = [stem.with_suffix(s) for s in (".json", ".md", ".html", ".png")]
    for path in targets:
        check_ours(path)
    check_summary_ours(out)
    payload = {"format": FORMAT, **payload}
    write_json(targets[0], payload)
    write_text(targets[1], markdown_table(payload))
    from lcc_lens.plots.io import png_available, save_figure

    written = save_figure(gap_figure(payload), stem, png=png_available())
    summary = write_summary(out)
    logger.info("benchmark %s written to %s", payload["setting"], out)
    return [targets[0], targets[1], *written, *([summary] if summary else [])]
