"""Fluence-map optimisation: clinical terms, a CVXPY formulation, a first-order solver
and prioritised (lexicographic) planning.

Mathematics only: this package knows sparse matrices, voxel index sets and terms; it
never imports :mod:`dose_engine`, :mod:`rtplan` or pydicom. CVXPY is imported only when a
CVXPY solve is requested, CuPy only when ``backend="cupy"`` is.

Vocabulary: a *method* is ``"first_order"`` or ``"cvxpy"`` (:func:`solve`); a *solver* is
one of CVXPY's (Clarabel, OSQP, SCS, MOSEK; :func:`available_solvers`); a *backend* is the
array library the first-order solver runs on (numpy or CuPy).
"""

import warnings
from typing import Any

from ._compiled import soft_dose_objective
from ._compress import CompressedMatrix, Compression, compress_matrix
from ._cvxpy import CvxpyFormulation, solve_cvxpy
from ._cvxpy_canon import CvxpyContext
from ._dose_volume import dose_at_knots, dose_at_volume, dose_volume_knots
from ._feasibility import FeasibilityCertificate, certify_hard_constraints
from ._first_order import solve_first_order
from ._lexicographic import LevelResult, LexicographicResult, solve_lexicographic
from ._meterset import MetersetDose, smooth_meterset
from ._problem import Problem
from ._registry import register_term, supported_methods
from ._result import SOLUTION_PRESENT, OptimizationResult, Status
from ._solve import solve
from ._solvers import available_solvers
from ._surrogates import Surrogate
from ._terms import (
    GEUD,
    CvxpyTerm,
    DVHOverdose,
    DVHUnderdose,
    MaxDose,
    MaxDVH,
    MeanDose,
    MinDose,
    MinDVH,
    Overdose,
    Smoothness,
    SquaredDeviation,
    StructureDoses,
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
    "CompressedMatrix",
    "Compression",
    "FeasibilityCertificate",
    "GEUD",
    "SOLUTION_PRESENT",
    "CvxpyContext",
    "CvxpyFormulation",
    "CvxpyTerm",
    "InfeasibleError",
    "InvalidProblemError",
    "LevelResult",
    "LexicographicResult",
    "MaxDVH",
    "MaxDose",
    "MeanDose",
    "MetersetDose",
    "MinDVH",
    "MinDose",
    "OptimizationResult",
    "OptimizerError",
    "OptimizerWarning",
    "Overdose",
    "Problem",
    "Smoothness",
    "SolverError",
    "SquaredDeviation",
    "Status",
    "StructureDoses",
    "Surrogate",
    "Term",
    "TotalMU",
    "Underdose",
    "available_solvers",
    "certify_hard_constraints",
    "compress_matrix",
    "dose_at_knots",
    "dose_at_volume",
    "dose_volume_knots",
    "register_term",
    "smooth_meterset",
    "soft_dose_objective",
    "solve",
    "solve_cvxpy",
    "solve_first_order",
    "solve_lexicographic",
    "supported_methods",
]


def _available_backends() -> list[str]:
    """Deprecated alias of :func:`available_solvers`."""
    return available_solvers()


#: Deprecated names, kept for one release: name -> (object, replacement).
_DEPRECATED: dict[str, tuple[Any, str]] = {
    "Prescription": (SquaredDeviation, "optimizers.SquaredDeviation"),
    "available_backends": (_available_backends, "optimizers.available_solvers"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        obj, new = _DEPRECATED[name]
        warnings.warn(
            f"optimizers.{name} is now {new}; the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj
    raise AttributeError(f"module 'optimizers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
