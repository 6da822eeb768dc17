"""Type checks of public-API arguments: a wrong type is a TypeError naming the argument.

The helpers live in ``dose_engine/_arguments.py`` (rtplan may import dose_engine, not the
other way round); this module is where rtplan code imports them from.
"""

from __future__ import annotations

from dose_engine._arguments import (
    ARRAY,
    INTEGER,
    NUMBER,
    PATH,
    TEXT,
    check_argument,
    check_arguments,
    either,
    optional,
    path_argument,
    require_instance,
    sequence_of,
)

__all__ = [
    "ARRAY",
    "INTEGER",
    "NUMBER",
    "PATH",
    "TEXT",
    "check_argument",
    "check_arguments",
    "either",
    "optional",
    "path_argument",
    "require_instance",
    "sequence_of",
]
