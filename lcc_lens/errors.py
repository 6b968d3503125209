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


class CheckpointError(LccError):
    """A training checkpoint is missing, malformed, from an older format or not lcc_lens's own."""


class MethodNotApplicable(LccError):
    """A restoration method cannot run on this model at all (found before any training)."""


class DivergedError(LccError):
    """Training diverged: NaN or inf in the loss or an adapter, or (the fit's guard,
    ``lcc_lens.fit.evaluate.FitDivergedError``) a result worse than the pruned model."""


class OwnershipError(LccError):
    """An output path holds something lcc_lens did not write: it is never replaced or deleted."""


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM so that context managers remove temporary outputs.

    A BaseException (like KeyboardInterrupt) so that ``except Exception`` blocks do not swallow it.
    """


BAD_INPUT_ERRORS: tuple[type[LccError], ...] = (
    ConfigError,
    DataError,
    IncompatibleModelsError,
    CompensationFileError,
    CheckpointError,
    OwnershipError,
)
"""Errors caused by what the user passed: the command line exits 2 for these, 1 for other LccErrors."""
