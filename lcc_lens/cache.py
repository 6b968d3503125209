"""Where lcc_lens keeps what it computes once: converted models, pruned checkpoints, lost components.

One root for every cache, ``$LCC_LENS_CACHE`` or ``~/.cache/lcc_lens``; each user of the cache owns one
sub-folder (``models/``, ``pruned/``, ``components/``, ``tiny/``). Entries are written atomically and keyed
by content, so a stale or half-written entry is never read back.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LCC_LENS_CACHE"
"""Environment variable that moves the whole cache (tests point it at a temporary directory)."""


def cache_root() -> Path:
    """Root of lcc_lens's on-disk cache (``$LCC_LENS_CACHE`` or ``~/.cache/lcc_lens``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(Path.home(), ".cache", "lcc_lens")
    return Path(root)
