"""The MLC and jaw fluence modifier (dose_engine._mlc_fluence) against analytic fluence.

The weighted rectangles are summed on a fine grid of points here (independent of the dose
engine) and compared with the fluence the model defines: leaf transmission under the
leaves, the leaf tips moved back by half the dosimetric leaf gap, the tongue-and-groove
band shielded by either leaf, interleaf leakage between closed leaves, jaw transmission.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import BeamModelError, InvalidGeometryError, MLCParameters, aperture_fluence

#: Ten 5 mm leaf pairs from -25 to 25 mm.
BOUNDS = np.linspace(-25.0, 25.0, 11)
P = MLCParameters(
    transmission=0.015,
    dosimetric_leaf_gap_mm=1.6,
    interleaf_leakage=0.025,
    tongue_and_groove_mm=0.8,
    jaw_transmission=0.004,
)


def fluence(rects, weights, x_mm, y_mm):
    """Sum of ``weight`` over the rectangles containing each point (half-open)."""
    x, y = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(y_mm, float))
    r = rects[:, None, :]
    inside = (r[..., 0] <= x) & (x < r[..., 1]) & (r[..., 2] <= y) & (y < r[..., 3])
    return weights @ inside


def leaves(a_mm, b_mm):
    n = BOUNDS.size - 1
    return np.stack([np.broadcast_to(a_mm, n), np.broadcast_to(b_mm, n)]).astype(float)


def test_closed_bank_transmits_the_transmission():
    # every pair closed at x = 0 (with no leaf gap), jaws 40 x 40 mm
    p = MLCParameters(transmission=0.015, jaw_transmission=0.004)
    rects, w = aperture_fluence(leaves(0.0, 0.0), BOUNDS, {"X": (-20, 20), "Y": (-20, 20)}, p)
    x = np.linspace(-19.9, 19.9, 41)
    np.testing.assert_allclose(fluence(rects, w, x, 1.0), 0.015, rtol=1e-12)
    # outside the jaws: the leaves' and the jaws' transmission together
    assert fluence(rects, w, 30.0, 1.0) == pytest.approx(0.015 * 0.004, rel=1e-12)
    assert fluence(rects, w, 0.0, 22.0) == pytest.approx(0.015 * 0.004, rel=1e-12)


def test_leaf_gap_widens_each_opening_by_the_dlg():
    rects, w = aperture_fluence(leaves(-5.0, 5.0), BOUNDS, {"X": (-50, 50), "Y": (-50, 50)}, P)
    x = np.arange(-30.0, 30.0, 0.01) + 0.005
    profile = fluence(rects, w, x, 2.5)  # mid-leaf
    open_width = float(np.sum(profile > 0.5) * 0.01)
    assert open_width == pytest.approx(10.0 + P.dosimetric_leaf_gap_mm, abs=0.011)
    assert profile.max() == pytest.approx(1.0, abs=1e-12)
    assert profile.min() == pytest.approx(P.transmission, abs=1e-12)
    # the integral across the leaf travel: (gap + DLG)(1 - t) + t * reach
    integral = float(profile.sum() * 0.01)
    assert integral == pytest.approx(11.6 * (1 - 0.015) + 0.015 * 60.0, rel=1e-3)


def test_tongue_and_groove_dip_is_the_band():
    """Checkerboard: segment 1 opens the even pairs, segment 2 the odd ones.  Without
    tongue-and-groove the sum is 1 + t everywhere; each band about an internal boundary
    gets only the transmission from both segments."""
    a = np.where(np.arange(10) % 2 == 0, -20.0, 0.0)
    b = np.where(np.arange(10) % 2 == 0, 20.0, 0.0)
    jaws = {"X": (-30, 30), "Y": (-30, 30)}
    p = MLCParameters(transmission=0.015, tongue_and_groove_mm=0.8, jaw_transmission=0.004)
    r1, w1 = aperture_fluence(np.stack([a, b]), BOUNDS, jaws, p)
    r2, w2 = aperture_fluence(np.stack([-20.0 - a, 20.0 - b]), BOUNDS, jaws, p)
    y = np.arange(-24.0, 24.0, 0.01) + 0.005
    total = fluence(r1, w1, 5.0, y) + fluence(r2, w2, 5.0, y)
    dip = total < 0.5
    assert np.unique(total.round(12)).tolist() == [0.03, 1.015]
    # 8 internal boundaries inside [-24, 24): each dip is 0.8 mm wide, centred on it
    edges = np.flatnonzero(np.diff(dip.astype(int)))
    widths = (edges[1::2] - edges[0::2]) * 0.01
    centres = y[(edges[0::2] + edges[1::2]) // 2 + 1]
    np.testing.assert_allclose(widths, 0.8, atol=0.011)
    np.testing.assert_allclose(centres, BOUNDS[1:-1], atol=0.011)


def test_interleaf_leakage_between_closed_leaves():
    rects, w = aperture_fluence(leaves(-30.0, -30.0), BOUNDS, {"X": (-20, 20)}, P)
    y = np.arange(-20.0, 20.0, 0.01) + 0.005
    profile = fluence(rects, w, 0.0, y)
    in_band = np.min(np.abs(y[:, None] - BOUNDS[None, 1:-1]), axis=1) < 0.4
    np.testing.assert_allclose(profile[in_band], P.interleaf_leakage, rtol=1e-12)
    np.testing.assert_allclose(profile[~in_band], P.transmission, rtol=1e-12)
    # beyond the jaws: the jaws' transmission times the leaves' (leakage spread evenly)
    t_avg = P.transmission + (P.interleaf_leakage - P.transmission) * 0.8 / 5.0
    assert fluence(rects, w, 25.0, 2.5) == pytest.approx(t_avg * 0.004, rel=1e-12)
    assert fluence(rects, w, 25.0, 5.0) == pytest.approx(t_avg * 0.004, rel=1e-12)


def test_jaw_transmission_beyond_the_jaws_under_open_leaves():
    rects, w = aperture_fluence(leaves(-40.0, 40.0), BOUNDS, {"X": (-10, 10), "Y": (-10, 10)}, P)
    assert fluence(rects, w, 0.0, 2.5) == pytest.approx(1.0, abs=1e-12)
    assert fluence(rects, w, 15.0, 2.5) == pytest.approx(P.jaw_transmission, rel=1e-12)
    assert fluence(rects, w, 0.0, 15.0) == pytest.approx(P.jaw_transmission, rel=1e-12)
    t_avg = P.transmission + (P.interleaf_leakage - P.transmission) * 0.8 / 5.0
    assert fluence(rects, w, 45.0, 2.5) == pytest.approx(P.jaw_transmission * t_avg, rel=1e-12)
    assert fluence(rects, w, 0.0, 30.0) == 0.0  # beyond the MLC: nothing reaches (Φ)


def test_random_apertures_stay_between_zero_and_one():
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = rng.uniform(-30, 10, 10)
        b = a + rng.uniform(0, 30, 10) * (rng.random(10) > 0.3)
        jaws = {"X": (-rng.uniform(5, 40), rng.uniform(5, 40)), "Y": (-20.0, 15.0)}
        rects, w = aperture_fluence(np.stack([a, b]), BOUNDS, jaws, P)
        x, y = rng.uniform(-45, 45, 2000), rng.uniform(-27, 27, 2000)
        f = fluence(rects, w, x, y)
        assert f.min() >= -1e-12 and f.max() <= 1 + 1e-12


def test_ideal_mlc_is_the_open_rectangles():
    rects, w = aperture_fluence(leaves(-5.0, 7.0), BOUNDS, {"Y": (-7.0, 3.0)}, MLCParameters())
    np.testing.assert_allclose(w, 1.0)
    # one rectangle per leaf pair inside the Y jaws
    np.testing.assert_allclose(rects, [[-5, 7, -7, -5], [-5, 7, -5, 0], [-5, 7, 0, 3]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transmission": 1.5}, r"`transmission` = 1.5 is outside 0-0.1 \(a fraction"),
        ({"dosimetric_leaf_gap_mm": 16.0}, r"`dosimetric_leaf_gap_mm` = 16.0 is outside 0-5 mm"),
        ({"transmission": 0.02, "interleaf_leakage": 0.01}, "below `transmission`"),
        ({"transmission": 0.01, "interleaf_leakage": 0.02}, "give its width"),
        ({"jaw_transmission": "0.1"}, "must be a number"),
    ],
)
def test_implausible_parameters_refused(kwargs, match):
    with pytest.raises(BeamModelError, match=match):
        MLCParameters(**kwargs)


def test_unknown_entry_refused_with_the_source():
    with pytest.raises(BeamModelError, match=r"my.toml.*unknown entries \['dlg'\]"):
        MLCParameters.from_mapping({"dlg": 1.0}, source="my.toml")


def test_band_wider_than_a_leaf_refused():
    p = MLCParameters(tongue_and_groove_mm=3.0)
    narrow = np.linspace(-5.0, 5.0, 5)  # 2.5 mm leaves
    with pytest.raises(InvalidGeometryError, match="narrowest leaf"):
        aperture_fluence(np.zeros((2, 4)), narrow, {}, p)
