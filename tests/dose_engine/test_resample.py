"""dose_engine._resample.resample: trilinear resampling between axis-aligned grids."""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import Grid, InvalidGeometryError, _resample
from dose_engine._resample import resample


def linear_field(grid, coeffs=(3.0, 0.5, -0.25, 0.75)):
    z, y, x = np.meshgrid(*grid.zyx_axes_mm(), indexing="ij")
    a, b, c, d = coeffs
    return a + b * x + c * y + d * z


SRC = Grid((20, 22, 24), (-30.0, -27.5, -25.0), (2.5, 2.5, 2.5))


def test_trilinear_reproduces_linear_functions_exactly():
    dst = Grid((7, 9, 11), (-21.3, -17.9, -15.1), (3.1, 2.9, 3.3))  # inside SRC, off-grid
    out = resample(linear_field(SRC), SRC, dst)
    np.testing.assert_allclose(out, linear_field(dst), atol=1e-9)


def test_identity_and_dtypes():
    vol = np.random.default_rng(1).random(SRC.shape).astype(np.float32)
    out = resample(vol, SRC, SRC)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vol)
    ints = np.arange(SRC.voxel_count).reshape(SRC.shape)
    assert resample(ints, SRC, SRC).dtype == np.float64


def test_nearest_and_fill_value_outside():
    vol = np.arange(SRC.voxel_count, dtype=float).reshape(SRC.shape)
    # A grid whose first voxel is 0.4 voxel past voxel [3, 4, 5] and whose last lies outside.
    start = np.array(SRC.index_to_point((3, 4, 5))) + 0.4 * np.array(SRC.spacing_mm)
    dst = Grid((2, 1, 1), tuple(start), (1.0, 1.0, 200.0))
    out = resample(vol, SRC, dst, order=0, fill_value=-7.0)
    assert out[0, 0, 0] == vol[3, 4, 5]
    assert out[1, 0, 0] == -7.0


def test_chunked_equals_unchunked(monkeypatch):
    dst = SRC.with_spacing(3.0)
    vol = np.random.default_rng(2).random(SRC.shape)
    whole = resample(vol, SRC, dst)
    monkeypatch.setattr(_resample, "_CHUNK_VOXELS", 50)
    np.testing.assert_array_equal(resample(vol, SRC, dst), whole)


def test_bad_arguments():
    with pytest.raises(InvalidGeometryError, match=r"shape \(2, 2, 2\).*\(20, 22, 24\)"):
        resample(np.zeros((2, 2, 2)), SRC, SRC)
    with pytest.raises(InvalidGeometryError, match="order"):
        resample(np.zeros(SRC.shape), SRC, SRC, order=7)


def test_image_resample_uses_it():
    from rtplan import Image

    img = Image(linear_field(SRC).astype(np.float32), SRC)
    dst = SRC.with_spacing(3.0)
    out = img.resample(dst, fill_value=-1000.0)
    assert out.grid == dst and out.array.dtype == np.float32
    inside = dst.contains(dst.voxel_centres_mm())
    # Centres within the source's centre box get exact values, others the fill value.
    z, y, x = dst.zyx_axes_mm()
    zs, ys, xs = SRC.zyx_axes_mm()
    ok = (
        ((z >= zs[0]) & (z <= zs[-1]))[:, None, None]
        & ((y >= ys[0]) & (y <= ys[-1]))[None, :, None]
        & ((x >= xs[0]) & (x <= xs[-1]))[None, None, :]
    )
    assert inside.all()
    np.testing.assert_allclose(out.array[ok], linear_field(dst)[ok], atol=1e-3)
    assert np.all(out.array[~ok] == -1000.0)
    np.testing.assert_allclose(
        img.value_at([[0.1, 0.2, 0.3]]),
        linear_field(SRC).flat[0] * 0 + 3.0 + 0.5 * 0.1 - 0.25 * 0.2 + 0.75 * 0.3,
        atol=1e-4,
    )
