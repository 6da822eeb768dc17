"""Collapsed-cone convolution/superposition dose of apertures (a "type b" engine).

TERMA (:mod:`dose_engine._ccc_terma`) of every beam on a transport grid, transported by
the point kernels of :mod:`dose_engine._ccc_kernel` along the cones of
:mod:`dose_engine._ccc_cones` (:mod:`dose_engine._ccc_transport`), scaled to Gy by the
commissioning of :mod:`dose_engine._ccc_commission` (which ties it to the pencil-beam
model's measured data: same Gy/MU in water).  See ``docs/dose_algorithms.md``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence

import numpy as np
from array_api_compat import array_namespace

from ._arguments import ARRAY, check_arguments
from ._backend import get_backend
from ._beam import Beam
from ._ccc_commission import CCCCommissioning, load_ccc_commissioning
from ._ccc_cones import cone_directions, cone_kernels, with_beam_axes
from ._ccc_terma import TermaPoints, beam_terma, terma_points
from ._ccc_transport import collapsed_cone_transport
from ._field_dose import check_inputs
from ._grid import Grid
from ._model import BeamModel, check_rectangles, load_beam_model
from ._resample import resample
from .errors import InvalidGeometryError

__all__ = ["collapsed_cone_dose", "FINAL_CONES", "OPTIMISATION_CONES"]

logger = logging.getLogger("rtplan.dose_engine")

#: Default number of cones of a final dose.
FINAL_CONES = 72
#: Fewest cones meant for optimisation.
OPTIMISATION_CONES = 48


def _beam_mu(mu, n: int, b: int) -> np.ndarray:
    mus = (
        np.broadcast_to(np.asarray(mu, float), (n,)) if np.ndim(mu) == 0 else np.asarray(mu, float)
    )
    if mus.shape != (n,) or not np.all(np.isfinite(mus)):
        raise InvalidGeometryError(
            f"`mu[{b}]` must be one number or {n} finite numbers (one per rectangle of beam "
            f"{b}); got shape {np.shape(mu)}."
        )
    return mus


def _transport_grid(dose_grid: Grid, voxel_mask) -> tuple[Grid, tuple[slice, ...]]:
    """The dose grid cropped to the bounding box of ``voxel_mask`` (all of it without one)."""
    if voxel_mask is None:
        return dose_grid, (slice(None),) * 3
    mask = np.asarray(voxel_mask, dtype=bool)
    if mask.shape != tuple(dose_grid.shape):
        raise InvalidGeometryError(
            f"`voxel_mask` has shape {mask.shape} but `dose_grid` describes {dose_grid.shape} "
            "voxels."
        )
    if not mask.any():
        raise InvalidGeometryError("`voxel_mask` selects no voxel.")
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    sl = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi, strict=True))
    origin = dose_grid.index_to_point(lo)
    nz, ny, nx = (int(b - a + 1) for a, b in zip(lo, hi, strict=True))
    return Grid((nz, ny, nx), tuple(origin), dose_grid.spacing_mm), sl


def _terma_points(
    cache: MutableMapping | None, dens, ct_grid: Grid, grid: Grid, beam: Beam, comm, be, xp
) -> TermaPoints:
    """``beam``'s :class:`TermaPoints` on the transport grid, from ``cache`` when it holds
    them (else traced, and kept there)."""
    # the rays carry the spectrum's attenuation: a beam of another model traces anew
    spectrum = (np.asarray(comm.energies_mev).tobytes(), comm.part_weights().tobytes())
    key = ("ccc", beam, be.name, grid, spectrum)
    points = None if cache is None else cache.get(key)
    if points is None:
        points = terma_points(
            dens, ct_grid, grid, beam, comm.energies_mev, comm.part_weights(), xp=xp, map_fn=be.map
        )
        if cache is not None:
            cache[key] = points
    return points


@check_arguments(
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
)
def collapsed_cone_dose(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beams: Sequence[Beam],
    rectangles_mm: Sequence,
    mu: Sequence,
    model: BeamModel | None = None,
    *,
    cones: int = FINAL_CONES,
    commissioning: CCCCommissioning | None = None,
    backend: str = "numpy",
    voxel_mask=None,
    per_beam: bool = False,
    points_cache: MutableMapping | None = None,
):
    """Collapsed-cone dose of several beams' apertures (the counterpart of :func:`field_dose`).

    Parameters
    ----------
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Density relative to water.
    ct_grid, dose_grid : Grid
        The transport runs on ``dose_grid`` (cropped to ``voxel_mask``'s box).
    beams : sequence of Beam
    rectangles_mm : sequence of (n_b, 4) array_like, mm
        Each beam's aperture: ``[x1, x2, y1, y2]`` rectangles in the isocentre plane.
    mu : sequence of float or (n_b,) array_like, MU
        Each beam's meterset per rectangle (one number: the same for all its rectangles).
    model : BeamModel, optional
        Pencil-beam model whose fluence (source, head scatter, horn) and calibration are
        used (default: the shipped 6 MV model).
    cones : int, keyword-only
        Transport directions shared by the beams (even, ≥ 24; 48 for optimisation, 72
        (default) to 96 for a final dose); each beam adds both senses of its own axis
        (:func:`~dose_engine._ccc_cones.with_beam_axes`).
    commissioning : CCCCommissioning, optional, keyword-only
        Default: the shipped file for ``model`` (:func:`load_ccc_commissioning`).
    backend : {"numpy", "cupy"}, keyword-only
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional, keyword-only
        Voxels to return (others 0); the transport covers their bounding box.
    per_beam : bool, keyword-only
        Return each beam's dose instead of their sum.
    points_cache : dict, optional, keyword-only
        Keeps each beam's rays through the transport grid (:class:`TermaPoints`, keyed by
        beam, backend, transport grid and the commissioning's spectrum, whose attenuation
        they carry): filled on the first call and reused by later ones, which skip the ray
        tracing (the largest part of a dose after the fluence).  Only for doses on the
        same ``density`` and ``ct_grid`` (planning's final-dose correction loop computes
        the same beams' doses again).

    Returns
    -------
    dose : (nz, ny, nx) array of float32, Gy, on the backend's device
        Or ``(nb, nz, ny, nx)`` with ``per_beam``.

    Raises
    ------
    InvalidGeometryError
        Mismatched beams / apertures / MU, an empty rectangle, an isocentre outside the CT.
    BeamModelError
        ``model`` has no collapsed-cone commissioning.
    """
    model = load_beam_model() if model is None else model
    comm = load_ccc_commissioning(model) if commissioning is None else commissioning
    beams = list(beams)
    if not beams or len(rectangles_mm) != len(beams) or len(mu) != len(beams):
        raise InvalidGeometryError(
            f"`beams`, `rectangles_mm` and `mu` must be non-empty and of equal length; got "
            f"{len(beams)}, {len(rectangles_mm)}, {len(mu)}."
        )
    apertures = []
    for b, (beam, rects, m) in enumerate(zip(beams, rectangles_mm, mu, strict=True)):
        if not isinstance(beam, Beam):
            raise InvalidGeometryError(f"`beams[{b}]` must be a Beam; got {type(beam).__name__}.")
        if abs(beam.sad_mm - model.sad_mm) > 1e-6:
            raise InvalidGeometryError(
                f"Beam {b} SAD {beam.sad_mm:g} mm differs from the beam model's "
                f"{model.sad_mm:g} mm."
            )
        check_inputs(density, ct_grid, dose_grid, beam)
        r = check_rectangles(rects)
        apertures.append((r, _beam_mu(m, r.shape[0], b)))
    lattice = cone_directions(cones)
    directions = with_beam_axes(lattice, [b.beam_axis for b in beams])
    be = get_backend(backend)
    xp = array_namespace(be.xp.zeros(1))
    grid, sl = _transport_grid(dose_grid, voxel_mask)
    dens = be.asarray(density, dtype=np.float32)
    rho = resample(dens, ct_grid, grid, order=1, fill_value=0.0)
    terma = xp.stack(
        [
            beam_terma(
                _terma_points(points_cache, dens, ct_grid, grid, beam, comm, be, xp),
                grid,
                r,
                m,
                model,
                xp=xp,
                map_fn=be.map,
            )
            for beam, (r, m) in zip(beams, apertures, strict=True)
        ],
        axis=1,
    )
    kernels = cone_kernels(
        comm.kernel,
        comm.released_share(),
        [b.beam_axis for b in beams],
        directions,
        shared=len(lattice),
    )
    part = collapsed_cone_transport(terma, rho, grid.spacing_mm, directions, kernels, be)
    if not per_beam:
        part = xp.sum(part, axis=0, keepdims=True)
    out = xp.zeros((part.shape[0], *dose_grid.shape), dtype=xp.float32)
    out[(slice(None), *sl)] = xp.astype(part * comm.gy_per_unit, xp.float32)
    if voxel_mask is not None:
        out = xp.where(be.asarray(np.asarray(voxel_mask, bool))[None], out, xp.zeros_like(out))
    logger.debug("collapsed_cone_dose: %d beams, %d cones, grid %s", len(beams), cones, grid)
    return out if per_beam else out[0]
