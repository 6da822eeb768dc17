"""Evidence about hard constraints: a certificate of infeasibility from a reduced LP.

A first-order solve that ends with its hard constraints violated has only *not found* a
fluence meeting them; that is not evidence that none exists. :func:`certify_hard_constraints`
decides with an interior-point solve (CVXPY + Clarabel by default) of a small linear
programme built from the hard constraints alone:

    minimise   sum_k s_k
    subject to A_k x <= b_k + s_k * scale_k   (max dose, on sampled voxels)
               A_k x >= b_k - s_k * scale_k   (min dose, on sampled voxels)
               r_k x <= b_k + s_k * scale_k   (mean dose: r_k = p_k^T A_k, exact)
               x >= 0,  s >= 0

with ``scale_k`` = :func:`constraint_scale` (so ``s_k`` is the relative violation, as in
``OptimizationResult.extras["violations"]``). Keeping only some voxels of a per-voxel
constraint, and leaving out constraints the LP cannot hold (DVH and gEUD bounds other
than the mean), *relaxes* the problem: an optimum ``sum s_k > 0`` of the
reduced LP proves that no fluence meets the full set either. The voxels kept are those
most violated at the solver's last iterate plus an even sample of the rest, within a
budget of matrix non-zeros. An optimum of 0 proves nothing by itself; the LP's fluence is
then checked on every voxel (verdict ``"feasible"`` when it meets every constraint).
Lexicographic level bounds (earlier priorities' objectives) are not goals and never part
of the question: the certificate is about the goals' hard constraints alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._cvxpy import unpack
from ._cvxpy_canon import import_cvxpy
from ._meterset import refuse_meterset_dose
from ._problem import Problem, constraint_scale, require_problem, structure_of
from ._result import SOLUTION_PRESENT, Status
from ._solvers import SolveData, get_solver
from ._terms import Term, _LevelBound

__all__ = [
    "CERTIFICATE_MARGIN",
    "CERTIFICATE_NONZEROS",
    "FeasibilityCertificate",
    "certify_hard_constraints",
]

logger = logging.getLogger("rtplan.optimizers")

#: Least total relative violation (``sum_k s_k`` of the reduced LP) called a contradiction:
#: a thousandth of the bounds, far above interior-point tolerances (~1e-8), far below what
#: a planner would call a conflict.
CERTIFICATE_MARGIN = 1e-3

#: Budget of influence-matrix non-zeros in the reduced LP (tens of MB in Clarabel).
CERTIFICATE_NONZEROS = 1_000_000

#: At most this many voxels of one per-voxel constraint are chosen by their violation at
#: the solver's iterate; the rest of its share of the budget is an even sample.
_WORST_VOXELS = 200


@dataclass(frozen=True)
class FeasibilityCertificate:
    """Outcome of :func:`certify_hard_constraints`.

    Attributes
    ----------
    verdict : {"infeasible", "feasible", "not_disproved", "unavailable"}
        ``"infeasible"``: proven (the reduced LP, a relaxation, needs a total relative
        violation above :data:`CERTIFICATE_MARGIN`); ``"feasible"``: every hard constraint
        was checked and the LP's fluence meets them all on every voxel; ``"not_disproved"``:
        the reduced problem is feasible, so no contradiction was found (the full problem
        may still be feasible or not); ``"unavailable"``: the LP could not be solved.
    min_violation : float
        Optimum of the reduced LP: the least total relative violation ``sum_k s_k`` any
        fluence ``x >= 0`` reaches on the kept rows (0 when they can all be met).
    relaxed : dict of str to float
        Constraints the LP had to relax, with the relative violation it gave each.
    binding : tuple of str
        Constraints met with equality at the LP's optimum (what the relaxed ones run into).
    not_checked : tuple of str
        Hard constraints left out of the LP (DVH and gEUD bounds; lexicographic level
        bounds are never part of the question and are not listed).
    n_rows, n_rows_total : int
        Constraint rows kept, and the rows of the full set (per-voxel constraints count
        one per voxel, mean bounds one).
    solver : str
        Back-end of the LP.
    solve_time_s : float
        Wall time, s.
    x : (n_beamlets,) ndarray of float64 or None
        The LP's fluence (MU), a witness when ``verdict`` is ``"feasible"``.
    """

    verdict: str
    min_violation: float
    relaxed: dict[str, float] = field(default_factory=dict)
    binding: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()
    n_rows: int = 0
    n_rows_total: int = 0
    solver: str = ""
    solve_time_s: float = 0.0
    x: np.ndarray | None = field(default=None, repr=False)

    @property
    def infeasible(self) -> bool:
        """True when the contradiction is proven."""
        return self.verdict == "infeasible"

    @property
    def message(self) -> str:
        """One sentence stating the evidence."""
        rows = f"{self.n_rows:,} of {self.n_rows_total:,} constraint rows"
        if self.verdict == "infeasible":
            relaxed = " and ".join(
                f"`{k}` (relaxed by {100 * v:.3g} %)" for k, v in self.relaxed.items()
            )
            verb = " holds" if len(self.binding) == 1 else " hold"
            held = (
                " while " + " and ".join(f"`{b}`" for b in self.binding) + verb
                if self.binding
                else ""
            )
            return (
                f"no fluence x >= 0 meets them: a linear programme on {rows} ({self.solver}) "
                f"needs a total relative violation of at least {self.min_violation:.4g}: "
                f"{relaxed}{held}"
            )
        if self.verdict == "feasible":
            return (
                f"a fluence meeting every hard constraint on every voxel exists (linear "
                f"programme on {rows}, {self.solver})"
            )
        if self.verdict == "not_disproved":
            left = (
                f"; not checked: {', '.join(f'`{n}`' for n in self.not_checked)}"
                if self.not_checked
                else ""
            )
            return (
                f"no contradiction found: a linear programme on {rows} ({self.solver}) meets "
                f"them{left}"
            )
        return f"the hard constraints could not be checked ({self.solver} failed)"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record (no fluence)."""
        return {
            "verdict": self.verdict,
            "min_violation": (
                float(self.min_violation) if np.isfinite(self.min_violation) else None
            ),
            "relaxed": {k: float(v) for k, v in self.relaxed.items()},
            "binding": list(self.binding),
            "not_checked": list(self.not_checked),
            "n_rows": int(self.n_rows),
            "n_rows_total": int(self.n_rows_total),
            "solver": self.solver,
            "solve_time_s": float(self.solve_time_s),
            "message": self.message,
        }


