"""Even-odd rasterisation of planar contours onto voxel grids, with fractional occupancy.

The kernel :func:`polygon_occupancy` turns the closed polygons of one plane into the
fraction of each pixel's area that lies inside them, using the **even-odd rule** over all
polygons of the plane together (a polygon inside another is a hole; several disjoint
polygons are several islands), as RT-STRUCT closed planar contours are drawn.

Algorithm (a numpy scanline rasteriser, no Python loop over pixels or edges):

1. each pixel row is split into ``subsamples`` sub-rows; every polygon edge is
   intersected with the sub-row centre lines it spans (half-open rule
   ``min(y_a, y_b) <= y < max(y_a, y_b)``, so shared vertices count once and horizontal
   edges never);
2. crossings are sorted along each sub-row; by the even-odd rule they alternate
   entering (+1) and leaving (-1) the region;
3. the covered length of every pixel along the sub-row is computed *exactly* from the
   crossings with a second-difference array (two ``bincount`` scatters and one
   ``cumsum``);
4. the sub-row coverages are averaged to give the pixel's occupancy (the average is
   taken inside the scatter, so the work per pixel does not grow with ``subsamples``).

Error bound: along x the coverage is exact.  Along y it is the midpoint rule with
``subsamples`` sub-rows, exact wherever the boundary is a straight segment across a
sub-row (the covered length is then linear in y).  Where a vertex, a horizontal edge or a
kink falls inside a sub-row, that sub-row is misjudged by at most half its area, so a
pixel's occupancy is off by at most ``1 / (2 * subsamples)`` per such feature; summed over
a structure, the area error is at most ``perimeter_mm * dy_mm / (2 * subsamples)`` and in
practice far smaller because the errors of successive sub-rows cancel.  With the default
``subsamples=8`` a 1-voxel feature is within 6 % and smooth structures of a few cm are
within 0.1 % of the polygon area.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from dose_engine import Grid

__all__ = ["DEFAULT_SUBSAMPLES", "group_planes", "polygon_occupancy", "rasterize_contours"]

logger = logging.getLogger("rtplan.rasterize")

#: Sub-rows per pixel row used for fractional occupancy (see the module docstring).
DEFAULT_SUBSAMPLES = 8

#: Contour points whose z differ by at most this lie on the same plane (mm).  Wide enough
#: for z written with different precision by different tools (e.g. -12.5 and -12.52),
#: far below any slice spacing.
PLANE_TOLERANCE_MM = 0.05


def polygon_occupancy(
    polygons_xy_mm: Sequence[np.ndarray],
    *,
    x0_mm: float,
    dx_mm: float,
    nx: int,
    y0_mm: float,
    dy_mm: float,
    ny: int,
    subsamples: int = DEFAULT_SUBSAMPLES,
) -> np.ndarray:
    """Fraction of each pixel inside ``polygons_xy_mm`` by the even-odd rule.

    Parameters
    ----------
    polygons_xy_mm : sequence of (n, 2+) array_like, mm
        Closed polygons (first point need not be repeated) in the plane; only the first
        two columns ``(x, y)`` are used.  Even-odd over all polygons together.
    x0_mm, y0_mm : float, mm
        Centre of pixel column 0 and row 0.
    dx_mm, dy_mm : float, mm
        Pixel size along x (columns) and y (rows); positive.
    nx, ny : int
        Number of columns and rows.
    subsamples : int, optional
        Sub-rows per pixel row (see the module docstring for the error bound).

    Returns
    -------
    occupancy : (ny, nx) ndarray of float32
        Area fraction in [0, 1]; rows increase along +y, columns along +x.
    """
    out = np.zeros((int(ny), int(nx)), dtype=np.float32)
    polys = [np.asarray(p, dtype=float)[:, :2] for p in polygons_xy_mm if len(p) >= 3]
    if not polys or nx < 1 or ny < 1:
        return out
    s = int(subsamples)
    xa = np.concatenate([p[:, 0] for p in polys])
    ya = np.concatenate([p[:, 1] for p in polys])
    xb = np.concatenate([np.roll(p[:, 0], -1) for p in polys])
    yb = np.concatenate([np.roll(p[:, 1], -1) for p in polys])

    # Window of pixels the polygons can touch.
    i0 = max(0, int(np.floor((ya.min() - y0_mm) / dy_mm + 0.5)))
    i1 = min(ny - 1, int(np.floor((ya.max() - y0_mm) / dy_mm + 0.5)))
    j0 = max(0, int(np.floor((xa.min() - x0_mm) / dx_mm + 0.5)))
    j1 = min(nx - 1, int(np.floor((xa.max() - x0_mm) / dx_mm + 0.5)))
    if i1 < i0 or j1 < j0:
        return out
    width = j1 - j0 + 1
    n_sub = (i1 - i0 + 1) * s
    h = dy_mm / s
    c = y0_mm + (i0 - 0.5) * dy_mm + 0.5 * h  # centre of the first sub-row
    left = x0_mm + (j0 - 0.5) * dx_mm  # left face of the window

    # 1. Which sub-rows each edge crosses: y_r = c + r*h in [lo, hi).
    lo = np.minimum(ya, yb)
    hi = np.maximum(ya, yb)
    r_start = np.clip(np.ceil((lo - c) / h), 0, n_sub).astype(np.int64)
    r_end = np.clip(np.ceil((hi - c) / h), 0, n_sub).astype(np.int64)
    counts = r_end - r_start
    total = int(counts.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(counts.size), counts)
    offsets = np.cumsum(counts) - counts
    r = r_start[edge] + (np.arange(total) - offsets[edge])
    y = c + r * h
    ea, eb = ya[edge], yb[edge]
    x = xa[edge] + (y - ea) * (xb[edge] - xa[edge]) / (eb - ea)

    # 2. Sort along each sub-row; alternate +1 (enter) / -1 (leave).
    order = np.lexsort((x, r))
    r = r[order]
    x = x[order]
    rank = np.arange(total) - np.searchsorted(r, r, side="left")
    sign = 1.0 - 2.0 * (rank & 1)

    # 3. Exact covered length per pixel column (in units of dx) via second differences.
    #    Averaging the sub-rows commutes with the cumulative sum, so the scatter goes
    #    straight into pixel rows (weights / s) and one cumsum per pixel row remains.
    u = np.clip((x - left) / dx_mm, 0.0, float(width))
    k0 = np.ceil(u)
    frac = k0 - u
    k0 = k0.astype(np.int64)
    n_rows = i1 - i0 + 1
    row_base = (r // s) * (width + 2)
    size = n_rows * (width + 2)
    w = sign / s
    second = np.bincount(row_base + k0, weights=w * frac, minlength=size)
    second += np.bincount(row_base + k0 + 1, weights=w * (1.0 - frac), minlength=size)
    occ = np.cumsum(second.reshape(n_rows, width + 2), axis=1)[:, 1 : width + 1]

    # 4. Store, snapping float round-off so that empty and full pixels are exactly 0 / 1.
    occ = np.clip(occ, 0.0, 1.0)
    occ[occ < 1e-9] = 0.0
    occ[occ > 1.0 - 1e-9] = 1.0
    out[i0 : i1 + 1, j0 : j1 + 1] = occ
    return out


def group_planes(z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group contour z values into planes.

    Parameters
    ----------
    z_mm : (n_contours,) array_like, mm

    Returns
    -------
    planes_mm : (n_planes,) ndarray of float, mm
        Sorted plane positions (mean z of the contours on them).
    plane_of_contour : (n_contours,) ndarray of int
        Index into ``planes_mm`` for each contour.
    """
    z = np.asarray(z_mm, dtype=float)
    if z.size == 0:
        return np.zeros(0), np.zeros(0, dtype=int)
    order = np.argsort(z, kind="stable")
    zs = z[order]
    new_plane = np.concatenate([[True], np.diff(zs) > PLANE_TOLERANCE_MM])
    label_sorted = np.cumsum(new_plane) - 1
    labels = np.empty_like(label_sorted)
    labels[order] = label_sorted
    planes = np.bincount(label_sorted, weights=zs) / np.bincount(label_sorted)
    return planes, labels


