"""Errors and warnings raised by :mod:`optimizers`."""

from __future__ import annotations


class OptimizerError(Exception):
    """Base class of every error raised by :mod:`optimizers`."""


class InvalidProblemError(OptimizerError, ValueError):
    """The problem data are unusable: NaN or negative matrix entries, bad indices, empty sets."""


class InfeasibleError(OptimizerError):
    """Hard constraints contradict each other; the message names the conflicting goals.

    Raised only with evidence: a CVXPY solver's infeasibility status or a
    certificate of :func:`optimizers.certify_hard_constraints` (first-order solver), kept
    in ``certificate`` (``None`` for CVXPY).
    """

    def __init__(self, message: str = "", *, certificate=None) -> None:
        super().__init__(message)
        self.certificate = certificate


class SolverError(OptimizerError, RuntimeError):
    """A solver crashed or is not installed (or CuPy for ``backend="cupy"``); the message
    names it and what to try."""


class OptimizerWarning(UserWarning):
    """A solution was returned with a caveat (e.g. ``optimal_inaccurate``)."""
