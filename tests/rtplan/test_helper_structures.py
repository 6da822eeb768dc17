"""Automatic helper structures checked against analytic geometry."""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import Grid
from rtplan._helper_structures import (
    build_helper_structures,
    distance_outside_mm,
    expanded_occupancy,
    ring_occupancy,
)
from rtplan.errors import StructureError


def sphere(centre_mm, radius_mm):
    """Occupancy function of a sphere: 1 where the voxel centre is inside."""
    c = np.asarray(centre_mm, float)

    def occ(grid: Grid) -> np.ndarray:
        z, y, x = grid.zyx_axes_mm()
        zz, yy, xx = np.meshgrid(z - c[2], y - c[1], x - c[0], indexing="ij")
        return (xx**2 + yy**2 + zz**2 <= radius_mm**2).astype(np.float32)

    return occ


def shell_cc(r_in, r_out):
    return 4.0 / 3.0 * np.pi * (r_out**3 - r_in**3) / 1000.0


@pytest.mark.parametrize(("spacing", "radius"), [(2.0, 15.0), (3.0, 30.0), ((2.5, 2.5, 3.0), 20.0)])
def test_ring_volume_matches_analytic_shell(spacing, radius):
    grid = Grid((1, 1, 1), (0, 0, 0), (1, 1, 1))
    sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    n = np.ceil(2 * (radius + 30) / sp).astype(int)
    grid = Grid((n[2], n[1], n[0]), tuple(-(n - 1) / 2 * sp + 0.37), tuple(sp))
    occ = ring_occupancy(sphere((0, 0, 0), radius), grid, inner_mm=5.0, outer_mm=20.0)
    vol = occ.sum(dtype=np.float64) * grid.voxel_volume_cc
    expected = shell_cc(radius + 5.0, radius + 20.0)
    assert vol == pytest.approx(expected, rel=0.03)
    # no ring voxel inside the sphere or its 5 mm margin, none beyond 20 mm + a voxel
    r = np.linalg.norm(grid.voxel_centres_mm(), axis=-1)
    assert occ[r < radius + 5.0 - np.max(sp)].max() == 0
    assert occ[r > radius + 20.0 + np.max(sp)].max() == 0


def test_expansion_volume_matches_analytic_sphere():
    grid = Grid((40, 40, 40), (-58.5, -58.5, -58.5), (3.0, 3.0, 3.0))
    occ = expanded_occupancy(sphere((1, 2, 3), 20.0), grid, margin_mm=10.0)
    vol = occ.sum(dtype=np.float64) * grid.voxel_volume_cc
    assert vol == pytest.approx(4 / 3 * np.pi * 30.0**3 / 1000.0, rel=0.03)


def test_distance_uses_anisotropic_spacing():
    mask = np.zeros((5, 5, 5), bool)
    mask[2, 2, 2] = True
    d = distance_outside_mm(mask, (1.0, 2.0, 3.0))  # dx, dy, dz
    assert d[2, 2, 4] == pytest.approx(2.0)  # two steps along x
    assert d[2, 4, 2] == pytest.approx(4.0)  # two steps along y
    assert d[4, 2, 2] == pytest.approx(6.0)  # two steps along z
    assert d[3, 3, 3] == pytest.approx(np.sqrt(1 + 4 + 9))


