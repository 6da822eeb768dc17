"""Hard constraints of the first-order solver: an augmented Lagrangian with per-constraint
penalties.

References
----------
J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed., ch. 17 (augmented Lagrangian).
A. R. Conn, N. I. M. Gould, P. L. Toint, LANCELOT, Springer (1992).
"""

from __future__ import annotations

import math

from ._compiled import CompiledTerms
from ._problem import constraint_scale, structure_of
from ._surrogates import first_order_surrogate
from ._terms import Term, _LevelBound

__all__ = ["AugmentedLagrangian", "is_level_bound"]

#: Penalty growth of a constraint whose relative violation did not fall below
#: ``_RHO_PROGRESS`` times its previous value in an outer round, and the cap on the total
#: growth (relative to the initial penalty) that keeps the inner problems conditioned.
_RHO_GROWTH = 10.0
_RHO_PROGRESS = 0.25
_RHO_MAX_GROWTH = 1e8


class AugmentedLagrangian:
    """Augmented-Lagrangian penalty of the hard constraints, with per-constraint scales.

    For constraint ``k`` with residuals ``c`` (``c <= 0`` feasible; Gy for dose constraints,
    objective units for lexicographic level bounds) and multipliers ``lam``:
    ``(rho_k/2) sum_i m_i [max(0, c_i + lam_i/rho_k)**2 - (lam_i/rho_k)**2]`` with
    ``m_i = p_i`` (voxel weights) for per-voxel constraints and 1 for scalar ones.

    Each constraint has its own scale ``s_k`` (:func:`constraint_scale`: ``max(|bound|, 1 Gy)``
    for dose constraints, the bound for level bounds). Violations are measured relative,
    ``max(c) / s_k``, and ``rho_k`` starts at ``rho0 / s_k**2``, so a relative violation
    costs the same whatever the constraint's units. After each outer round the multipliers
    take the step ``lam_k = max(0, lam_k + rho_k c_k)`` and ``rho_k`` grows by
    ``_RHO_GROWTH`` (up to ``_RHO_MAX_GROWTH`` times its start) only for the constraints whose
    relative violation did not fall below ``_RHO_PROGRESS`` times its previous value
    (Nocedal & Wright, ch. 17.4; Conn, Gould, Toint, LANCELOT).

    Attributes
    ----------
    scale : list of float
        ``s_k`` per hard constraint (Gy, or objective units for level bounds).
    rho : list of float
        Penalty per hard constraint, in units of ``1 / s_k**2`` objective units.
    lam : list of (n_k,) arrays of float64
        Multipliers: one per voxel for per-voxel constraints, else one.
    """

    def __init__(self, comp: CompiledTerms, rho0: float) -> None:
        self.comp = comp
        xp = comp.xp
        self.scale = [constraint_scale(t) for t in comp.hard]
        self.rho = [rho0 / s**2 for s in self.scale]
        self._rho_max = [r * _RHO_MAX_GROWTH for r in self.rho]
        self._last = [math.inf] * len(comp.hard)
        self.lam = [
            xp.zeros(comp.idx[structure_of(t)].shape[0] if t.per_voxel else 1, dtype=xp.float64)
            for t in comp.hard
        ]

    def residual(self, t: Term, d, x):
        xp = self.comp.xp
        sgn = 1.0 if t.sense == "<=" else -1.0
        if t.per_voxel:
            ds = self.comp.take(d, t.structure)
            return sgn * (ds - t.dose_gy)
        q = self._quantity(t, d, x)
        return xp.asarray([sgn * (q - t.dose_gy)], dtype=xp.float64)

    def _quantity(self, t, d, x):
        if isinstance(t, _LevelBound):
            f, _, _ = self._level(t, d, x, want_grad=False)
            return f
        ds = self.comp.take(d, t.structure)
        return first_order_surrogate(t).quantity(t, ds, self.comp.p[t.structure])

    def _level(self, t, d, x, want_grad):
        xp = self.comp.xp
        f = 0.0
        g_u = xp.zeros_like(d) if want_grad else None
        g_x = None
        return self.comp._accumulate(t, 1.0, d, x, f, g_u, g_x, want_grad)

    def value_grad(self, d, x, g_u, g_x, want_grad=True):
        xp = self.comp.xp
        total = 0.0
        for k, t in enumerate(self.comp.hard):
            rho, lam = self.rho[k], self.lam[k]
            sgn = 1.0 if t.sense == "<=" else -1.0
            # a level bound's objective, with its gradients when wanted, evaluated once:
            # the value is the same number the value-only pass gives (and its terms cost
            # as much as the later level's own: thorax level 1, 7 of 25 ms per evaluation)
            level = None
            if want_grad and is_level_bound(t):
                level = self._level(t, d, x, want_grad=True)
            if level is None:
                c = self.residual(t, d, x)
            else:
                c = xp.asarray([sgn * (level[0] - t.dose_gy)], dtype=xp.float64)
            s = xp.clip(c + lam / rho, 0.0, None)
            m = self.comp.p[t.structure] if t.per_voxel else 1.0
            total += 0.5 * rho * float(xp.sum(m * (s * s - (lam / rho) ** 2)))
            if not want_grad:
                continue
            coef = sgn * rho * m * s  # d(penalty)/d(quantity), per voxel or scalar
            if t.per_voxel:
                g_u = self.comp._scatter(g_u, t, coef)
                continue
            cf = float(coef[0])
            if cf == 0.0:
                continue
            if level is not None:
                _, gq_u, gq_x = level
                g_u = g_u + cf * gq_u
                if gq_x is not None:
                    g_x = cf * gq_x if g_x is None else g_x + cf * gq_x
            else:
                ds = self.comp.take(d, t.structure)
                gq = first_order_surrogate(t).quantity_gradient(t, ds, self.comp.p[t.structure])
                g_u = self.comp._scatter(g_u, t, cf * gq)
        return total, g_u, g_x

    def update(self, d, x, tol: float) -> float:
        """End of an outer round: multiplier step, then penalty growth where needed.

        Parameters
        ----------
        d : (n_u,) array, Gy
            Dose on the union rows at ``x``.
        x : (n_beamlets,) array, MU
            Fluence of the finished inner solve.
        tol : float
            Relative violation below which a constraint counts as met (its ``rho_k`` stays).

        Returns
        -------
        float
            The largest relative violation ``max_k max(c_k) / s_k`` (0 when all are met).
        """
        xp = self.comp.xp
        worst = 0.0
        for k, t in enumerate(self.comp.hard):
            c = self.residual(t, d, x)
            self.lam[k] = xp.clip(self.lam[k] + self.rho[k] * c, 0.0, None)
            rel = max(float(xp.max(c)), 0.0) / self.scale[k]
            if rel > tol and rel > _RHO_PROGRESS * self._last[k]:
                self.rho[k] = min(self.rho[k] * _RHO_GROWTH, self._rho_max[k])
            self._last[k] = rel
            worst = max(worst, rel)
        return worst

    def goal_violation(self) -> float:
        """The largest relative violation of the last :meth:`update` among the hard
        constraints that are not lexicographic level bounds (the goals' own)."""
        return max(
            (r for r, t in zip(self._last, self.comp.hard, strict=True) if not is_level_bound(t)),
            default=0.0,
        )


def is_level_bound(t: Term) -> bool:
    return isinstance(t, _LevelBound)
