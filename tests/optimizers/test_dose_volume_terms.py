"""Dose-volume quadratics (Wu & Mohan 2000): zero exactly when the DVH goal holds, correct
gradients, and the freedom they give the optimiser that whole-structure quadratics do not."""

import numpy as np
import pytest
import scipy.sparse as sp

import optimizers as op
from optimizers._terms import dose_at_volume


@pytest.mark.parametrize("seed", range(5))
def test_value_is_zero_exactly_when_the_dvh_goal_holds(seed):
    rng = np.random.default_rng(seed)
    dose = rng.uniform(30.0, 70.0, 400)
    p = rng.uniform(0.2, 1.0, 400)
    p /= p.sum()
    for v in (5.0, 50.0, 95.0):
        d_v = dose_at_volume(dose, p, v)
        # an upper goal at the exact D_v holds, 1 Gy lower it fails
        assert op.DVHOverdose("S", d_v, v).value(dose, p) == 0.0
        assert op.DVHOverdose("S", d_v - 1.0, v).value(dose, p) > 0.0
        # a lower goal just below D_v holds, 1 Gy higher it fails
        assert op.DVHUnderdose("S", d_v - 1e-9, v).value(dose, p) == 0.0
        assert op.DVHUnderdose("S", d_v + 1.0, v).value(dose, p) > 0.0


def test_only_the_voxels_the_goal_does_not_exempt_are_penalised():
    dose = np.array([0.0, 10.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0])
    p = np.full(10, 0.1)
    # D80 >= 50: the coldest 20 % (two voxels) may stay cold -> nothing to penalise
    assert op.DVHUnderdose("T", 50.0, 80.0).value(dose, p) == 0.0
    # D90 >= 50: only the coldest voxel is exempt; the 10 Gy voxel counts (40 Gy short)
    assert op.DVHUnderdose("T", 50.0, 90.0).value(dose, p) == pytest.approx(0.1 * 40.0**2)
    # the whole-structure quadratic counts both
    assert op.Underdose("T", 50.0).value(dose, p) == pytest.approx(0.1 * (50.0**2 + 40.0**2))
    # D10 <= 20: the hottest voxel is exempt, the other seven 60 Gy voxels count
    assert op.DVHOverdose("T", 20.0, 10.0).value(dose, p) == pytest.approx(7 * 0.1 * 40.0**2)


@pytest.mark.parametrize("cls", [op.DVHUnderdose, op.DVHOverdose])
def test_gradient_matches_finite_differences(cls):
    rng = np.random.default_rng(3)
    dose = rng.uniform(40.0, 60.0, 50)
    p = np.full(50, 1 / 50)
    term = cls("S", 50.0, 30.0)
    g = term.gradient(dose, p)
    value, g2 = term.value_and_gradient(dose, p)
    assert value == pytest.approx(term.value(dose, p))
    np.testing.assert_allclose(g, g2)
    h = 1e-6  # distinct doses: the exempt set does not change over +-h
    fd = np.array(
        [(term.value(dose + h * e, p) - term.value(dose - h * e, p)) / (2 * h) for e in np.eye(50)]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


def test_optimiser_uses_the_volume_a_goal_lets_stay_hot():
    """Twenty target voxels, one beamlet each; beamlet 0 also hits voxel 0 of a
    forty-voxel organ. Organ D5 <= 10 Gy lets that voxel (2.5 %) be hot, so every target
    voxel can get 50 Gy; a whole-organ overdose term must trade target voxel 0 away."""
    n, n_o = 20, 40
    hot = sp.csr_matrix(([1.0], ([0], [0])), (n_o, n))
    a = sp.csr_matrix(sp.vstack([sp.identity(n, format="csr"), hot]), dtype=np.float32)
    s = {"T": np.arange(n), "O": np.arange(n, n + n_o)}
    goals = [op.Underdose("T", 50.0), op.Overdose("T", 50.0)]
    dvh = op.solve(op.Problem(a, s, [*goals, op.DVHOverdose("O", 10.0, 5.0)]), tol=1e-12)
    whole = op.solve(op.Problem(a, s, [*goals, op.Overdose("O", 10.0)]), tol=1e-12)
    assert dvh.x == pytest.approx(np.full(n, 50.0), rel=1e-4)
    # the goal as the term reads it: at most 5 % of the organ above 10 Gy (one voxel of 40;
    # the DVH's D5% interpolates across the 39 voxels of 0 Gy, so it is not used here)
    assert np.count_nonzero(a[n:] @ dvh.x > 10.0) / n_o <= 0.05
    # voxel-mean weights 1/20 and 1/40: minimise (50 - x)²/20 + (x - 10)²/40 -> x = 110/3
    assert whole.x[0] == pytest.approx(110 / 3, rel=1e-3)


def test_cvxpy_refuses_the_non_convex_terms_by_name():
    a = sp.csr_matrix(np.eye(3, dtype=np.float32))
    p = op.Problem(a, {"T": np.arange(3)}, [op.DVHUnderdose("T", 50.0, 95.0)])
    with pytest.raises(op.InvalidProblemError, match=r"DVHUnderdose.*not convex.*MinDVH"):
        op.solve(p, method="cvxpy")


@pytest.mark.parametrize("v", [0.0, 100.0, -1.0])
def test_volume_outside_zero_to_hundred_is_refused(v):
    with pytest.raises(op.InvalidProblemError, match="volume_pct"):
        op.DVHOverdose("S", 10.0, v)


def test_solution_scales_with_the_matrix_when_only_a_dvh_minimum_sets_the_dose():
    # the default start scales with the matrix for DVHUnderdose targets too, so a matrix
    # twice as strong (exact in floating point) gives exactly half the fluence
    rng = np.random.default_rng(7)
    a = sp.csr_matrix(rng.random((60, 12)))
    structures = {"T": np.arange(40), "O": np.arange(40, 60)}
    terms = [op.DVHUnderdose("T", 60.0, 95), op.Overdose("O", 20.0, weight=0.1)]
    x1 = op.solve_first_order(op.Problem(a, structures, terms), max_iter=300).x
    x2 = op.solve_first_order(op.Problem(2.0 * a, structures, terms), max_iter=300).x
    np.testing.assert_allclose(x2, x1 / 2.0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("upper", [True, False])
def test_smooth_cvar_bounds_the_exact_cvar_for_a_wide_dose_spread(upper):
    """Doses far beyond the CVaR's threshold (0-60 Gy, tau 0.05 Gy: 1200 tau) still count in
    full: the smoothed value bounds the exact CVaR (conservative) within tau log 2 / f."""
    from optimizers._surrogates import smooth_cvar

    dose = np.linspace(0.0, 60.0, 1001)
    p = np.full(dose.size, 1.0 / dose.size)
    fraction, tau = 0.5, 0.05
    value, _ = smooth_cvar(dose, p, fraction, tau, upper=upper)
    half = np.sort(dose)[dose.size // 2 :] if upper else np.sort(dose)[: dose.size // 2 + 1]
    exact = float(half.mean())  # mean of the hottest (coldest) half: 45 (15) Gy
    slack = tau * np.log(2.0) / fraction
    if upper:
        assert exact - 1e-6 <= value <= exact + slack + 0.1
    else:
        assert exact - slack - 0.1 <= value <= exact + 1e-6
