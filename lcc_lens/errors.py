"""Exceptions raised by lcc_lens for bad input: each message names the problem and the fix."""

from __future__ import annotations


class LccError(Exception):
    """Base class: a user-facing error with an actionable message."""


class IncompatibleModelsError(LccError):
    """The dense and pruned models cannot be compared head by head."""


class CompensationFileError(LccError):
    """A compensation.safetensors file is missing, corrupt or inconsistent."""


class ExportError(LccError):
    """A compensation cannot be folded into the given checkpoint."""


class DataError(LccError):
    """Input data is empty, malformed or leaves nothing to train or score on."""


class ConfigError(LccError):
    """A configuration value is out of range or inconsistent."""
