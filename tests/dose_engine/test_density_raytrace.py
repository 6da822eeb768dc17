"""HU -> density table and exact (Siddon) ray tracing against analytic path lengths."""

import json

import array_api_strict as xps
import numpy as np
import pytest

from dose_engine import (
    Beam,
    BeamModelError,
    Grid,
    hu_to_density,
    load_hu_table,
    radiological_depth_at_points,
    trace_rays,
)


def test_default_table_points_and_clamping():
    t = load_hu_table()
    assert "Schneider" in t.source
    hu = np.array([-2000, -1000, -700, 0, 1000, 5000], np.float32)
    rho = hu_to_density(hu)
    assert rho.dtype == np.float32
    # -700 lies 1/3 of the way from -800 (0.2) to -500 (0.5) -> 0.3; clamped at both ends
    np.testing.assert_allclose(rho, [0.001, 0.001, 0.3, 1.0, 1.6, 2.8], rtol=1e-6)


def test_hu_table_non_monotonic_names_file_and_row(tmp_path):
    p = tmp_path / "bad_table.json"
    p.write_text(json.dumps({"table": [[-1000, 0.001], [0, 1.0], [500, 0.9], [1000, 1.6]]}))
    with pytest.raises(BeamModelError, match=r"bad_table\.json: row 2 .*monotonic"):
        load_hu_table(p)
    p.write_text(json.dumps({"table": [[-1000, 0.001], [0, 1.0], [0, 1.1]]}))
    with pytest.raises(BeamModelError, match=r"row 2 has HU 0 after 0"):
        load_hu_table(p)
    p.write_text(json.dumps({"rows": []}))
    with pytest.raises(BeamModelError, match="'table'"):
        load_hu_table(p)


def _box():
    # x -70..70, y -60..60, z -50..50 (2 mm voxels)
    return Grid((50, 60, 70), (-69, -59, -49), (2.0, 2.0, 2.0))


def test_trace_rays_slab_analytic():
    g = _box()
    rho = np.ones(g.shape, np.float32)
    rho[:, 30:40, :] = 0.25  # y in [0, 20): lung slab
    src = (0.0, -1000.0, 0.0)
    d = np.array([[0.0, 1.0, 0.0], [0.02, 1.0, -0.01]])
    d /= np.linalg.norm(d, axis=1)[:, None]
    ts = np.array([900.0, 950.0, 1000.0, 1010.0, 1030.0, 1100.0])
    got = trace_rays(rho, g, src, d, ts)
    # axis ray: surface at t=940; water to t=1000 (60), lung 1000..1020 (+5), water to the
    # far side of the box at t=1060 (+40), nothing beyond
    np.testing.assert_allclose(got[0], [0, 10, 60, 62.5, 75, 105], atol=1e-9)
    # oblique ray: path lengths scale with 1 / cos along y
    c = d[1, 1]
    y_at = -1000 + ts * c
    exp = (
        np.clip(np.minimum(y_at, 0) + 60, 0, None)
        + 0.25 * np.clip(np.minimum(y_at, 20), 0, None)
        + np.clip(np.minimum(y_at, 60) - 20, 0, None)
    )
    np.testing.assert_allclose(got[1], exp / c, atol=1e-9)


def test_radiological_depth_points_match_slant_depth():
    g = _box()
    rho = np.ones(g.shape, np.float32)
    b = Beam(0)
    pts = np.array([[0.0, 0.0, 0.0], [30.0, 20.0, 10.0], [-50.0, 55.0, -45.0]])
    u, v, z = b.to_fan_coordinates(pts)
    got = radiological_depth_at_points(rho, g, b, u, v, z, lattice_mm=2.0)
    src = b.source_position_mm
    exp = [np.linalg.norm(p - src) * (p[1] + 60.0) / (p[1] + 1000.0) for p in pts]
    np.testing.assert_allclose(got, exp, atol=1e-3)


def test_raytrace_array_api_strict_matches_numpy():
    g = _box()
    rho = np.random.default_rng(0).uniform(0.2, 2.0, g.shape)
    b = Beam(40.0, isocenter_mm=(5.0, -3.0, 2.0))
    pts = np.random.default_rng(1).uniform(-40, 40, (50, 3))
    u, v, z = b.to_fan_coordinates(pts)
    ref = radiological_depth_at_points(rho, g, b, u, v, z)
    got = radiological_depth_at_points(
        xps.asarray(rho), g, b, xps.asarray(u), xps.asarray(v), xps.asarray(z)
    )
    assert isinstance(got, type(xps.asarray(1.0)))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12)


def test_hu_to_density_array_api_strict_matches_numpy():
    hu = np.linspace(-1200, 3500, 97, dtype=np.float32).reshape(1, 1, 97)
    ref = hu_to_density(hu)
    got = hu_to_density(xps.asarray(hu))
    assert isinstance(got, type(xps.asarray(1.0)))
    np.testing.assert_array_equal(np.asarray(got), ref)
    # piecewise linear: the value halfway between two table rows is the mean of theirs
    t = load_hu_table()
    mid = (t.hu[:-1] + t.hu[1:]) / 2
    np.testing.assert_allclose(
        hu_to_density(mid.astype(np.float32)), (t.density[:-1] + t.density[1:]) / 2, rtol=1e-6
    )


def test_dose_at_a_voxel_does_not_depend_on_the_dose_grid_extent():
    # A water phantom with a lung slab (density 0.25) at 40-80 mm depth: the dose of the
    # voxels a cropped dose grid shares with the full grid must be the same (the depth
    # samples along each ray sit on multiples of the step from the source).
    from dose_engine import Beam, field_dose
    from dose_engine._validation import water_phantom

    dens, ct = water_phantom(900.0, spacing_mm=4.0, half_width_mm=40, depth_mm=120)
    y = ct.zyx_axes_mm()[1]
    dens[:, (y > -60) & (y < -20), :] = 0.25  # surface at y = -100 mm, beam along +y
    beam = Beam(0.0)
    grid = ct.with_spacing(3.0)  # dose voxels 3 mm, depth samples every 2 mm
    full = field_dose(dens, ct, grid, beam, [[-20, 20, -20, 20]], 100.0)
    cropped_grid, sl = grid.crop_to_box((-30.0, -68.0, -30.0), (30.0, 10.0, 30.0))
    cropped = field_dose(dens, ct, cropped_grid, beam, [[-20, 20, -20, 20]], 100.0)
    np.testing.assert_allclose(cropped, full[sl], rtol=1e-6, atol=1e-7 * float(full.max()))
