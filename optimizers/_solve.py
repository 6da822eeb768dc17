"""One entry point choosing between the first-order solver and the CVXPY formulation."""

from __future__ import annotations

from typing import Any

from ._problem import Problem, require_problem
from ._result import OptimizationResult
from .errors import InvalidProblemError

__all__ = ["METHODS", "solve"]

METHODS = ("first_order", "cvxpy")


def solve(problem: Problem, *, method: str = "first_order", **options: Any) -> OptimizationResult:
    """Solve ``problem`` with ``method``.

    Parameters
    ----------
    problem : Problem
        The problem.
    method : {"first_order", "cvxpy"}, optional
        ``"first_order"`` (default): :func:`solve_first_order` (smooth terms, fast, numpy or
        CuPy). ``"cvxpy"``: :func:`solve_cvxpy` (every term, including DVH/CVaR goals).
    **options
        Passed to the chosen solver (e.g. ``solver="OSQP"`` for CVXPY, ``x0=`` for first-order).

    Returns
    -------
    OptimizationResult
    """
    require_problem(problem)
    if method == "first_order":
        from ._first_order import solve_first_order

        return solve_first_order(problem, **options)
    if method == "cvxpy":
        from ._cvxpy import solve_cvxpy

        return solve_cvxpy(problem, **options)
    raise InvalidProblemError(f"Unknown `method` {method!r}; choose one of {', '.join(METHODS)}.")
