"""Clinical objective and constraint terms.

Terms only declare their mathematics: convexity, smoothness, value, gradient and the
clinical quantity they bound. How each solver sees a term lives in one table per solver:
:data:`optimizers._cvxpy_canon.CVXPY_CANONICALIZERS` (term type -> CVXPY expression) and
:data:`optimizers._surrogates.FIRST_ORDER_SURROGATES` (term type -> smooth surrogate of the
first-order solver). A new term is a :class:`Term` subclass plus one line in each table
(or :func:`optimizers.register_term` outside this package); see docs/architecture.md.

Every structure term is a *mean over the structure's voxels*: with per-voxel weights
``w_i`` (default 1, e.g. fractional occupancy) normalised to ``p_i = w_i / sum(w)``, a
quadratic overdose term is ``sum_i p_i * max(0, d_i - level)**2``. Structures of different
sizes are therefore balanced by the user's ``weight`` alone.

Dose ``d`` is in Gy (total over all fractions), fluence ``x`` in MU per beamlet.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from array_api_compat import array_namespace

from ._sparse_ops import SparseProducts
from .errors import InvalidProblemError

__all__ = [
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
    "Term",
    "TotalMU",
    "Underdose",
]


def _as_float(value: Any, name: str, what: str) -> float:
    """``float(value)``, or an InvalidProblemError naming the argument ``name``."""
    if isinstance(value, str | bytes):  # float("5") would pass a typo through
        value = None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidProblemError(f"`{name}` must be {what}, got {value!r}.") from None


def _check_weight(weight: float) -> float:
    w = _as_float(weight, "weight", "a finite number >= 0")
    if not math.isfinite(w) or w < 0:
        raise InvalidProblemError(
            f"`weight` must be a finite number >= 0, got {weight!r}; use 0 to switch a term off."
        )
    return w


def _check_volume_pct(volume_pct: Any, alternative: str) -> float:
    """``volume_pct`` as a float strictly inside (0, 100) %, else an error naming
    ``alternative`` (what to use for the whole structure)."""
    v = _as_float(volume_pct, "volume_pct", "a volume in %")
    if not (0.0 < v < 100.0):
        raise InvalidProblemError(
            f"`volume_pct` must be strictly between 0 and 100 %, got {volume_pct!r}; {alternative}."
        )
    return v


def _check_dose(dose_gy: Any, name: str = "dose_gy") -> float:
    d = _as_float(dose_gy, name, "a number of Gy")
    if not math.isfinite(d) or d < 0:
        raise InvalidProblemError(f"`{name}` must be a finite dose >= 0 Gy, got {dose_gy!r}.")
    return d


class Term:
    """Base class of all terms.

    Attributes
    ----------
    structure : str or None
        Name of the structure whose voxels the term reads (``None`` for fluence terms).
    weight : float
        Importance weight (>= 0) of a soft term; ignored for hard constraints.
    hard : bool
        ``True`` for a hard constraint, ``False`` for an objective term.
    label : str
        Human-readable name used in ``term_values`` and error messages.

    Notes
    -----
    Class attributes declare the maths, in the spirit of CVXPY's atom properties:
    ``convex`` (the soft value is convex in the dose, and the hard constraint set is
    convex), ``smooth`` (the soft value has a Lipschitz-continuous gradient in the dose),
    ``acts_on`` (``"dose"`` or ``"fluence"``), ``sense`` for hard terms
    (``"<="``: ``quantity <= dose_gy``; ``">="``: ``quantity >= dose_gy``), ``per_voxel``
    (the hard constraint is one inequality per voxel, e.g. max dose), ``linear`` (the hard
    constraint is linear in the dose: per voxel, or on the weighted mean ``p @ d``),
    ``target_goal`` (the term asks its structure to reach ``dose_gy``: the first-order
    solver's default start scales the fluence to these levels) and ``maximises`` (the soft
    value falls without bound as the dose grows).
    """

    convex: ClassVar[bool] = True
    smooth: ClassVar[bool] = True
    acts_on: ClassVar[str] = "dose"
    sense: ClassVar[str] = "<="
    per_voxel: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    target_goal: ClassVar[bool] = False
    maximises: ClassVar[bool] = False
    hard_allowed: ClassVar[bool] = False
    soft_allowed: ClassVar[bool] = True
    #: A dose term names its structure (only the internal level bound does not).
    _needs_structure: ClassVar[bool] = True

    structure: str | None
    weight: float
    hard: bool
    dose_gy: float | None

    def __init__(
        self,
        structure: str | None,
        dose_gy: float | None = None,
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        if (structure is not None or (self.acts_on == "dose" and self._needs_structure)) and (
            not isinstance(structure, str) or not structure
        ):
            raise InvalidProblemError(
                f"`structure` must be a non-empty structure name, got {structure!r}."
            )
        self.structure = structure
        self.dose_gy = None if dose_gy is None else _check_dose(dose_gy)
        self.weight = _check_weight(weight)
        self.hard = bool(hard)
        if self.hard and not self.hard_allowed:
            raise InvalidProblemError(
                f"{type(self).__name__} cannot be a hard constraint (it is not convex as one); "
                "use it as an objective (hard=False)."
            )
        if not self.hard and not self.soft_allowed:
            raise InvalidProblemError(f"{type(self).__name__} is a hard constraint only.")
        self._label = label

    # -- naming ------------------------------------------------------------------------
    def _describe(self) -> str:
        return f"{type(self).__name__}({self.structure})"

    def threshold(self) -> float:
        """The dose level or bound ``dose_gy`` (Gy; objective units for a lexicographic level
        bound).

        Raises
        ------
        InvalidProblemError
            The term has none (e.g. a soft :class:`MeanDose`).
        """
        if self.dose_gy is None:
            raise InvalidProblemError(f"{self.label} has no dose level `dose_gy`.")
        return self.dose_gy

    @property
    def label(self) -> str:
        """Readable name, e.g. ``"MaxDose(CORD) <= 45 Gy [hard]"``."""
        if self._label is not None:
            return self._label
        return self._describe() + (" [hard]" if self.hard else "")

    def __repr__(self) -> str:
        extra = "" if self.hard else f", weight={self.weight:g}"
        return f"<{self.label}{extra}>"

    # -- maths (dose terms) ------------------------------------------------------------
    def value(self, dose_gy: Any, p: Any) -> float:
        """Soft objective value (unweighted).

        Parameters
        ----------
        dose_gy : (n_s,) array of float, Gy
            Dose in the structure's voxels.
        p : (n_s,) array of float
            Normalised voxel weights (non-negative, sum 1).

        Returns
        -------
        float
            Value in the term's unit (Gy² for quadratic terms, Gy for linear ones).
        """
        raise NotImplementedError

    def gradient(self, dose_gy: Any, p: Any) -> Any:
        """Gradient of :meth:`value` with respect to ``dose_gy``, shape ``(n_s,)``."""
        raise NotImplementedError

    def quantity(self, dose_gy: Any, p: Any) -> float:
        """The clinical quantity a hard version bounds (max/min/mean dose, gEUD, CVaR), Gy."""
        raise NotImplementedError

    def quantity_gradient(self, dose_gy: Any, p: Any) -> Any:
        """Gradient of a smooth scalar :meth:`quantity` (hard scalar constraints)."""
        raise NotImplementedError

    def value_and_gradient(self, dose_gy: Any, p: Any) -> tuple[float, Any]:
        """``(value, gradient)`` in one pass where the term can share work."""
        return self.value(dose_gy, p), self.gradient(dose_gy, p)

    def reported(self, dose_gy: Any, p: Any) -> dict[str, float]:
        """Values shown in ``OptimizationResult.term_values`` for this term."""
        if self.hard:
            return {self.label: float(self.quantity(dose_gy, p))}
        return {self.label: float(self.value(dose_gy, p))}


# ---------------------------------------------------------------------------------------
# quadratic dose terms
# ---------------------------------------------------------------------------------------
class _SoftLevelTerm(Term):
    """A soft-only term on one structure around a dose level (``dose_gy`` required)."""

    def __init__(
        self, structure: str, dose_gy: float, *, weight: float = 1.0, label: str | None = None
    ) -> None:
        super().__init__(structure, _check_dose(dose_gy), weight=weight, label=label)


class _OneSidedQuadratic(_SoftLevelTerm):
    """Shared maths of :class:`Underdose` and :class:`Overdose`.

    ``value = sum_i p_i * max(0, excess_i)**2`` (Gy²) with ``excess_i = dose_gy - d_i``
    (``_under = True``) or ``d_i - dose_gy`` (``_under = False``).
    """

    _under: ClassVar[bool]

    def _excess(self, dose_gy):
        return self.dose_gy - dose_gy if self._under else dose_gy - self.dose_gy

    def _describe(self) -> str:
        name, op = ("Underdose", "<") if self._under else ("Overdose", ">")
        return f"{name}({self.structure} {op} {self.dose_gy:g} Gy)"

    def value(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        r = xp.clip(self._excess(dose_gy), 0.0, None)
        return float(xp.sum(p * r * r))

    def gradient(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        return (-2.0 if self._under else 2.0) * p * xp.clip(self._excess(dose_gy), 0.0, None)

    def value_and_gradient(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        pr = p * xp.clip(self._excess(dose_gy), 0.0, None)
        return float(xp.sum(pr * self._excess(dose_gy))), (-2.0 if self._under else 2.0) * pr

    def quantity(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        return float(xp.min(dose_gy) if self._under else xp.max(dose_gy))


class Underdose(_OneSidedQuadratic):
    """Quadratic underdose below a dose level.

    ``value = sum_i p_i * max(0, dose_gy - d_i)**2`` (Gy²), convex and smooth.

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float
        Dose level, Gy (total).
    weight : float, optional
        Importance weight (default 1).
    """

    _under = True
    target_goal = True


class Overdose(_OneSidedQuadratic):
    """Quadratic overdose above a dose level.

    ``value = sum_i p_i * max(0, d_i - dose_gy)**2`` (Gy²), convex and smooth.

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float
        Dose level, Gy (total).
    weight : float, optional
        Importance weight (default 1).
    """

    _under = False


class SquaredDeviation(_SoftLevelTerm):
    """Squared deviation from a dose level (a least-squares dose objective).

    ``value = sum_i p_i * (d_i - dose_gy)**2`` (Gy²), convex and smooth.

    Parameters
    ----------
    structure : str
        Target structure name.
    dose_gy : float
        Dose level, Gy (total), typically the prescribed dose.
    weight : float, optional
        Importance weight (default 1).

    Notes
    -----
    .. versionchanged:: 0.2.0
       Renamed from ``Prescription`` (the quadratic term, not the clinical prescription of
       :class:`rtplan.protocols.Prescription`); ``optimizers.Prescription`` remains a
       deprecated alias until 0.3.0.
    """

    target_goal = True

    def _describe(self) -> str:
        return f"SquaredDeviation({self.structure} = {self.dose_gy:g} Gy)"

    def value(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        r = dose_gy - self.dose_gy
        return float(xp.sum(p * r * r))

    def gradient(self, dose_gy, p):
        return 2.0 * p * (dose_gy - self.dose_gy)

    def quantity(self, dose_gy, p):
        return float(array_namespace(dose_gy).sum(p * dose_gy))


class _VoxelBound(Term):
    """Shared part of :class:`MaxDose` and :class:`MinDose`: a soft one-sided quadratic that
    may also be a hard constraint, one inequality per voxel."""

    per_voxel = True
    linear = True
    hard_allowed = True

    def __init__(
        self,
        structure: str,
        dose_gy: float,
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        Term.__init__(self, structure, _check_dose(dose_gy), weight=weight, hard=hard, label=label)


class MaxDose(_VoxelBound, Overdose):
    """Maximum dose: a hard ``max_i d_i <= dose_gy``, or a soft quadratic overdose above it.

    As an objective (``hard=False``) the value is the piecewise-quadratic overdose above
    ``dose_gy`` (identical to :class:`Overdose`), a smooth stand-in for the maximum. As a hard
    constraint every voxel satisfies ``d_i <= dose_gy`` (convex, one inequality per voxel).

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float
        Maximum dose, Gy (total).
    weight : float, optional
        Weight of the soft version (default 1).
    hard : bool, optional
        Hard constraint instead of objective (default False).
    """

    def _describe(self) -> str:
        return f"MaxDose({self.structure} <= {self.dose_gy:g} Gy)"


class MinDose(_VoxelBound, Underdose):
    """Minimum dose: a hard ``min_i d_i >= dose_gy``, or a soft quadratic underdose.

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float
        Minimum dose, Gy (total).
    weight : float, optional
        Weight of the soft version (default 1).
    hard : bool, optional
        Hard constraint instead of objective (default False).
    """

    sense = ">="

    def _describe(self) -> str:
        return f"MinDose({self.structure} >= {self.dose_gy:g} Gy)"


class MeanDose(Term):
    """Mean dose ``sum_i p_i d_i`` (Gy): minimised as an objective, bounded above when hard.

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float, optional
        Upper bound on the mean dose, Gy (required when ``hard=True``; ignored otherwise).
    weight : float, optional
        Weight of the objective (default 1); the objective value is the mean dose in Gy.
    hard : bool, optional
        Hard constraint ``mean <= dose_gy`` (default False).
    """

    hard_allowed = True
    linear = True

    def __init__(
        self,
        structure: str,
        dose_gy: float | None = None,
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        if hard and dose_gy is None:
            raise InvalidProblemError("A hard MeanDose needs `dose_gy`, the mean-dose bound in Gy.")
        super().__init__(structure, dose_gy, weight=weight, hard=hard, label=label)

    def _describe(self) -> str:
        if self.hard:
            return f"MeanDose({self.structure} <= {self.dose_gy:g} Gy)"
        return f"MeanDose({self.structure})"

    def value(self, dose_gy, p):
        return float(array_namespace(dose_gy).sum(p * dose_gy))

    def gradient(self, dose_gy, p):
        return p + 0.0 * dose_gy

    quantity = value
    quantity_gradient = gradient


class GEUD(Term):
    """Generalised equivalent uniform dose, ``gEUD = (sum_i p_i d_i**a)**(1/a)`` (Gy).

    For ``a >= 1`` (organs at risk; ``a = 1`` is the mean, large ``a`` tends to the max) gEUD
    is convex in the dose and is *minimised*; a hard version imposes ``gEUD <= dose_gy``.
    For ``a < 1`` (targets; ``a != 0``) gEUD is concave on ``d >= 0`` and is *maximised*: the
    objective value is ``-gEUD`` and a hard version imposes ``gEUD >= dose_gy``.

    Parameters
    ----------
    structure : str
        Structure name.
    a : float
        Volume-effect parameter, ``a != 0``.
    dose_gy : float, optional
        Bound for the hard version, Gy.
    weight : float, optional
        Weight of the objective (default 1).
    hard : bool, optional
        Hard constraint (default False).

    References
    ----------
    A. Niemierko, "A generalized concept of equivalent uniform dose (EUD)", Med. Phys. 26
    (1999) 1100.  H. E. Romeijn et al., Phys. Med. Biol. 49 (2004) 1991,
    doi:10.1088/0031-9155/49/10/011 (convexity of gEUD terms).
    """

    hard_allowed = True
    _EPS_GY = 1e-6

    def __init__(
        self,
        structure: str,
        a: float,
        dose_gy: float | None = None,
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        a = _as_float(a, "a", "a finite non-zero number")
        if not math.isfinite(a) or a == 0:
            raise InvalidProblemError(f"gEUD parameter `a` must be finite and non-zero, got {a!r}.")
        if hard and dose_gy is None:
            raise InvalidProblemError("A hard GEUD needs `dose_gy`, the gEUD bound in Gy.")
        self.a = a
        super().__init__(structure, dose_gy, weight=weight, hard=hard, label=label)

    @property
    def sense(self) -> str:  # type: ignore[override]
        return "<=" if self.a >= 1 else ">="

    @property
    def smooth(self) -> bool:  # type: ignore[override]
        return self.a >= 2 or self.a == 1

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.a == 1  # the mean dose

    @property
    def maximises(self) -> bool:  # type: ignore[override]
        return self.a < 1

    def _describe(self) -> str:
        if self.hard:
            return f"GEUD({self.structure}, a={self.a:g}) {self.sense} {self.dose_gy:g} Gy"
        return f"GEUD({self.structure}, a={self.a:g})"

    def quantity(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        d = xp.clip(dose_gy, self._EPS_GY, None)
        # scale by the max (a >= 1) or min (a < 1) against overflow for large |a|
        m = float(xp.max(d)) if self.a >= 1 else float(xp.min(d))
        return m * float(xp.sum(p * (d / m) ** self.a)) ** (1.0 / self.a)

    def quantity_gradient(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        d = xp.clip(dose_gy, self._EPS_GY, None)
        g = self.quantity(dose_gy, p)
        # dG/dd_i = p_i (d_i/G)**(a-1)
        return p * (d / g) ** (self.a - 1.0)

    def value(self, dose_gy, p):
        q = self.quantity(dose_gy, p)
        return q if self.a >= 1 else -q

    def gradient(self, dose_gy, p):
        g = self.quantity_gradient(dose_gy, p)
        return g if self.a >= 1 else -g


# ---------------------------------------------------------------------------------------
# DVH goals through CVaR
# ---------------------------------------------------------------------------------------
def _sorted_cum(dose_gy, p, descending: bool):
    xp = array_namespace(dose_gy)
    order = xp.argsort(-dose_gy if descending else dose_gy, stable=True)
    d = xp.take(dose_gy, order)
    w = xp.take(p, order)
    return d, w, xp.cumulative_sum(w)


def _cvar(dose_gy: Any, p: Any, fraction: float, *, descending: bool) -> float:
    xp = array_namespace(dose_gy)
    d, w, c = _sorted_cum(dose_gy, p, descending=descending)
    prev = c - w
    take = xp.clip(xp.minimum(c, fraction) - prev, 0.0, None)
    return float(xp.sum(take * d)) / fraction


def upper_cvar(dose_gy: Any, p: Any, fraction: float) -> float:
    """Mean dose of the hottest ``fraction`` of the volume (upper CVaR), Gy."""
    return _cvar(dose_gy, p, fraction, descending=True)


def lower_cvar(dose_gy: Any, p: Any, fraction: float) -> float:
    """Mean dose of the coldest ``fraction`` of the volume (lower CVaR), Gy."""
    return _cvar(dose_gy, p, fraction, descending=False)


def dose_at_volume(dose_gy: Any, p: Any, volume_pct: float) -> float:
    """Exact ``D_v``: the highest dose received by at least ``volume_pct`` % of the volume, Gy.

    Voxels are sorted by decreasing dose; ``D_v`` is the dose of the first voxel at which the
    cumulative (weighted) volume reaches ``volume_pct`` %.
    """
    xp = array_namespace(dose_gy)
    d, _, c = _sorted_cum(dose_gy, p, descending=True)
    k = int(xp.sum(xp.astype(c < volume_pct / 100.0 - 1e-12, xp.int64)))
    k = min(k, d.shape[0] - 1)
    return float(d[k])


class _DVH(Term):
    hard_allowed = True
    smooth = False
    #: Smoothing (Gy) of the CVaR surrogate in the first-order solver.
    tau_gy = 0.05

    def __init__(
        self,
        structure: str,
        dose_gy: float,
        volume_pct: float,
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        self.volume_pct = _check_volume_pct(volume_pct, "use MaxDose/MinDose for 0 % or 100 %")
        super().__init__(structure, _check_dose(dose_gy), weight=weight, hard=hard, label=label)

    def exact(self, dose_gy, p) -> float:
        """Exact ``D_v`` (Gy) of the dose in the structure."""
        return dose_at_volume(dose_gy, p, self.volume_pct)

    def fraction(self) -> float:
        """Volume fraction the CVaR averages: ``v`` (upper goal) or ``1 - v`` (lower goal)."""
        v = self.volume_pct / 100.0
        return v if self.sense == "<=" else 1.0 - v

    def miss_gy(self, q: float) -> float:
        """How far the CVaR ``q`` (Gy) misses the level on the goal's wrong side (>= 0)."""
        assert self.dose_gy is not None  # set by __init__
        return max(q - self.dose_gy, 0.0) if self.sense == "<=" else max(self.dose_gy - q, 0.0)

    def value(self, dose_gy, p):
        r = self.miss_gy(self.quantity(dose_gy, p))
        return r * r

    def reported(self, dose_gy, p):
        out = super().reported(dose_gy, p)
        out[self.label + " [CVaR]"] = float(self.quantity(dose_gy, p))
        out[self.label + " [exact]"] = float(self.exact(dose_gy, p))
        return out


