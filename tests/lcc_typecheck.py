"""The run-time type checker the test suite applies to every function of lcc_lens (see pyproject's
``--jaxtyping-packages``): beartype on every annotation, jaxtyping shapes included (ints pass as floats, PEP 484's numeric tower), with two exceptions
where lcc_lens validates its input itself with a clearer error, which a type error would pre-empt:

* the ``__init__`` of a dataclass that defines ``__post_init__`` (the frozen configs raise ConfigError
  naming the field, the bad value and the allowed range);
* ``Literal[...]`` choices (the functions name the allowed choices in their own error).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from collections.abc import Callable
from typing import Any

from beartype import BeartypeConf, beartype

# PEP 484's numeric tower, as static checkers read annotations: an int is a valid float.
_CONF = BeartypeConf(is_pep484_tower=True)


def _has_literal(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Literal or any(
        _has_literal(arg) for arg in typing.get_args(hint)
    )


def _self_validating_init(fn: Callable[..., Any]) -> bool:
    qualname = getattr(fn, "__qualname__", "")
    if not qualname.endswith(".__init__"):
        return False
    owner: Any = sys.modules.get(getattr(fn, "__module__", ""), None)
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part, None)
    return dataclasses.is_dataclass(owner) and hasattr(owner, "__post_init__")


def _checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    if _self_validating_init(fn):
        return fn
    annotations = getattr(fn, "__annotations__", {})
    for name, hint in list(annotations.items()):
        if _has_literal(hint):
            annotations[name] = Any
    return beartype(conf=_CONF)(fn)


def typechecker(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decide on the first call (when the defining class is bound in its module), then check."""
    chosen: Callable[..., Any] | None = None

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        nonlocal chosen
        if chosen is None:
            chosen = _checked(fn)
        return chosen(*args, **kwargs)

    return run
