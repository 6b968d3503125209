"""``python -m lcc_lens.prune``: a thin shim for ``lcc prune`` (see :mod:`lcc_lens.cli.prune`)."""

from __future__ import annotations

import sys

from lcc_lens.cli.prune import main, parse

__all__ = ["main", "parse"]

if __name__ == "__main__":
    sys.exit(main())