class MaxDVH(_DVH):
    """Upper DVH goal ``D_v% <= dose_gy`` (equivalently ``V_dose <= v %``), via CVaR.

    The convex surrogate is the upper conditional value-at-risk: the mean dose of the hottest
    ``v %`` of the volume, ``CVaR = min_z z + (1/v) sum_i p_i max(0, d_i - z)``. Because that
    mean can only be at or above ``D_v``, ``CVaR <= dose_gy`` (the hard version) guarantees
    the exact goal. As an objective the value is ``max(0, CVaR - dose_gy)**2`` (Gy²).
    ``term_values`` reports the CVaR and the exact ``D_v`` beside it.

    Parameters
    ----------
    structure : str
        Structure name (typically an organ at risk).
    dose_gy : float
        Dose level, Gy (total).
    volume_pct : float
        Volume, percent of the structure, strictly in (0, 100).
    weight : float, optional
        Objective weight (default 1).
    hard : bool, optional
        Hard constraint (default False).

    References
    ----------
    H. E. Romeijn, R. K. Ahuja, J. F. Dempsey, A. Kumar, "A new linear programming approach
    to radiation therapy treatment planning problems", Oper. Res. 54 (2006) 201; and
    H. E. Romeijn et al., Phys. Med. Biol. 51 (2006) 3369, doi:10.1088/0031-9155/51/14/001.
    """

    sense = "<="

    def _describe(self) -> str:
        return f"MaxDVH({self.structure} D{self.volume_pct:g}% <= {self.dose_gy:g} Gy)"

    def quantity(self, dose_gy, p):
        return upper_cvar(dose_gy, p, self.volume_pct / 100.0)


