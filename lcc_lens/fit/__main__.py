"""``python -m lcc_lens.fit``: a thin shim over the command line."""

from lcc_lens.cli.fit import main

raise SystemExit(main())
