"""Saving figures: self-contained HTML (always) and PNG (when a static renderer is available)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lcc_lens.atomic import atomic_file

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

_CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def png_available() -> bool:
    """Whether PNG export can work here: kaleido >= 1 installed and a Chrome/Chromium to drive."""
    try:
        from plotly.io._kaleido import kaleido_available
    except ImportError:  # pragma: no cover - plotly layout change
        return False
    if not kaleido_available():
        return False
    return _browser_path() is not None or _kaleido_has_own_chrome()


def _browser_path() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in _CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _kaleido_has_own_chrome() -> bool:
    """A Chrome downloaded by ``plotly_get_chrome`` / ``kaleido.get_chrome`` lives in choreographer's dir."""
    try:
        from choreographer.cli.defaults import default_download_path
    except ImportError:
        return False
    return Path(default_download_path).exists() and any(Path(default_download_path).rglob("chrome"))


def save_figure(fig: go.Figure, path_stem: str | os.PathLike[str], png: bool = False) -> list[Path]:
    """Write ``<stem>.html`` (plotly.js embedded, opens offline) and, if ``png``, ``<stem>.png``.

    PNG needs kaleido >= 1 and a Chrome/Chromium (``pip install 'lcc_lens[plots]'`` and e.g.
    ``apt-get install chromium``); without them the PNG is skipped with a warning and only the HTML is
    written. Files are written atomically. Returns the paths written.
    """
    stem = Path(path_stem)
    if stem.suffix in (".html", ".png"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    html = stem.with_suffix(".html")
    with atomic_file(html) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
        tmp.chmod(0o644)  # a figure is for reading: not the temp file's private mode
    written.append(html)
    if png:
        out = stem.with_suffix(".png")
        if not png_available():
            logger.warning(
                "PNG for %s skipped: no static renderer (install kaleido>=1 and Chrome/Chromium); "
                "the HTML was written.",
                stem.name,
            )
            return written
        browser = _browser_path()
        if browser and not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = browser
        try:
            data = fig.to_image(format="png", scale=1)
        except Exception as exc:  # renderer present but failing: HTML still stands
            logger.warning("PNG for %s failed (%s); the HTML was written.", stem.name, exc)
            return written
        with atomic_file(out) as tmp:
            tmp.write_bytes(data)
            tmp.chmod(0o644)
        written.append(out)
    return written
