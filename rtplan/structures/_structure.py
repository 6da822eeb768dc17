"""A region of interest: :class:`Structure` (contours → fractional masks on any grid)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose_engine import Grid

from ..errors import StructureError
from ._rasterize import (
    DEFAULT_SUBSAMPLES,
    PLANE_TOLERANCE_MM,
    group_planes,
    rasterize_contours,
)

__all__ = ["Structure"]


@dataclass(frozen=True, eq=False)
class Structure:
    """One region of interest of an RT Structure Set.

    Parameters
    ----------
    name : str
        (3006,0026) *ROIName*.
    number : int
        (3006,0022) *ROINumber*.
    roi_type : str
        (3006,00A4) *RTROIInterpretedType* ("PTV", "CTV", "ORGAN", "EXTERNAL", ...), ""
        if absent.
    color_rgb : (3,) tuple of int or None
        (3006,002A) *ROIDisplayColor*, 0-255.
    contours : list of (n, 3) ndarray of float, mm
        CLOSED_PLANAR polygons, points ``(x, y, z)`` in DICOM patient coordinates (LPS);
        each polygon lies on one axial plane and is implicitly closed.
    points_mm : (m, 3) ndarray of float, mm
        POINT contours (e.g. an isocentre marker), ``(x, y, z)`` LPS; ``(0, 3)`` if none.

    Notes
    -----
    Rasterisations are cached per grid inside the object (cropped to the structure's
    bounding block, so the cache costs little memory); the arrays returned are fresh
    copies the caller may modify.
    """

    name: str
    number: int
    roi_type: str = ""
    color_rgb: tuple[int, int, int] | None = None
    contours: list = field(default_factory=list)
    points_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "contours", [np.asarray(c, dtype=float).reshape(-1, 3) for c in self.contours]
        )
        object.__setattr__(
            self, "points_mm", np.asarray(self.points_mm, dtype=float).reshape(-1, 3)
        )
        for i, c in enumerate(self.contours):
            if len(c) < 3:
                raise StructureError(
                    f"Structure '{self.name}' (ROI {self.number}): contour {i} has {len(c)} "
                    "point(s); a closed planar contour needs at least 3. Remove or redraw it."
                )
            if np.ptp(c[:, 2]) > PLANE_TOLERANCE_MM:
                raise StructureError(
                    f"Structure '{self.name}' (ROI {self.number}): contour {i} is not axial-"
                    f"planar (z spans {c[:, 2].min():.3f}..{c[:, 2].max():.3f} mm); only "
                    "contours on one axial plane can be rasterised."
                )

    def __getstate__(self) -> dict:
        # The raster cache and its lock stay behind (locks do not pickle; Dask ships
        # patients between processes).
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_lock", threading.Lock())

    # ------------------------------------------------------------------ geometry
    @property
    def is_empty(self) -> bool:
        """True when the ROI has neither closed contours nor points."""
        return not self.contours and len(self.points_mm) == 0

    @property
    def is_point(self) -> bool:
        """True for a ROI made only of POINT contours."""
        return not self.contours and len(self.points_mm) > 0

    @property
    def z_planes_mm(self) -> np.ndarray:
        """Sorted z positions (mm) of the contour planes."""
        planes, _ = group_planes(np.array([c[0, 2] for c in self.contours]))
        return planes

    @property
    def bounding_box(self) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """``((x_min, y_min, z_min), (x_max, y_max, z_max))`` of all contour and point
        vertices, LPS mm (closed box); None for an empty ROI."""
        pts = [*self.contours, self.points_mm]
        allp = np.concatenate(pts) if pts else np.zeros((0, 3))
        if len(allp) == 0:
            return None
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        return tuple(float(v) for v in lo), tuple(float(v) for v in hi)

    # --------------------------------------------------------------- raster views
    def _block(self, grid: Grid, subsamples: int) -> tuple[tuple[slice, ...], np.ndarray]:
        key = (grid, int(subsamples))
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = rasterize_contours(self.contours, grid, subsamples=subsamples)
            hit[1].setflags(write=False)
            with self._lock:
                if len(self._cache) >= 8:  # keep a few grids, drop the oldest
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = hit
        return hit

    def occupancy_block(
        self, grid: Grid, *, subsamples: int = DEFAULT_SUBSAMPLES
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Occupancy cropped to the structure: ``(zyx_slices, block)``.

        ``full[zyx_slices] = block`` rebuilds :meth:`occupancy`; ``block`` is read-only.
        """
        return self._block(grid, subsamples)

    def occupancy(self, grid: Grid, *, subsamples: int = DEFAULT_SUBSAMPLES) -> np.ndarray:
        """Fraction of each voxel inside the structure (in-plane partial volume).

        Parameters
        ----------
        grid : Grid
            Any axis-aligned grid in the structure's frame of reference (CT or dose grid).
        subsamples : int, optional
            Sub-rows per voxel row; see :mod:`rtplan.structures._rasterize` for the error bound.

        Returns
        -------
        occupancy : (nz, ny, nx) ndarray of float32
            In [0, 1].  Each grid slice uses the nearest contour plane within half the
            contour-plane spacing; the even-odd rule combines contours of one plane.
        """
        sl, block = self._block(grid, subsamples)
        out = np.zeros(grid.shape, dtype=np.float32)
        out[sl] = block
        return out

    def mask(self, grid: Grid, *, threshold: float = 0.5) -> np.ndarray:
        """Boolean ``(nz, ny, nx)`` mask: occupancy ≥ ``threshold`` (default 0.5)."""
        sl, block = self._block(grid, DEFAULT_SUBSAMPLES)
        out = np.zeros(grid.shape, dtype=bool)
        out[sl] = block >= threshold
        return out

    def volume_cc(self, grid: Grid) -> float:
        """Volume in cm³: sum of occupancy × voxel volume on ``grid``."""
        _, block = self._block(grid, DEFAULT_SUBSAMPLES)
        return float(block.sum(dtype=np.float64)) * grid.voxel_volume_cc

    def voxel_count(self, grid: Grid) -> int:
        """Number of voxels of :meth:`mask` on ``grid``."""
        _, block = self._block(grid, DEFAULT_SUBSAMPLES)
        return int(np.count_nonzero(block >= 0.5))

    def centroid_mm(self, grid: Grid) -> tuple[float, float, float] | None:
        """Occupancy-weighted centroid ``(x, y, z)`` in LPS mm (None if empty on ``grid``)."""
        sl, block = self._block(grid, DEFAULT_SUBSAMPLES)
        total = float(block.sum(dtype=np.float64))
        if total == 0.0:
            return None
        z, y, x = grid.zyx_axes_mm()
        z, y, x = z[sl[0]], y[sl[1]], x[sl[2]]
        cz = float(block.sum(axis=(1, 2), dtype=np.float64) @ z) / total
        cy = float(block.sum(axis=(0, 2), dtype=np.float64) @ y) / total
        cx = float(block.sum(axis=(0, 1), dtype=np.float64) @ x) / total
        return cx, cy, cz

    def voxel_bounding_box(
        self, grid: Grid
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """Half-open index box ``((z0, y0, x0), (z1, y1, x1))`` of :meth:`mask` on ``grid``."""
        sl, block = self._block(grid, DEFAULT_SUBSAMPLES)
        m = block >= 0.5
        if not m.any():
            return None
        lo, hi = [], []
        for axis, s in enumerate(sl):
            other = tuple(a for a in range(3) if a != axis)
            idx = np.flatnonzero(m.any(axis=other))
            lo.append(s.start + int(idx[0]))
            hi.append(s.start + int(idx[-1]) + 1)
        return tuple(lo), tuple(hi)

    def __repr__(self) -> str:
        kind = "points" if self.is_point else f"{len(self.contours)} contours"
        return (
            f"Structure(name={self.name!r}, number={self.number}, "
            f"roi_type={self.roi_type!r}, {kind})"
        )
