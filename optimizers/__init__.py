"""Fluence-map optimisation: clinical terms, a CVXPY formulation, a first-order solver
and prioritised (lexicographic) planning.

Mathematics only: this package knows sparse matrices, voxel index sets and terms; it
never imports :mod:`dose_engine`, :mod:`rtplan` or pydicom.
"""

from .errors import InfeasibleError, InvalidProblemError, OptimizerError, OptimizerWarning, SolverError

__all__ = [
    "InfeasibleError",
    "InvalidProblemError",
    "OptimizerError",
    "OptimizerWarning",
    "SolverError",
]
