"""Teaching the solvers a new term type: one entry in each solver's table."""

from __future__ import annotations

import inspect
from typing import Any

from ._cvxpy_canon import Canonicalizer, add_canonicalizer, cvxpy_canonicalizer
from ._surrogates import Surrogate, add_surrogate, first_order_surrogate
from ._terms import Term
from .errors import InvalidProblemError

__all__ = ["register_term", "supported_methods"]


def register_term(
    term_type: type[Term],
    *,
    cvxpy: Canonicalizer | None = None,
    first_order: Surrogate | None = None,
) -> None:
    """Register how each solver sees ``term_type`` (a line in each solver's table).

    Inside :mod:`optimizers` a new term adds its line to
    :data:`~optimizers._cvxpy_canon.CVXPY_CANONICALIZERS` and
    :data:`~optimizers._surrogates.FIRST_ORDER_SURROGATES` directly; code outside the
    package calls this function once, after defining the term. Subclasses of
    ``term_type`` without entries of their own use these.

    Parameters
    ----------
    term_type : type
        A subclass of :class:`Term` that declares its maths (``value``, ``gradient``, and
        for hard use ``quantity`` and ``quantity_gradient``).
    cvxpy : callable, optional
        ``canon(term, ctx) -> cvxpy expression`` with ``ctx`` a :class:`CvxpyContext`: the
        unweighted objective of a soft term, the bounded quantity of a hard one. ``None``
        leaves CVXPY without a translation (it then refuses the term, naming it).
    first_order : Surrogate, optional
        How the first-order solver sees the term: ``Surrogate()`` for the term's own value
        and gradient (smooth terms), or a subclass that smooths it. ``None`` leaves the
        first-order solver without one (it then refuses the term, naming it).

    Raises
    ------
    TypeError
        ``term_type`` is not a Term subclass, ``cvxpy`` not callable, ``first_order`` not a
        :class:`Surrogate`.
    ValueError
        Neither ``cvxpy`` nor ``first_order`` given.

    Examples
    --------
    See docs/architecture.md, "Adding a term".
    """
    if not (inspect.isclass(term_type) and issubclass(term_type, Term)):
        raise TypeError(
            f"`term_type` must be a subclass of optimizers.Term, got {_short(term_type)}."
        )
    if cvxpy is not None and not callable(cvxpy):
        raise TypeError(
            f"`cvxpy` must be a function (term, ctx) -> expression, got {_short(cvxpy)}."
        )
    if first_order is not None and not isinstance(first_order, Surrogate):
        raise TypeError(
            f"`first_order` must be an optimizers.Surrogate, got {_short(first_order)}; use "
            "optimizers.Surrogate() for the term's own value and gradient."
        )
    if cvxpy is None and first_order is None:
        raise ValueError(
            f"register_term({term_type.__name__}) needs `cvxpy`, `first_order` or both."
        )
    if cvxpy is not None:
        add_canonicalizer(term_type, cvxpy)
    if first_order is not None:
        add_surrogate(term_type, first_order)


def supported_methods(term: Term) -> tuple[str, ...]:
    """The methods whose tables translate ``term``: ``"first_order"``, ``"cvxpy"`` or both.

    Parameters
    ----------
    term : Term
        Any term.

    Returns
    -------
    tuple of str
        In the order ``("first_order", "cvxpy")``; empty when neither table has an entry
        for the term's type or a base of it.

    Raises
    ------
    TypeError
        ``term`` is not a :class:`Term`.

    Examples
    --------
    >>> import optimizers as op
    >>> op.supported_methods(op.MaxDose("CORD", 45.0, hard=True))
    ('first_order', 'cvxpy')
    >>> op.supported_methods(op.DVHOverdose("LUNG", 20.0, 30.0))
    ('first_order',)
    """
    if not isinstance(term, Term):
        raise TypeError(f"`term` must be an optimizers.Term, got {_short(term)}.")
    out = []
    for method, lookup in (("first_order", first_order_surrogate), ("cvxpy", cvxpy_canonicalizer)):
        try:
            lookup(term)
        except InvalidProblemError:
            continue
        if method == "cvxpy" and not (term.hard or term.convex):  # refused as non-convex
            continue
        out.append(method)
    return tuple(out)


def _short(value: Any) -> str:
    return f"{type(value).__name__} {repr(value)[:60]}"
