"""Every lexicographic level on one compiled CVXPY problem (DPP parameters): the same level
optima as building and compiling each level's own problem, and as the first-order solver;
compilations counted by CVXPY's own ``SolvingChain.apply``."""

from __future__ import annotations

import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op

#: three levels whose optima are not zero (a zero level bound leaves no interior)
LEVELS = [
    [
        op.Underdose("PTV", 60.0, weight=10),
        op.Overdose("PTV", 61.0, weight=10),
        op.MinDVH("PTV", 60.5, 95.0, weight=5),
    ],
    [op.Overdose("OAR", 15.0, weight=1), op.MaxDVH("OAR", 25.0, 30.0, weight=1)],
    [op.MeanDose("BODY", weight=0.01)],
]
CONSTRAINTS = [op.MaxDose("BODY", 70.0, hard=True)]


def _slab():
    return slab_problem(np.random.default_rng(0), n_side=20, n_beamlets=30)


@pytest.mark.parametrize("active_set", [False, True], ids=["every-beamlet", "active-set"])
def test_one_formulation_matches_rebuilt_levels_with_one_compilation(compile_calls, active_set):
    a, s = _slab()
    kw = {"constraints": CONSTRAINTS, "method": "cvxpy", "active_set": active_set}
    shared = op.solve_lexicographic(a, s, LEVELS, one_formulation=True, **kw)
    n_shared = len(compile_calls)
    rebuilt = op.solve_lexicographic(a, s, LEVELS, one_formulation=False, **kw)
    n_rebuilt = len(compile_calls) - n_shared
    assert shared.success and rebuilt.success
    record = shared.final.extras["shared_levels"]
    assert n_shared == record["builds"] == 1  # three levels, one compilation
    assert n_rebuilt >= len(LEVELS)  # one per level (and per active-set round)
    for ls, lr in zip(shared.levels, rebuilt.levels, strict=True):
        assert ls.achieved == pytest.approx(lr.achieved, rel=1e-3), (ls, lr)
        assert ls.final <= ls.bound * (1 + 1e-6)
    assert shared.final.extras["max_violation"] <= 1e-6
    if active_set:
        assert shared.final.extras["active_set"]["certified"]


# Clarabel 0.9 (the declared floor) ends a level "AlmostSolved" here and the solver warns;
# whether the values are right is what the test checks, against the first-order solver.
@pytest.mark.filterwarnings(
    "ignore:Solver `CLARABEL` returned an inaccurate solution:optimizers.errors.OptimizerWarning"
)
def test_one_formulation_agrees_with_first_order():
    """Without dose-volume terms the two solvers pose the same problem: each level's
    optimum within 0.5 % (a level 0 that cannot reach zero: the first-order solver meets a
    zero bound only to its tolerance, which frees the next level)."""
    a, s = _slab()
    levels = [
        [op.Underdose("PTV", 61.0, weight=10), op.Overdose("PTV", 60.0, weight=10)],
        [op.Overdose("OAR", 15.0, weight=1)],
        [op.MeanDose("BODY", weight=0.01)],
    ]
    kw = {"constraints": CONSTRAINTS, "slip_rel": 0.02}
    cv = op.solve_lexicographic(a, s, levels, method="cvxpy", one_formulation=True, **kw)
    fo = op.solve_lexicographic(a, s, levels, method="first_order", tol=1e-10, **kw)
    assert cv.final.extras["shared_levels"]["builds"] == 1
    for lc, lf in zip(cv.levels, fo.levels, strict=True):
        assert lc.achieved == pytest.approx(lf.achieved, rel=5e-3), (lc, lf)


def test_guard_of_a_later_level_is_loosened_until_inactive():
    """Guards measured at a zero fluence (``x0``): the organ's level guard is then its
    margin alone, which the first level's optimum reaches; it is loosened and the level
    re-solved to the rebuilt problem's optimum."""
    a, s = _slab()
    kw = {"constraints": CONSTRAINTS, "method": "cvxpy"}
    ref = op.solve_lexicographic(a, s, LEVELS, one_formulation=False, **kw)
    zero = op.solve_lexicographic(a, s, LEVELS, x0=np.zeros(a.shape[1]), one_formulation=True, **kw)
    assert zero.levels[0].result.extras["shared_levels"]["guard_loosenings"] >= 1
    for lz, lr in zip(zero.levels, ref.levels, strict=True):
        assert lz.achieved == pytest.approx(lr.achieved, rel=1e-3), (lz, lr)


def test_hard_terms_in_later_levels_build_each_level(compile_calls):
    """A hard term first applied at level 1 cannot be switched on by a parameter: each
    level builds its own problem, and the hard term holds from its level on."""
    a, s = _slab()
    levels = [LEVELS[0], [*LEVELS[1], op.MaxDose("OAR", 45.0, hard=True)]]
    res = op.solve_lexicographic(a, s, levels, method="cvxpy", one_formulation=True)
    assert len(compile_calls) == 2
    assert "shared_levels" not in res.final.extras
    assert np.max(a[s["OAR"]] @ res.x) <= 45.0 * (1 + 1e-6)


