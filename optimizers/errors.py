"""Errors and warnings raised by :mod:`optimizers`."""

from __future__ import annotations


class OptimizerError(Exception):
    """Base class of every error raised by :mod:`optimizers`."""


class InvalidProblemError(OptimizerError, ValueError):
    """The problem data are unusable: NaN or negative matrix entries, bad indices, empty sets."""


class InfeasibleError(OptimizerError):
    """Hard constraints contradict each other; the message names the conflicting goals."""


class SolverError(OptimizerError, RuntimeError):
    """A solver back-end crashed or is not installed; the message names it and what to try."""


class OptimizerWarning(UserWarning):
    """A solution was returned with a caveat (e.g. ``optimal_inaccurate``)."""
