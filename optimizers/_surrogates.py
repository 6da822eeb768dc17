"""How the first-order solver sees each term: one table from term type to surrogate.

The first-order solver needs a value and a gradient with a Lipschitz-continuous gradient.
Smooth terms are used as they are (:data:`EXACT`); the CVaR of DVH goals is replaced by a
softplus-smoothed CVaR that bounds it from the safe side (:class:`SmoothCVaR`). A term type
the table does not know (through its classes, most specific first) is refused by the
first-order solver with a message naming it.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from ._dose_volume import dose_at_volume_unchecked
from ._term_table import TermTable
from ._terms import (
    GEUD,
    DVHOverdose,
    DVHUnderdose,
    MaxDVH,
    MeanDose,
    MinDVH,
    Overdose,
    Smoothness,
    SquaredDeviation,
    Term,
    TotalMU,
    Underdose,
)

__all__ = [
    "EXACT",
    "FIRST_ORDER_SURROGATES",
    "SmoothCVaR",
    "Surrogate",
    "add_surrogate",
    "first_order_surrogate",
    "smooth_cvar",
]


class Surrogate:
    """A term as the first-order solver sees it; this base class is the term's own maths.

    Each method takes the term, then ``dose_gy`` ((n_s,) array, Gy, the dose in the term's
    structure; the fluence ``x`` for fluence terms) and ``p`` ((n_s,) normalised voxel
    weights; ``None`` for fluence terms). A subclass overrides what it smooths.
    """

    def value(self, term: Term, dose_gy: Any, p: Any) -> float:
        """Soft value (unweighted)."""
        return term.value(dose_gy, p)

    def value_and_gradient(self, term: Term, dose_gy: Any, p: Any) -> tuple[float, Any]:
        """``(value, gradient with respect to dose_gy)``."""
        return term.value_and_gradient(dose_gy, p)

    def quantity(self, term: Term, dose_gy: Any, p: Any) -> float:
        """The quantity a hard scalar constraint bounds, Gy."""
        return term.quantity(dose_gy, p)

    def quantity_gradient(self, term: Term, dose_gy: Any, p: Any) -> Any:
        """Gradient of :meth:`quantity` with respect to ``dose_gy``."""
        return term.quantity_gradient(dose_gy, p)


#: The term's own value and gradient (smooth terms).
EXACT = Surrogate()


def smooth_cvar(dose_gy: Any, p: Any, fraction: float, tau_gy: float, *, upper: bool):
    """Softplus-smoothed CVaR and its gradient.

    Upper: ``min_z z + (1/f) sum_i p_i tau log(1 + exp((d_i - z)/tau))``; lower:
    ``max_z z - (1/f) sum_i p_i tau log(1 + exp((z - d_i)/tau))``. Because the softplus lies
    above ``max(0, .)``, the smoothed upper CVaR is >= the exact one and the smoothed lower
    CVaR <= the exact one (by at most ``tau log 2 / f``): a hard constraint on it is
    conservative, so the exact DVH goal still holds. The inner 1-D problem in ``z`` is solved
    by safeguarded Newton steps; the gradient follows from the envelope theorem.

    Returns
    -------
    value : float, Gy
    gradient : (n_s,) array
    """
    xp = array_namespace(dose_gy)
    sgn = 1.0 if upper else -1.0
    u = sgn * dose_gy  # the lower CVaR of d is minus the upper CVaR of -d
    lo = float(xp.min(u)) - 40.0 * tau_gy
    hi = float(xp.max(u)) + 40.0 * tau_gy
    z = sgn * dose_at_volume_unchecked(dose_gy, p, 100.0 * (fraction if upper else 1.0 - fraction))
    for _ in range(60):
        t = xp.clip((u - z) / tau_gy, -500.0, 500.0)
        sig = 1.0 / (1.0 + xp.exp(-t))
        h1 = 1.0 - float(xp.sum(p * sig)) / fraction  # dh/dz, increasing in z
        if abs(h1) < 1e-12:
            break
        if h1 > 0:
            hi = z
        else:
            lo = z
        h2 = float(xp.sum(p * sig * (1.0 - sig))) / (fraction * tau_gy)
        z_new = z - h1 / h2 if h2 > 0 else 0.5 * (lo + hi)
        if not (lo < z_new < hi):
            z_new = 0.5 * (lo + hi)
        if abs(z_new - z) < 1e-12 * max(1.0, abs(z)):
            z = z_new
            break
        z = z_new
    t = (u - z) / tau_gy
    # softplus without overflow and without a clip (a clipped t would cut every dose more
    # than 500 tau above z short and understate the CVaR): max(t, 0) + log1p(exp(-|t|))
    sp_t = xp.clip(t, 0.0, None) + xp.log1p(xp.exp(-xp.abs(t)))
    val = z + tau_gy * float(xp.sum(p * sp_t)) / fraction
    grad = p / (1.0 + xp.exp(-xp.clip(t, -500.0, 500.0))) / fraction
    return sgn * val, grad


class SmoothCVaR(Surrogate):
    """DVH goals (:class:`MaxDVH`, :class:`MinDVH`) through :func:`smooth_cvar` with the
    term's smoothing ``tau_gy``: a hard constraint on it is conservative, and the soft value
    is ``max(0, miss)**2`` of the smoothed CVaR."""

    @staticmethod
    def _smooth(term: Any, dose_gy: Any, p: Any) -> tuple[float, Any]:
        return smooth_cvar(dose_gy, p, term.fraction(), term.tau_gy, upper=term.sense == "<=")

    # ``term`` is a MaxDVH or MinDVH (typed Any: it reads their fraction() and miss_gy())
    def quantity(self, term: Any, dose_gy: Any, p: Any) -> float:
        return self._smooth(term, dose_gy, p)[0]

    def quantity_gradient(self, term: Any, dose_gy: Any, p: Any) -> Any:
        return self._smooth(term, dose_gy, p)[1]

    def value(self, term: Any, dose_gy: Any, p: Any) -> float:
        r = term.miss_gy(self.quantity(term, dose_gy, p))
        return r * r

    def value_and_gradient(self, term: Any, dose_gy: Any, p: Any) -> tuple[float, Any]:
        q, g = self._smooth(term, dose_gy, p)
        r = term.miss_gy(q)
        return r * r, (2.0 * r * g if term.sense == "<=" else -2.0 * r * g)


#: Term type -> how the first-order solver sees it. A subclass without its own entry uses
#: its nearest registered base class (MaxDose is an Overdose, MinDose an Underdose).
FIRST_ORDER_SURROGATES: dict[type[Term], Surrogate] = {
    Underdose: EXACT,
    Overdose: EXACT,
    SquaredDeviation: EXACT,
    MeanDose: EXACT,
    GEUD: EXACT,
    MaxDVH: SmoothCVaR(),
    MinDVH: SmoothCVaR(),
    DVHUnderdose: EXACT,
    DVHOverdose: EXACT,
    Smoothness: EXACT,
    TotalMU: EXACT,
}


_TABLE: TermTable[Surrogate] = TermTable(
    FIRST_ORDER_SURROGATES,
    missing=lambda term: (
        f"{term.label}: the first-order solver has no surrogate for {type(term).__name__}; "
        "register one with optimizers.register_term(..., first_order=...) or use "
        "method='cvxpy'."
    ),
)


def add_surrogate(term_type: type[Term], surrogate: Surrogate) -> None:
    """Set the table entry of ``term_type`` (see :func:`optimizers.register_term`)."""
    _TABLE.set(term_type, surrogate)


def first_order_surrogate(term: Term) -> Surrogate:
    """The entry of :data:`FIRST_ORDER_SURROGATES` for ``term``'s type (or nearest base).

    Raises
    ------
    InvalidProblemError
        No entry: the message names the term and how to register one.
    """
    return _TABLE.for_term(term)
