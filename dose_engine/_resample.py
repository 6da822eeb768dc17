"""Resampling a volume from one axis-aligned :class:`~dose_engine.Grid` to another.

Both grids live in the same patient frame (DICOM LPS, mm) and are axis-aligned, so the
map from target voxel centres to fractional source indices is separable: one 1-D
affine map per axis.  The interpolation itself is ``ndimage.map_coordinates`` from the
backend of the input array (:mod:`scipy.ndimage` for numpy, :mod:`cupyx.scipy.ndimage`
for CuPy), so the same code runs on either device.
"""

from __future__ import annotations

from typing import Any

from ._backend import array_namespace, backend_of
from ._grid import Grid
from .errors import InvalidGeometryError

__all__ = ["resample"]

#: Target voxels processed per ``map_coordinates`` call (bounds the (3, n) coordinate buffer).
_CHUNK_VOXELS = 4_000_000


def _snap(index, n: int, tol: float = 1e-6):
    """Snap fractional indices within ``tol`` of the end centres onto them (host numpy).

    Without this, rounding can put a target centre that coincides with the first or
    last source centre a hair outside ``[0, n - 1]``, where ``map_coordinates`` returns
    the fill value.
    """
    import numpy as np

    index = np.asarray(index, dtype=float)
    index = np.where(np.abs(index) < tol, 0.0, index)
    return np.where(np.abs(index - (n - 1)) < tol, float(n - 1), index)


def resample(
    volume: Any,
    from_grid: Grid,
    to_grid: Grid,
    *,
    order: int = 1,
    fill_value: float = 0.0,
) -> Any:
    """Interpolate ``volume`` (on ``from_grid``) at the voxel centres of ``to_grid``.

    Parameters
    ----------
    volume : (nz, ny, nx) array (numpy or CuPy)
        Values at the voxel centres of ``from_grid``, indexed ``[z, y, x]``.
    from_grid : Grid
        Grid of ``volume``; ``volume.shape`` must equal ``from_grid.shape``.
    to_grid : Grid
        Grid whose voxel centres are sampled (same LPS frame, mm).
    order : int, optional
        Spline order of ``map_coordinates``: 0 nearest, 1 trilinear (default), up to 5.
    fill_value : float, optional
        Value for target voxel centres outside the box spanned by the source voxel
        *centres* (``mode="constant"``, ``cval=fill_value``).

    Returns
    -------
    resampled : (to_grid.shape) array, same array type and floating dtype as ``volume``
        ``float32`` input stays ``float32``; integer input becomes ``float64``.

    Raises
    ------
    InvalidGeometryError
        If ``volume`` does not have the shape of ``from_grid`` or ``order`` is not 0–5.

    Notes
    -----
    The target centre ``p`` maps to the fractional source index
    ``(p - from_grid.origin_mm) / from_grid.spacing_mm`` on each axis; this is exact
    for axis-aligned grids.  With ``order=1`` a target point that coincides with a source
    centre returns that voxel's value exactly.
    """
    backend = backend_of(volume)
    xp = array_namespace(volume)  # compat namespace: isdtype etc. on numpy and CuPy alike
    if getattr(volume, "ndim", None) != 3 or tuple(volume.shape) != tuple(from_grid.shape):
        raise InvalidGeometryError(
            f"`volume` has shape {tuple(getattr(volume, 'shape', ()))} but `from_grid` describes "
            f"{from_grid.shape} voxels (nz, ny, nx); pass the grid the volume was computed on."
        )
    if int(order) != order or not 0 <= order <= 5:
        raise InvalidGeometryError(f"`order` must be an integer 0..5; got {order!r}.")
    dtype = volume.dtype if xp.isdtype(volume.dtype, "real floating") else xp.float64
    src = xp.asarray(volume, dtype=dtype)
    # Per-axis fractional source indices of the target voxel centres.
    z_mm, y_mm, x_mm = to_grid.zyx_axes_mm()
    (x0, y0, z0), (dx, dy, dz) = from_grid.origin_mm, from_grid.spacing_mm
    iz, iy, ix = (
        xp.asarray(_snap((axis - o) / d, n), dtype=dtype)
        for axis, o, d, n in zip(
            (z_mm, y_mm, x_mm), (z0, y0, x0), (dz, dy, dx), from_grid.shape, strict=True
        )
    )
    nz, ny, nx = to_grid.shape
    out = xp.empty((nz, ny, nx), dtype=dtype)
    slab = max(1, _CHUNK_VOXELS // (ny * nx))
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        cz, cy, cx = xp.meshgrid(iz[k0:k1], iy, ix, indexing="ij")
        coords = xp.stack([cz, cy, cx])
        out[k0:k1] = backend.ndimage.map_coordinates(
            src,
            coords,
            order=int(order),
            mode="constant",
            cval=float(fill_value),
            prefilter=order > 1,
        )
    return out