def plane_spacing_mm(planes_mm: np.ndarray) -> float | None:
    """Typical distance between contour planes (median gap), or None for < 2 planes."""
    if len(planes_mm) < 2:
        return None
    return float(np.median(np.diff(planes_mm)))


def rasterize_contours(
    contours_mm: Sequence[np.ndarray],
    grid: Grid,
    *,
    subsamples: int = DEFAULT_SUBSAMPLES,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Rasterise closed planar contours onto ``grid`` (fractional in-plane occupancy).

    Each grid slice takes the contours of the **nearest contour plane**, provided it lies
    within half the contour-plane spacing (the slab the plane represents; for a single
    plane, half the grid's slice spacing).  This matches contours to CT slices when they
    coincide, tolerates contours drawn between slices, and gives the right shape on a
    coarser (or finer) dose grid.  Within a plane the even-odd rule combines all contours.

    Parameters
    ----------
    contours_mm : sequence of (n, 3) ndarray, mm
        Closed planar polygons, points ``(x, y, z)`` in LPS.
    grid : Grid
        Target grid.
    subsamples : int, optional
        See :func:`polygon_occupancy`.

    Returns
    -------
    zyx_slices : tuple of 3 slice
        Where the cropped block sits in a full ``grid.shape`` array (half-open).
    occupancy : ndarray of float32
        The cropped block of occupancy in [0, 1] (may have zero size).
    """
    empty = (slice(0, 0), slice(0, 0), slice(0, 0)), np.zeros((0, 0, 0), np.float32)
    contours = [np.asarray(c, dtype=float) for c in contours_mm if len(c) >= 3]
    if not contours:
        return empty
    planes, label = group_planes(np.array([c[0, 2] for c in contours]))
    spacing = plane_spacing_mm(planes)
    (x0, y0, _), (dx, dy, dz) = grid.origin_mm, grid.spacing_mm
    tol = 0.5 * (spacing if spacing is not None else dz) * (1 + 1e-9) + 1e-6
    z_axis, y_axis, x_axis = grid.zyx_axes_mm()
    nearest = np.clip(np.searchsorted(planes, z_axis), 1, max(1, len(planes) - 1))
    if len(planes) == 1:
        nearest = np.zeros(len(z_axis), dtype=int)
    else:
        left_closer = np.abs(z_axis - planes[nearest - 1]) <= np.abs(planes[nearest] - z_axis)
        nearest = np.where(left_closer, nearest - 1, nearest)
    use = np.abs(z_axis - planes[nearest]) <= tol
    if not use.any():
        return empty
    ks = np.flatnonzero(use)
    pts = np.concatenate(contours)
    jx0 = max(0, int(np.floor((pts[:, 0].min() - x0) / dx + 0.5)))
    jx1 = min(grid.shape[2] - 1, int(np.floor((pts[:, 0].max() - x0) / dx + 0.5)))
    iy0 = max(0, int(np.floor((pts[:, 1].min() - y0) / dy + 0.5)))
    iy1 = min(grid.shape[1] - 1, int(np.floor((pts[:, 1].max() - y0) / dy + 0.5)))
    if jx1 < jx0 or iy1 < iy0:
        return empty
    kz0, kz1 = int(ks[0]), int(ks[-1])
    block = np.zeros((kz1 - kz0 + 1, iy1 - iy0 + 1, jx1 - jx0 + 1), dtype=np.float32)
    by_plane: dict[int, list[np.ndarray]] = {}
    for c, p in zip(contours, label, strict=True):
        by_plane.setdefault(int(p), []).append(c)
    done: dict[int, np.ndarray] = {}
    for k in ks:
        p = int(nearest[k])
        if p not in done:
            done[p] = polygon_occupancy(
                by_plane[p],
                x0_mm=float(x_axis[jx0]),
                dx_mm=dx,
                nx=block.shape[2],
                y0_mm=float(y_axis[iy0]),
                dy_mm=dy,
                ny=block.shape[1],
                subsamples=subsamples,
            )
        block[k - kz0] = done[p]
    return (slice(kz0, kz1 + 1), slice(iy0, iy1 + 1), slice(jx0, jx1 + 1)), block
