"""A table from term type to what one solver needs of it, looked up along the type's MRO.

:data:`~optimizers._cvxpy_canon.CVXPY_CANONICALIZERS` and
:data:`~optimizers._surrogates.FIRST_ORDER_SURROGATES` are plain dicts; a :class:`TermTable`
over each gives the lookup (a subclass of a listed term uses its nearest listed base), the
cache of lookups and the refusal that names the term and the way to register it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ._terms import Term
from .errors import InvalidProblemError

__all__ = ["TermTable"]

V = TypeVar("V")


class TermTable(Generic[V]):
    """Lookups in ``entries`` (term type -> value) by a term's type or its nearest base.

    Parameters
    ----------
    entries : dict of type to V
        The table itself (kept, not copied: it stays the one place to read).
    missing : callable
        ``missing(term) -> str``: the message when no entry fits ``term``.
    """

    def __init__(self, entries: dict[type, V], missing: Callable[[Term], str]) -> None:
        self.entries = entries
        self._missing = missing
        self._by_type: dict[type, V | None] = {}

    def set(self, term_type: type, value: V) -> None:
        """Set the entry of ``term_type`` (and forget earlier lookups)."""
        self.entries[term_type] = value
        self._by_type.clear()

    def for_term(self, term: Term) -> V:
        """The entry for ``term``'s type or its nearest listed base.

        Raises
        ------
        InvalidProblemError
            No entry fits: the message names the term and how to register one.
        """
        cls = type(term)
        if cls not in self._by_type:
            found = (self.entries.get(base) for base in cls.__mro__)
            self._by_type[cls] = next((v for v in found if v is not None), None)
        value = self._by_type[cls]
        if value is None:
            raise InvalidProblemError(self._missing(term))
        return value
