"""Every lexicographic priority level on one compiled CVXPY problem (DPP).

The formulation holds the soft terms of every level, each with a weight parameter, and one
constraint per level, ``c_j sum_k w_k f_k <= b_j``, on the same expressions
(:class:`optimizers.CvxpyFormulation`, ``levels=``). Level ``i`` sets the weights of its own
terms (the others to zero), the bounds of the levels before it to their achieved value plus
the slip, and the bounds of itself and the levels after it to a *guard*: four times the
level's value at a reference fluence (the level before, or the seed) plus
:data:`~optimizers._cvxpy_canon.OBJECTIVE_SCALE` over the level's weight scale. A guard
keeps every auxiliary variable bounded (a zero-weight term's would otherwise be free, which
interior-point solvers do not tolerate); it is written ``s_j f <= OBJECTIVE_SCALE`` with
``s_j`` a parameter, not with a large right-hand side (Clarabel ended in a numerical error
with bounds of 1e6 beside doses of 1e2). A guard that ends within :data:`GUARD_HEADROOM`
of its value is loosened and the level re-solved (all of them after a solver error); one
that ends below it is inactive, so by convexity the solution is that of the problem without
it. Only parameter values change:
canonicalisation happens once, and again only when the beamlet active set grows. SCS
re-solves start from its last solution of the same compiled problem (the level before); a
new formulation's first SCS or OSQP solve starts from the reference fluence (OSQP's
re-solves start cold).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ._active_set import (
    ACTIVE_SET_REL_TOL,
    ACTIVE_SET_SEED_REL,
    entering_beamlets,
    seed_columns,
    seed_fluence,
)
from ._cvxpy import CvxpyFormulation, solve_cvxpy
from ._cvxpy_canon import OBJECTIVE_SCALE
from ._problem import Problem
from ._result import OptimizationResult
from ._terms import Term
from .errors import InfeasibleError, SolverError

__all__ = ["GUARD_FACTOR", "GUARD_HEADROOM", "SharedLevels"]

#: A later level's guard is this many times its value at the reference fluence (plus
#: OBJECTIVE_SCALE, in the level's scaled units).
GUARD_FACTOR = 4.0
#: A guard whose level ends above this fraction of it is loosened and the level re-solved.
GUARD_HEADROOM = 0.9
#: Loosenings of the guards per level at most.
MAX_GUARD_LOOSENINGS = 5


class SharedLevels:
    """Priority levels solved on one :class:`optimizers.CvxpyFormulation`.

    Parameters
    ----------
    problem : Problem
        Every term: the hard constraints and the soft terms of every level.
    levels : sequence of sequences of Term
        Each level's soft terms (objects of ``problem.terms``), most important first.
    active_set : bool, optional
        Beamlet column generation (:func:`optimizers._active_set.solve_cvxpy_active_set`):
        the columns start at the seed's and only grow, so the compiled problem is reused
        until pricing lets a beamlet in.
    x0 : (n_beamlets,) array, MU, optional
        Seed fluence (active set) and first reference of the guards; default: the
        first-order fluence of the first level (zero when it cannot solve it).
    compression : Compression, optional
        As in :func:`optimizers.solve_cvxpy`.
    max_rounds, rel_tol, seed_rel :
        As in :func:`optimizers._active_set.solve_cvxpy_active_set`.
    **options
        Passed to :func:`optimizers.solve_cvxpy` (``solver``, ``solver_options``...).

    Attributes
    ----------
    builds : int
        Formulations built so far (each one canonicalisation per solver).
    """

    def __init__(
        self,
        problem: Problem,
        levels: Sequence[Sequence[Term]],
        *,
        active_set: bool = False,
        x0: Any = None,
        compression: Any = None,
        max_rounds: int = 10,
        rel_tol: float = ACTIVE_SET_REL_TOL,
        seed_rel: float = ACTIVE_SET_SEED_REL,
        **options: Any,
    ) -> None:
        self.problem = problem
        position = {id(t): k for k, t in enumerate(problem.terms)}
        self.groups = [[position[id(t)] for t in lv] for lv in levels]
        self.active_set = active_set
        self.x_ref = None if x0 is None else np.asarray(x0, dtype=np.float64)
        self.compressed = None if compression is None else problem.compressed(compression)
        self.max_rounds = max(int(max_rounds), 1)
        self.rel_tol = rel_tol
        self.seed_rel = seed_rel
        self.options = options
        self.columns: np.ndarray | None = None
        self.form: CvxpyFormulation | None = None
        self.builds = 0

    def _build(self) -> CvxpyFormulation:
        self.builds += 1
        return CvxpyFormulation(
            self.problem,
            compressed=self.compressed,
            columns=self.columns,
            levels=self.groups,
            offset_parameter=int(self.options.get("corrections", 0)) > 0,
        )

    def _level_value(self, j: int, x: np.ndarray) -> float:
        """Level ``j``'s objective at ``x`` (the problem's units, exact matrix)."""
        d = self.problem.union_dose(x)
        return float(
            sum(
                self.problem.terms[k].weight
                * self.problem.term_objective(self.problem.terms[k], d, x, smooth=False)
                for k in self.groups[j]
            )
        )

    def _select(self, level: int, bounds: Sequence[float], x_ref: np.ndarray) -> None:
        """Parameters of ``level``: its weights, earlier bounds, guards on the others."""
        form = self.form
        assert form is not None
        own = set(self.groups[level])
        form.set_weights(
            {k: (self.problem.terms[k].weight if k in own else 0.0) for k in form.weight_params}
        )
        for j in range(len(self.groups)):
            if j < level:
                c = form.group_scales[j]
                form.group_scale_params[j].value = c
                form.group_bound_params[j].value = c * float(bounds[j])
            else:
                self._guard(j, abs(self._level_value(j, x_ref)))

    def _guard(self, j: int, value: float) -> None:
        """Level ``j``'s constraint as a guard ``GUARD_FACTOR`` times ``value`` (its
        objective, the problem's units) plus ``OBJECTIVE_SCALE / c_j``, written with the
        right-hand side ``OBJECTIVE_SCALE`` (no large bound beside the others)."""
        form = self.form
        assert form is not None
        guard = GUARD_FACTOR * value + OBJECTIVE_SCALE / form.group_scales[j]
        form.group_scale_params[j].value = OBJECTIVE_SCALE / guard
        form.group_bound_params[j].value = OBJECTIVE_SCALE

    def _solve_guarded(self, level: int, x_start: Any) -> tuple[OptimizationResult, int]:
        """Solve; loosen and re-solve while a guard is nearly reached (or the solver
        failed with guards in place)."""
        form = self.form
        assert form is not None
        opts = {**self.options}
        if form.fixed.size:  # a restricted round's infeasibility is not the problem's
            opts["explain_infeasible"] = False
        loosened = 0
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    res = solve_cvxpy(self.problem, formulation=form, x0=x_start, **opts)
                except SolverError:
                    # a guard reached can end in a numerical error: loosen them all
                    if loosened >= MAX_GUARD_LOOSENINGS:
                        raise
                    loosened += 1
                    for j in range(level, len(self.groups)):
                        guard = OBJECTIVE_SCALE / float(form.group_scale_params[j].value)
                        self._guard(j, guard)
                    continue
            tight = [
                j
                for j in range(level, len(self.groups))
                if float(form.group_scale_params[j].value) * float(form.group_values[j].value)
                > GUARD_HEADROOM * OBJECTIVE_SCALE
            ]
            if not tight or loosened >= MAX_GUARD_LOOSENINGS:
                for w in caught:  # the warnings of the solve kept, not of those redone
                    warnings.warn(w.message, w.category, stacklevel=4)
                return res, loosened
            loosened += 1
            for j in tight:
                self._guard(j, float(form.group_values[j].value))

    def solve(
        self, level: int, bounds: Sequence[float], level_problem: Problem
    ) -> OptimizationResult:
        """Solve priority ``level`` with the earlier levels held to ``bounds``.

        Parameters
        ----------
        level : int
        bounds : sequence of float
            Bound of each earlier level's objective (its achieved value plus the slip), in
            the problem's units.
        level_problem : Problem
            The level as :func:`optimizers.solve_lexicographic` poses it (its hard terms,
            earlier level bounds and soft terms): the result is judged on it.

        Returns
        -------
        OptimizationResult
            Judged on ``level_problem``; ``extras["shared_levels"]`` records ``builds``
            (formulations built so far) and ``guard_loosenings``; with the active set,
            ``extras["active_set"]`` as :func:`~optimizers._active_set.solve_cvxpy_active_set`.
        """
        t0 = time.perf_counter()
        n = self.problem.n_beamlets
        if self.x_ref is None:  # the guards' first reference (and the active set's seed)
            self.x_ref = seed_fluence(level_problem)
        if self.active_set and self.columns is None:
            self.columns = seed_columns(
                np.zeros(n) if self.x_ref is None else self.x_ref, self.seed_rel
            )
        x_ref = np.zeros(n) if self.x_ref is None else self.x_ref
        rounds: list[dict[str, Any]] = []
        seed_cols = None if self.columns is None else int(self.columns.size)
        certified, worst, loosened, n_iter = not self.active_set, 0.0, 0, 0
        setup = solver = 0.0
        for r in range(self.max_rounds if self.active_set else 1):
            last = self.active_set and r == self.max_rounds - 1
            if last and self.columns is not None and (self.form is None or self.form.fixed.size):
                self.columns, self.form = None, None  # the last round uses every beamlet
            if self.form is None:
                self.form = self._build()
            self._select(level, bounds, x_ref)
            try:
                res, k = self._solve_guarded(level, x_ref)
            except InfeasibleError:
                if not self.form.fixed.size:
                    raise
                # the hard constraints need beamlets outside the set: every beamlet
                rounds.append({"columns": int(self.form.columns.size), "entered": n})
                self.columns, self.form = None, None
                continue
            loosened += k
            n_iter += res.n_iter
            setup += res.extras["setup_time_s"]
            solver += res.extras["solver_time_s"]
            if not self.active_set:
                break
            enter, worst = entering_beamlets(self.form, res.x, self.rel_tol)
            rounds.append({"columns": int(self.form.columns.size), "entered": int(enter.size)})
            if enter.size == 0:
                certified = True
                break
            self.columns = np.union1d(self.form.columns, enter)
            self.form = None
        self.x_ref = res.x
        extras = dict(res.extras)
        d = level_problem.union_dose(res.x)
        viol, per = level_problem.max_violation(res.x, d_union=d)
        extras.update(
            setup_time_s=setup,
            solver_time_s=solver,
            max_violation=viol,
            violations=per,
            shared_levels={"builds": self.builds, "guard_loosenings": loosened},
        )
        if self.active_set:
            extras["active_set"] = {
                "seed_columns": seed_cols,
                "rounds": rounds,
                "min_reduced_cost_rel": worst,
                "rel_tol": self.rel_tol,
                "certified": certified,
            }
        return replace(
            res,
            objective=level_problem.objective(res.x, d_union=d),
            term_values=level_problem.evaluate(res.x, d_union=d),
            n_iter=n_iter,
            solve_time_s=time.perf_counter() - t0,
            extras=extras,
        )
