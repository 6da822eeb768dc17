"""One entry point choosing between the first-order solver and the CVXPY formulation."""

from __future__ import annotations

from typing import Any

from ._active_set import solve_cvxpy_active_set
from ._cvxpy import solve_cvxpy
from ._first_order import solve_first_order
from ._problem import Problem, require_problem
from ._result import OptimizationResult
from .errors import InvalidProblemError

__all__ = ["DEFAULT_METHOD", "METHODS", "solve"]

METHODS = ("first_order", "cvxpy")

#: The method :func:`solve` and :func:`optimizers.solve_lexicographic` use unless told.
DEFAULT_METHOD = "first_order"


def solve(problem: Problem, *, method: str = DEFAULT_METHOD, **options: Any) -> OptimizationResult:
    """Solve ``problem`` with ``method``.

    Parameters
    ----------
    problem : Problem
        The problem.
    method : {"first_order", "cvxpy"}, optional
        ``"first_order"`` (default, as in :func:`solve_lexicographic`):
        :func:`solve_first_order` (smooth surrogates, fast, numpy or CuPy). ``"cvxpy"``:
        :func:`solve_cvxpy` (exact convex terms, including CVaR DVH goals, with the solver
        named by ``solver=``).
    **options
        Passed to the chosen method (e.g. ``solver="OSQP"`` for CVXPY, ``x0=`` for
        first-order). With ``"cvxpy"``, ``active_set=True`` solves by beamlet column
        generation seeded by ``x0`` (default: the first-order fluence):
        :func:`optimizers._active_set.solve_cvxpy_active_set`.

        .. versionadded:: 0.1.0
           ``active_set``.

    Returns
    -------
    OptimizationResult
    """
    require_problem(problem)
    if method == "first_order":
        return solve_first_order(problem, **options)
    if method == "cvxpy":
        if options.pop("active_set", False):
            return solve_cvxpy_active_set(problem, options.pop("x0", None), **options)
        return solve_cvxpy(problem, **options)
    raise InvalidProblemError(f"Unknown `method` {method!r}; choose one of {', '.join(METHODS)}.")
