"""Every documented limit of rtplan in one table, and the CLI's ``--limit NAME=VALUE``.

The memory and work limits live in ``dose_engine/_limits.py`` (``RTPLAN_LIMIT_<NAME>``),
the CT-number range in ``rtplan/io/_ct.py`` (``RTPLAN_LIMIT_HU_MIN`` / ``_HU_MAX``).
Each is read from its environment variable when it is checked, so ``--limit`` sets that
variable for the duration of one command (and for the LocalCluster workers it starts);
``docs/input_checks.md`` lists them with their defaults.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence

from dose_engine._limits import DEFAULT_LIMITS

from .._internal.messages import quote
from ..errors import InputError
from ..io._ct import HU_LIMITS

__all__ = ["LIMITS", "limit_overrides", "limits_help"]

#: name -> (default, what it bounds).  Resource limits must be positive.
LIMITS: dict[str, tuple[float, str]] = {
    **DEFAULT_LIMITS,
    "hu_min": (HU_LIMITS[0], "lowest CT number accepted, HU"),
    "hu_max": (HU_LIMITS[1], "highest CT number accepted, HU"),
}


def _variable(name: str) -> str:
    return f"RTPLAN_LIMIT_{name.upper()}"


def limits_help() -> str:
    """One line per limit: name, default and environment variable (for ``--help``)."""
    rows = [f"  {n:<18} {d:<12g} {_variable(n)}" for n, (d, _) in LIMITS.items()]
    return (
        "limits (--limit NAME=VALUE or the environment variable; docs/input_checks.md):\n"
        + "\n".join(rows)
        + "\n  prescription and goal plausibility, normalisation cap: the protocol's "
        "[safety] table (docs/protocols.md)"
    )


def _parse(item: str) -> tuple[str, str]:
    name, sep, text = item.partition("=")
    name = name.strip().lower()
    if not sep or name not in LIMITS:
        raise InputError(
            f"--limit {quote(item, 60)}: expected NAME=VALUE with NAME one of {', '.join(LIMITS)}."
        )
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--limit {quote(item, 60)}: {quote(text, 40)} is not a number.") from None
    if not math.isfinite(value) or (name in DEFAULT_LIMITS and value <= 0):
        raise InputError(f"--limit {quote(item, 60)}: the value must be finite and positive.")
    return _variable(name), text.strip()


@contextlib.contextmanager
def limit_overrides(items: Sequence[str]) -> Iterator[None]:
    """Set the variables of ``--limit NAME=VALUE`` items while the block runs.

    Raises
    ------
    rtplan.errors.InputError
        An unknown name, a value that is not a number (or not positive for a memory or
        work limit).
    """
    pairs = dict(_parse(i) for i in items)
    saved = {k: os.environ.get(k) for k in pairs}
    os.environ.update(pairs)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
