"""``python -m lcc_lens.eval``: a thin shim for ``lcc eval`` (see :mod:`lcc_lens.cli.eval`).

The evaluation itself is :func:`lcc_lens.evaluation.compare.compare`.
"""

from __future__ import annotations

import sys

from lcc_lens.cli.eval import main, parse, parse_args

__all__ = ["main", "parse", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
