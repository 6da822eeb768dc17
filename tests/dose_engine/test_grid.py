"""Grid coordinate conversions, checked against hand-computed tables."""

import numpy as np
import pytest

from dose_engine import Grid, InvalidGeometryError


@pytest.fixture
def grid():
    return Grid(shape=(4, 5, 6), origin_mm=(-10.0, 20.0, 5.0), spacing_mm=(2.0, 3.0, 2.5))


@pytest.mark.parametrize(
    "zyx, xyz",
    [
        ((0, 0, 0), (-10.0, 20.0, 5.0)),
        ((1, 0, 0), (-10.0, 20.0, 7.5)),
        ((0, 1, 0), (-10.0, 23.0, 5.0)),
        ((0, 0, 1), (-8.0, 20.0, 5.0)),
        ((3, 4, 5), (0.0, 32.0, 12.5)),
        ((0.5, 0.5, 0.5), (-9.0, 21.5, 6.25)),
    ],
)
def test_index_point_table(grid, zyx, xyz):
    np.testing.assert_allclose(grid.index_to_point(zyx), xyz)
    np.testing.assert_allclose(grid.point_to_index(xyz), zyx)


def test_axes_and_extent(grid):
    z, y, x = grid.zyx_axes_mm()
    np.testing.assert_allclose(x, [-10, -8, -6, -4, -2, 0])
    np.testing.assert_allclose(z, [5, 7.5, 10, 12.5])
    assert grid.extent_mm[0] == (-11.0, 1.0)
    assert grid.voxel_count == 120
    assert grid.voxel_volume_cc == pytest.approx(0.015)
    centres = grid.voxel_centres_mm()
    assert centres.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(centres[3, 4, 5], (0.0, 32.0, 12.5))


def test_with_spacing_covers_same_box(grid):
    coarse = grid.with_spacing(3.0)
    assert coarse.spacing_mm == (3.0, 3.0, 3.0)
    for (lo, hi), (clo, chi) in zip(grid.extent_mm, coarse.extent_mm, strict=True):
        assert clo <= lo + 1e-9 and chi >= hi - 1e-9
        assert (clo + chi) / 2 == pytest.approx((lo + hi) / 2)


def test_crop_to_box(grid):
    sub, slices = grid.crop_to_box((-8.0, 22.0, 7.0), (-4.0, 30.0, 10.0))
    arr = np.arange(grid.voxel_count).reshape(grid.shape)
    assert arr[slices].shape == sub.shape == (2, 3, 3)
    np.testing.assert_allclose(sub.origin_mm, (-8.0, 23.0, 7.5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(0, 2, 2), origin_mm=(0, 0, 0), spacing_mm=(1, 1, 1)), "shape"),
        (dict(shape=(2, 2), origin_mm=(0, 0, 0), spacing_mm=(1, 1, 1)), "shape"),
        (dict(shape=(2, 2, 2), origin_mm=(0, 0), spacing_mm=(1, 1, 1)), "origin_mm"),
        (dict(shape=(2, 2, 2), origin_mm=(0, 0, 0), spacing_mm=(1, -1, 1)), "spacing_mm"),
        (dict(shape=(2, 2, 2), origin_mm=(0, np.nan, 0), spacing_mm=(1, 1, 1)), "origin_mm"),
    ],
)
def test_bad_grid(kwargs, match):
    with pytest.raises(InvalidGeometryError, match=match):
        Grid(**kwargs)
