"""Regular voxel grids in DICOM patient coordinates (LPS, mm).

Convention (see ARCHITECTURE.md): volumes are arrays indexed ``[z, y, x]``; physical
vectors (origin, spacing, points) are ``(x, y, z)``.  A :class:`Grid` is always
axis-aligned with positive spacing: readers flip arrays so that column, row and slice
indices increase along patient +x (left), +y (posterior) and +z (superior).  The
origin is the *centre* of voxel ``[0, 0, 0]``; a voxel value lives at its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arguments import INTEGER, NUMBER, check_arguments, sequence_of
from ._limits import check_limit
from .errors import InvalidGeometryError

__all__ = ["Grid"]


def _as_triple(name: str, value, *, positive: bool = False) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InvalidGeometryError(f"`{name}` must be 3 finite numbers (x, y, z); got {value!r}.")
    if positive and np.any(arr <= 0):
        raise InvalidGeometryError(f"`{name}` must be positive; got {tuple(arr.tolist())}.")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@check_arguments(
    shape=sequence_of(INTEGER), origin_mm=sequence_of(NUMBER), spacing_mm=sequence_of(NUMBER)
)
@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in DICOM patient coordinates.

    Parameters
    ----------
    shape : (3,) tuple of int
        Number of voxels ``(nz, ny, nx)``, i.e. the shape of arrays on this grid.
    origin_mm : (3,) tuple of float, mm
        Patient position ``(x, y, z)`` of the centre of voxel ``[0, 0, 0]``.
    spacing_mm : (3,) tuple of float, mm
        Voxel size ``(dx, dy, dz)``; all positive.

    Examples
    --------
    A 30 × 20 × 10 grid of 2 × 2 × 3 mm voxels; arrays on it have shape ``(nz, ny, nx)``
    while points are ``(x, y, z)``:

    >>> from dose_engine import Grid
    >>> grid = Grid((10, 20, 30), origin_mm=(-29.0, -19.0, 0.0), spacing_mm=(2.0, 2.0, 3.0))
    >>> grid.voxel_count, grid.voxel_volume_cc
    (6000, 0.012)
    >>> grid.extent_mm  # (x, y, z) ranges from the outer voxel edges, mm
    ((-30.0, 30.0), (-20.0, 20.0), (-1.5, 28.5))
    >>> grid.point_to_index((1.0, 1.0, 27.0))  # (z, y, x) index of an LPS point
    array([ 9., 10., 15.])
    """

    shape: tuple[int, int, int]
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in np.asarray(self.shape).ravel())
        if len(shape) != 3 or min(shape) < 1:
            raise InvalidGeometryError(
                f"`shape` must be 3 positive voxel counts (nz, ny, nx); got {self.shape!r}."
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "origin_mm", _as_triple("origin_mm", self.origin_mm))
        object.__setattr__(
            self, "spacing_mm", _as_triple("spacing_mm", self.spacing_mm, positive=True)
        )

    # ------------------------------------------------------------------ sizes
    @property
    def voxel_count(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm³."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def extent_mm(self) -> tuple[tuple[float, float], ...]:
        """Outer box ``((x0, x1), (y0, y1), (z0, z1))`` covered by the voxels, in mm.

        The box runs from the low face of the first voxel to the high face of the last.
        """
        nz, ny, nx = self.shape
        counts = (nx, ny, nz)
        return tuple(
            (o - s / 2.0, o + (n - 0.5) * s)
            for o, s, n in zip(self.origin_mm, self.spacing_mm, counts, strict=True)
        )

    # ------------------------------------------------------------- coordinates
    def zyx_axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along each axis, ``(z, y, x)``, each a 1-D array in mm."""
        (x0, y0, z0), (dx, dy, dz) = self.origin_mm, self.spacing_mm
        nz, ny, nx = self.shape
        return (
            z0 + dz * np.arange(nz),
            y0 + dy * np.arange(ny),
            x0 + dx * np.arange(nx),
        )

    def index_to_point(self, zyx_index) -> np.ndarray:
        """Convert (possibly fractional) ``[z, y, x]`` indices to patient points.

        Parameters
        ----------
        zyx_index : (..., 3) array_like
            Indices in ``(z, y, x)`` order.

        Returns
        -------
        points_mm : (..., 3) ndarray of float, mm
            Points in ``(x, y, z)`` order.
        """
        idx = np.asarray(zyx_index, dtype=float)
        xyz_index = idx[..., ::-1]
        return np.asarray(self.origin_mm) + xyz_index * np.asarray(self.spacing_mm)

    def point_to_index(self, points_mm) -> np.ndarray:
        """Convert patient points ``(x, y, z)`` to fractional ``[z, y, x]`` indices.

        Parameters
        ----------
        points_mm : (..., 3) array_like, mm
            Points in ``(x, y, z)`` order.

        Returns
        -------
        zyx_index : (..., 3) ndarray of float
            Fractional indices; integers are voxel centres.
        """
        pts = np.asarray(points_mm, dtype=float)
        xyz_index = (pts - np.asarray(self.origin_mm)) / np.asarray(self.spacing_mm)
        return xyz_index[..., ::-1]

    def contains(self, points_mm) -> np.ndarray:
        """True where a point ``(x, y, z)`` lies inside the outer box of the grid."""
        pts = np.asarray(points_mm, dtype=float)
        inside = np.ones(pts.shape[:-1], dtype=bool)
        for axis, (lo, hi) in enumerate(self.extent_mm):
            inside &= (pts[..., axis] >= lo) & (pts[..., axis] <= hi)
        return inside

    def voxel_centres_mm(self) -> np.ndarray:
        """All voxel centres as an ``(nz, ny, nx, 3)`` array of ``(x, y, z)`` points in mm."""
        z, y, x = self.zyx_axes_mm()
        zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
        return np.stack([xx, yy, zz], axis=-1)

    # -------------------------------------------------------------- new grids
    def with_spacing(self, spacing_mm) -> Grid:
        """A grid with another voxel size covering (at least) the same box.

        The new grid is centred on the same box, so a coarser dose grid stays
        symmetric about the CT.

        Parameters
        ----------
        spacing_mm : float or (3,) tuple of float, mm
            New voxel size ``(dx, dy, dz)``, or one number for all three.
        """
        sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
        spacing = _as_triple("spacing_mm", sp, positive=True)
        lo = np.array([e[0] for e in self.extent_mm])
        hi = np.array([e[1] for e in self.extent_mm])
        float_counts = np.maximum(np.ceil((hi - lo) / np.asarray(spacing) - 1e-9), 1.0)
        check_limit(
            "grid_voxels",
            float(np.prod(float_counts)),
            f"A grid of {'×'.join(f'{v:g}' for v in spacing)} mm voxels over "
            f"{'×'.join(f'{v:.0f}' for v in hi - lo)} mm",
            hint="Use a coarser spacing.",
        )
        counts = float_counts.astype(int)
        centre = (lo + hi) / 2.0
        origin = centre - (counts - 1) * np.asarray(spacing) / 2.0
        return Grid((counts[2], counts[1], counts[0]), tuple(origin), spacing)

    def crop_to_box(self, lo_mm, hi_mm) -> tuple[Grid, tuple[slice, slice, slice]]:
        """The sub-grid of voxels whose centres lie inside the box ``[lo_mm, hi_mm]``.

        Returns
        -------
        grid : Grid
            The cropped grid (same spacing, aligned voxels).
        zyx_slices : tuple of slice
            Slices that cut an array on this grid down to ``grid``.
        """
        lo_idx = np.ceil(self.point_to_index(np.asarray(lo_mm, float)) - 1e-9)[::-1]
        hi_idx = np.floor(self.point_to_index(np.asarray(hi_mm, float)) + 1e-9)[::-1]
        nxyz = np.array(self.shape[::-1])
        lo_idx = np.clip(lo_idx, 0, nxyz - 1).astype(int)
        hi_idx = np.clip(hi_idx, 0, nxyz - 1).astype(int)
        if np.any(hi_idx < lo_idx):
            raise InvalidGeometryError(
                f"The box {tuple(lo_mm)}–{tuple(hi_mm)} mm does not overlap the grid "
                f"{self.extent_mm}."
            )
        slices_xyz = [slice(int(a), int(b) + 1) for a, b in zip(lo_idx, hi_idx, strict=True)]
        origin = self.index_to_point(lo_idx[::-1])
        nx, ny, nz = (int(b - a + 1) for a, b in zip(lo_idx, hi_idx, strict=True))
        sx, sy, sz = slices_xyz
        return Grid((nz, ny, nx), tuple(origin), self.spacing_mm), (sz, sy, sx)

    def __repr__(self) -> str:
        return (
            f"Grid(shape={self.shape}, origin_mm={tuple(round(v, 3) for v in self.origin_mm)}, "
            f"spacing_mm={tuple(round(v, 4) for v in self.spacing_mm)})"
        )
