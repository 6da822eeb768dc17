"""Type checks of public-API arguments: a wrong type is a TypeError naming the argument.

Without them a ``None`` passed for a patient surfaces deep inside as
``'NoneType' object has no attribute 'structures'``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._messages import quote

__all__ = ["path_argument", "require_instance"]


def path_argument(value: object, name: str) -> Path:
    """``Path(value)`` for a ``str`` or ``os.PathLike`` argument, else a TypeError naming it."""
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"`{name}` must be a path (str or os.PathLike); got {type(value).__name__} "
            f"{quote(value, 80)}."
        )
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"`{name}` is an empty path.")
    return Path(value)


def require_instance(value: object, name: str, cls: type | tuple[type, ...], what: str) -> None:
    """Raise TypeError naming ``name`` unless ``value`` is an instance of ``cls``.

    ``what`` says what is expected, e.g. ``"an rtplan.Patient (from rtplan.load_patient)"``.
    """
    if not isinstance(value, cls):
        raise TypeError(f"`{name}` must be {what}; got {type(value).__name__} {quote(value, 80)}.")
