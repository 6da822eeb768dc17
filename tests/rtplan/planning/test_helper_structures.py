"""Automatic helper structures checked against analytic geometry."""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import Grid
from rtplan.errors import StructureError
from rtplan.planning._helper_structures import (
    build_helper_structures,
    distance_outside_mm,
    expanded_occupancy,
    gradient_level_gy,
    ring_occupancy,
)


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
    bands = {h.level_gy: h.volume_cc(grid) for h in out.values() if h.kind.endswith("band")}
    out = {n: h for n, h in out.items() if not h.kind.endswith("band")}
    assert sorted(out) == ["zLow_gradient", "zLow_low", "zRing_56Gy"]
    vol = {n: h.volume_cc(grid) for n, h in out.items()}
    # the gradient zone in three bands of 10/3 mm: shells 15-18.3, 18.3-21.7, 21.7-25 mm
    # relaxed to 70, 65.3 and 60.7 Gy; the partial voxels beyond 25 mm keep 56 Gy
    step = 10.0 / 3
    assert sorted(bands) == pytest.approx([56.0, 56 + 14 / 3, 56 + 28 / 3, 70.0], abs=1e-3)
    for k, level in enumerate((70.0, 56 + 28 / 3)):
        shell = shell_cc(15 + k * step, 15 + (k + 1) * step)
        got = next(v for lv, v in bands.items() if abs(lv - level) < 1e-3)
        assert got == pytest.approx(shell, rel=0.10)
    assert sum(bands.values()) == pytest.approx(vol["zLow_gradient"], rel=1e-6)
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


def test_gradient_level_falls_linearly_in_bands_and_takes_the_largest_gh19():
    """Own level 56 Gy, margin 9 mm, three bands of 3 mm: 70 Gy at the higher target's
    surface, two thirds and one third of the way down, then the own level; near a 63 Gy
    and a 70 Gy target at once the larger relaxed level applies."""
    d = np.array([0.0, 2.9, 3.0, 5.9, 6.0, 8.9, 9.0, 30.0])
    (lv,) = [gradient_level_gy(56.0, {70.0: d}, 9.0)]
    np.testing.assert_allclose(
        lv, [70, 70, 56 + 14 * 2 / 3, 56 + 14 * 2 / 3] + [56 + 14 / 3] * 2 + [56, 56]
    )
    both = gradient_level_gy(56.0, {63.0: np.array([0.0, 8.0]), 70.0: np.array([8.0, 8.0])}, 9.0)
    np.testing.assert_allclose(both, [63.0, 56 + 14 / 3])
    with pytest.raises(StructureError, match="no higher dose level"):
        gradient_level_gy(56.0, {}, 9.0)


def test_gradient_bands_follow_the_nearest_higher_level_gh19():
    """Three levels on a 1.5 mm grid: a 56 Gy sphere (r 30 mm) holding a 70 Gy sphere
    (r 6 mm) at x = -14 and a 63 Gy sphere (r 6 mm) at x = +14, 10 mm margin. Band voxels
    near the 63 Gy target and beyond the margin of the 70 Gy one are relaxed towards 63 Gy,
    never 70 Gy (the old rule capped the whole gradient zone at the top level); each band's
    level is the rule at the voxel's analytic distance from the spheres' surfaces. The
    voxelised surface lies within half a voxel diagonal (1.3 mm) of the analytic one:
    voxels that close to a band edge are not compared."""
    grid = Grid((43, 43, 43), (-31.5, -31.5, -31.5), (1.5, 1.5, 1.5))
    fns = {
        "High": sphere((-14, 0, 0), 6.0),
        "Mid": sphere((14, 0, 0), 6.0),
        "Low": sphere((0, 0, 0), 30.0),
    }
    out = build_helper_structures(
        fns,
        grid,
        targets=list(fns),
        oars=[],
        ring=False,
        overlap=False,
        normal_tissue=False,
        levels_gy={"High": 70.0, "Mid": 63.0, "Low": 56.0},
        transition_margin_mm=10.0,
    )
    bands = {n: h for n, h in out.items() if h.kind == "target_gradient_band"}
    # Mid is 16 mm from High, beyond the margin: only Low has a gradient zone
    assert {h.sources for h in bands.values()} == {("Low",)} and "zMid_low" in out
    z, y, x = grid.zyx_axes_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    d_high = np.sqrt((xx + 14) ** 2 + yy**2 + zz**2) - 6.0
    d_63 = np.minimum(np.sqrt((xx - 14) ** 2 + yy**2 + zz**2) - 6.0, d_high)
    step, slack = 10.0 / 3, 1.5 * np.sqrt(3) / 2

    def rule(level, d):
        return 56.0 + (level - 56.0) * np.clip(1 - np.floor(np.clip(d, 0, None) / step) / 3, 0, 1)

    exact = np.maximum(rule(70.0, d_high), rule(63.0, d_63))

    def near(d):  # within `slack` of a band edge, on either side
        r = np.mod(d, step)
        return (r < slack) | (r > step - slack)

    near_edge = near(d_high) | near(d_63)
    n_clean = 0
    for h in bands.values():
        m = h.occupancy > 0.5
        if (m & (d_high > 10.0 + slack)).any():  # near the 63 Gy target only
            assert h.level_gy <= 63.0
        clean = m & ~near_edge
        n_clean += int(clean.sum())
        np.testing.assert_allclose(exact[clean], h.level_gy, atol=1e-3)
    assert n_clean > 100
    assert {round(h.level_gy, 2) for h in bands.values()} >= {70.0, 65.33, 63.0, 60.67}
    # the bands partition the gradient zone
    total = sum(b.occupancy for b in bands.values())
    np.testing.assert_allclose(total, out["zLow_gradient"].occupancy, atol=1e-6)
