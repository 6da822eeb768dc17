"""Reading rtplan's TOML inputs: machines, protocols and batch manifests.

One place turns bytes into a table (with the ``tomli`` fallback for Python 3.10) and
resolves "a shipped name or a path", so every TOML input reports errors the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["parse_toml", "read_named_toml"]


def parse_toml(raw: bytes, *, source: str, what: str, error: type[InputError]) -> dict[str, Any]:
    """Parse TOML bytes; bad encoding or syntax raises ``error`` naming ``what`` and ``source``."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {source}: not valid TOML: {exc}.") from None


def read_named_toml(
    name_or_path: str | os.PathLike,
    shipped: Mapping[str, Any],
    *,
    kind: str,
    listed: tuple[str, ...],
    error: type[InputError],
) -> tuple[dict[str, Any], str]:
    """Read a shipped TOML file by name, or a user's TOML file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A key of ``shipped``, or a path (anything ending in ``.toml`` or that exists).
    shipped : mapping of str to Traversable
        Shipped files by the names they may be asked for.
    kind : str
        ``"machine"``, ``"protocol"``: used in messages.
    listed : tuple of str
        The shipped names to suggest in messages.
    error : type
        The :class:`~rtplan.errors.InputError` subclass to raise.

    Returns
    -------
    data : dict
        The parsed table.
    source : str
        How messages name the file: ``'path'`` or ``'file.toml' (shipped)``.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.exists():
        if not path.is_file():
            raise error(
                f"{kind.capitalize()} file '{path}' does not exist; give a TOML file or one "
                f"of the shipped {kind}s {list(listed)}."
            )
        raw, source = path.read_bytes(), f"'{path}'"
    elif text in shipped:
        raw, source = shipped[text].read_bytes(), f"'{shipped[text].name}' (shipped)"
    else:
        raise error(
            f"Unknown {kind} {text!r}; shipped {kind}s are {list(listed)}, or give the path "
            f"of a .toml {kind} file."
        )
    return parse_toml(raw, source=source, what=f"{kind.capitalize()} file", error=error), source
