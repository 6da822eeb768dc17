"""A physicist's own CVXPY objective or constraints (:class:`optimizers.CvxpyTerm`), issue 18.

Each solve is checked against an independent computation: the gEUD of the solution by hand
(numpy), and the same problem posed with rtplan's built-in terms (another formulation of the
same maths). Refusals are exact: each names the user's term.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op

A = 8.0  # gEUD volume parameter of the organ
LIMIT_GY = 5.0  # below the 6.5 Gy the target's goals alone allow: the limit costs coverage


def geud_by_hand(dose_gy: np.ndarray, p: np.ndarray, a: float) -> float:
    """(sum_i p_i d_i^a)^(1/a), numpy."""
    return float(np.sum(p * dose_gy**a) ** (1.0 / a))


def geud_expr(doses, name: str, a: float):
    p = doses.weights(name)
    return cp.pnorm(cp.multiply(p ** (1.0 / a), doses[name]), a)


def geud_limit(doses, x):
    return [geud_expr(doses, "OAR", A) <= LIMIT_GY]


@pytest.fixture(scope="module")
def slab():
    return slab_problem(np.random.default_rng(18))


def _base_terms():
    return [op.Underdose("PTV", 60.0, weight=10.0), op.Overdose("PTV", 62.0, weight=10.0)]


def test_geud_limit_met_and_equals_hand_computation(slab):
    a_mat, structures = slab
    free = op.solve_cvxpy(op.Problem(a_mat, structures, _base_terms()))
    p_oar = np.full(structures["OAR"].size, 1.0 / structures["OAR"].size)
    dose = lambda x: a_mat.toarray().astype(np.float64) @ x  # noqa: E731
    assert free.objective == pytest.approx(0.0, abs=1e-6)  # the target's goals alone: met
    term = op.CvxpyTerm(geud_limit, "OAR", hard=True, label="gEUD(OAR, a=8) <= 5 Gy")
    res = op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))
    after = geud_by_hand(dose(res.x)[structures["OAR"]], p_oar, A)
    assert after == pytest.approx(LIMIT_GY, abs=1e-3)  # active constraint, met
    assert res.term_values["gEUD(OAR, a=8) <= 5 Gy"] <= 1e-5  # largest violation, Gy
    assert res.objective > 0.1  # the limit costs the target coverage
    # the built-in hard gEUD term poses the same problem: same optimum
    builtin = op.solve_cvxpy(
        op.Problem(a_mat, structures, [*_base_terms(), op.GEUD("OAR", A, LIMIT_GY, hard=True)])
    )
    assert res.objective == pytest.approx(builtin.objective, rel=1e-4)


def test_soft_term_equals_builtin_terms(slab):
    """A soft objective of two structures and the fluence: mean OAR dose plus 1e-3 total MU,
    against MeanDose + TotalMU."""
    a_mat, structures = slab

    def mean_and_mu(doses, x):
        return doses.weights("OAR") @ doses["OAR"] + 1e-3 * cp.sum(x) + 0 * doses["PTV"][0]

    custom = op.CvxpyTerm(mean_and_mu, ["OAR", "PTV"], weight=0.5)
    res = op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), custom]))
    ref = op.solve_cvxpy(
        op.Problem(
            a_mat,
            structures,
            [*_base_terms(), op.MeanDose("OAR", weight=0.5), op.TotalMU(weight=0.5e-3)],
        )
    )
    assert res.objective == pytest.approx(ref.objective, rel=1e-5)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-3, atol=1e-3 * ref.x.max())
    mean_oar = float(np.mean((a_mat @ res.x)[structures["OAR"]]))
    value = mean_oar + 1e-3 * float(res.x.sum())
    assert res.term_values[custom.label] == pytest.approx(value, rel=1e-6)
    assert custom.label == "CvxpyTerm(mean_and_mu: OAR, PTV)"


def test_lexicographic_level_with_custom_term(slab):
    """A custom term in the second level: the first level's objective is kept within its
    slip and the custom objective falls below its value without the level."""
    a_mat, structures = slab
    oar_geud = op.CvxpyTerm(lambda d, x: geud_expr(d, "OAR", A), "OAR", label="gEUD(OAR)")
    lex = op.solve_lexicographic(
        a_mat, structures, [_base_terms(), [oar_geud]], method="cvxpy", slip_rel=0.05
    )
    first, second = lex.levels
    assert first.final <= first.bound * (1 + 1e-5) + 1e-6  # the level kept (0 here)
    one_level = op.solve_cvxpy(op.Problem(a_mat, structures, _base_terms()))
    p = np.full(structures["OAR"].size, 1.0 / structures["OAR"].size)
    g_one = geud_by_hand((a_mat @ one_level.x)[structures["OAR"]].astype(float), p, A)
    g_lex = geud_by_hand((a_mat @ lex.x)[structures["OAR"]].astype(float), p, A)
    assert second.final == pytest.approx(g_lex, rel=1e-5)
    assert g_lex < g_one - 0.5


# ------------------------------------------------------------------------- refusals
def test_first_order_refuses_by_name(slab):
    a_mat, structures = slab
    term = op.CvxpyTerm(geud_limit, "OAR", hard=True, label="my gEUD")
    assert op.supported_methods(term) == ("cvxpy",)
    with pytest.raises(op.InvalidProblemError, match=r"^my gEUD: the first-order solver has no"):
        op.solve_first_order(op.Problem(a_mat, structures, [*_base_terms(), term]))


def test_non_dcp_objective_names_term_and_quotes_cvxpy(slab):
    a_mat, structures = slab

    def concave(doses, x):
        return -cp.sum_squares(doses["OAR"])

    term = op.CvxpyTerm(concave, "OAR", label="my concave term")
    with pytest.raises(
        op.InvalidProblemError,
        match=r"^my concave term: its objective is not convex by CVXPY's DCP rules.*"
        r"CVXPY says: Problem does not follow DCP rules\. Specifically: .*concave",
    ):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))


def test_non_dcp_constraint_names_term(slab):
    a_mat, structures = slab
    term = op.CvxpyTerm(
        lambda d, x: [cp.sum_squares(d["OAR"]) >= 1.0], "OAR", hard=True, label="floor"
    )
    with pytest.raises(
        op.InvalidProblemError,
        match=r"^floor: its constraints are not convex by CVXPY's DCP rules.*The following "
        "constraints are not DCP",
    ):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))


def test_missing_structure_names_term(slab):
    a_mat, structures = slab
    term = op.CvxpyTerm(geud_limit, "Rectum", hard=True, label="gEUD rectum")
    with pytest.raises(
        op.InvalidProblemError, match=r"^gEUD rectum: structure `Rectum` is not in `structures`"
    ):
        op.Problem(a_mat, structures, [*_base_terms(), term])


def test_undeclared_structure_read_names_term(slab):
    a_mat, structures = slab
    term = op.CvxpyTerm(lambda d, x: cp.sum(d["BODY"]), "OAR", label="reads BODY")
    with pytest.raises(
        op.InvalidProblemError,
        match=r"^reads BODY reads structure `BODY`, which is not among its `structures` \(OAR\)",
    ):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))


@pytest.mark.parametrize(
    ("hard", "returned", "message"),
    [
        (False, 3.0, r"^t must return a scalar CVXPY expression \(an objective\), got float"),
        (False, "vector", r"^t must return a scalar CVXPY expression .*got shape \("),
        (False, "constraint", r"^t returned constraints but is an objective \(hard=False\)"),
        (True, "expression", r"^t is hard \(constraints\) and must return a CVXPY constraint"),
        (True, [], r"^t is hard \(constraints\) and must return a CVXPY constraint"),
    ],
)
def test_wrong_return_type_names_term(slab, hard, returned, message):
    a_mat, structures = slab

    def fn(doses, x):
        d = doses["OAR"]
        made = {"vector": d, "constraint": [cp.sum(d) <= 1], "expression": cp.sum(d)}
        return made[returned] if isinstance(returned, str) else returned

    term = op.CvxpyTerm(fn, "OAR", hard=hard, label="t")
    with pytest.raises(op.InvalidProblemError, match=message):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))


def test_function_error_names_term(slab):
    a_mat, structures = slab

    def broken(doses, x):
        return cp.sum(doses["OAR"]) + np.ones(3) @ x  # x has 40 entries

    term = op.CvxpyTerm(broken, "OAR", label="broken")
    with pytest.raises(op.InvalidProblemError, match=r"^broken: its function raised ValueError"):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("not callable", "OAR"), r"^`function` must be a function \(doses, x\)"),
        ((geud_limit, []), r"^`structures` must be a structure name or a sequence"),
        ((geud_limit, ["OAR", ""]), r"^`structures` must be a structure name or a sequence"),
        ((geud_limit, ["OAR", "OAR"]), r"^`structures` names a structure twice"),
    ],
)
def test_bad_construction(args, message):
    with pytest.raises(op.InvalidProblemError, match=message):
        op.CvxpyTerm(*args)


def test_solver_not_installed_is_named(slab):
    a_mat, structures = slab
    missing = [s for s in ("MOSEK", "OSQP", "SCS") if s not in op.available_solvers()]
    if not missing:
        pytest.skip("every solver adapter is installed here")
    term = op.CvxpyTerm(geud_limit, "OAR", hard=True)
    with pytest.raises(op.SolverError, match=rf"^Solver `{missing[0]}` is not installed"):
        op.solve_cvxpy(op.Problem(a_mat, structures, [*_base_terms(), term]), solver=missing[0])


def test_built_formulation_refuses_another_function(slab):
    """A re-solve reuses the compiled expression only for the same function and structures."""
    a_mat, structures = slab
    term = op.CvxpyTerm(lambda d, x: geud_expr(d, "OAR", A), "OAR")
    prob = op.Problem(a_mat, structures, [*_base_terms(), term])
    form = op.CvxpyFormulation(prob)
    other = prob.with_terms([*_base_terms(), op.CvxpyTerm(lambda d, x: cp.sum(d["OAR"]), "OAR")])
    with pytest.raises(op.InvalidProblemError, match=r"^Term 2 changed from CvxpyTerm"):
        form.update(other)
