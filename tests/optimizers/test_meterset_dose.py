"""A dose part that follows each beam's sweep meterset, ``U κ∘M̃(x)`` (issue 12: the MLC
leaf transmission scales with the MU a fluence needs, not with a constant).

Checked against the sweep meterset written out here (Bortfeld's largest sum of positive
increments over the rows), central finite differences, an analytic optimum, scipy's
L-BFGS-B on the same objective, and the refusals of the solvers that take a linear dose.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

import optimizers as op


def _sweep_mu(x: np.ndarray, beam_map: np.ndarray) -> float:
    """Bortfeld's minimum unidirectional meterset of a map: the largest, over rows, sum
    of the positive increments from 0 along the row (a loop, not the module's code)."""
    best = 0.0
    for row in beam_map:
        total, before = 0.0, 0.0
        for k in row:
            v = x[k] if k >= 0 else 0.0
            total += max(v - before, 0.0)
            before = v
        best = max(best, total)
    return best


def _maps():
    return [
        np.arange(12).reshape(3, 4),
        np.r_[np.arange(12, 24), -1, -1, -1].reshape(3, 5),
    ]


def test_hand_computed_meterset():
    """Rows 1 3 2 4 (increments 1 + 2 + 2 = 5 MU) and 0 2 0 0 (2 MU): the beam needs 5 MU."""
    x = np.array([1.0, 3.0, 2.0, 4.0, 0.0, 2.0, 0.0, 0.0])
    m = np.arange(8).reshape(2, 4)
    value, _ = op.smooth_meterset(x, m, epsilon_mu=1e-6, temperature_mu=1e-6)
    assert value == pytest.approx(5.0, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_surrogate_brackets_the_sweep_meterset(seed):
    """Each smoothed positive part lies in ``[max(z, 0) − ε/2, max(z, 0)]`` and the
    log-sum-exp in ``[max, max + t log n_rows]``: so does the surrogate around the sweep's
    meterset (less ``n_cols ε/2`` below)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 10.0, 24) * (rng.uniform(size=24) > 0.3)
    eps, temp = 0.05, 0.2
    for m in _maps():
        exact = _sweep_mu(x, m)
        value, _ = op.smooth_meterset(x, m, epsilon_mu=eps, temperature_mu=temp)
        assert exact - m.shape[1] * eps / 2 - 1e-12 <= value
        assert value <= exact + temp * np.log(m.shape[0]) + 1e-12


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    n = 24
    x = rng.uniform(0.0, 5.0, n)
    md = op.MetersetDose(
        _maps(),
        rng.uniform(0.0, 1.0, (10, 2)),
        n,
        epsilon_mu=0.05,
        temperature_mu=0.1,
        calibration=[1.2, 0.8],
    )
    w = np.array([0.7, -1.3])
    g = md.meterset_vjp(x, w)
    h = 1e-6
    num = np.array(
        [(w @ md.meterset(x + h * e) - w @ md.meterset(x - h * e)) / (2 * h) for e in np.eye(n)]
    )
    np.testing.assert_allclose(g, num, atol=1e-7)
    np.testing.assert_allclose(md.meterset(x), [1.2, 0.8] * md.surrogate(x))


def test_problem_dose_adds_the_meterset_part():
    rng = np.random.default_rng(2)
    n = 24
    a = sp.random(10, n, density=0.5, random_state=3, format="csr")
    md = op.MetersetDose(_maps(), rng.uniform(0, 1, (10, 2)), n, epsilon_mu=0.1, temperature_mu=0.1)
    c = rng.uniform(0, 1, 10)
    prob = op.Problem(
        a, {"T": np.arange(10)}, [op.Underdose("T", 10.0)], dose_offset=c, meterset_dose=md
    )
    x = rng.uniform(0, 3, n)
    expected = a @ x + md.columns @ md.meterset(x) + c
    np.testing.assert_allclose(prob.dose(x), expected)
    np.testing.assert_allclose(prob.union_dose(x), expected)
    np.testing.assert_allclose(prob.with_terms([op.Overdose("T", 1.0)]).dose(x), expected)


def test_analytic_optimum_counts_the_transmission():
    """One beam, one row of two beamlets, each the only open dose of one target voxel (1
    Gy/MU); the beam's meterset is ``max(x0, x1)`` and gives both voxels ``u = 0.5`` Gy
    per MU. Both voxels at 60 Gy: ``x (1 + u) = 60``, x = 40 MU (60 MU without it)."""
    a = sp.csr_array(np.eye(2))
    md = op.MetersetDose(
        [np.array([[0, 1]])], np.full((2, 1), 0.5), 2, epsilon_mu=1e-4, temperature_mu=1e-4
    )
    terms = [op.Underdose("T", 60.0), op.Overdose("T", 60.0)]
    res = op.solve_first_order(op.Problem(a, {"T": np.arange(2)}, terms, meterset_dose=md))
    np.testing.assert_allclose(res.x, [40.0, 40.0], atol=0.02)
    plain = op.solve_first_order(op.Problem(a, {"T": np.arange(2)}, terms))
    np.testing.assert_allclose(plain.x, [60.0, 60.0], atol=0.02)


def test_lexicographic_levels_see_it():
    """The analytic case above as two levels (the targets' underdose, then their
    overdose under the first level's slip): the same 40 MU."""
    a = sp.csr_array(np.eye(2))
    md = op.MetersetDose(
        [np.array([[0, 1]])], np.full((2, 1), 0.5), 2, epsilon_mu=1e-4, temperature_mu=1e-4
    )
    res = op.solve_lexicographic(
        a,
        {"T": np.arange(2)},
        [[op.Underdose("T", 60.0)], [op.Overdose("T", 60.0)]],
        meterset_dose=md,
    )
    np.testing.assert_allclose(res.x, [40.0, 40.0], atol=0.05)


def test_first_order_agrees_with_scipy_lbfgsb():
    """A random target/organ problem: the first-order solver's objective with the
    meterset dose equals what scipy's L-BFGS-B reaches on the same objective (values from
    ``Problem.objective``, gradients by finite differences), and the meterset part lowers
    the meterset the plan needs."""
    rng = np.random.default_rng(4)
    n = 24
    a = sp.random(30, n, density=0.4, random_state=5, format="csr") * 2.0
    cols = np.zeros((30, 2))
    cols[20:] = rng.uniform(0.2, 0.5, (10, 2))  # the organ's transmission
    cols[:20] = rng.uniform(0.0, 0.05, (20, 2))
    md = op.MetersetDose(_maps(), cols, n, epsilon_mu=0.05, temperature_mu=0.1)
    structs = {"T": np.arange(20), "O": np.arange(20, 30)}
    terms = [op.Underdose("T", 20.0), op.Overdose("T", 20.0), op.Overdose("O", 0.0, weight=0.2)]
    prob = op.Problem(a, structs, terms, meterset_dose=md)
    res = op.solve_first_order(prob, max_iter=3000, tol=1e-10)
    ref = minimize(prob.objective, np.full(n, 1.0), method="L-BFGS-B", bounds=[(0, None)] * n)
    assert res.objective == pytest.approx(ref.fun, rel=2e-3)
    assert res.objective <= ref.fun * (1 + 2e-3)
    plain = op.solve_first_order(op.Problem(a, structs, terms), max_iter=3000, tol=1e-10)
    assert md.surrogate(res.x).sum() < md.surrogate(plain.x).sum()


def test_linear_solvers_refuse_it():
    md = op.MetersetDose([np.array([[0, 1]])], np.ones((2, 1)), 2, epsilon_mu=1, temperature_mu=1)
    prob = op.Problem(
        sp.csr_array(np.eye(2)),
        {"T": np.arange(2)},
        [op.Underdose("T", 60.0), op.MaxDose("T", 70.0, hard=True)],
        meterset_dose=md,
    )
    with pytest.raises(op.InvalidProblemError, match="meterset_dose"):
        op.solve_cvxpy(prob)
    with pytest.raises(op.InvalidProblemError, match="meterset_dose"):
        op.certify_hard_constraints(prob, np.zeros(2))


@pytest.mark.parametrize(
    ("maps", "columns", "kw", "match"),
    [
        ([np.arange(3)], np.ones((2, 1)), {}, "2-D"),
        ([np.array([[0, 5]])], np.ones((2, 1)), {}, "outside"),
        ([np.array([[0, 0]])], np.ones((2, 1)), {}, "repeats"),
        ([np.array([[0, 1]])], np.ones((2, 2)), {}, "one column"),
        ([np.array([[0, 1]])], -np.ones((2, 1)), {}, ">= 0"),
        ([np.array([[0, 1]])], np.ones((2, 1)), {"calibration": [np.nan]}, "calibration"),
        ([np.array([[0, 1]])], np.ones((2, 1)), {"epsilon_mu": 0.0}, "epsilon_mu"),
    ],
)
def test_bad_input_is_named(maps, columns, kw, match):
    args = {"epsilon_mu": 1.0, "temperature_mu": 1.0, **kw}
    with pytest.raises(op.InvalidProblemError, match=match):
        op.MetersetDose(maps, columns, 2, **args)


def test_problem_refuses_a_model_on_other_rows():
    md = op.MetersetDose([np.array([[0, 1]])], np.ones((3, 1)), 2, epsilon_mu=1, temperature_mu=1)
    with pytest.raises(op.InvalidProblemError, match="meterset_dose"):
        op.Problem(
            sp.csr_array(np.eye(2)), {"T": np.arange(2)}, [op.Underdose("T", 1.0)], meterset_dose=md
        )
