"""The dose orders the DVH terms sort by: :func:`optimizers._dose_volume.stable_order`
(numpy's unstable sort with its ties put back in index order) is numpy's stable argsort
itself, and :func:`~optimizers._dose_volume.unsort` inverts it; the dose-volume quadratics
built on them give, on numpy and on array-api-strict, the value of the definition
evaluated voxel by voxel."""

import numpy as np
import pytest

import optimizers as op
from optimizers._dose_volume import stable_order, unsort


def _doses(rng, n, levels):
    """``n`` doses with ties: rounded to ``levels`` steps per Gy (0: none), a tenth at
    +0.0 and a twentieth at -0.0 (equal keys to a sort)."""
    d = rng.uniform(0.0, 70.0, n)
    if levels:
        d = np.round(d * levels) / levels
    d[rng.random(n) < 0.1] = 0.0
    d[rng.random(n) < 0.05] = -0.0
    return d


@pytest.mark.parametrize("n", [1, 2, 3, 17, 5000])
@pytest.mark.parametrize("levels", [0, 1, 20])
def test_stable_order_is_numpys_stable_argsort(n, levels):
    rng = np.random.default_rng(n + 1000 * levels)
    d = _doses(rng, n, levels)
    for keys in (d, -d):
        np.testing.assert_array_equal(stable_order(keys), np.argsort(keys, kind="stable"))


def test_stable_order_with_nan_and_all_equal_keys():
    keys = np.array([3.0, np.nan, 1.0, 3.0, np.nan, 1.0])
    np.testing.assert_array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(stable_order(np.zeros(9)), np.arange(9))


def test_unsort_inverts_the_order():
    rng = np.random.default_rng(7)
    d = _doses(rng, 1000, 5)
    order = stable_order(d)
    values = rng.random(1000)
    out = unsort(values, order)
    np.testing.assert_array_equal(out[order], values)


def _reference(term, dose, p):
    """The dose-volume quadratic by its definition, voxel by voxel: walk the voxels
    coldest first (lower goal) or hottest first (upper goal), equal doses in index
    order; a voxel counts once the volume before it reaches the exempt share."""
    under = isinstance(term, op.DVHUnderdose)
    exempt = (1.0 - term.volume_pct / 100.0) if under else term.volume_pct / 100.0
    idx = sorted(range(dose.size), key=lambda i: ((dose[i] if under else -dose[i]), i))
    value, before, limit = 0.0, 0.0, exempt * float(np.sum(p))
    for i in idx:
        if before >= limit:
            excess = (term.dose_gy - dose[i]) if under else (dose[i] - term.dose_gy)
            value += p[i] * max(excess, 0.0) ** 2
        before += p[i]
    return value


@pytest.mark.parametrize("cls", [op.DVHUnderdose, op.DVHOverdose])
def test_dose_volume_quadratic_against_its_definition(cls):
    rng = np.random.default_rng(11)
    dose = np.round(rng.uniform(40.0, 70.0, 400), 1)  # many ties
    p = rng.uniform(0.5, 1.0, 400)
    p /= p.sum()
    for v in (2.0, 35.0, 95.0):
        term = cls("S", 55.0, v)
        assert term.value(dose, p) == pytest.approx(_reference(term, dose, p), rel=1e-12)


@pytest.mark.parametrize("cls", [op.DVHUnderdose, op.DVHOverdose])
def test_dose_volume_quadratic_same_on_the_array_api(cls):
    """array-api-strict takes the stable sort and the gather through the inverse
    permutation; numpy the unstable sort with its ties repaired and a scatter."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(12)
    dose = np.round(rng.uniform(40.0, 70.0, 300), 1)
    p = np.full(300, 1 / 300)
    term = cls("S", 55.0, 20.0)
    value, grad = term.value_and_gradient(dose, p)
    value_s, grad_s = term.value_and_gradient(
        xps.asarray(dose, dtype=xps.float64), xps.asarray(p, dtype=xps.float64)
    )
    assert value == value_s
    np.testing.assert_array_equal(grad, np.asarray(grad_s))
