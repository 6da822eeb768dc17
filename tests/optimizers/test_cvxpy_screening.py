"""The CVXPY formulation without a dose variable, and the screening of per-voxel hard
constraints (constraint generation) in ``solve_cvxpy(..., x0=...)`` (issue 18).

Without the variable every term reads its structure's rows of the matrix times the
fluence: the optimum must be the one of the formulation with the variable (two different
compiled problems, one solver). A screened solve constrains only the voxels near their
bound at the start, checks the others on the exact dose and adds those it violates: its
optimum must be the unscreened problem's, also from a start that leaves every constraint
out."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op
from optimizers import _cvxpy_screen as op_screen

SMOOTH = op.Smoothness(
    sp.diags_array([-np.ones(29), np.ones(29)], offsets=[0, 1], shape=(29, 30)), weight=5.0
)


def _terms(max_gy: float = 40.0) -> list[op.Term]:
    return [
        op.Underdose("PTV", 60.0, weight=10),
        op.Overdose("PTV", 62.0, weight=10),
        op.SquaredDeviation("OAR", 0.0, weight=1),
        op.MaxDVH("OAR", 20.0, 30.0, weight=1),
        op.GEUD("OAR", 4.0, weight=0.5),
        op.MeanDose("BODY", weight=0.01),
        SMOOTH,
        op.MaxDose("BODY", max_gy, hard=True),
        op.MeanDose("OAR", 30.0, hard=True),
    ]


def _problem(terms: list[op.Term], **kw) -> op.Problem:
    a, s = slab_problem(np.random.default_rng(0), n_side=20, n_beamlets=30)
    return op.Problem(a, s, terms, **kw)


@pytest.mark.parametrize("offset", [False, True])
def test_formulation_without_dose_variable_reaches_the_same_optimum(offset):
    kw = {"dose_offset": np.full(400, 0.7)} if offset else {}
    problem = _problem(_terms(), **kw)
    results = {}
    for dose_variable in (True, False):
        form = op.CvxpyFormulation(problem, offset_parameter=False, dose_variable=dose_variable)
        results[dose_variable] = op.solve_cvxpy(problem, formulation=form, screen=False)
    with_d, without = results[True], results[False]
    n_union = problem.union_rows.size
    # no dose variable: none of the union's 400 rows is a variable or an equality row
    assert (
        without.extras["problem_size"]["variables"]
        < with_d.extras["problem_size"]["variables"] - n_union + 1
    )
    assert without.extras["problem_size"]["equality_rows"] < n_union
    assert without.extras["is_dpp"]
    assert without.objective == pytest.approx(with_d.objective, rel=1e-6)
    assert without.extras["max_violation"] <= 1e-7


def test_screened_solve_keeps_only_voxels_near_their_bound_and_is_the_whole_optimum():
    problem = _problem(_terms())
    x0 = op.solve_first_order(problem).x
    full = op.solve_cvxpy(problem, x0=x0, screen=False)
    screened = op.solve_cvxpy(problem, x0=x0)
    record = screened.extras["screening"]
    # screened: the body's maximum (400 voxels), the PTV's overdose (49, none near 62 Gy)
    # and the organ's CVaR (25); the PTV's underdose keeps every voxel
    assert record["rows"] == 400 + 49 + 25
    assert record["rounds"][0]["kept_rows"] < record["rows"]
    assert record["certified"]
    # certified: within the gap of the whole optimum (SCREEN_GAP_REL), never below it
    assert full.objective * (1 - 1e-6) <= screened.objective
    assert screened.objective <= full.objective * (1 + op_screen.SCREEN_GAP_REL)
    assert screened.extras["max_violation"] <= 1e-7
    # the body rows kept are those within the margin of 40 Gy at the start, by the exact dose
    body = problem.union_dose(x0)[problem.local_index["BODY"]]
    near = int(np.sum(body >= 40.0 - op_screen.SCREEN_MARGIN * 40.0))
    assert 0 < near < 400
    assert op_screen.screened_rows(problem, x0)[7].size == near


def test_screening_adds_the_left_out_voxels_the_solution_violates():
    problem = _problem(_terms())
    x0 = np.full(problem.n_beamlets, 1e-3)  # every dose far below 40 Gy and 62 Gy
    rows = op_screen.screened_rows(problem, x0)
    # no row of the body's maximum nor of the PTV's overdose kept
    assert {k: v.size for k, v in rows.items()} == {1: 0, 7: 0}
    full = op.solve_cvxpy(problem, x0=x0, screen=False)
    screened = op.solve_cvxpy(problem, x0=x0)
    rounds = screened.extras["screening"]["rounds"]
    assert rounds[0]["kept_rows"] == 0 and rounds[0]["violated_left_out"] > 0
    assert len(rounds) >= 2 and screened.extras["screening"]["certified"]
    assert screened.objective == pytest.approx(full.objective, rel=1e-6)
    assert screened.extras["max_violation"] <= 1e-7
    d = problem.union_dose(screened.x)[problem.local_index["BODY"]]
    assert d.max() <= 40.0 * (1 + 1e-6)


def test_bad_screening_and_dose_variable_arguments_are_refused():
    problem = _problem(_terms())
    with pytest.raises(op.InvalidProblemError, match="not the index of a per-voxel hard term"):
        op.CvxpyFormulation(problem, term_rows={2: [1, 2]})
    with pytest.raises(op.InvalidProblemError, match="outside"):
        op.CvxpyFormulation(problem, term_rows={7: [400]})
    with pytest.raises(op.InvalidProblemError, match="dose_variable=False"):
        op.CvxpyFormulation(problem, columns=[0, 1, 2], dose_variable=False)


def test_soft_rows_left_out_that_the_optimum_reaches_enter_by_the_objective_gap():
    """From a start where the organ gets no dose, none of its overdose rows is kept; at the
    relaxed optimum the organ is above 10 Gy, so the whole objective exceeds the relaxed
    optimum by more than SCREEN_GAP_REL: those rows enter and the second round is the
    whole problem's optimum."""
    terms = [
        op.Underdose("PTV", 60.0, weight=10),
        op.MeanDose("BODY", weight=0.01),
        op.Overdose("OAR", 10.0, weight=1),
    ]
    problem = _problem(terms)
    x0 = np.full(problem.n_beamlets, 1e-3)
    assert {k: v.size for k, v in op_screen.screened_rows(problem, x0).items()} == {2: 0}
    full = op.solve_cvxpy(problem, screen=False)
    screened = op.solve_cvxpy(problem, x0=x0)
    rounds = screened.extras["screening"]["rounds"]
    assert rounds[0]["soft_gap_rel"] > op_screen.SCREEN_GAP_REL and rounds[0]["entered"] > 0
    assert screened.extras["screening"]["certified"] and len(rounds) >= 2
    assert abs(rounds[-1]["soft_gap_rel"]) <= op_screen.SCREEN_GAP_REL
    assert screened.objective == pytest.approx(full.objective, rel=op_screen.SCREEN_GAP_REL)
    d_oar = problem.union_dose(screened.x)[problem.local_index["OAR"]]
    assert d_oar.max() > 10.0  # the rows entered were needed
    # the gap of a term with every row left out is its whole weighted value
    d = problem.union_dose(screened.x)
    oar_value = problem.evaluate(screened.x)[terms[2].label]
    assert op_screen.screening_gap(problem, {2: np.zeros(0, int)}, d) == pytest.approx(oar_value)


