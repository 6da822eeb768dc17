"""Dose terms on one structure: one-sided and two-sided quadratics, voxel bounds (max and
min dose), mean dose and gEUD."""

from __future__ import annotations

import math
from typing import ClassVar

from array_api_compat import array_namespace

from ..errors import InvalidProblemError
from ._base import Term, _as_float, _check_dose

__all__ = ["GEUD", "MaxDose", "MeanDose", "MinDose", "Overdose", "SquaredDeviation", "Underdose"]


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
    .. versionchanged:: 0.1.0
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
