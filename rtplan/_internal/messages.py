"""Quoting values in error messages without letting them grow without bound."""

from __future__ import annotations

__all__ = ["QUOTE_LIMIT_CHARS", "quote"]

#: Longest quoted value in an error message (characters); longer ones are cut with "…".
QUOTE_LIMIT_CHARS = 200


def quote(value: object, limit: int = QUOTE_LIMIT_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (with its full length) when longer.

    A message that quotes a 1,000,000-point contour must stay one readable line.

    Examples
    --------
    >>> quote("abc")
    "'abc'"
    >>> len(quote("x" * 10_000)) < 260
    True
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
