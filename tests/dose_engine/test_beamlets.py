"""Beamlet grids: MLC-aligned lattice, target coverage, vector <-> fluence-map round trip."""

import numpy as np
import pytest

from dose_engine import Beam, InvalidGeometryError, beamlets_for_target


def _square_target(half_mm, z_half_mm, step=1.0):
    xs = np.arange(-half_mm, half_mm + 1e-9, step)
    zs = np.arange(-z_half_mm, z_half_mm + 1e-9, step)
    return np.array([[x, 0.0, z] for x in xs for z in zs])


def test_lattice_edges_on_leaf_boundaries_and_margin():
    # target spans x in [-12, 12], z in [-7, 7] at the isocentre plane (gantry 0, y = 0):
    # with a 5 mm margin beamlets must cover [-17, 17] x [-12, 12] -> edges at multiples of 5.
    bl = beamlets_for_target(Beam(0), _square_target(12, 7), margin_mm=5.0)
    r = bl.rectangles_mm()
    assert np.allclose(np.mod(r, 5.0), 0.0)  # every edge on the 5 mm lattice
    assert r[:, 0].min() == -20 and r[:, 1].max() == 20  # covers -17..17
    assert r[:, 2].min() == -15 and r[:, 3].max() == 15  # covers -12..12
    assert bl.fluence_map_shape(0) == (6, 8)
    assert len(bl) == 48


def test_leaf_width_and_rows_along_plus_y():
    bl = beamlets_for_target(
        Beam(0), _square_target(4, 9), beamlet_width_mm=2.5, beamlet_height_mm=10.0, margin_mm=0.0
    )
    assert set(bl.height_mm) == {10.0} and set(bl.width_mm) == {2.5}
    assert np.allclose(np.mod(bl.y_mm - 5.0, 10.0), 0.0)
    # rows increase with y, columns with x
    assert np.all(np.diff(bl.y_mm[np.argsort(bl.row, kind="stable")]) >= 0)
    order = np.lexsort((bl.col, bl.row))
    assert np.array_equal(order, np.arange(len(bl)))


def test_round_trip_maps_and_beam_order():
    beams = [Beam(0), Beam(90), Beam(180)]
    bl = beamlets_for_target(beams, _square_target(10, 10, 2.0))
    assert np.all(np.diff(bl.beam_index) >= 0) and bl.n_beams == 3
    x = np.random.default_rng(1).random(len(bl))
    maps = bl.to_fluence_maps(x)
    assert [m.shape for m in maps] == [bl.fluence_map_shape(b) for b in range(3)]
    np.testing.assert_array_equal(bl.from_fluence_maps(maps), x)
    assert sum(m.sum() for m in maps) == pytest.approx(x.sum())


def test_divergence_projects_to_isocentre_plane():
    # A point 500 mm beyond the isocentre at x = 30 projects to u = 20 -> with no margin it
    # falls on the edge of beamlets [15, 20] and [20, 25].
    bl = beamlets_for_target(Beam(0), np.array([[30.0, 500.0, 2.0]]), margin_mm=0.0)
    assert sorted(bl.x_mm.tolist()) == [17.5, 22.5]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target_points_mm": np.zeros((0, 3))}, "non-empty"),
        ({"target_points_mm": np.zeros((3, 3)), "beamlet_width_mm": 0}, "positive"),
        ({"target_points_mm": np.zeros((3, 3)), "margin_mm": -1}, "margin_mm"),
    ],
)
def test_bad_beamlet_input(kw, match):
    with pytest.raises(InvalidGeometryError, match=match):
        beamlets_for_target(Beam(0), **kw)
