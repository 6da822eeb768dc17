"""Terms: values against hand calculations, gradients against finite differences."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import optimizers as op
from optimizers._terms import dose_at_volume, lower_cvar, upper_cvar

RNG_SEED = 20261122


@pytest.fixture
def dose():
    rng = np.random.default_rng(RNG_SEED)
    d = rng.uniform(10, 70, 57)
    w = rng.uniform(0.2, 1.0, 57)
    return d, w / w.sum()


def test_quadratic_terms_by_hand():
    d = np.array([50.0, 60.0, 70.0])
    p = np.full(3, 1 / 3)
    assert op.Underdose("T", 60).value(d, p) == pytest.approx(100 / 3)
    assert op.Overdose("T", 60).value(d, p) == pytest.approx(100 / 3)
    assert op.SquaredDeviation("T", 60).value(d, p) == pytest.approx(200 / 3)
    assert op.MeanDose("T").value(d, p) == pytest.approx(60)
    assert op.MaxDose("T", 65, hard=True).quantity(d, p) == 70
    assert op.MinDose("T", 55, hard=True).quantity(d, p) == 50


def test_geud_limits(dose):
    d, p = dose
    assert op.GEUD("O", 1).quantity(d, p) == pytest.approx(np.sum(p * d))
    assert op.GEUD("O", 1000).quantity(d, p) == pytest.approx(d.max(), rel=0.01)
    assert op.GEUD("T", -1000).quantity(d, p) == pytest.approx(d.min(), rel=0.01)
    # power mean by hand
    assert op.GEUD("O", 3).quantity(d, p) == pytest.approx(np.sum(p * d**3) ** (1 / 3))
    assert op.GEUD("T", -5).value(d, p) == pytest.approx(-(np.sum(p * d**-5) ** (-1 / 5)))


@pytest.mark.parametrize(
    "term",
    [
        op.Underdose("S", 45.0),
        op.Overdose("S", 40.0),
        op.SquaredDeviation("S", 42.0),
        op.MeanDose("S"),
        op.MaxDose("S", 40.0),
        op.MinDose("S", 45.0),
        op.GEUD("S", 4.0),
        op.GEUD("S", -8.0),
        op.GEUD("S", 1.0),
    ],
    ids=lambda t: t.label,
)
def test_gradient_matches_finite_differences(term, dose):
    d, p = dose
    g = term.gradient(d, p)
    h = 1e-6
    fd = np.array(
        [(term.value(d + h * e, p) - term.value(d - h * e, p)) / (2 * h) for e in np.eye(d.size)]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_cvar_against_brute_force_equal_weights():
    rng = np.random.default_rng(3)
    d = rng.uniform(0, 50, 40)
    p = np.full(40, 1 / 40)
    # hottest 10 % = 4 voxels exactly
    assert upper_cvar(d, p, 0.1) == pytest.approx(np.sort(d)[-4:].mean())
    assert lower_cvar(d, p, 0.25) == pytest.approx(np.sort(d)[:10].mean())
    # CVaR by its variational formula at the minimiser z = D_v
    z = np.linspace(0, 50, 20001)
    f = z + (1 / 0.1) * np.mean(np.maximum(d[None, :] - z[:, None], 0), axis=1)
    assert f.min() == pytest.approx(upper_cvar(d, p, 0.1), rel=1e-4)


def test_exact_dvh_value():
    d = np.arange(1.0, 101.0)  # 100 voxels, doses 1..100 Gy
    p = np.full(100, 0.01)
    # voxel-midpoint rule: voxel k holds the doses k -/+ 0.5 Gy, so D_v = 100.5 - v
    assert dose_at_volume(d, p, 5) == pytest.approx(95.5)
    assert dose_at_volume(d, p, 95) == pytest.approx(5.5)
    t = op.MaxDVH("OAR", 50, 20)
    rep = t.reported(d, p)
    assert rep["MaxDVH(OAR D20% <= 50 Gy) [exact]"] == pytest.approx(80.5)
    assert rep["MaxDVH(OAR D20% <= 50 Gy) [CVaR]"] == pytest.approx(np.mean(np.arange(81, 101)))
    assert op.MinDVH("PTV", 60, 95).quantity(d, p) == pytest.approx(np.mean(np.arange(1, 6)))


def test_smoothness_pairs_and_operator_agree():
    x = np.array([1.0, 3.0, 2.0, 5.0])
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    s1 = op.Smoothness(pairs=pairs, n_beamlets=4)
    dmat = sp.csr_matrix(np.array([[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1]], float))
    s2 = op.Smoothness(dmat)
    assert s1.value(x) == pytest.approx((4 + 1 + 9) / 3) == s2.value(x)
    h = 1e-6
    fd = [(s1.value(x + h * e) - s1.value(x - h * e)) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(s1.gradient(x), fd, rtol=1e-6)
    assert op.TotalMU().value(x) == 11.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: op.Overdose("S", -1), "dose_gy"),
        (lambda: op.Overdose("S", 10, weight=-2), "weight"),
        (lambda: op.TotalMU(weight=float("nan")), "weight"),
        (lambda: op.MeanDose("S", hard=True), "dose_gy"),
        (lambda: op.GEUD("S", 0), "non-zero"),
        (lambda: op.MaxDVH("S", 20, 100), "volume_pct"),
        (lambda: op.Smoothness(pairs=[[0.5, 1]]), "integer"),
        (lambda: op.Overdose("", 10), "structure"),
    ],
)
def test_bad_term_arguments(make, match):
    with pytest.raises(op.InvalidProblemError, match=match):
        make()


def test_import_is_light():
    code = (
        "import sys, optimizers; "
        "bad = [m for m in ('cvxpy', 'dose_engine', 'rtplan', 'pydicom', 'cupy') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_result_repr_leads_with_message():
    r = op.OptimizationResult(
        x=np.zeros(3), objective=1.5, status="optimal", message="Done.", term_values={"a": 1.0}
    )
    text = repr(r)
    assert text.splitlines()[1].strip() == "message: Done."
    assert "success: True" in text and "array(shape=(3,)" in text
    assert "<table>" in r._repr_html_()
    assert r.success and op.Status.OPTIMAL in op.SOLUTION_PRESENT
    with pytest.raises(AttributeError):
        r.objective = 2.0  # frozen
