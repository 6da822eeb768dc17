"""Even-odd contour rasterisation with fractional occupancy (``rtplan.structures._rasterize``,
``Structure``).

Checked against analytic volumes (sphere, ring with a hole), the shoelace area, and an
independent ray-casting point-in-polygon test written here.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtplan import Grid, Structure
from rtplan.errors import InputError, StructureError
from rtplan.structures._rasterize import DEFAULT_SUBSAMPLES, polygon_occupancy


def circle(cx, cy, r, n=720):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])


def on_plane(poly_xy, z):
    return np.column_stack([poly_xy, np.full(len(poly_xy), float(z))])


def sphere_structure(radius_mm, centre=(0.0, 0.0, 0.0), dz=2.5):
    cx, cy, cz = centre
    zs = cz + dz * np.arange(-np.ceil(radius_mm / dz), np.ceil(radius_mm / dz) + 1)
    contours = []
    for z in zs:
        r2 = radius_mm**2 - (z - cz) ** 2
        if r2 > 0:
            contours.append(on_plane(circle(cx, cy, np.sqrt(r2)), z))
    return Structure("Sphere", 1, "PTV", contours=contours)


def grid_around(half_mm, spacing, centre=(0.0, 0.0, 0.0)):
    n = int(np.ceil(2 * half_mm / spacing)) + 1
    origin = tuple(c - (n - 1) * spacing / 2 for c in centre)
    return Grid((n, n, n), origin, (spacing, spacing, spacing))


def shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def even_odd_contains(polygons, pts):
    """Independent ray casting (+x ray) over all polygons; True where crossings are odd."""
    inside = np.zeros(len(pts), dtype=bool)
    px, py = pts[:, 0][:, None], pts[:, 1][:, None]
    for p in polygons:
        xa, ya = p[:, 0][None, :], p[:, 1][None, :]
        xb, yb = np.roll(p[:, 0], -1)[None, :], np.roll(p[:, 1], -1)[None, :]
        straddle = (ya > py) != (yb > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= (np.count_nonzero(straddle & (px < x_cross), axis=1) % 2).astype(bool)
    return inside


# ------------------------------------------------------------------ analytic volumes
@pytest.mark.parametrize("grid_spacing", [2.5, 3.0, 2.0])
def test_sphere_volume_within_2_percent(grid_spacing):
    """Contoured on 2.5 mm planes; rasterised on the CT grid and on other dose grids."""
    radius = 30.0
    s = sphere_structure(radius)
    grid = grid_around(45.0, grid_spacing, centre=(0.4, -0.3, 0.0))
    expected = 4 / 3 * np.pi * radius**3 / 1000
    assert s.volume_cc(grid) == pytest.approx(expected, rel=0.02)
    # The centroid is the sphere centre.
    np.testing.assert_allclose(s.centroid_mm(grid), (0, 0, 0), atol=0.3)


def test_ring_with_hole_volume_and_hole_is_empty():
    r_out, r_in, length = 40.0, 20.0, 50.0
    zs = np.arange(-length / 2 + 1.25, length / 2, 2.5)  # 20 planes, slabs cover 50 mm
    contours = []
    for z in zs:
        contours.append(on_plane(circle(0, 0, r_out), z))
        contours.append(on_plane(circle(0, 0, r_in)[::-1], z))  # hole: either orientation
    ring = Structure("Ring", 2, "ORGAN", contours=contours)
    grid = Grid((24, 40, 40), (-48.75, -48.75, -28.75), (2.5, 2.5, 2.5))
    expected = np.pi * (r_out**2 - r_in**2) * length / 1000
    assert ring.volume_cc(grid) == pytest.approx(expected, rel=0.02)
    occ = ring.occupancy(grid)
    centre = grid.point_to_index((1.25, 1.25, 1.25)).round().astype(int)
    assert occ[tuple(centre)] == 0.0  # inside the hole
    assert occ[tuple(grid.point_to_index((30.0, 1.25, 1.25)).round().astype(int))] == 1.0


def test_overlapping_polygons_follow_even_odd_rule():
    a = np.array([[0, 0], [20, 0], [20, 20], [0, 20]], float)
    b = a + 10.0
    occ = polygon_occupancy([a, b], x0_mm=0.5, dx_mm=1, nx=30, y0_mm=0.5, dy_mm=1, ny=30)
    assert occ[5, 5] == 1 and occ[25, 25] == 1
    assert occ[15, 15] == 0  # covered twice: outside by even-odd
    assert occ.sum() == pytest.approx(2 * 400 - 2 * 100)


def test_exact_partial_pixel_occupancy():
    # A square offset by a quarter pixel: edge pixels are exactly 3/4 or 1/4 covered in x.
    sq = np.array([[0.75, 0.0], [2.75, 0.0], [2.75, 2.0], [0.75, 2.0]])
    occ = polygon_occupancy([sq], x0_mm=0.5, dx_mm=1, nx=4, y0_mm=0.5, dy_mm=1, ny=2)
    np.testing.assert_allclose(occ, [[0.25, 1, 0.75, 0], [0.25, 1, 0.75, 0]], atol=1e-6)


# ------------------------------------------------------------------ fuzzing
coords = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    pts=st.lists(st.tuples(coords, coords), min_size=3, max_size=12),
    hole=st.booleans(),
    dx=st.sampled_from([1.0, 1.7, 2.5]),
)
def test_fuzz_against_ray_casting(pts, hole, dx):
    """Random (possibly self-intersecting) polygons: voxels well away from every edge
    are exactly 0 or 1 and agree with an independent even-odd ray cast of their centre;
    the total never exceeds the polygon's bounding box."""
    poly = np.array(pts, dtype=float)
    polys = [poly] + ([poly * 0.4 + 1.0] if hole else [])
    n = int(np.ceil(50 / dx))
    x0 = -25.0 + dx / 2
    occ = polygon_occupancy(polys, x0_mm=x0, dx_mm=dx, nx=n, y0_mm=x0, dy_mm=dx, ny=n)
    assert occ.min() >= 0.0 and occ.max() <= 1.0
    yy, xx = np.meshgrid(x0 + dx * np.arange(n), x0 + dx * np.arange(n), indexing="ij")
    centres = np.column_stack([xx.ravel(), yy.ravel()])
    # Distance from each centre to the nearest edge.
    dist = np.full(len(centres), np.inf)
    for p in polys:
        a, b = p, np.roll(p, -1, axis=0)
        ab = b - a
        L2 = np.maximum((ab**2).sum(1), 1e-12)
        t = np.clip(((centres[:, None, :] - a[None]) * ab[None]).sum(-1) / L2, 0, 1)
        proj = a[None] + t[..., None] * ab[None]
        dist = np.minimum(dist, np.sqrt(((centres[:, None, :] - proj) ** 2).sum(-1)).min(1))
    clear = dist > dx * np.sqrt(2) / 2 + 1e-6
    expected = even_odd_contains(polys, centres).astype(np.float32)
    np.testing.assert_array_equal(occ.ravel()[clear], expected[clear])


