"""Beamlet column generation for the CVXPY solve: solve on the beamlets a seed fluence
uses, price every other beamlet by its reduced cost, let in those that would lower the
objective, and repeat until none would.

An interior-point solver factors a dense beamlet block at every iteration (every pair of
beamlets shares a target voxel), so its work grows with the cube of the beamlets it sees;
at the optimum of a TG-119 plan most beamlets are zero (the C-shape at 3 mm: 3,154 of
5,352). The restricted problem holds the other beamlets at zero through an equality whose
multipliers, with those of the dose constraints, give each one's reduced cost
(:meth:`optimizers.CvxpyFormulation.reduced_costs`): when none is negative beyond the
tolerance the restricted solution is optimal for the whole problem (the optimality
condition of column generation; Romeijn, Ahuja, Dempsey, Kumar, Oper. Res. 53 (2005) 1,
doi:10.1287/opre.1040.0174). The seed is the first-order solver's fluence.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from ._cvxpy import CvxpyFormulation, solve_cvxpy, solve_screened
from ._cvxpy_screen import screened_rows
from ._problem import Problem
from ._result import OptimizationResult
from .errors import InfeasibleError, InvalidProblemError

__all__ = [
    "ACTIVE_SET_REL_TOL",
    "ACTIVE_SET_SEED_REL",
    "entering_beamlets",
    "seed_columns",
    "solve_cvxpy_active_set",
]

#: A beamlet enters when giving it the mean fluence of the active beamlets would lower the
#: CVXPY objective, to first order, by more than this fraction of it.
ACTIVE_SET_REL_TOL = 1e-4
#: The seed's active beamlets: fluence above this fraction of its largest.
ACTIVE_SET_SEED_REL = 1e-3
#: Settings of the first-order seed (a loose solve: only its zero pattern is used).
SEED_OPTIONS = {"tol": 1e-5, "max_iter": 300}


def seed_fluence(problem: Problem, **options: Any) -> np.ndarray | None:
    """The first-order solver's fluence for ``problem`` (``None`` when it cannot use a
    term, e.g. a :class:`optimizers.CvxpyTerm`)."""
    from ._first_order import solve_first_order

    try:
        return np.asarray(solve_first_order(problem, **{**SEED_OPTIONS, **options}).x)
    except InvalidProblemError:
        return None


def seed_columns(x0: np.ndarray, seed_rel: float = ACTIVE_SET_SEED_REL) -> np.ndarray:
    """Beamlets whose seed fluence ``x0`` exceeds ``seed_rel`` of its maximum (every
    beamlet when ``x0`` is zero)."""
    top = float(x0.max(initial=0.0))
    return np.flatnonzero(x0 > seed_rel * top) if top > 0 else np.arange(x0.size)


def entering_beamlets(
    form: CvxpyFormulation, x: np.ndarray, rel_tol: float = ACTIVE_SET_REL_TOL
) -> tuple[np.ndarray, float]:
    """Beamlets outside ``form.columns`` that would lower the solved objective, and the
    most negative relative reduced cost (0 when none is negative).

    Parameters
    ----------
    form : CvxpyFormulation
        Solved, restricted to ``form.columns``.
    x : (n_beamlets,) array, MU
        Its solution.
    rel_tol : float, optional
        A beamlet enters when giving it the mean active fluence would lower the CVXPY
        objective, to first order, by more than this fraction of it.

    Returns
    -------
    enter : (n_enter,) ndarray of int64
    worst : float
    """
    rc = form.reduced_costs()
    active = x[form.columns]
    x_mean = float(active[active > 0].mean()) if np.any(active > 0) else 1.0
    scale = max(abs(float(form.cvx_problem.value)), 1e-300)
    rel = rc * x_mean / scale
    return form.fixed[rel < -rel_tol], float(rel.min(initial=0.0))


def solve_cvxpy_active_set(
    problem: Problem,
    x0: Any = None,
    *,
    max_rounds: int = 10,
    rel_tol: float = ACTIVE_SET_REL_TOL,
    seed_rel: float = ACTIVE_SET_SEED_REL,
    compression: Any = None,
    **options: Any,
) -> OptimizationResult:
    """:func:`optimizers.solve_cvxpy` on a growing set of beamlets (see the module).

    Parameters
    ----------
    problem : Problem
    x0 : (n_beamlets,) array, MU, optional
        Seed fluence: its beamlets above ``seed_rel`` of its maximum start active.
        ``None``: the first-order solver's fluence (:func:`seed_fluence`), or every
        beamlet when it cannot solve the problem.
    max_rounds : int, optional
        Restricted solves at most; the last round uses every beamlet if pricing still
        lets some in (default 10).
    rel_tol, seed_rel : float, optional
        :data:`ACTIVE_SET_REL_TOL`, :data:`ACTIVE_SET_SEED_REL`.
    compression : Compression, optional
        As in :func:`optimizers.solve_cvxpy` (computed once, on every beamlet).
    **options
        Passed to :func:`optimizers.solve_cvxpy` (``solver``, ``solver_options``...). The
        first round starts from ``x0``, later rounds from the round before, where the
        solver can (SCS; ``x0`` of :func:`optimizers.solve_cvxpy`).

    Returns
    -------
    OptimizationResult
        The last round's, judged on the whole problem; ``extras["active_set"]`` records
        ``seed_columns``, ``columns`` and ``entered`` per round, ``min_reduced_cost_rel``
        (the most negative reduced cost times the mean active fluence, over the CVXPY
        objective) and ``certified`` (no beamlet left that would lower the objective).
        With a seed and no ``corrections``, each round also screens rows from the round
        before (:mod:`optimizers._cvxpy_screen`, :func:`optimizers._cvxpy.solve_screened`,
        first from the seed): ``extras["screening"]`` is the last round's.
    """
    t0 = time.perf_counter()
    n = problem.n_beamlets
    if x0 is None:
        x0 = seed_fluence(problem)
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64)
    if x0.shape != (n,):
        raise InvalidProblemError(f"`x0` has shape {x0.shape}; expected ({n},).")
    cols = seed_columns(x0, seed_rel)
    x_start = x0
    compressed = None if compression is None else problem.compressed(compression)
    # rows screened from the seed (constraint generation, optimizers._cvxpy_screen); not
    # with dose corrections (their formulation holds an offset parameter) or no seed
    screen = int(options.get("corrections", 0)) == 0 and bool(np.any(x0 > 0))
    rows = screened_rows(problem, x0) if screen else {}
    rounds: list[dict[str, Any]] = []
    n_seed = int(cols.size)
    setup = solver = 0.0
    n_iter = 0
    certified = False
    worst = 0.0
    for r in range(max(int(max_rounds), 1)):
        last = r == max(int(max_rounds), 1) - 1
        columns = None if last else cols
        restricted = columns is not None and columns.size < n
        # a restricted round's infeasibility is not the problem's: no elastic re-solve
        opts = {**options, "explain_infeasible": False} if restricted else options
        try:
            if rows:
                res, form, rows = solve_screened(
                    problem, x_start, rows, compressed=compressed, columns=columns, **opts
                )
            else:
                form = CvxpyFormulation(
                    problem,
                    compressed=compressed,
                    columns=columns,
                    offset_parameter=int(options.get("corrections", 0)) > 0,
                )
                res = solve_cvxpy(problem, formulation=form, x0=x_start, **opts)
        except InfeasibleError:
            if not restricted:
                raise
            # the hard constraints need beamlets outside the set: solve on every beamlet
            rounds.append({"columns": int(cols.size), "entered": n - cols.size})
            cols = np.arange(n)
            continue
        x_start = res.x  # the next round (a new formulation) starts here (SCS)
        setup += res.extras["setup_time_s"]
        solver += res.extras["solver_time_s"]
        n_iter += res.n_iter
        enter, worst = entering_beamlets(form, res.x, rel_tol)
        rounds.append({"columns": int(form.columns.size), "entered": int(enter.size)})
        if enter.size == 0:
            certified = True
            break
        cols = np.union1d(cols, enter)
    extras = dict(res.extras)
    extras.update(
        setup_time_s=setup,
        solver_time_s=solver,
        active_set={
            "seed_columns": n_seed,
            "rounds": rounds,
            "min_reduced_cost_rel": worst,
            "rel_tol": rel_tol,
            "certified": certified,
        },
    )
    return replace(res, n_iter=n_iter, solve_time_s=time.perf_counter() - t0, extras=extras)
