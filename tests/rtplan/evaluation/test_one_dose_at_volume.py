"""One ``D_v`` everywhere: the DVH metrics, the segment-weight comparison's D95 and the
optimiser's exact DVH value all read ``optimizers.dose_volume_knots``, and all give the
analytic ``D_v`` of a linear dose ramp."""

from __future__ import annotations

import numpy as np
import pytest

import optimizers as op
from rtplan.delivery import compare_doses
from rtplan.evaluation import dvh

N = 200  # voxels of equal volume with doses 1, 2, ..., N Gy (shuffled)
VOLUMES_PCT = [0.25, 2.0, 5.0, 50.0, 95.0, 98.0, 99.75]


def _ramp_d_v(v_pct: float) -> float:
    """Voxel k spreads its volume over k -/+ 0.5 Gy: the hottest v % get at least
    N + 1/2 - N v / 100 Gy (held at the extreme voxel doses within half a voxel of the ends)."""
    return float(np.clip(N + 0.5 - N * v_pct / 100.0, 1.0, N))


@pytest.fixture(scope="module")
def ramp():
    return np.random.default_rng(3).permutation(np.arange(1.0, N + 1.0))


@pytest.mark.parametrize("v_pct", VOLUMES_PCT)
def test_every_call_site_gives_the_analytic_ramp(ramp, v_pct):
    expected = _ramp_d_v(v_pct)
    p = np.full(N, 1.0 / N)
    # rtplan's DVH (voxels of 0.027 cc) and the optimiser's exact D_v (weights summing to 1)
    curve = dvh(ramp.reshape(2, 10, 10), np.ones((2, 10, 10)), voxel_volume_cc=0.027)
    assert curve.dose_at_volume(v_pct) == pytest.approx(expected, abs=1e-9)
    assert curve.dose_at_volume_cc(v_pct / 100 * N * 0.027) == pytest.approx(expected, abs=1e-9)
    assert op.dose_at_volume(ramp, p, v_pct) == pytest.approx(expected, abs=1e-9)
    for term in (op.MaxDVH("S", 50.0, v_pct), op.DVHOverdose("S", 50.0, v_pct)):
        assert term.exact(ramp, p) == pytest.approx(expected, abs=1e-9)


def test_segment_weight_comparison_d95_is_the_ramps(ramp):
    c = compare_doses(ramp, 0.5 * ramp, {"T": np.arange(N)}, "T")
    assert c.d95_reference_gy == pytest.approx(_ramp_d_v(95.0), abs=1e-9)  # 10.5 Gy
    assert c.d95_gy == pytest.approx(0.5 * _ramp_d_v(95.0), abs=1e-9)


def test_partial_voxels_and_ties_pool_into_one_knot():
    """Voxels of one dose pool their volume (a uniform dose is its own D_v), and a voxel
    counts with its weight: two quarter voxels of 10 Gy are one half voxel of 10 Gy."""
    assert op.dose_at_volume(np.full(7, 3.0), np.ones(7), 40.0) == 3.0
    dose, w = np.array([10.0, 0.0, 10.0]), np.array([0.25, 1.0, 0.25])
    volume, knot_dose, cumulative = op.dose_volume_knots(dose, w)
    np.testing.assert_array_equal(knot_dose, [10.0, 0.0])
    np.testing.assert_allclose(volume, [0.25, 1.0])  # C_(k-1) + w_k / 2
    np.testing.assert_allclose(cumulative, [0.5, 1.5])
    # D50% = D(0.75): a third of the way from 10 Gy (at 0.25) to 0 Gy (at 1.0)
    assert op.dose_at_volume(dose, w, 50.0) == pytest.approx(10.0 / 3.0)
    # the DVH of a half voxel of 10 Gy beside a whole one of 0 Gy: the same curve
    occupancy = np.array([0.5, 1.0, 0.0, 0.0]).reshape(1, 2, 2)
    d = dvh(np.array([10.0, 0.0, 5.0, 5.0]).reshape(1, 2, 2), occupancy, voxel_volume_cc=1.0)
    assert d.dose_at_volume(50.0) == pytest.approx(10.0 / 3.0)
