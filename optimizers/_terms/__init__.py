"""Clinical objective and constraint terms.

Terms only declare their mathematics: convexity, smoothness, value, gradient and the
clinical quantity they bound. How each solver sees a term lives in one table per solver:
:data:`optimizers._cvxpy_canon.CVXPY_CANONICALIZERS` (term type -> CVXPY expression) and
:data:`optimizers._surrogates.FIRST_ORDER_SURROGATES` (term type -> smooth surrogate of the
first-order solver). A new term is a :class:`Term` subclass plus one line in each table
(or :func:`optimizers.register_term` outside this package); see docs/interfaces.md.

Every structure term is a *mean over the structure's voxels*: with per-voxel weights
``w_i`` (default 1, e.g. fractional occupancy) normalised to ``p_i = w_i / sum(w)``, a
quadratic overdose term is ``sum_i p_i * max(0, d_i - level)**2``. Structures of different
sizes are therefore balanced by the user's ``weight`` alone.

Dose ``d`` is in Gy (total over all fractions), fluence ``x`` in MU per beamlet.
"""

from ._base import Term
from ._cvxpy_term import CvxpyTerm, StructureDoses
from ._dose import (
    GEUD,
    MaxDose,
    MeanDose,
    MinDose,
    Overdose,
    SquaredDeviation,
    Underdose,
    _OneSidedQuadratic,
    _SoftLevelTerm,
)
from ._dvh import (
    _DVH,
    DVHOverdose,
    DVHUnderdose,
    MaxDVH,
    MinDVH,
    _DoseVolumeQuadratic,
    dose_at_volume,
    lower_cvar,
    upper_cvar,
)
from ._fluence import Smoothness, TotalMU
from ._level_bound import _LevelBound

__all__ = [
    "CvxpyTerm",
    "DVHOverdose",
    "DVHUnderdose",
    "GEUD",
    "MaxDVH",
    "MaxDose",
    "MeanDose",
    "MinDVH",
    "MinDose",
    "Overdose",
    "Smoothness",
    "SquaredDeviation",
    "StructureDoses",
    "Term",
    "TotalMU",
    "Underdose",
    "_DVH",
    "_DoseVolumeQuadratic",
    "_LevelBound",
    "_OneSidedQuadratic",
    "_SoftLevelTerm",
    "dose_at_volume",
    "lower_cvar",
    "upper_cvar",
]
