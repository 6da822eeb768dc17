"""CVXPY back-ends at planner-scale weights (``1 / Rx**2`` with Rx = 50 Gy): the formulation
scales the objective and the level bounds so that the solvers' absolute tolerances do not
decide the optimum, and reports every value in the caller's units.

Before the scaling, Clarabel returned "optimal" points 2.6 % and 156 % above the optimum of
the single-level problems below and 10-82 % above it on the lexicographic levels; OSQP 1.6 %."""

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op

W = 1 / 50**2
BACKENDS = ["CLARABEL", "OSQP", "SCS"]


def _slab():
    return slab_problem(np.random.default_rng(9), n_side=20, n_beamlets=30)


def _uniformity_terms(weight, oar_gy):
    return [
        op.Underdose("PTV", 50, weight=weight),
        op.Overdose("PTV", 50, weight=weight),
        op.Overdose("OAR", oar_gy, weight=weight),
    ]


@pytest.fixture(scope="module")
def first_order_optima():
    a, s = _slab()
    return {
        oar_gy: op.solve_first_order(
            op.Problem(a, s, _uniformity_terms(W, oar_gy)), tol=1e-12, max_iter=20000
        ).objective
        for oar_gy in (10.0, 20.0)
    }


@pytest.mark.parametrize("oar_gy", [10.0, 20.0])
@pytest.mark.parametrize("backend", BACKENDS)
def test_planner_weights_reach_the_unit_weight_optimum(backend, oar_gy, first_order_optima):
    pytest.importorskip(backend.lower())
    a, s = _slab()
    small = op.solve_cvxpy(op.Problem(a, s, _uniformity_terms(W, oar_gy)), solver=backend)
    unit = op.solve_cvxpy(op.Problem(a, s, _uniformity_terms(1.0, oar_gy)), solver=backend)
    assert small.status == op.Status.OPTIMAL
    assert small.objective == pytest.approx(W * unit.objective, rel=5e-3)
    assert small.objective == pytest.approx(first_order_optima[oar_gy], rel=5e-3)
    # reported values are in the caller's units, not the solver's
    prob = op.Problem(a, s, _uniformity_terms(W, oar_gy))
    assert small.objective == pytest.approx(prob.objective(small.x), rel=1e-12)
    assert small.term_values == pytest.approx(prob.evaluate(small.x), rel=1e-12)
    if backend == "CLARABEL":  # the interior point is exact once scaled
        assert small.objective == pytest.approx(first_order_optima[oar_gy], rel=1e-6)


def test_duals_are_in_objective_units_per_gray():
    """Squared deviation from 60 Gy (weight w) against a hard 50 Gy maximum on one voxel:
    stationarity 2 w (d - 60) + lambda = 0 at d = 50 gives lambda = 20 w."""
    a = sp.csr_matrix(np.array([[0.01]], dtype=np.float32))
    for w in (W, 1.0, 1e3):
        prob = op.Problem(
            a,
            {"T": np.array([0])},
            [op.SquaredDeviation("T", 60, weight=w), op.MaxDose("T", 50, hard=True)],
        )
        form = op.CvxpyFormulation(prob)
        r = op.solve_cvxpy(prob, formulation=form)
        assert r.x[0] == pytest.approx(5000, rel=1e-6)
        assert r.objective == pytest.approx(100 * w, rel=1e-6)
        lam = float(np.ravel(form.constraints[1][0].dual_value)[0])
        assert lam == pytest.approx(20 * w, rel=1e-5)


def test_new_weights_rescale_without_canonicalising_again():
    a, s = _slab()
    prob = op.Problem(a, s, _uniformity_terms(W, 20.0) + [op.MaxDose("BODY", 58, hard=True)])
    form = op.CvxpyFormulation(prob)
    assert form.objective_scale == pytest.approx(100 / W)
    r1 = op.solve_cvxpy(prob, formulation=form)
    program = form.cvx_problem._cache.param_prog
    assert program is not None and r1.extras["is_dpp"]
    w2 = 1 / 70**2
    terms2 = [op.Underdose("PTV", 50, weight=w2), op.Overdose("PTV", 50, weight=w2 / 10)]
    terms2 += [op.Overdose("OAR", 20.0, weight=w2 / 100), op.MaxDose("BODY", 58, hard=True)]
    prob2 = prob.with_terms(terms2)
    r2 = op.solve_cvxpy(prob2, formulation=form)
    assert form.cvx_problem._cache.param_prog is program  # parameters only
    assert form.objective_scale == pytest.approx(100 / w2)
    assert r2.extras["objective_scale"] == form.objective_scale
    fresh = op.solve_cvxpy(op.Problem(a, s, terms2))
    assert r2.objective == pytest.approx(fresh.objective, rel=1e-6)
    assert r2.objective == pytest.approx(prob2.objective(r2.x), rel=1e-12)
    # set_weights takes weights in the caller's units too
    form.set_weights({0: W, 1: W, 2: W})
    r3 = op.solve_cvxpy(prob, formulation=form)
    assert form.cvx_problem._cache.param_prog is program
    assert r3.objective == pytest.approx(r1.objective, rel=1e-6)


def _three_levels(oar_gy):
    return [
        # reachable goals: the optimum is 0
        [op.Overdose("OAR", 35, weight=W), op.Underdose("PTV", 40, weight=W)],
        _uniformity_terms(W, oar_gy),
        [op.Overdose("OAR", 0, weight=W), op.MeanDose("BODY", weight=W)],
    ]


@pytest.mark.parametrize("oar_gy", [10.0, 20.0])
def test_lexicographic_levels_at_planner_weights_agree_with_first_order(oar_gy):
    a, s = _slab()
    kw = {"slip_rel": 0.02, "constraints": [op.MaxDose("BODY", 58, hard=True)]}
    cv = op.solve_lexicographic(a, s, _three_levels(oar_gy), method="cvxpy", **kw)
    fo = op.solve_lexicographic(
        a, s, _three_levels(oar_gy), method="first_order", tol=1e-10, max_iter=20000, **kw
    )
    assert cv.success and fo.success
    assert cv.levels[0].achieved <= 1e-12 and fo.levels[0].achieved <= 1e-12
    for lc, lf in zip(cv.levels[1:], fo.levels[1:], strict=True):
        assert lc.achieved == pytest.approx(lf.achieved, rel=5e-3), (lc, lf)
        assert lc.final == pytest.approx(lf.final, rel=5e-3), (lc, lf)
        assert lc.final <= lc.bound * (1 + 1e-6)
    # level bounds are met in the caller's units
    assert cv.final.extras["max_violation"] <= 1e-6


def test_level_bound_dual_does_not_depend_on_the_weights_scale():
    """A level bound ``sum w f <= b`` scales with the weights like the objective, so its
    multiplier (objective units per objective unit) is the same at weights w and 1."""
    from optimizers._terms import _LevelBound

    a, s = _slab()
    duals, objectives = [], []
    for w in (W, 1.0):
        lv0 = _uniformity_terms(w, 20.0)
        bound = op.solve_cvxpy(op.Problem(a, s, lv0)).objective * 1.02
        lv1 = [op.Overdose("OAR", 0, weight=w), op.MeanDose("BODY", weight=w)]
        prob = op.Problem(a, s, [_LevelBound(lv0, bound, 0), *lv1])
        form = op.CvxpyFormulation(prob)
        r = op.solve_cvxpy(prob, formulation=form)
        objectives.append(r.objective / w)
        duals.append(float(np.ravel(form.constraints[0][0].dual_value)[0]))
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-6)
    assert duals[0] > 0 and duals[0] == pytest.approx(duals[1], rel=1e-4)