def test_overlap_and_normal_tissue_helpers():
    grid = Grid((30, 30, 30), (-43.5, -43.5, -43.5), (3.0, 3.0, 3.0))
    ptv = sphere((0, 0, 0), 15.0)
    oar = sphere((18, 0, 0), 10.0)  # overlaps the PTV near x = 8..15 mm
    body = np.ones(grid.shape, np.float32)
    helpers = build_helper_structures(
        {"PTV": ptv, "OAR": oar},
        grid,
        targets=["PTV"],
        oars=["OAR"],
        body_occupancy=body,
        normal_tissue_margin_mm=6.0,
    )
    assert set(helpers) == {"zRing", "zPTV-OAR", "zOAR-PTV", "zNormalTissue"}
    p, o = ptv(grid) >= 0.5, oar(grid) >= 0.5
    assert (p & o).sum() > 0
    assert np.array_equal(helpers["zPTV-OAR"].mask, p & ~o)
    assert np.array_equal(helpers["zOAR-PTV"].mask, o & ~p)
    # normal tissue = everything beyond 6 mm from the PTV: analytic complement volume
    nt = helpers["zNormalTissue"].volume_cc(grid)
    total = grid.voxel_count * grid.voxel_volume_cc
    assert nt == pytest.approx(total - 4 / 3 * np.pi * 21.0**3 / 1000.0, rel=0.01)
    # ring clipped to body
    half_body = body.copy()
    half_body[:, :, :15] = 0
    h2 = build_helper_structures(
        {"PTV": ptv},
        grid,
        targets=["PTV"],
        oars=[],
        body_occupancy=half_body,
        overlap=False,
        normal_tissue=False,
    )
    assert h2["zRing"].occupancy[:, :, :15].max() == 0
    assert h2["zRing"].volume_cc(grid) == pytest.approx(
        helpers["zRing"].volume_cc(grid) / 2, rel=0.1
    )


def test_no_overlap_no_split_and_bad_arguments():
    grid = Grid((20, 20, 20), (-28.5, -28.5, -28.5), (3.0, 3.0, 3.0))
    helpers = build_helper_structures(
        {"PTV": sphere((0, 0, 0), 8.0), "OAR": sphere((25, 0, 0), 4.0)},
        grid,
        targets=["PTV"],
        oars=["OAR"],
    )
    assert "zPTV-OAR" not in helpers and "zOAR-PTV" not in helpers
    with pytest.raises(StructureError, match="inner_mm < outer_mm"):
        ring_occupancy(sphere((0, 0, 0), 8.0), grid, inner_mm=5, outer_mm=5)
    with pytest.raises(StructureError, match="odd integer"):
        ring_occupancy(sphere((0, 0, 0), 8.0), grid, inner_mm=1, outer_mm=5, supersample=2)
    with pytest.raises(StructureError, match="empty structure"):
        ring_occupancy(sphere((100, 0, 0), 1.0), grid, inner_mm=1, outer_mm=5)


def test_levels_split_the_lower_target_and_give_one_ring_per_level():
    """Nested spheres: a 70 Gy sphere r 15 mm inside a 56 Gy sphere r 40 mm, 10 mm margin.

    Analytic: the lower target beyond the margin is the shell 25 < r <= 40, the gradient
    zone 15 < r <= 25; the 70 Gy ring (20 < r <= 35) lies inside the 56 Gy target, so it
    is empty; the 56 Gy ring (45 < r <= 60) keeps clear of the 70 Gy target by 20 mm.
    """
    grid = Grid((45, 45, 45), (-66.0, -66.0, -66.0), (3.0, 3.0, 3.0))
    fns = {"High": sphere((0, 0, 0), 15.0), "Low": sphere((0, 0, 0), 40.0)}
    out = build_helper_structures(
        fns,
        grid,
        targets=["High", "Low"],
        oars=[],
        overlap=False,
        normal_tissue=False,
        levels_gy={"High": 70.0, "Low": 56.0},
        transition_margin_mm=10.0,
    )
    assert sorted(out) == ["zLow_gradient", "zLow_low", "zRing_56Gy"]
    vol = {n: h.volume_cc(grid) for n, h in out.items()}
    assert vol["zLow_low"] == pytest.approx(shell_cc(25.0, 40.0), rel=0.05)
    assert vol["zLow_gradient"] == pytest.approx(shell_cc(15.0, 25.0), rel=0.08)
    assert vol["zRing_56Gy"] == pytest.approx(shell_cc(45.0, 60.0), rel=0.05)
    assert out["zLow_low"].kind == "target_low" and out["zRing_56Gy"].sources == ("Low",)
    # one level: the ring is the single zRing around every target, as before
    single = build_helper_structures(
        fns, grid, targets=["High", "Low"], oars=[], overlap=False, normal_tissue=False
    )
    assert sorted(single) == ["zRing"]
    assert single["zRing"].volume_cc(grid) == pytest.approx(shell_cc(45.0, 60.0), rel=0.05)
