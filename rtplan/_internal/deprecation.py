"""Deprecation aliases of public names that moved or were renamed: they work for one
release, with a warning naming the new name."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_names"]


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving names that moved away from ``module`` (or were renamed).

    Parameters
    ----------
    module : str
        The old home, e.g. ``"rtplan.phantoms"``.
    moved : mapping of str to str
        Old name -> new home and name ``"package:name"``, e.g. ``"rtplan.io:write_patient"``.

    Returns
    -------
    callable
        ``__getattr__(name)``: the object at its new home, after a ``DeprecationWarning``
        naming it; ``AttributeError`` for any other name.
    """

    def __getattr__(name: str) -> object:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, _, new_name = moved[name].partition(":")
        warnings.warn(
            f"{module}.{name} is now {new_module}.{new_name}; "
            f"the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
