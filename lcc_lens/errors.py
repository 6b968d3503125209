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
    """A checkpoint is missing, malformed or unsafe: a training checkpoint (older format, not lcc_lens's
    own) or a model folder (pickle weights, weights that do not match its config, NaN weights)."""


class UnsafePathError(LccError):
    """A name read from a file, or a link in a folder, leads out of that folder."""


class MethodNotApplicable(LccError):
    """A restoration method cannot run on this model at all (found before any training)."""


class DivergedError(LccError):
    """Training diverged: NaN or inf in the loss or an adapter, or (the fit's guard,
    ``lcc_lens.fit.guards.FitDivergedError``) a result worse than the pruned model."""


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
    UnsafePathError,
)
"""Errors caused by what the user passed: the command line exits 2 for these, 1 for other LccErrors."""


def shown(value: object, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for an error message: a crafted input can be huge or deeply
    shared, so at most a few items per level and ``limit`` characters are ever built."""
    import reprlib

    if isinstance(value, int) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, limit, limit, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    text = short.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