def test_active_set_with_screened_rows_reaches_the_whole_optimum():
    """The planner's path (beamlet active set seeded by the first-order solver, rows
    screened from the seed) against the whole problem (every beamlet, every row) and the
    first-order solver's own plan judged on the exact terms."""
    terms = [
        op.Underdose("PTV", 60.0, weight=10),
        op.MinDVH("PTV", 59.0, 95.0, weight=10),
        op.MaxDVH("PTV", 64.0, 10.0, weight=10),
        op.MaxDVH("OAR", 20.0, 30.0, weight=1),
        op.Overdose("BODY", 30.0, weight=1),
        op.MeanDose("OAR", weight=0.01),
        op.MaxDose("BODY", 66.0, hard=True),
    ]
    problem = _problem(terms)
    whole = op.solve_cvxpy(problem, screen=False)
    res = op.solve(problem, method="cvxpy", active_set=True)
    record = res.extras["screening"]
    assert record["certified"] and res.extras["active_set"]["certified"]
    assert record["rounds"][0]["kept_rows"] < record["rows"]
    # the dose variable holds only the rows some term reads: fewer equality rows
    assert (
        res.extras["problem_size"]["equality_rows"] < whole.extras["problem_size"]["equality_rows"]
    )
    assert res.objective == pytest.approx(whole.objective, rel=op_screen.SCREEN_GAP_REL)
    assert res.extras["max_violation"] <= 1e-7
    # a CVaR term without the voxels below its value at risk loses nothing
    d = problem.union_dose(res.x)
    organ = d[problem.local_index["OAR"]]
    hot = np.flatnonzero(organ >= np.quantile(organ, 0.5))
    assert op_screen.screening_gap(problem, {3: hot}, d) == pytest.approx(0.0, abs=1e-12)
    first_order = op.solve_first_order(problem)
    assert res.objective <= problem.objective(first_order.x) * (1 + 1e-6)


def test_a_cvar_term_without_rows_is_refused():
    problem = _problem(_terms())
    with pytest.raises(op.InvalidProblemError, match="CVaR term needs at least one voxel"):
        op.CvxpyFormulation(problem, term_rows={3: []})


def test_a_degenerate_relaxation_falls_back_to_every_row():
    """Screened from a start with no dose, the organ's overdose keeps no row and the PTV's
    underdose alone has a whole set of optima (Clarabel: "InsufficientProgress"); the
    next round keeps every row and reaches the whole problem's optimum."""
    terms = [op.Underdose("PTV", 60.0, weight=10), op.Overdose("OAR", 0.5, weight=1)]
    problem = _problem(terms)
    full = op.solve_cvxpy(problem, screen=False)
    screened = op.solve_cvxpy(problem, x0=np.full(problem.n_beamlets, 1e-3))
    rounds = screened.extras["screening"]["rounds"]
    assert rounds[0]["failed"] and len(rounds) == 2
    assert screened.extras["screening"]["certified"]
    assert screened.objective == pytest.approx(full.objective, rel=1e-6)
