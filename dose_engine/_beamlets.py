"""Beamlet (bixel) grids in the isocentre plane, aligned with the MLC.

Field coordinates are IEC 61217 BLD coordinates in the isocentre plane (mm): ``x`` along
leaf travel, ``y`` along leaf stacking.  Beamlet edges lie on a fixed lattice: ``x`` edges at
integer multiples of ``beamlet_width_mm`` and ``y`` edges at integer multiples of
``beamlet_height_mm`` from the central axis, so for a 5 mm leaf MLC the ``y`` edges coincide
with the leaf boundaries and a sequencer can map a fluence map row onto one leaf pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._arguments import ARRAY, check_arguments, either, sequence_of
from ._beam import Beam
from ._limits import check_limit
from .errors import InvalidGeometryError

__all__ = ["Beamlets", "beamlets_for_target"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Beamlets:
    """Table of beamlets of all beams, in beam order (the influence-matrix columns).

    Attributes
    ----------
    beam_index : (n,) ndarray of int32
        Index of the beam each beamlet belongs to (non-decreasing).
    x_mm, y_mm : (n,) ndarray of float64, mm
        Beamlet centre in BLD coordinates in the isocentre plane.
    width_mm, height_mm : (n,) ndarray of float64, mm
        Beamlet size along BLD x (leaf travel) and y (leaf stacking).
    row, col : (n,) ndarray of int32
        Position in the beam's 2-D fluence map: rows are leaf pairs ordered along +y,
        columns run along +x.
    map_origin_mm : (n_beams, 2) ndarray of float64, mm
        ``(x, y)`` centre of fluence-map cell ``[0, 0]`` of each beam.
    map_shapes : tuple of (int, int)
        ``(n_rows, n_cols)`` of each beam's fluence map.
    """

    beam_index: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    width_mm: np.ndarray
    height_mm: np.ndarray
    row: np.ndarray
    col: np.ndarray
    map_origin_mm: np.ndarray
    map_shapes: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.x_mm)
        for name in ("beam_index", "y_mm", "width_mm", "height_mm", "row", "col"):
            if len(getattr(self, name)) != n:
                raise InvalidGeometryError(
                    f"Beamlets.{name} has {len(getattr(self, name))} entries, expected {n}."
                )
        if np.any(np.asarray(self.width_mm) <= 0) or np.any(np.asarray(self.height_mm) <= 0):
            raise InvalidGeometryError("Every beamlet needs a positive width and height.")
        for name in ("beam_index", "row", "col"):
            object.__setattr__(self, name, _readonly(np.asarray(getattr(self, name), np.int32)))
        for name in ("x_mm", "y_mm", "width_mm", "height_mm", "map_origin_mm"):
            object.__setattr__(self, name, _readonly(np.asarray(getattr(self, name), float)))
        object.__setattr__(self, "map_shapes", tuple((int(a), int(b)) for a, b in self.map_shapes))

    # ----------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self.x_mm)

    @property
    def n_beams(self) -> int:
        """Number of beams the table covers."""
        return len(self.map_shapes)

    def beam_slice(self, beam: int) -> slice:
        """The columns (a contiguous slice) that belong to beam ``beam``."""
        idx = np.flatnonzero(self.beam_index == beam)
        if idx.size == 0:
            return slice(0, 0)
        return slice(int(idx[0]), int(idx[-1]) + 1)

    def fluence_map_shape(self, beam: int) -> tuple[int, int]:
        """``(n_rows, n_cols)`` of beam ``beam``'s 2-D fluence map (rows along +y)."""
        return self.map_shapes[beam]

    def rectangles_mm(self, beam: int | None = None) -> np.ndarray:
        """Beamlet rectangles ``[x1, x2, y1, y2]`` (mm, iso plane) as an ``(n, 4)`` array."""
        sl = slice(None) if beam is None else self.beam_slice(beam)
        x, y = self.x_mm[sl], self.y_mm[sl]
        hw, hh = self.width_mm[sl] / 2, self.height_mm[sl] / 2
        return np.stack([x - hw, x + hw, y - hh, y + hh], axis=1)

    # ------------------------------------------------------- vector <-> maps
    def to_fluence_maps(self, weights) -> list[np.ndarray]:
        """Scatter a per-beamlet vector (e.g. MU) into one 2-D map per beam (zeros elsewhere).

        Parameters
        ----------
        weights : (n,) array_like

        Returns
        -------
        maps : list of (n_rows, n_cols) ndarray of float64
        """
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != (len(self),):
            raise InvalidGeometryError(f"`weights` has {w.size} entries; expected {len(self)}.")
        maps = []
        for b, shape in enumerate(self.map_shapes):
            m = np.zeros(shape)
            sl = self.beam_slice(b)
            m[self.row[sl], self.col[sl]] = w[sl]
            maps.append(m)
        return maps

    def from_fluence_maps(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """Gather the beamlet vector from per-beam 2-D maps (inverse of :meth:`to_fluence_maps`)."""
        if len(maps) != self.n_beams:
            raise InvalidGeometryError(f"Got {len(maps)} maps for {self.n_beams} beams.")
        out = np.empty(len(self))
        for b, m in enumerate(maps):
            m = np.asarray(m, float)
            if m.shape != self.map_shapes[b]:
                raise InvalidGeometryError(
                    f"Map {b} has shape {m.shape}; expected {self.map_shapes[b]}."
                )
            sl = self.beam_slice(b)
            out[sl] = m[self.row[sl], self.col[sl]]
        return out

    def subset_beams(self, keep: Sequence[int]) -> Beamlets:
        """The beamlets of the beams ``keep`` (renumbered 0..len(keep)-1)."""
        parts = [np.flatnonzero(self.beam_index == b) for b in keep]
        idx = np.concatenate(parts) if parts else np.zeros(0, int)
        new_index = (
            np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
            if parts
            else np.zeros(0, int)
        )
        return Beamlets(
            new_index,
            self.x_mm[idx],
            self.y_mm[idx],
            self.width_mm[idx],
            self.height_mm[idx],
            self.row[idx],
            self.col[idx],
            self.map_origin_mm[list(keep)],
            tuple(self.map_shapes[b] for b in keep),
        )


@check_arguments(
    beams=either("dose_engine._beam:Beam", sequence_of("dose_engine._beam:Beam")),
    target_points_mm=ARRAY,
)
def beamlets_for_target(
    beams: Beam | Sequence[Beam],
    target_points_mm,
    *,
    beamlet_width_mm: float = 5.0,
    beamlet_height_mm: float = 5.0,
    margin_mm: float = 5.0,
) -> Beamlets:
    """Beamlets that cover the beam's-eye-view projection of a target plus a margin.

    Parameters
    ----------
    beams : Beam or sequence of Beam
    target_points_mm : (n, 3) array_like, mm
        Target points ``(x, y, z)`` in LPS (e.g. the centres of the target voxels).
    beamlet_width_mm : float
        Beamlet size along BLD x (leaf travel), mm.
    beamlet_height_mm : float
        Beamlet size along BLD y (leaf stacking) = MLC leaf width, mm.
    margin_mm : float
        A beamlet is kept when its rectangle, grown by ``margin_mm`` on each side,
        contains the projection (to the isocentre plane) of at least one target point.

    Returns
    -------
    Beamlets
        Columns in beam order; within a beam, row-major over the fluence map.
    """
    if isinstance(beams, Beam):
        beams = [beams]
    beams = list(beams)
    if not beams:
        raise InvalidGeometryError("`beams` is empty; pass at least one Beam.")
    w, h, m = float(beamlet_width_mm), float(beamlet_height_mm), float(margin_mm)
    if not (w > 0 and h > 0):
        raise InvalidGeometryError(
            f"Beamlet size must be positive; got {beamlet_width_mm!r} × {beamlet_height_mm!r} mm."
        )
    if not (m >= 0 and math.isfinite(m)):
        raise InvalidGeometryError(f"`margin_mm` must be ≥ 0; got {margin_mm!r}.")
    pts = np.asarray(target_points_mm, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise InvalidGeometryError(
            f"`target_points_mm` must be a non-empty (n, 3) array of (x, y, z) mm; got shape "
            f"{pts.shape}. Is the target structure empty on this grid?"
        )
    beams = list(beams)
    check_limit("beams", len(beams), f"A plan of {len(beams)} beams", hint="Use fewer beams.")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("b", "x", "y", "r", "c")}
    origins, shapes = [], []
    map_cells = 0.0
    for b, beam in enumerate(beams):
        u, v, z = beam.to_fan_coordinates(pts)
        if np.any(z <= 0):
            raise InvalidGeometryError(
                f"Beam {b} ({beam!r}): some target points lie behind the source."
            )
        # Cell k along x spans [k w, (k+1) w); a point marks all cells whose grown rectangle
        # [k w - m, (k+1) w + m] contains it.
        kx_lo = np.ceil((u - m) / w - 1).astype(int)
        kx_hi = np.floor((u + m) / w).astype(int)
        ky_lo = np.ceil((v - m) / h - 1).astype(int)
        ky_hi = np.floor((v + m) / h).astype(int)
        x0, x1 = int(kx_lo.min()), int(kx_hi.max())
        y0, y1 = int(ky_lo.min()), int(ky_hi.max())
        map_cells += float(y1 - y0 + 1) * float(x1 - x0 + 1)
        check_limit(
            "beamlet_map_cells",
            map_cells * len(beams) / (b + 1),
            f"Beamlets of {w:g} × {h:g} mm over the target from {len(beams)} beam(s)",
            hint="Use larger beamlets (e.g. 5 mm).",
        )
        occ = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
        for dy in range(int((ky_hi - ky_lo).max()) + 1):
            for dx in range(int((kx_hi - kx_lo).max()) + 1):
                ok = (ky_lo + dy <= ky_hi) & (kx_lo + dx <= kx_hi)
                occ[ky_lo[ok] + dy - y0, kx_lo[ok] + dx - x0] = True
        rows_any = np.flatnonzero(occ.any(axis=1))
        cols_any = np.flatnonzero(occ.any(axis=0))
        occ = occ[rows_any[0] : rows_any[-1] + 1, cols_any[0] : cols_any[-1] + 1]
        y0 += int(rows_any[0])
        x0 += int(cols_any[0])
        r, c = np.nonzero(occ)
        cols["b"].append(np.full(r.size, b))
        cols["x"].append((x0 + c + 0.5) * w)
        cols["y"].append((y0 + r + 0.5) * h)
        cols["r"].append(r)
        cols["c"].append(c)
        origins.append(((x0 + 0.5) * w, (y0 + 0.5) * h))
        shapes.append(occ.shape)
    n = sum(len(a) for a in cols["x"])
    return Beamlets(
        np.concatenate(cols["b"]),
        np.concatenate(cols["x"]),
        np.concatenate(cols["y"]),
        np.full(n, w),
        np.full(n, h),
        np.concatenate(cols["r"]),
        np.concatenate(cols["c"]),
        np.asarray(origins, float),
        tuple(shapes),
    )