@settings(max_examples=40, deadline=None)
@given(
    radii=st.lists(st.floats(3.0, 18.0), min_size=5, max_size=24),
    cx=st.floats(-3, 3),
    cy=st.floats(-3, 3),
)
def test_fuzz_star_polygon_area_within_bound(radii, cx, cy):
    """Simple (star-shaped) polygons: area = shoelace within the documented bound
    perimeter * dy / (2 * subsamples)."""
    t = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    r = np.asarray(radii)
    poly = np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])
    dx = 1.3
    occ = polygon_occupancy([poly], x0_mm=-25, dx_mm=dx, nx=40, y0_mm=-25, dy_mm=dx, ny=40)
    perimeter = np.sqrt((np.diff(np.vstack([poly, poly[:1]]), axis=0) ** 2).sum(1)).sum()
    bound = perimeter * dx / (2 * DEFAULT_SUBSAMPLES)
    assert abs(occ.sum() * dx * dx - shoelace(poly)) <= bound


# ------------------------------------------------------------------ plane matching
def test_contours_between_slices_use_nearest_plane_within_half_spacing():
    disc = circle(0, 0, 10.0)
    # Contour planes every 2.5 mm but offset by 1.0 mm from the grid's slice centres.
    s = Structure("D", 1, contours=[on_plane(disc, z) for z in np.arange(-9.0, 10.0, 2.5)])
    grid = Grid((20, 12, 12), (-13.75, -13.75, -23.75), (2.5, 2.5, 2.5))
    occ = s.occupancy(grid)
    filled = np.flatnonzero(occ.sum(axis=(1, 2)) > 0)
    z = grid.zyx_axes_mm()[0][filled]
    assert z.min() == pytest.approx(-8.75) and z.max() == pytest.approx(8.75)
    assert len(filled) == 8  # one grid slice per contour plane


