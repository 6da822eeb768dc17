"""Screening of per-voxel rows for the CVXPY solve (constraint generation).

Most voxels of a per-voxel term sit far on the inactive side of its hinge: a maximum-dose
voxel far below its bound, an overdose voxel far below its level, a CVaR voxel far below
the term's value at risk. A formulation that leaves such rows out
(:class:`optimizers.CvxpyFormulation`'s ``term_rows``) is a relaxation of the whole
problem: each left-out row is a non-negative hinge that enters the objective or its
constraint increasingly. So

- per-voxel hard terms (:class:`MaxDose`, :class:`MinDose`): a relaxed solution that
  meets every left-out constraint (on the exact dose) solves the whole problem;
- soft one-sided quadratics (:class:`Overdose`, :class:`Underdose`) and CVaR dose-volume
  terms (:class:`MaxDVH`, :class:`MinDVH`): the whole objective at the relaxed solution
  minus the relaxed objective there (:func:`screening_gap`), plus the solver's own
  optimality gap, bounds how far the solution is from the whole optimum (on the dose the
  solver saw); below :data:`SCREEN_GAP_REL` of the objective the solution is certified.

Otherwise the violated rows enter, with those then near their hinge, and the problem is
solved again (:func:`optimizers._cvxpy.solve_screened`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._cvxpy_canon import _dvh, _one_sided_quadratic, cvxpy_canonicalizer
from ._problem import Problem, constraint_scale, structure_of
from ._terms import _DVH, Term, dose_at_volume

__all__ = [
    "SCREEN_GAP_REL",
    "SCREEN_MARGIN",
    "SCREEN_MAX_ROUNDS",
    "SCREEN_TOL",
    "SOFT_SCREEN_MARGIN",
    "active_left_out",
    "hinge",
    "screenable",
    "screened_rows",
    "screening_gap",
]

#: Screening of per-voxel hard constraints: a voxel is constrained when its dose at the
#: start is within this fraction of the constraint's scale (``max(|bound|, 1 Gy)``) of the
#: bound. PortPy's lung problem: 2,184 of 159,199 maximum-dose rows at the first-order
#: fluence, and none of the others reached its bound.
SCREEN_MARGIN = 0.2
#: The same for the soft hinge terms (one-sided quadratics and CVaR rows), as a fraction of
#: the term's ``max(|level|, 1 Gy)``. TG-119 C-shape at 3 mm from the first-order seed
#: (2026-12-07): 28,078 of 90,720 rows kept, certified in one round (gap 5e-5); at 0.05
#: 16,172 kept, but the gap was 3.4e-4 and a second solve let 19 rows in (51 instead of
#: 41 CPU s for the whole CVXPY solve).
SOFT_SCREEN_MARGIN = 0.1
#: A left-out hard voxel whose constraint the solution violates by more than this fraction
#: of the constraint's scale enters, and the problem is solved again.
SCREEN_TOL = 1e-6
#: A screened solution is certified when the whole objective exceeds the relaxed optimum
#: by at most this fraction of it (the bound of its distance from the whole optimum;
#: the beamlet active set lets a beamlet in at the same relative size,
#: :data:`optimizers._active_set.ACTIVE_SET_REL_TOL`).
SCREEN_GAP_REL = 1e-4
#: Screened solves at most; then every row is kept.
SCREEN_MAX_ROUNDS = 4


def screenable(term: Term) -> bool:
    """Whether ``term``'s rows may be screened: a per-voxel hard term, or a soft term whose
    CVXPY translation is a sum of per-voxel hinges (one-sided quadratic, CVaR)."""
    if term.hard:
        return bool(term.per_voxel)
    return cvxpy_canonicalizer(term) in (_one_sided_quadratic, _dvh)


def hinge(term: Term, dose_gy: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(n_s,) Gy: how far each voxel of a :func:`screenable` term's structure is on the
    active side of its hinge (> 0: it contributes or violates) at the structure dose
    ``dose_gy`` (``p`` its voxel weights): the dose above the level or bound (below it for
    a lower term); for a CVaR term above (below) its value at risk, the dose at the
    term's volume."""
    if isinstance(term, _DVH):
        var = dose_at_volume(dose_gy, p, term.volume_pct)
        return dose_gy - var if term.sense == "<=" else var - dose_gy
    level = term.threshold()
    return level - dose_gy if getattr(term, "_under", term.sense == ">=") else dose_gy - level


