"""``python -m lcc_lens.bench``: the same command as ``lcc bench``."""

from lcc_lens.cli.bench import main

raise SystemExit(main())