class MinDVH(_DVH):
    """Lower DVH goal ``D_v% >= dose_gy`` (at least ``v %`` gets ``dose_gy``), via CVaR.

    The surrogate is the lower CVaR: the mean dose of the coldest ``(100 - v) %`` of the
    volume, ``max_z z - (1/(1-v)) sum_i p_i max(0, z - d_i)``. ``CVaR >= dose_gy`` (the hard
    version) guarantees the exact goal. As an objective the value is
    ``max(0, dose_gy - CVaR)**2`` (Gy²).

    Parameters
    ----------
    structure : str
        Structure name (typically a target).
    dose_gy : float
        Dose level, Gy (total).
    volume_pct : float
        Volume, percent, strictly in (0, 100) (e.g. 95 for D95).
    weight : float, optional
        Objective weight (default 1).
    hard : bool, optional
        Hard constraint (default False).

    References
    ----------
    H. E. Romeijn et al., Phys. Med. Biol. 51 (2006) 3369, doi:10.1088/0031-9155/51/14/001.
    """

    sense = ">="
    target_goal = True

    def _describe(self) -> str:
        return f"MinDVH({self.structure} D{self.volume_pct:g}% >= {self.dose_gy:g} Gy)"

    def quantity(self, dose_gy, p):
        return lower_cvar(dose_gy, p, 1.0 - self.volume_pct / 100.0)


