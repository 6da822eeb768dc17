"""Dose of rectangular apertures (open fields, MLC segments) on a dose grid."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ._arguments import ARRAY, check_arguments
from ._backend import get_backend, worker_count
from ._beam import Beam
from ._grid import Grid
from ._model import BeamModel, check_rectangles, load_beam_model, rectangle_dose
from ._raytrace import radiological_depth_at_points
from .errors import InvalidGeometryError

__all__ = ["BeamPoints", "field_dose", "in_collimator_frame", "prepare_beam_points", "ray_frame"]

logger = logging.getLogger("rtplan.dose_engine")

#: Points per chunk in :func:`field_dose` (fewer when that gives every CPU a chunk, or
#: when the aperture has more than ``CHUNK_ELEMENTS / CHUNK_POINTS`` distinct edges).  A
#: chunk's error-function arrays (points × edges, float32) then stay in the CPU caches:
#: 16,384 points of a 9-field C-shape beam took 2.3× less CPU time than 200,000.
CHUNK_POINTS = 16_384
#: Points × distinct edges (x and y) per chunk at most: a VMAT gantry angle's apertures,
#: sampled every 2 mm of leaf travel, have about 300 edges, and its kernel took 1.8× less
#: CPU time in chunks of 3,483 points than of 16,384 (C-shape body, 3 mm).
CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class BeamPoints:
    """Dose-grid voxels seen by one beam, in its fan coordinates (on the backend's device).

    Attributes
    ----------
    flat_index : (m,) array of int64
        C-order indices of the voxels in the dose grid.
    u_mm, v_mm : (m,) array of float64, mm
        BLD x / y of the ray through each voxel centre, in the isocentre plane.
    z_mm : (m,) array of float64, mm
        Distance from the source along the beam axis.
    depth_mm : (m,) array of float64, mm
        Radiological depth along the ray (exact ray tracing through the CT density).
    """

    flat_index: Any
    u_mm: Any
    v_mm: Any
    z_mm: Any
    depth_mm: Any


def ray_frame(beam: Beam) -> Beam:
    """``beam`` at collimator 0: the same source, axis and rays, whatever the collimator.

    :func:`field_dose` traces rays in this frame, so beams that differ only in their
    collimator angle (the two default VMAT arcs at the same gantry angle) share one trace.
    """
    return beam if beam.collimator_angle_deg == 0.0 else replace(beam, collimator_angle_deg=0.0)


def in_collimator_frame(pts: BeamPoints, beam: Beam) -> BeamPoints:
    """``pts`` of :func:`ray_frame` (``beam``) with ``u_mm``, ``v_mm`` in ``beam``'s BLD axes.

    A collimator rotation turns the BLD axes about the beam axis, so the fan coordinates
    rotate in the isocentre plane; ``z_mm``, the depths and the voxels stay.  At collimator
    0 ``pts`` itself is returned.
    """
    frame = ray_frame(beam)
    if frame is beam:
        return pts
    bx, by = beam.bld_x_axis, beam.bld_y_axis
    fx, fy = frame.bld_x_axis, frame.bld_y_axis
    a, b, c, d = (float(np.dot(p, q)) for p, q in ((bx, fx), (bx, fy), (by, fx), (by, fy)))
    return BeamPoints(
        pts.flat_index,
        pts.u_mm * a + pts.v_mm * b,
        pts.u_mm * c + pts.v_mm * d,
        pts.z_mm,
        pts.depth_mm,
    )


def check_inputs(density, ct_grid: Grid, dose_grid: Grid, beam: Beam) -> None:
    """Refuse mismatched arrays and beams whose isocentre lies outside the CT."""
    shape = tuple(getattr(density, "shape", ()))
    if len(shape) != 3 or shape != tuple(ct_grid.shape):
        raise InvalidGeometryError(
            f"`density` has shape {shape} but `ct_grid` describes {ct_grid.shape} voxels "
            "(nz, ny, nx); pass the density array that lives on `ct_grid`."
        )
    if not isinstance(dose_grid, Grid):
        raise InvalidGeometryError(f"`dose_grid` must be a Grid; got {type(dose_grid).__name__}.")
    if not bool(ct_grid.contains(np.asarray(beam.isocenter_mm))):
        ext = ", ".join(f"{a:.1f}..{b:.1f}" for a, b in ct_grid.extent_mm)
        raise InvalidGeometryError(
            f"Beam at gantry {beam.gantry_angle_deg:g}°: isocentre {beam.isocenter_mm} mm lies "
            f"outside the CT (x, y, z extent {ext} mm); place the isocentre inside the patient, "
            "e.g. with `isocenter_at_centroid`."
        )


def prepare_beam_points(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beam: Beam,
    *,
    voxel_mask=None,
    xp=None,
    lattice_mm: float | None = None,
    uv_box_mm=None,
    map_fn=None,
) -> BeamPoints:
    """Fan coordinates and radiological depth of the dose-grid voxels for one beam.

    Parameters
    ----------
    density : (nz, ny, nx) array on ``ct_grid`` (numpy or the backend's array type)
    ct_grid, dose_grid : Grid
    beam : Beam
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional
        Only these voxels (e.g. the body) are computed; the others get no dose.
    xp : namespace, optional
        Target array namespace (default: numpy).
    lattice_mm : float, optional
        Ray spacing in the isocentre plane (default: the smallest dose-grid spacing,
        at most 2.5 mm).
    uv_box_mm : (4,) sequence of float, optional
        ``(u_min, u_max, v_min, v_max)`` in the isocentre plane: keep only voxels whose ray
        passes through this box (the reach of a beam's beamlets).
    map_fn : callable, optional
        Runs the ray-tracing chunks (e.g. :meth:`Backend.map`; see
        :func:`~dose_engine._raytrace.trace_rays`).
    """
    xp = np if xp is None else xp
    if voxel_mask is None:
        flat = np.arange(dose_grid.voxel_count, dtype=np.int64)
    else:
        mask = np.asarray(voxel_mask)
        if mask.shape != tuple(dose_grid.shape):
            raise InvalidGeometryError(
                f"`voxel_mask` has shape {mask.shape} but `dose_grid` describes "
                f"{dose_grid.shape} voxels."
            )
        flat = np.flatnonzero(mask.ravel()).astype(np.int64)
    nz, ny, nx = dose_grid.shape
    iz, rem = np.divmod(flat, ny * nx)
    iy, ix = np.divmod(rem, nx)
    pts = dose_grid.index_to_point(np.stack([iz, iy, ix], axis=-1))
    u, v, z = beam.to_fan_coordinates(pts)
    front = z > 1.0
    if uv_box_mm is not None:
        u_lo, u_hi, v_lo, v_hi = (float(b) for b in uv_box_mm)
        front &= (u >= u_lo) & (u <= u_hi) & (v >= v_lo) & (v <= v_hi)
    flat, u, v, z = flat[front], u[front], v[front], z[front]
    if lattice_mm is None:
        lattice_mm = min(min(dose_grid.spacing_mm), 2.5)
    dens = density if not isinstance(density, np.ndarray) else xp.asarray(density)
    uu, vv, zz = xp.asarray(u), xp.asarray(v), xp.asarray(z)
    if flat.size == 0:
        depth = xp.zeros((0,), dtype=xp.float64)
    else:
        depth = radiological_depth_at_points(
            dens, ct_grid, beam, uu, vv, zz, lattice_mm=lattice_mm, map_fn=map_fn
        )
    return BeamPoints(xp.asarray(flat), uu, vv, zz, depth)


@check_arguments(
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
    beam="dose_engine._beam:Beam",
    rectangles_mm=ARRAY,
    mu=ARRAY,
)
def field_dose(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beam: Beam,
    rectangles_mm,
    mu,
    model: BeamModel | None = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
    points_cache: MutableMapping | None = None,
):
    """Dose of one beam's aperture, given as rectangles in the isocentre plane.

    Parameters
    ----------
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Electron density relative to water (see :func:`hu_to_density`).
    ct_grid : Grid
    dose_grid : Grid
        Where to compute dose (may be coarser than the CT, or a single line of voxels).
    beam : Beam
    rectangles_mm : (n, 4) array_like, mm
        ``[x1, x2, y1, y2]`` in IEC BLD coordinates in the isocentre plane; each open
        leaf-pair gap clipped by the jaws is one rectangle.
    mu : float or (n,) array_like, MU
        Meterset delivered through each rectangle (one number: the same for all).
    model : BeamModel, optional
        Default: the shipped 6 MV model.
    backend : {"numpy", "cupy"}
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional
        Compute only these voxels (others are 0).
    points_cache : dict, optional, keyword-only
        Keeps each beam's voxels in fan coordinates with their radiological depths
        (:class:`BeamPoints`, float32, keyed by ``(ray_frame(beam), backend)``): filled on
        the first call and reused by later ones, which skip the ray tracing.  The rays are
        traced in :func:`ray_frame` (``beam`` at collimator 0) and turned to the beam's
        collimator (:func:`in_collimator_frame`), so beams that differ only in collimator
        angle share an entry.  Only for doses on the same ``density``, grids and
        ``voxel_mask`` (planning's final-dose correction loop computes each beam's dose
        twice; the final dose of two arcs shares each gantry angle's trace).

    Returns
    -------
    dose : (nz, ny, nx) array of float32, Gy
        On the backend's device (numpy ndarray for ``"numpy"``).

    Raises
    ------
    InvalidGeometryError
        For an empty or negative rectangle, mismatched shapes, or an isocentre outside the CT.

    Examples
    --------
    The calibration condition: a 10 × 10 cm² field on water at SSD 100 cm (the isocentre on
    the surface) gives 1 cGy/MU at dmax, so 100 MU give 1 Gy at about 15 mm depth; at 10 cm
    depth the 6 MV beam has fallen to about two thirds.

    >>> import numpy as np
    >>> from dose_engine import Beam, Grid, field_dose
    >>> ct_grid = Grid((121, 121, 121), (-150.0, 1.25, -150.0), spacing_mm=(2.5, 2.5, 2.5))
    >>> water = np.ones(ct_grid.shape, np.float32)  # surface at y = 0 (the voxels' edge)
    >>> axis = Grid((1, 100, 1), origin_mm=(0.0, 0.5, 0.0), spacing_mm=(2.5, 1.0, 2.5))
    >>> beam = Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0))  # gantry 0: from anterior, along +y
    >>> dose_gy = field_dose(water, ct_grid, axis, beam, [-50.0, 50.0, -50.0, 50.0], 100.0)
    >>> depth_mm = axis.zyx_axes_mm()[1]
    >>> round(float(dose_gy.max()), 3), float(depth_mm[dose_gy[0, :, 0].argmax()])
    (1.0, 14.5)
    >>> round(float(dose_gy[0, 99, 0]), 3)  # 99.5 mm deep
    0.675
    """
    model = load_beam_model() if model is None else model
    rects = check_rectangles(rectangles_mm)
    mus = (
        np.broadcast_to(np.asarray(mu, dtype=float), (rects.shape[0],))
        if np.ndim(mu) == 0
        else np.asarray(mu, dtype=float)
    )
    if mus.shape != (rects.shape[0],) or not np.all(np.isfinite(mus)):
        raise InvalidGeometryError(
            f"`mu` must be one number or {rects.shape[0]} finite numbers (one per rectangle); "
            f"got shape {np.shape(mu)}."
        )
    if abs(beam.sad_mm - model.sad_mm) > 1e-6:
        raise InvalidGeometryError(
            f"Beam SAD {beam.sad_mm:g} mm differs from the beam model's {model.sad_mm:g} mm."
        )
    check_inputs(density, ct_grid, dose_grid, beam)
    be = get_backend(backend)
    xp = array_namespace(be.xp.zeros(1))  # array-API view of the backend (numpy / CuPy)
    frame = ray_frame(beam)
    key = (frame, backend)
    pts = None if points_cache is None else points_cache.get(key)
    if pts is None:
        pts = _float32_points(
            prepare_beam_points(
                density, ct_grid, dose_grid, frame, voxel_mask=voxel_mask, xp=xp, map_fn=be.map
            ),
            xp,
        )
        if points_cache is not None:
            points_cache[key] = pts
    pts = in_collimator_frame(pts, beam)
    out = xp.zeros((dose_grid.voxel_count,), dtype=xp.float32)
    m = int(pts.u_mm.shape[0])
    n_edges = np.unique(rects[:, :2]).size + np.unique(rects[:, 2:]).size
    chunk = max(1, min(CHUNK_POINTS, CHUNK_ELEMENTS // n_edges, -(-m // worker_count())))

    def chunk_dose(sl: slice):
        return rectangle_dose(
            pts.u_mm[sl], pts.v_mm[sl], pts.z_mm[sl], pts.depth_mm[sl], rects, mus, model
        )

    slices = [slice(start, min(start + chunk, m)) for start in range(0, m, chunk)]
    for sl, d in zip(slices, be.map(chunk_dose, slices), strict=True):
        out[pts.flat_index[sl]] = d
    logger.debug(
        "field_dose: %d voxels, %d rectangles, %.1f MU", m, rects.shape[0], float(mus.sum())
    )
    return xp.reshape(out, dose_grid.shape)


def _float32_points(pts: BeamPoints, xp) -> BeamPoints:
    """``pts`` with float32 coordinates and depths (the precision of the dose kernel)."""
    return BeamPoints(
        pts.flat_index,
        *(xp.astype(a, xp.float32) for a in (pts.u_mm, pts.v_mm, pts.z_mm, pts.depth_mm)),
    )