@pytest.mark.filterwarnings(
    "ignore:Solver `CLARABEL` returned an inaccurate solution:optimizers.errors.OptimizerWarning"
)
def test_dose_offset_is_no_parameter_of_the_one_formulation(compiled_tensors):
    """Issue 18: a ``dose_offset`` held in a parameter of one entry per dose row made
    CVXPY's re-ordering of the compiled tensor (variable entries x parameter entries index
    arrays, with the level constraints' second-order cones) grow with the square of the
    rows: 0.9 GB at 3,600 rows, 43 GiB asked at the C-shape. The offset is a constant: the
    parameters are the scalar weights, levels and bounds, whatever the rows, and the levels
    reach the optima of the problems built level by level."""
    a, s = slab_problem(np.random.default_rng(1), n_side=40, n_beamlets=40)
    offset = 0.5 + np.random.default_rng(2).random(a.shape[0])
    kw = {"constraints": CONSTRAINTS, "method": "cvxpy", "dose_offset": offset}
    shared = op.solve_lexicographic(a, s, LEVELS, one_formulation=True, **kw)
    assert shared.final.extras["shared_levels"]["builds"] == 1
    (n_var, n_par), *_ = compiled_tensors
    n_terms = sum(len(lv) for lv in LEVELS) + len(CONSTRAINTS)
    assert n_par <= 2 * n_terms + 2 * len(LEVELS) < a.shape[0] // 50, compiled_tensors
    rebuilt = op.solve_lexicographic(a, s, LEVELS, one_formulation=False, **kw)
    assert all(p <= 2 * n_terms for _, p in compiled_tensors[1:]), compiled_tensors
    for ls, lr in zip(shared.levels, rebuilt.levels, strict=True):
        assert ls.achieved == pytest.approx(lr.achieved, rel=1e-3), (ls, lr)
    d = a @ shared.x + offset  # the offset is in the dose the constraints hold
    assert d[s["BODY"]].max() <= 70.0 * (1 + 1e-6)


def test_constant_offset_formulation_refuses_another_offset():
    """A formulation whose offset is a constant cannot take a problem on the same matrix
    cache with another offset (only parameters change in a built formulation)."""
    a, s = _slab()
    terms = [*LEVELS[0], *CONSTRAINTS]
    prob = op.Problem(a, s, terms, dose_offset=np.ones(a.shape[0]))
    form = op.CvxpyFormulation(prob, offset_parameter=False)
    other = op.Problem(a, s, terms, dose_offset=np.zeros(a.shape[0]), _cache=prob._cache)
    with pytest.raises(op.InvalidProblemError, match="offset_parameter=False"):
        form.update(other)


# weight 5 ends "AlmostSolved" with Clarabel 0.9 / numpy 1.26 (Python 3.10, the oldest
# floors) and with numpy 2.5.5 (Python 3.13), "Solved" with numpy 2.4.6 (CI rehearsal,
# 2026-12-07): the edge of what the scaling wins, not a guarantee
@pytest.mark.parametrize("weight", [1e-4, 1e-2, 1.0])
def test_smoothness_inside_a_level_bound_solves(weight):
    """Fluence smoothness in the first level puts its square of MU differences in the
    second level's bound; scaled to the bound's budget, Clarabel solves both levels
    ("InsufficientProgress" or "AlmostSolved" before, 2026-12-06), the bound holds on the
    exact terms and the second level's objective is no higher than at the first level's
    solution (which meets that bound)."""
    import scipy.sparse as sp

    a, s = slab_problem(np.random.default_rng(0), n_side=20, n_beamlets=30)
    n = a.shape[1]
    q = sp.diags_array([-np.ones(n - 1), np.ones(n - 1)], offsets=[0, 1], shape=(n - 1, n))
    first = [
        op.Underdose("PTV", 60.0, weight=10),
        op.Overdose("PTV", 62.0, weight=10),
        op.Overdose("OAR", 20.0, weight=1),
        op.Smoothness(q, weight=weight),
    ]
    second = [op.MeanDose("BODY", weight=1)]
    res = op.solve_lexicographic(a, s, [first, second], method="cvxpy")
    assert [lv.result.extras["native_status"] for lv in res.levels] == ["Solved", "Solved"]
    level0 = res.levels[0]
    assert level0.final <= level0.bound * (1 + 1e-5)  # Clarabel's tolerance
    problem = op.Problem(a, s, second)
    assert problem.objective(res.x) <= problem.objective(level0.result.x) * (1 + 1e-6)
