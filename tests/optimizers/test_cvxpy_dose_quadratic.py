"""Squared deviations in the CVXPY formulation as quadratic forms of the dose variable, and
fluence smoothness as one of the fluence: no copy of the dose or of the smoothness
operator's rows reaches the solver (sizes from ``get_problem_data``), the
optimum is a non-negative least-squares one (SciPy's NNLS, another solver), a new level or
weight re-solves without a new compilation, and lexicographic levels holding such terms in
their bounds stay on one compiled problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem
from scipy.optimize import nnls

import optimizers as op
from optimizers import _cvxpy as op_cvxpy

#: a voxel-weighted structure, a zero level on part of the union, a level on all of it
WEIGHTS = {"OAR": np.linspace(0.5, 2.0, 25)}


#: first differences of neighbouring beamlets (30 of them), one term object (a built
#: formulation accepts another problem's terms when the operator is the same object)
SMOOTHNESS = op.Smoothness(
    sp.diags_array([-np.ones(29), np.ones(29)], offsets=[0, 1], shape=(29, 30)), weight=50.0
)


def _terms(ptv_gy=60.0, oar_gy=0.0, body_gy=5.0, oar_weight=1.0):
    return [
        op.SquaredDeviation("PTV", ptv_gy, weight=10),
        op.SquaredDeviation("OAR", oar_gy, weight=oar_weight),
        op.SquaredDeviation("BODY", body_gy, weight=0.1),
        SMOOTHNESS,
    ]


def _problem(terms):
    a, s = slab_problem(np.random.default_rng(0), n_side=20, n_beamlets=30)
    assert s["OAR"].size == WEIGHTS["OAR"].size
    return op.Problem(a, s, terms, voxel_weights=WEIGHTS)


def _nnls_objective(problem: op.Problem) -> float:
    """min_x>=0 sum_k w_k sum_i p_ki (A_i x - L_k)**2 + sum_j w_j / m_j ||Q_j x||**2 by
    SciPy's NNLS on the stacked rows ``sqrt(w_k p_ki) A_i`` and ``sqrt(w_j / m_j) Q_j``
    (the problem's own objective evaluates its solution)."""
    a = problem.matrix.toarray().astype(np.float64)
    rows, rhs = [], []
    for t in problem.terms:
        if isinstance(t, op.Smoothness):
            q = t.operator.toarray()
            rows.append(np.sqrt(t.weight / q.shape[0]) * q)
            rhs.append(np.zeros(q.shape[0]))
            continue
        idx = problem.structures[t.structure]
        s = np.sqrt(t.weight * problem.p[t.structure])
        rows.append(s[:, None] * a[idx])
        rhs.append(s * t.dose_gy)
    x, _ = nnls(np.vstack(rows), np.concatenate(rhs), maxiter=10_000)
    return problem.objective(x)


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS", "OSQP"])
def test_squared_deviations_add_no_dose_copy_and_reach_the_nnls_optimum(solver):
    if solver not in op.available_solvers():
        pytest.skip(f"{solver} not installed")
    problem = _problem(_terms())
    tight = {"eps_abs": 1e-9, "eps_rel": 1e-9}
    res = op.solve_cvxpy(
        problem, solver=solver, solver_options={"SCS": tight, "OSQP": tight}.get(solver)
    )
    size = res.extras["problem_size"]
    n_union, n_dose_terms = problem.union_rows.size, len(problem.terms) - 1
    # SCS's formulation has no dose variable (each squared deviation a Gram matrix of
    # the fluence), the others d == A x
    n_dose = 0 if solver in op_cvxpy.DOSE_FREE_SOLVERS else n_union
    # one scalar row per dose term (its level's linear part): no row per structure voxel
    # and none per smoothness row
    assert size["equality_rows"] == n_dose + n_dose_terms
    # the fluence and one scalar per dose term: no copy of any structure's dose
    assert size["variables"] == n_dose + problem.n_beamlets + n_dose_terms
    assert res.extras["is_dpp"]
    assert res.objective == pytest.approx(_nnls_objective(problem), rel=1e-5)


def test_new_levels_and_weights_resolve_without_compiling(compile_calls):
    problem = _problem(_terms())
    form = op.CvxpyFormulation(problem)
    op.solve_cvxpy(problem, formulation=form)
    n_first = len(compile_calls)
    moved = problem.with_terms(_terms(ptv_gy=55.0, oar_gy=3.0, body_gy=0.0, oar_weight=4.0))
    res = op.solve_cvxpy(moved, formulation=form)
    assert len(compile_calls) == n_first == 1
    assert res.objective == pytest.approx(_nnls_objective(moved), rel=1e-6)


@pytest.mark.filterwarnings(
    "ignore:Solver `CLARABEL` returned an inaccurate solution:optimizers.errors.OptimizerWarning"
)
def test_levels_bounding_squared_deviations_share_one_compilation(compile_calls):
    """A level bound holds its squared deviations as second-order cones (a quadratic form
    of the union-sized dose would be factored densely by CVXPY); the level optima match
    each level's own problem, built and compiled alone (constant levels, no auxiliaries)."""
    a, s = slab_problem(np.random.default_rng(0), n_side=20, n_beamlets=30)
    levels = [
        [op.SquaredDeviation("PTV", 60.0, weight=10)],
        [op.SquaredDeviation("OAR", 0.0, weight=1), op.Overdose("OAR", 15.0, weight=1)],
        [op.SquaredDeviation("BODY", 0.0, weight=0.01)],
    ]
    kw = {"constraints": [op.MaxDose("BODY", 70.0, hard=True)], "method": "cvxpy"}
    shared = op.solve_lexicographic(a, s, levels, one_formulation=True, **kw)
    n_shared = len(compile_calls)
    rebuilt = op.solve_lexicographic(a, s, levels, one_formulation=False, **kw)
    assert shared.success and rebuilt.success
    assert n_shared == shared.final.extras["shared_levels"]["builds"] == 1
    for ls, lr in zip(shared.levels, rebuilt.levels, strict=True):
        assert ls.achieved == pytest.approx(lr.achieved, rel=1e-3), (ls, lr)
        assert ls.final <= ls.bound * (1 + 1e-6)