def screened_rows(
    problem: Problem,
    x: Any = None,
    keep: dict[int, np.ndarray] | None = None,
    margin: float | None = None,
    *,
    soft: bool = True,
    dose: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Rows of each :func:`screenable` term within a margin of its hinge at fluence ``x``.

    Parameters
    ----------
    problem : Problem
    x : (n_beamlets,) array, MU
        Fluence the doses are computed at (e.g. the first-order solver's); or ``dose``.
    keep : dict of int to array of int, optional
        Rows to keep whatever their dose (an earlier screening), by term index.
    margin : float, optional
        Of hard terms, a fraction of the term's :func:`constraint_scale`
        (``max(|bound|, 1 Gy)``): a voxel is kept when its dose is within it of the bound
        or beyond (default :data:`SCREEN_MARGIN`). Soft terms use
        :data:`SOFT_SCREEN_MARGIN`.
    soft : bool, optional
        Screen the soft hinge terms too (default True); False: hard terms only.
    dose : (n_union,) array, Gy, optional
        The union dose at ``x``, when already computed.

    Returns
    -------
    dict of int to (n_kept,) array of int
        Positions in each term's structure, for the terms that leave out some rows (a term
        whose every row is kept is absent).
    """
    margin = SCREEN_MARGIN if margin is None else float(margin)
    d = problem.union_dose(np.asarray(x, dtype=np.float64)) if dose is None else dose
    out: dict[int, np.ndarray] = {}
    for k, t in enumerate(problem.terms):
        if not screenable(t) or not (t.hard or soft):
            continue
        name = structure_of(t)
        m = (margin if t.hard else SOFT_SCREEN_MARGIN) * constraint_scale(t)
        near = hinge(t, problem.term_dose(t, d), problem.p[name]) >= -m
        if keep is not None and k in keep:
            near[keep[k]] = True
        if not near.all():
            out[k] = np.flatnonzero(near)
    return out


def active_left_out(
    problem: Problem, rows: dict[int, np.ndarray], d_union: np.ndarray, *, hard: bool
) -> dict[int, np.ndarray]:
    """Left-out rows of the screened hard (``hard=True``) or soft terms on the active side
    of their hinge at the union dose ``d_union``: beyond :data:`SCREEN_TOL` of the
    constraint's scale for a hard term, above zero for a soft one; by term index, only
    terms with such rows."""
    out: dict[int, np.ndarray] = {}
    for k, kept in rows.items():
        t = problem.terms[k]
        if t.hard != hard:
            continue
        h = hinge(t, problem.term_dose(t, d_union), problem.p[structure_of(t)])
        bad = h > (SCREEN_TOL * constraint_scale(t) if hard else 0.0)
        bad[kept] = False
        if bad.any():
            out[k] = np.flatnonzero(bad)
    return out


def screening_gap(problem: Problem, rows: dict[int, np.ndarray], d_union: np.ndarray) -> float:
    """Whole objective minus the screened one at the union dose ``d_union``: the weighted
    value each screened soft term loses by reading only its ``rows`` (each term's own
    ``value`` on the kept voxels with their unnormalised weights: the relaxed sum of
    hinges, and for a CVaR the mean of the hottest or coldest part of the kept weights,
    which is the relaxed CVaR while they hold that part), objective units, >= 0."""
    gap = 0.0
    for k, kept in rows.items():
        t = problem.terms[k]
        if t.hard:
            continue
        d, p = problem.term_dose(t, d_union), problem.p[structure_of(t)]
        gap += t.weight * (t.value(d, p) - (t.value(d[kept], p[kept]) if kept.size else 0.0))
    return float(gap)