def _checkable(t: Term) -> bool:
    """The LP can hold ``t``: it is linear in the dose (per voxel, or on the weighted mean,
    e.g. a gEUD with ``a = 1``); other bounds are left out (a relaxation)."""
    return t.linear


def _pick_rows(viol: np.ndarray | None, n: int, keep: int) -> np.ndarray:
    """Positions (into a structure's voxels) kept for one per-voxel constraint: the
    ``_WORST_VOXELS`` most violated, then an even sample up to ``keep`` in all."""
    if keep >= n:
        return np.arange(n)
    chosen = []
    if viol is not None:
        k = min(_WORST_VOXELS, keep // 2)
        chosen.append(np.argsort(-viol, kind="stable")[:k])
    rest = keep - sum(c.size for c in chosen)
    chosen.append(np.linspace(0, n - 1, max(rest, 1)).round().astype(np.int64))
    return np.unique(np.concatenate(chosen))


def certify_hard_constraints(
    problem: Problem,
    x: Any = None,
    *,
    solver: str = "CLARABEL",
    max_nonzeros: int = CERTIFICATE_NONZEROS,
    margin: float = CERTIFICATE_MARGIN,
    tol: float = 1e-4,
) -> FeasibilityCertificate:
    """Prove the hard constraints of ``problem`` contradictory, or find no contradiction.

    Parameters
    ----------
    problem : Problem
        The problem; only its hard terms are used.
    x : (n_beamlets,) array, MU, optional
        A solver's iterate: the voxels it violates most are kept first.
    solver : str, optional
        CVXPY solver of the LP (default Clarabel).
    max_nonzeros : int, optional
        Budget of influence-matrix non-zeros in the LP (default
        :data:`CERTIFICATE_NONZEROS`).
    margin : float, optional
        Least optimum ``sum_k s_k`` called a contradiction (default
        :data:`CERTIFICATE_MARGIN`).
    tol : float, optional
        Largest relative violation of the LP's fluence on the full problem for the verdict
        ``"feasible"``.

    Returns
    -------
    FeasibilityCertificate
    """
    require_problem(problem)
    refuse_meterset_dose(problem, "The feasibility certificate")
    cp = import_cvxpy()
    t0 = time.perf_counter()
    # lexicographic level bounds are not goals: the question is whether the goals agree
    hard = [t for t in problem.hard_terms if not isinstance(t, _LevelBound)]
    checked = [t for t in hard if _checkable(t)]
    not_checked = tuple(t.label for t in hard if not _checkable(t))
    total_rows = sum(
        problem.structures[structure_of(t)].size if t.per_voxel else 1 for t in checked
    )
    if not checked:
        return FeasibilityCertificate("not_disproved", 0.0, not_checked=not_checked)
    a_u = problem.a_union
    off = np.zeros(a_u.shape[0]) if problem.union_offset is None else problem.union_offset
    d = None if x is None else problem.union_dose(np.asarray(x, dtype=np.float64))
    per_voxel = [t for t in checked if t.per_voxel]
    share = max_nonzeros / max(len(per_voxel), 1)
    xv = cp.Variable(problem.n_beamlets, nonneg=True, name="x")
    slacks = {t.label: cp.Variable(nonneg=True, name=f"s{k}") for k, t in enumerate(checked)}
    cons, kept, n_rows = [], {}, 0
    for t in checked:
        loc = problem.local_index[structure_of(t)]
        b, s_k = t.threshold(), constraint_scale(t) * slacks[t.label]
        sgn = 1.0 if t.sense == "<=" else -1.0
        if t.per_voxel:
            viol = None if d is None else sgn * (d[loc] - b)
            nnz_row = max(float(np.diff(a_u.indptr)[loc].mean()), 1.0)
            pos = _pick_rows(viol, loc.size, max(int(share // nnz_row), 1))
            rows = sp.csr_matrix(a_u[loc[pos]], dtype=np.float64)
            const = off[loc[pos]]
            n_rows += pos.size
        else:  # the mean over every voxel, exactly: one row p^T A_s
            w = np.zeros(a_u.shape[0])  # no copy of the structure's rows
            w[loc] = problem.p[structure_of(t)]
            mean_row = np.asarray(a_u.T @ w, dtype=np.float64)
            rows = sp.csr_matrix(mean_row.reshape(1, -1))
            const = np.array([w @ off])
            n_rows += 1
        kept[t.label] = (rows, const)
        expr = rows @ xv + const  # the dose with the problem's dose_offset
        cons.append(expr <= b + s_k if sgn > 0 else expr >= b - s_k)
    lp = cp.Problem(cp.Minimize(cp.sum(cp.hstack(list(slacks.values())))), cons)
    adapter = get_solver(solver)
    adapter.import_solver()
    data, chain, inverse = lp.get_problem_data(adapter.cvxpy_name)
    out = adapter.solve(SolveData(lp, chain, inverse, data, {}))

    common: dict[str, Any] = dict(
        not_checked=not_checked,
        n_rows=n_rows,
        n_rows_total=total_rows,
        solver=adapter.name,
    )
    unavailable = FeasibilityCertificate(
        "unavailable", float("nan"), solve_time_s=time.perf_counter() - t0, **common
    )
    if out.status not in SOLUTION_PRESENT or out.status == Status.ITERATION_LIMIT:
        logger.warning("certificate LP ended with %s", out.native_status)
        return unavailable
    unpack(lp, out.raw, chain, inverse)
    x_lp = np.clip(np.asarray(xv.value, dtype=np.float64), 0.0, None)
    sl = {k: max(float(v.value), 0.0) for k, v in slacks.items()}
    total = float(sum(sl.values()))
    if total > margin and out.status != Status.OPTIMAL:  # no claim from an inaccurate LP
        logger.warning("certificate LP ended with %s", out.native_status)
        return unavailable
    if total > margin:
        relaxed = {k: v for k, v in sl.items() if v > 1e-6}
        # constraints met with equality on the kept rows are what the relaxed ones run into
        binding = []
        for t in checked:
            if t.label in relaxed:
                continue
            rows, const = kept[t.label]
            q = rows @ x_lp + const
            q = float(q.max() if t.sense == "<=" else q.min())
            if abs(q - t.threshold()) <= 1e-3 * constraint_scale(t):
                binding.append(t.label)
        return FeasibilityCertificate(
            "infeasible",
            total,
            relaxed=relaxed,
            binding=tuple(binding),
            solve_time_s=time.perf_counter() - t0,
            x=x_lp,
            **common,
        )
    _, per = problem.max_violation(x_lp)
    met = all(per[t.label] <= tol for t in checked)
    verdict = "feasible" if met and not not_checked else "not_disproved"
    return FeasibilityCertificate(
        verdict, total, solve_time_s=time.perf_counter() - t0, x=x_lp, **common
    )