def test_single_plane_contour_lands_on_nearest_slice_only():
    s = Structure("P", 1, contours=[on_plane(circle(0, 0, 5.0), 1.1)])
    grid = Grid((5, 8, 8), (-8.75, -8.75, -5.0), (2.5, 2.5, 2.5))
    occ = s.occupancy(grid)
    assert list(np.flatnonzero(occ.sum(axis=(1, 2)))) == [2]  # z = 0.0 mm (1.1 mm away)


def test_coarse_grid_uses_planes_nearest_each_slice():
    # A 40 mm long cylinder contoured every 2.5 mm, rasterised on 6 mm slices.
    s = Structure(
        "C", 1, contours=[on_plane(circle(0, 0, 10.0), z) for z in np.arange(-18.75, 20.0, 2.5)]
    )
    grid = Grid((11, 12, 12), (-16.5, -16.5, -30.0), (3.0, 3.0, 6.0))
    assert s.volume_cc(grid) == pytest.approx(np.pi * 1.0 * 4.2, rel=0.05)  # 7 slabs * 6 mm


# ------------------------------------------------------------------ Structure API
def test_structure_views_are_consistent_and_copies():
    s = sphere_structure(12.0, centre=(10.0, -5.0, 2.5))
    grid = grid_around(30.0, 2.5)
    occ = s.occupancy(grid)
    occ[:] = 0  # must not touch the cache
    occ2 = s.occupancy(grid)
    assert occ2.dtype == np.float32 and occ2.max() == 1.0
    mask = s.mask(grid)
    assert mask.sum() == s.voxel_count(grid) == np.count_nonzero(occ2 >= 0.5)
    (z0, y0, x0), (z1, y1, x1) = s.voxel_bounding_box(grid)
    assert mask[:z0].sum() == mask[z1:].sum() == mask[:, :, x1:].sum() == 0
    assert mask[z0:z1, y0:y1, x0:x1].sum() == mask.sum()
    lo, hi = s.bounding_box
    np.testing.assert_allclose(lo, (-2, -17, -7.5), atol=0.05)
    np.testing.assert_allclose(hi, (22, 7, 12.5), atol=0.05)
    np.testing.assert_allclose(s.centroid_mm(grid), (10, -5, 2.5), atol=0.3)


def test_contour_with_two_points_is_an_input_error():
    with pytest.raises(InputError, match=r"'Bad'.*contour 1 has 2 point"):
        Structure("Bad", 7, contours=[on_plane(circle(0, 0, 3), 0), [[0, 0, 2.5], [1, 1, 2.5]]])


def test_non_axial_contour_is_refused():
    tilted = np.array([[0, 0, 0], [10, 0, 1], [10, 10, 2]], float)
    with pytest.raises(StructureError, match="not axial"):
        Structure("Tilted", 1, contours=[tilted])


def test_structure_pickles_without_its_cache():
    import pickle

    s = sphere_structure(10.0)
    grid = grid_around(15.0, 2.5)
    v = s.volume_cc(grid)
    t = pickle.loads(pickle.dumps(s))  # e.g. shipped to a Dask worker
    assert t._cache == {} and t.volume_cc(grid) == v


def test_islands_with_z_written_at_different_precision_share_a_plane():
    """Two islands of one plane whose z differ by 0.03 mm (e.g. -12.5 vs -12.53, written by
    different tools) must both land on the slice; a plane is 0.05 mm thick."""
    a = on_plane(circle(-20, 0, 8), -12.5)
    b = on_plane(circle(20, 0, 8), -12.53)
    b[::2, 2] = -12.51  # and noise within the contour itself
    s = Structure("Islands", 1, contours=[a, b])
    grid = Grid((3, 40, 60), (-59.5, -19.5, -15.0), (2.0, 1.0, 2.5))
    m = s.mask(grid)
    assert m[1, 20, 20] and m[1, 20, 40]  # both island centres on the z = -12.5 slice
    assert s.z_planes_mm.size == 1
    sloped = on_plane(circle(0, 0, 8), 0.0)
    sloped[:, 2] = np.linspace(0.0, 0.2, len(sloped))  # 0.2 mm > 0.05 mm: not one plane
    with pytest.raises(StructureError, match="not axial-planar"):
        Structure("Sloped", 1, contours=[sloped])
