"""Solver status vocabulary and the frozen :class:`OptimizationResult`."""

from __future__ import annotations

import enum
import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SOLUTION_PRESENT", "OptimizationResult", "Status"]


class Status(str, enum.Enum):
    """Outcome of a solve, shared by every method and solver.

    The vocabulary follows CVXPY's ``settings.py``; each solver adapter maps its native
    codes onto it and any code it does not know becomes :attr:`SOLVER_ERROR`.
    """

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ITERATION_LIMIT = "iteration_limit"
    TIME_LIMIT = "time_limit"
    CALLBACK_STOP = "callback_stop"
    SOLVER_ERROR = "solver_error"

    def __str__(self) -> str:  # "optimal", not "Status.OPTIMAL"
        return self.value


#: Statuses for which ``OptimizationResult.x`` holds a usable fluence.
SOLUTION_PRESENT = frozenset(
    {
        Status.OPTIMAL,
        Status.OPTIMAL_INACCURATE,
        Status.ITERATION_LIMIT,
        Status.TIME_LIMIT,
        Status.CALLBACK_STOP,
    }
)

#: Statuses counted as success.
_SUCCESS = frozenset({Status.OPTIMAL, Status.OPTIMAL_INACCURATE})


def _summarise(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return f"array(shape={value.shape}, dtype={value.dtype})"
        return (
            f"array(shape={value.shape}, dtype={value.dtype}, "
            f"min={float(np.min(value)):.4g}, max={float(np.max(value)):.4g})"
        )
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        inner = ", ".join(f"{k!r}: {_summarise(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return repr(value)


@dataclass(frozen=True, repr=False)
class OptimizationResult:
    """Solution of a fluence optimisation, identical in shape for every method and solver.

    Attributes
    ----------
    x : (n_beamlets,) ndarray of float64, MU
        Beamlet fluence (non-negative). Holds the last iterate when ``status`` is not in
        :data:`SOLUTION_PRESENT`.
    objective : float
        Weighted objective value (sum of the soft terms' ``weight * value``), evaluated by
        rtplan on ``x`` (not the solver's own figure, so solvers are comparable).
    status : Status
        Outcome (see :class:`Status`).
    success : bool
        ``status`` is ``optimal`` or ``optimal_inaccurate``.
    message : str
        A readable sentence describing the outcome.
    n_iter : int
        Iterations (first-order: total inner iterations; CVXPY: the solver's count).
    n_dose_evals : int
        Sparse matrix-vector products with the influence matrix (forward and transpose),
        or 0 where a solver does not expose it.
    solve_time_s : float
        Wall time of the whole solve, s (formulation included).
    term_values : dict of str to float
        Unweighted value of each term, keyed by its label. DVH goals report the CVaR
        surrogate under their label and the exact DVH value under ``label + " [exact]"``;
        hard constraints report the constrained quantity (e.g. max dose, Gy).
    extras : dict
        Back-end-specific data (e.g. ``max_violation``, ``solver``, ``setup_time_s``).
    """

    x: np.ndarray
    objective: float
    status: Status
    message: str
    n_iter: int = 0
    n_dose_evals: int = 0
    solve_time_s: float = 0.0
    term_values: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @property
    def success(self) -> bool:
        """``True`` when ``status`` is ``optimal`` or ``optimal_inaccurate``."""
        return self.status in _SUCCESS

    def __repr__(self) -> str:
        lines = [
            f"message: {self.message}",
            f"success: {self.success}",
            f"status: {self.status.value}",
            f"objective: {self.objective:.6g}",
            f"x: {_summarise(self.x)}",
            f"n_iter: {self.n_iter}",
            f"n_dose_evals: {self.n_dose_evals}",
            f"solve_time_s: {self.solve_time_s:.3f}",
            f"term_values: {_summarise(self.term_values)}",
            f"extras: {_summarise(self.extras)}",
        ]
        return "OptimizationResult(\n  " + "\n  ".join(lines) + "\n)"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>"
            for k, v in self.term_values.items()
        )
        return (
            f"<div><b>{html.escape(self.message)}</b><br>"
            f"success: {self.success}, status: {self.status.value}, "
            f"objective: {self.objective:.6g}, iterations: {self.n_iter}, "
            f"dose evaluations: {self.n_dose_evals}, time: {self.solve_time_s:.3f} s"
            f"<table><tr><th>term</th><th>value</th></tr>{rows}</table></div>"
        )
