"""The :class:`Term` base class and the argument checks every term shares."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..errors import InvalidProblemError

__all__ = ["Term"]


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
    ``acts_on`` (``"dose"``, ``"fluence"``, or ``"structures"`` for a
    :class:`~optimizers.CvxpyTerm`, which reads several structures and the fluence),
    ``sense`` for hard terms
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
