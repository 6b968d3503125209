"""The ``lcc`` command line: subcommands under one config helper and one exit-code policy.

:mod:`lcc_lens.cli.main` dispatches; :mod:`lcc_lens.cli.config` turns flags + YAML into frozen
configs (checked by :mod:`lcc_lens.settings`, the same check as ``FitConfig.from_dict``);
:mod:`lcc_lens.cli.policy` holds logging, exit codes, the error printer and SIGTERM handling.
"""

from __future__ import annotations

from lcc_lens.cli.policy import setup_logging

__all__ = ["setup_logging"]
