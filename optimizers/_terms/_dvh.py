"""Dose-volume (DVH) goals: the exact CVaR helpers, the CVaR goals :class:`MaxDVH` /
:class:`MinDVH` (convex) and Wu & Mohan's dose-volume quadratics :class:`DVHUnderdose` /
:class:`DVHOverdose` (not convex). Their exact ``D_v`` is :mod:`optimizers._dose_volume`."""

from __future__ import annotations

from typing import Any, ClassVar

from array_api_compat import array_namespace

from .._dose_volume import (
    dose_at_volume,
    dose_at_volume_unchecked,
    sorted_cumulative,
    stable_order,
    unsort,
)
from ._base import Term, _check_dose, _check_volume_pct
from ._dose import _SoftLevelTerm

__all__ = [
    "DVHOverdose",
    "DVHUnderdose",
    "MaxDVH",
    "MinDVH",
    "dose_at_volume",
    "lower_cvar",
    "upper_cvar",
]


def _cvar(dose_gy: Any, p: Any, fraction: float, *, descending: bool) -> float:
    xp = array_namespace(dose_gy)
    d, w, c = sorted_cumulative(dose_gy, p, descending=descending)
    prev = c - w
    take = xp.clip(xp.minimum(c, fraction) - prev, 0.0, None)
    return float(xp.sum(take * d)) / fraction


def upper_cvar(dose_gy: Any, p: Any, fraction: float) -> float:
    """Mean dose of the hottest ``fraction`` of the volume (upper CVaR), Gy."""
    return _cvar(dose_gy, p, fraction, descending=True)


def lower_cvar(dose_gy: Any, p: Any, fraction: float) -> float:
    """Mean dose of the coldest ``fraction`` of the volume (lower CVaR), Gy."""
    return _cvar(dose_gy, p, fraction, descending=False)


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
        """Exact ``D_v`` (Gy) of the dose in the structure (:func:`optimizers.dose_at_volume`)."""
        return dose_at_volume_unchecked(dose_gy, p, self.volume_pct)

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
        order = stable_order(dose_gy if self._under else -dose_gy)
        p_sorted = xp.take(p, order)
        before = xp.cumulative_sum(p_sorted) - p_sorted
        counted_sorted = xp.astype(before >= exempt * xp.sum(p), dose_gy.dtype)
        counted = unsort(counted_sorted, order)  # back to voxel order
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
        """Exact ``D_v`` (Gy) of the dose in the structure (:func:`optimizers.dose_at_volume`)."""
        return dose_at_volume_unchecked(dose_gy, p, self.volume_pct)

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
