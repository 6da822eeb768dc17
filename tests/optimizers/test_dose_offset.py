"""A constant dose per voxel in the optimiser's dose, ``d = A x + dose_offset`` (issue 16:
the final-dose correction ``d_final(x0) - A x0``).

Each solve is checked against an independent formulation: analytic optima of a diagonal
matrix, the same problem with the offset absorbed into shifted dose levels (an offset
that is uniform on each structure shifts every dose level of its terms), the other
solver, and the exact matrix against its compression.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op

METHODS = ["first_order", "cvxpy"]
C_PTV, C_OAR = 6.0, 4.0  # Gy: offsets uniform on each structure


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_matrix_optimum_is_level_minus_offset(method):
    """One beamlet per voxel: the optimum gives each voxel ``60 Gy - offset`` from its beamlet,
    and nothing where the offset alone exceeds 60 Gy."""
    a = np.array([2.0, 4.0, 1.0, 3.0])  # Gy/MU
    c = np.array([0.0, 10.0, 30.0, 70.0])  # Gy
    prob = op.Problem(
        sp.csr_array(np.diag(a)),
        {"PTV": np.arange(4)},
        [op.Underdose("PTV", 60.0), op.Overdose("PTV", 60.0)],
        dose_offset=c,
    )
    res = op.solve(prob, method=method)
    np.testing.assert_allclose(res.x, [30.0, 12.5, 30.0, 0.0], atol=2e-3)
    # the fourth voxel is 10 Gy over whatever the fluence: 10² / 4 voxels
    assert res.term_values["Overdose(PTV > 60 Gy)"] == pytest.approx(25.0, rel=1e-4)
    np.testing.assert_allclose(prob.dose(res.x), a * res.x + c)


def _offset(structures, n_voxels):
    c = np.zeros(n_voxels)
    c[structures["PTV"]] = C_PTV
    c[structures["OAR"]] = C_OAR
    return c


def _terms(shift_ptv: float, shift_oar: float, *, cvxpy: bool):
    """PTV and OAR goals with every dose level lowered by the given shifts, Gy."""
    terms = [
        op.Underdose("PTV", 60.0 - shift_ptv, weight=10.0),
        op.Overdose("PTV", 62.0 - shift_ptv, weight=10.0),
        op.MaxDVH("OAR", 14.0 - shift_oar, 30.0, weight=1.0),
        op.Overdose("OAR", 8.0 - shift_oar, weight=0.5),
        op.MaxDose("PTV", 64.0 - shift_ptv, hard=True),
        op.MaxDose("OAR", 26.0 - shift_oar, hard=True),
        op.MeanDose("OAR", 16.0 - shift_oar, hard=True),
    ]
    if cvxpy:  # a physicist's own CVXPY term reads the offset dose too
        level = 61.0 - shift_ptv
        terms.append(
            op.CvxpyTerm(
                lambda doses, x: doses.weights("PTV") @ (doses["PTV"] - level) ** 2,
                "PTV",
                weight=1.0,
                label="custom",
            )
        )
    return terms


@pytest.mark.parametrize("method", METHODS)
def test_offset_equals_shifted_dose_levels(method):
    a, s = slab_problem(np.random.default_rng(16), n_side=16, n_beamlets=24)
    s = {"PTV": s["PTV"], "OAR": s["OAR"]}
    cv = method == "cvxpy"
    offset = op.Problem(a, s, _terms(0, 0, cvxpy=cv), dose_offset=_offset(s, a.shape[0]))
    shifted = op.Problem(a, s, _terms(C_PTV, C_OAR, cvxpy=cv))
    r_off = op.solve(offset, method=method)
    r_shift = op.solve(shifted, method=method)
    assert r_off.success and r_shift.success
    assert r_off.objective == pytest.approx(r_shift.objective, rel=1e-4)
    # the hard constraints hold on the offset dose, not on A x
    d = offset.dose(r_off.x)
    assert d[s["OAR"]].max() <= 26.0 * (1 + 1e-3)
    assert d[s["OAR"]].mean() <= 16.0 * (1 + 1e-3)
    # CVXPY: the same dose, to its solver's precision. The first-order solver stops on a
    # relative objective change at one of many optimal doses: two equivalent paths agree on
    # the objective (above) and the constraints, while voxels differed by up to 1.3 Gy with
    # the oldest declared numpy/scipy
    if cv:
        np.testing.assert_allclose(
            offset.dose(r_off.x), shifted.dose(r_shift.x) + _offset(s, a.shape[0]), atol=0.05
        )


@pytest.mark.parametrize("method", METHODS)
def test_lexicographic_offset_equals_shifted_levels(method):
    a, s = slab_problem(np.random.default_rng(3), n_side=16, n_beamlets=24)
    s = {"PTV": s["PTV"], "OAR": s["OAR"]}

    def levels(cp, co):
        return [
            [op.MinDVH("PTV", 58.0 - cp, 95.0, weight=10.0), op.Overdose("PTV", 63.0 - cp)],
            [op.MaxDVH("OAR", 10.0 - co, 30.0)],
            [op.Overdose("OAR", 5.0 - co)],
        ]

    kw = dict(method=method, slip_rel=0.05, slip_abs=0.01)
    c = _offset(s, a.shape[0])
    off = op.solve_lexicographic(a, s, levels(0, 0), dose_offset=c, **kw)
    ref = op.solve_lexicographic(a, s, levels(C_PTV, C_OAR), **kw)
    # CVXPY to its solver's precision; the first-order solver to about 1 % on the level
    # bounds of this ill-conditioned DVH level (its paths differ in rounding only); without
    # the offset the levels reach 20-60 % other values
    rel = 2e-3 if method == "cvxpy" else 2e-2
    for lv_off, lv_ref in zip(off.levels, ref.levels, strict=True):
        assert lv_off.achieved == pytest.approx(lv_ref.achieved, rel=rel, abs=1e-4)


def test_first_order_agrees_with_cvxpy_on_a_varying_offset():
    """A random offset per voxel (a final-dose correction is not uniform)."""
    rng = np.random.default_rng(7)
    a, s = slab_problem(rng, n_side=20, n_beamlets=30, scatter_fraction=0.05)
    c = rng.uniform(-2.0, 6.0, a.shape[0])
    terms = [
        op.Underdose("PTV", 60, weight=100),
        op.Overdose("PTV", 63, weight=100),
        op.Overdose("OAR", 15, weight=10),
        op.GEUD("OAR", 4, weight=1),
        op.MeanDose("BODY", weight=0.5),
        op.MaxDose("OAR", 30.0, hard=True),
        op.MeanDose("BODY", 20.0, hard=True),
    ]
    prob = op.Problem(a, s, terms, dose_offset=c)
    rc = op.solve_cvxpy(prob)
    rf = op.solve_first_order(prob)
    assert rf.success, rf.message
    assert abs(rf.objective - rc.objective) <= 5e-3 * abs(rc.objective)
    assert rf.extras["max_violation"] <= 5e-3
    assert rc.extras["max_violation"] <= 1e-5
    # without the offset the optimum is another one: the offset is not ignored
    plain = op.solve_cvxpy(op.Problem(a, s, terms))
    assert abs(plain.objective - rc.objective) > 0.05 * abs(rc.objective)


def test_compressed_cvxpy_sees_the_offset():
    """The compressed matrix plus its corrections converges to the exact offset problem."""
    rng = np.random.default_rng(11)
    a, s = slab_problem(rng, n_side=20, n_beamlets=30, scatter_fraction=0.1)
    c = rng.uniform(0.0, 5.0, a.shape[0])
    terms = [
        op.Underdose("PTV", 60, weight=10),
        op.Overdose("PTV", 62, weight=10),
        op.Overdose("OAR", 10, weight=1),
        op.MaxDose("OAR", 30.0, hard=True),
    ]
    prob = op.Problem(a, s, terms, dose_offset=c)
    exact = op.solve_cvxpy(prob)
    comp = op.solve_cvxpy(
        prob, compression=op.Compression(rel_threshold=0.05, rank=2), corrections=3
    )
    assert comp.objective == pytest.approx(exact.objective, rel=1e-2)
    assert comp.extras["compression"]["max_dose_error_gy"] < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_offset_above_a_hard_limit_is_infeasible(method):
    """An organ already at 12 Gy from the offset cannot meet a 10 Gy maximum: refused,
    while the same problem without the offset is solved."""
    a, s = slab_problem(np.random.default_rng(1), n_side=12, n_beamlets=16)
    s = {"PTV": s["PTV"], "OAR": s["OAR"]}
    terms = [
        op.Underdose("PTV", 60.0),
        op.Overdose("PTV", 62.0),
        op.MaxDose("OAR", 10.0, hard=True),
    ]
    assert op.solve(op.Problem(a, s, terms), method=method).success
    c = np.zeros(a.shape[0])
    c[s["OAR"]] = 12.0
    with pytest.raises(op.InfeasibleError, match="MaxDose|Max"):
        op.solve(op.Problem(a, s, terms, dose_offset=c), method=method)


def test_dose_offset_refused_with_its_shape_or_nan():
    a, s = slab_problem(np.random.default_rng(1), n_side=8, n_beamlets=8)
    terms = [op.Underdose("PTV", 60.0)]
    with pytest.raises(op.InvalidProblemError, match=r"`dose_offset` has shape \(3,\), expected"):
        op.Problem(a, s, terms, dose_offset=np.zeros(3))
    bad = np.zeros(a.shape[0])
    bad[5] = np.nan
    with pytest.raises(op.InvalidProblemError, match="`dose_offset` holds 1 NaN"):
        op.Problem(a, s, terms, dose_offset=bad)
