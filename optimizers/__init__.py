"""Fluence-map optimisation: clinical terms, a CVXPY formulation, a first-order solver
and prioritised (lexicographic) planning.

Mathematics only: this package knows sparse matrices, voxel index sets and terms; it
never imports :mod:`dose_engine`, :mod:`rtplan` or pydicom. CVXPY is imported only when a
CVXPY solve is requested.
"""

from ._backends import available_backends
from ._cvxpy import CvxpyFormulation, solve_cvxpy
from ._feasibility import FeasibilityCertificate, certify_hard_constraints
from ._first_order import solve_first_order
from ._lexicographic import LevelResult, LexicographicResult, solve_lexicographic
from ._problem import Problem
from ._result import SOLUTION_PRESENT, OptimizationResult, Status
from ._solve import solve
from ._terms import (
    GEUD,
    DVHOverdose,
    DVHUnderdose,
    MaxDose,
    MaxDVH,
    MeanDose,
    MinDose,
    MinDVH,
    Overdose,
    Prescription,
    Smoothness,
    Term,
    TotalMU,
    Underdose,
)
from .errors import (
    InfeasibleError,
    InvalidProblemError,
    OptimizerError,
    OptimizerWarning,
    SolverError,
)

__all__ = [
    "DVHOverdose",
    "DVHUnderdose",
    "FeasibilityCertificate",
    "GEUD",
    "SOLUTION_PRESENT",
    "CvxpyFormulation",
    "InfeasibleError",
    "InvalidProblemError",
    "LevelResult",
    "LexicographicResult",
    "MaxDVH",
    "MaxDose",
    "MeanDose",
    "MinDVH",
    "MinDose",
    "OptimizationResult",
    "OptimizerError",
    "OptimizerWarning",
    "Overdose",
    "Prescription",
    "Problem",
    "Smoothness",
    "SolverError",
    "Status",
    "Term",
    "TotalMU",
    "Underdose",
    "available_backends",
    "certify_hard_constraints",
    "solve",
    "solve_cvxpy",
    "solve_first_order",
    "solve_lexicographic",
]
