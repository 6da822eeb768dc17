"""Closed planar contours from an occupancy map, one axial slice at a time.

The 0.5 iso-line of the fractional occupancy is traced with contourpy's marching squares
(the contour generator matplotlib uses) on each slice, padded with a ring of zeros so every
line is closed.  Iso-lines of one level never cross, so the RT-STRUCT even-odd rule
(a contour inside another is a hole) rebuilds exactly the region ``occupancy > 0.5`` up to
the linear interpolation of the boundary between voxel centres.
"""

from __future__ import annotations

import numpy as np

from dose_engine import Grid

from .._internal.arguments import ARRAY, check_arguments

__all__ = ["contours_from_occupancy"]

#: Iso-level traced.
LEVEL = 0.5


@check_arguments(occupancy=ARRAY, grid="dose_engine._grid:Grid")
def contours_from_occupancy(occupancy: np.ndarray, grid: Grid) -> list[np.ndarray]:
    """Closed planar contours of ``occupancy ≥ 0.5`` on every slice of ``grid``.

    Parameters
    ----------
    occupancy : (nz, ny, nx) ndarray of float
        Fractional occupancy on ``grid`` (voxel centres).
    grid : Grid

    Returns
    -------
    list of (n, 3) ndarray of float, mm
        Polygons ``(x, y, z)`` in LPS, each on the z of its slice, first point not repeated,
        ≥ 3 points; slices in +z order.
    """
    import contourpy

    occ = np.asarray(occupancy)
    if occ.shape != grid.shape:
        raise ValueError(f"`occupancy` has shape {occ.shape} but `grid` is {grid.shape}.")
    z_axis, y_axis, x_axis = grid.zyx_axes_mm()
    out: list[np.ndarray] = []
    for k in np.flatnonzero((occ >= LEVEL).any(axis=(1, 2))):
        inside = occ[k] > 0
        rows = np.flatnonzero(inside.any(axis=1))
        cols = np.flatnonzero(inside.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        # the slice's non-zero block plus a ring of zeros, so every line is closed
        plane = np.pad(np.asarray(occ[k, r0:r1, c0:c1], dtype=np.float64), 1)
        xs = _axis_with_ends(x_axis[c0:c1], grid.spacing_mm[0])
        ys = _axis_with_ends(y_axis[r0:r1], grid.spacing_mm[1])
        gen = contourpy.contour_generator(xs, ys, plane, line_type=contourpy.LineType.Separate)
        for line in gen.lines(LEVEL - 1e-6):
            pts = np.asarray(line, dtype=float)
            if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
                pts = pts[:-1]
            if len(pts) < 3:
                continue
            out.append(np.column_stack([pts, np.full(len(pts), float(z_axis[k]))]))
    return out


def _axis_with_ends(axis: np.ndarray, step: float) -> np.ndarray:
    return np.concatenate([[axis[0] - step], axis, [axis[-1] + step]])
