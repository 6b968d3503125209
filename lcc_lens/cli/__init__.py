"""Thin command-line entry points: parse arguments into a config, call the library, print a summary."""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with --verbose); quiet the chattier dependencies."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name in ("httpx", "urllib3", "datasets", "filelock", "sentence_transformers", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