class _DoseVolumeQuadratic(_SoftLevelTerm):
    """Shared maths of :class:`DVHUnderdose` and :class:`DVHOverdose` (Wu & Mohan 2000).

    A one-sided quadratic that ignores the voxels a DVH goal allows to miss the level: for
    ``D_v% <= dose_gy`` the hottest ``v %`` of the volume, for ``D_v% >= dose_gy`` the
    coldest ``(100 - v) %``. The value is zero exactly when the goal is met on the current
    dose. Not convex (the ignored set follows the dose); first-order solver only.
    """

    convex = False
    _under: ClassVar[bool]

    def __init__(
        self,
        structure: str,
        dose_gy: float,
        volume_pct: float,
        *,
        weight: float = 1.0,
        label: str | None = None,
    ) -> None:
        self.volume_pct = _check_volume_pct(
            volume_pct, "use Underdose/Overdose for the whole structure"
        )
        super().__init__(structure, _check_dose(dose_gy), weight=weight, label=label)

    def _describe(self) -> str:
        name, op = ("DVHUnderdose", ">=") if self._under else ("DVHOverdose", "<=")
        return f"{name}({self.structure} D{self.volume_pct:g}% {op} {self.dose_gy:g} Gy)"

    def _weighted_residual(self, dose_gy, p):
        """``p_i * excess_i`` on the voxels the goal does not exempt, zero elsewhere."""
        xp = array_namespace(dose_gy)
        exempt = 1.0 - self.volume_pct / 100.0 if self._under else self.volume_pct / 100.0
        # coldest first for a lower goal, hottest first for an upper one
        order = xp.argsort(dose_gy if self._under else -dose_gy, stable=True)
        before = xp.cumulative_sum(xp.take(p, order)) - xp.take(p, order)
        counted_sorted = xp.astype(before >= exempt * xp.sum(p), dose_gy.dtype)
        # back to voxel order through the inverse permutation (the array API has no scatter)
        counted = xp.take(counted_sorted, xp.argsort(order, stable=True))
        excess = self.dose_gy - dose_gy if self._under else dose_gy - self.dose_gy
        return p * counted * xp.clip(excess, 0.0, None), excess

    def value(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        pr, excess = self._weighted_residual(dose_gy, p)
        return float(xp.sum(pr * excess))

    def gradient(self, dose_gy, p):
        return (-2.0 if self._under else 2.0) * self._weighted_residual(dose_gy, p)[0]

    def value_and_gradient(self, dose_gy, p):
        xp = array_namespace(dose_gy)
        pr, excess = self._weighted_residual(dose_gy, p)
        return float(xp.sum(pr * excess)), (-2.0 if self._under else 2.0) * pr

    def exact(self, dose_gy, p) -> float:
        """Exact ``D_v`` (Gy) of the dose in the structure."""
        return dose_at_volume(dose_gy, p, self.volume_pct)

    def reported(self, dose_gy, p):
        out = super().reported(dose_gy, p)
        out[self.label + " [exact]"] = float(self.exact(dose_gy, p))
        return out


class DVHUnderdose(_DoseVolumeQuadratic):
    """Dose-volume underdose for a goal ``D_v% >= dose_gy`` (Wu & Mohan 2000).

    ``value = sum_i p_i * max(0, dose_gy - d_i)**2`` (Gy²) over the voxels that are not
    among the coldest ``(100 - v) %`` of the volume, which the goal allows to be cold. Zero
    exactly when ``D_v >= dose_gy``. Unlike :class:`MinDVH` (CVaR, convex, conservative) it
    lets the optimiser choose which voxels stay cold, e.g. the rim of a target next to an
    organ with a low dose limit. Not convex: first-order solver only.

    Parameters
    ----------
    structure : str
        Structure name (typically a target).
    dose_gy : float
        Dose level, Gy (total).
    volume_pct : float
        Volume, percent, strictly in (0, 100) (e.g. 95 for D95).
    weight : float, optional
        Objective weight (default 1).

    References
    ----------
    Q. Wu, R. Mohan, "Algorithms and functionality of an intensity modulated radiotherapy
    optimization system", Med. Phys. 27 (2000) 701, doi:10.1118/1.598932.
    """

    _under = True
    target_goal = True


class DVHOverdose(_DoseVolumeQuadratic):
    """Dose-volume overdose for a goal ``D_v% <= dose_gy`` (Wu & Mohan 2000).

    ``value = sum_i p_i * max(0, d_i - dose_gy)**2`` (Gy²) over the voxels that are not
    among the hottest ``v %`` of the volume, which the goal allows to be hot. Zero exactly
    when ``D_v <= dose_gy``. Not convex: first-order solver only.

    Parameters
    ----------
    structure : str
        Structure name.
    dose_gy : float
        Dose level, Gy (total).
    volume_pct : float
        Volume, percent, strictly in (0, 100) (e.g. 10 for D10).
    weight : float, optional
        Objective weight (default 1).

    References
    ----------
    Q. Wu, R. Mohan, Med. Phys. 27 (2000) 701, doi:10.1118/1.598932.
    """

    _under = False


# ---------------------------------------------------------------------------------------
# fluence terms
# ---------------------------------------------------------------------------------------
class Smoothness(Term):
    """Fluence smoothness: mean squared difference between neighbouring beamlets (MU²).

    ``value = (1/m) * ||D x||**2`` where ``D`` is an ``(m, n_beamlets)`` sparse difference
    operator. The caller, who knows the beamlet lattice, supplies either ``D`` or a list of
    neighbour pairs ``(j, k)`` (each row of ``D`` is then ``x_j - x_k``).

    Parameters
    ----------
    operator : (m, n_beamlets) sparse matrix, optional
        Difference operator.
    pairs : (m, 2) array of int, optional
        Neighbouring beamlet index pairs (alternative to ``operator``).
    n_beamlets : int, optional
        Number of beamlets (needed with ``pairs``; defaults to ``max(pairs) + 1``).
    weight : float, optional
        Weight (default 1).

    Notes
    -----
    :meth:`value` and :meth:`gradient` work in the namespace of ``x``
    (:class:`~optimizers._sparse_ops.SparseProducts`: scipy CSR for numpy, cupyx CSR for
    CuPy, ELLPACK gathers for any other array-API namespace).
    """

    acts_on = "fluence"

    def __init__(
        self,
        operator: Any = None,
        *,
        pairs: Any = None,
        n_beamlets: int | None = None,
        weight: float = 1.0,
        label: str | None = None,
    ) -> None:
        if (operator is None) == (pairs is None):
            raise InvalidProblemError("Smoothness needs exactly one of `operator` or `pairs`.")
        if pairs is not None:
            pairs = np.asarray(pairs)
            if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
                raise InvalidProblemError(
                    f"`pairs` must be an (m, 2) integer array, got shape {pairs.shape} "
                    f"dtype {pairs.dtype}."
                )
            if pairs.size and pairs.min() < 0:
                raise InvalidProblemError("`pairs` holds negative beamlet indices.")
            m = pairs.shape[0]
            n = int(n_beamlets) if n_beamlets is not None else int(pairs.max()) + 1
            rows = np.repeat(np.arange(m), 2)
            cols = pairs.ravel()
            vals = np.tile([1.0, -1.0], m)
            if m and cols.max() >= n:
                raise InvalidProblemError(
                    f"`pairs` refers to beamlet {int(cols.max())} but `n_beamlets` is {n}."
                )
            operator = sp.csr_matrix((vals, (rows, cols)), shape=(m, n))
        if not sp.issparse(operator) or operator.ndim != 2 or operator.shape[0] == 0:
            raise InvalidProblemError(
                "`operator` must be a non-empty 2-D scipy.sparse matrix (rows = differences)."
            )
        self.operator = sp.csr_matrix(operator, dtype=np.float64)
        self._products = SparseProducts(self.operator)
        super().__init__(None, None, weight=weight, label=label)

    def _describe(self) -> str:
        return f"Smoothness({self.operator.shape[0]} pairs)"

    def value(self, x, p=None):
        fwd, _ = self._products.products(x)
        r = fwd(x)
        return float(r @ r) / self.operator.shape[0]

    def gradient(self, x, p=None):
        fwd, bwd = self._products.products(x)
        return (2.0 / self.operator.shape[0]) * bwd(fwd(x))


class TotalMU(Term):
    """Total fluence ``sum_j x_j`` (MU), an L1 regulariser (``x >= 0``).

    Parameters
    ----------
    weight : float, optional
        Weight (default 1).
    """

    acts_on = "fluence"

    def __init__(self, *, weight: float = 1.0, label: str | None = None) -> None:
        super().__init__(None, None, weight=weight, label=label)

    def _describe(self) -> str:
        return "TotalMU"

    def value(self, x, p=None):
        return float(array_namespace(x).sum(x))

    def gradient(self, x, p=None):
        return 1.0 + 0.0 * x


class _LevelBound(Term):
    """Internal: ``sum_k w_k f_k(d) <= bound`` for the soft terms of an earlier priority level."""

    hard_allowed = True
    soft_allowed = False
    _needs_structure = False

    def __init__(self, terms: list[Term], bound: float, level: int) -> None:
        self.terms = list(terms)
        self.level = level
        self.bound = float(bound)
        Term.__init__(self, None, None, hard=True, label=f"level {level} objective <= {bound:.6g}")
        self.dose_gy = self.bound

    @property
    def smooth(self) -> bool:  # type: ignore[override]
        return all(t.smooth for t in self.terms)
