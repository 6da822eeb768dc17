"""Per-beamlet collapsed-cone influence matrices (voxels × beamlets, Gy per MU).

Each column is the collapsed-cone dose (:func:`dose_engine.collapsed_cone_dose`) of one
beamlet's rectangle at 1 MU: the beam's rays are traced once, each beamlet's TERMA is its
own aperture fluence times the beam's TERMA per unit fluence
(:func:`dose_engine._ccc_terma.released_per_fluence`), and batches of beamlets are
transported together as if they were beams (one set of cone kernels per beam).  Aperture
fluence, TERMA and transport are linear, so the columns of an open field's beamlets sum to
the field's collapsed-cone dose up to the dropped small entries.

The work is one transport per beamlet: a few hundred times a field's dose for a patient's
few hundred beamlets.  Use it when the optimisation should see the heterogeneity directly
(lung, small fields), on coarse dose grids; the pencil-beam matrix plus the final-dose
correction loop is the fast route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from array_api_compat import array_namespace

from ._arguments import ARRAY, check_arguments, sequence_of
from ._backend import get_backend, to_numpy
from ._beam import Beam
from ._beamlets import Beamlets
from ._ccc import OPTIMISATION_CONES, _transport_grid
from ._ccc_commission import CCCCommissioning, load_ccc_commissioning
from ._ccc_cones import ConeKernels, cone_directions, cone_kernels, with_beam_axes
from ._ccc_terma import TermaPoints, aperture_fluence, terma_points
from ._ccc_transport import collapsed_cone_transport
from ._field_dose import check_inputs
from ._grid import Grid
from ._influence import DEFAULT_RELATIVE_THRESHOLD, InfluenceMatrix, _column_max_estimate
from ._limits import check_limit
from ._model import BeamModel, load_beam_model
from ._resample import resample
from .errors import InvalidGeometryError

__all__ = ["compute_ccc_influence_matrix"]

logger = logging.getLogger("rtplan.dose_engine")

#: Part of the settings of a collapsed-cone matrix; bumped whenever computed values change.
CODE_VERSION = "ccc-influence-1"
#: Beamlets transported together by default (memory: a few transport-grid copies each).
DEFAULT_BATCH = 8


@check_arguments(
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
    beams=sequence_of("dose_engine._beam:Beam"),
    beamlets="dose_engine._beamlets:Beamlets",
)
def compute_ccc_influence_matrix(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beams: Sequence[Beam],
    beamlets: Beamlets,
    model: BeamModel | None = None,
    *,
    cones: int = OPTIMISATION_CONES,
    commissioning: CCCCommissioning | None = None,
    backend: str = "numpy",
    voxel_mask=None,
    relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD,
    batch: int = DEFAULT_BATCH,
    progress: bool = True,
) -> InfluenceMatrix:
    """Collapsed-cone dose per MU of every beamlet on every dose-grid voxel.

    The same matrix format as :func:`compute_influence_matrix` (float32 CSR, rows every
    voxel of ``dose_grid`` in flat C order, columns the beamlets of all beams in beam order),
    with ``settings["algorithm"] == "ccc"``.

    Parameters
    ----------
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Density relative to water.
    ct_grid, dose_grid : Grid
        The transport runs on ``dose_grid`` (cropped to ``voxel_mask``'s bounding box).
    beams : sequence of Beam
    beamlets : Beamlets
        From :func:`beamlets_for_target`; beam indices refer to ``beams``.
    model : BeamModel, optional
        Default: the shipped 6 MV model.
    cones : int, keyword-only
        Transport directions (even, ≥ 24; default 48, the fewest meant for optimisation).
    commissioning : CCCCommissioning, optional, keyword-only
        Default: the shipped file for ``model``.
    backend : {"numpy", "cupy"}, keyword-only
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional, keyword-only
        Rows outside the mask stay empty.
    relative_threshold : float, keyword-only
        Entries below ``relative_threshold × D_ref`` are dropped, ``D_ref`` the reference
        beamlet maximum of :func:`compute_influence_matrix` (the same absolute floor as the
        pencil-beam matrix of the same beamlets).
    batch : int, keyword-only
        Beamlets transported together (more: fewer passes, more memory).
    progress : bool, keyword-only
        Show a tqdm progress bar over batches.

    Returns
    -------
    InfluenceMatrix

    Raises
    ------
    InvalidGeometryError
        Mismatched beams and beamlets, a beam's SAD other than the model's, a mask of
        another shape, a threshold outside [0, 1), ``batch`` < 1.
    BeamModelError
        ``model`` has no collapsed-cone commissioning.
    ResourceLimitError
        More voxel × beamlet pairs than the influence-matrix limit.

    Notes
    -----
    With ``relative_threshold=0`` the columns of an open field's beamlets sum to
    :func:`collapsed_cone_dose` of the field to float32 round-off; with the default
    threshold the sum is low by at most 1 % of the field's maximum for a 4 × 4 cm² field of
    1 cm beamlets (``tests/dose_engine/test_ccc_influence.py``).
    """
    model = load_beam_model() if model is None else model
    comm = load_ccc_commissioning(model) if commissioning is None else commissioning
    beams = list(beams)
    if not beams:
        raise InvalidGeometryError("`beams` is empty.")
    if beamlets.n_beams != len(beams):
        raise InvalidGeometryError(
            f"`beamlets` covers {beamlets.n_beams} beams but {len(beams)} beams were given; "
            "build them together with `beamlets_for_target(beams, ...)`."
        )
    if not (0 <= relative_threshold < 1):
        raise InvalidGeometryError(
            f"`relative_threshold` must lie in [0, 1); got {relative_threshold!r}."
        )
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise InvalidGeometryError(f"`batch` must be an integer ≥ 1; got {batch!r}.")
    for beam in beams:
        check_inputs(density, ct_grid, dose_grid, beam)
        if abs(beam.sad_mm - model.sad_mm) > 1e-6:
            raise InvalidGeometryError(
                f"Beam SAD {beam.sad_mm:g} mm differs from the beam model's {model.sad_mm:g} mm."
            )
    lattice = cone_directions(cones)
    grid, sl = _transport_grid(dose_grid, voxel_mask)
    n_rows = dose_grid.voxel_count
    check_limit(
        "influence_pairs",
        float(grid.voxel_count) * float(len(beamlets)),
        f"A collapsed-cone influence matrix of {grid.voxel_count:,} voxels × "
        f"{len(beamlets):,} beamlets",
        hint="Use a coarser dose grid or larger beamlets.",
    )
    be = get_backend(backend)
    xp = array_namespace(be.xp.zeros(1))
    dens = be.asarray(density, dtype=np.float32)
    rho = resample(dens, ct_grid, grid, order=1, fill_value=0.0)
    # dose-grid row of every transport-grid voxel, and which of them the mask keeps
    rows_all = np.arange(n_rows, dtype=np.int64).reshape(dose_grid.shape)[sl].ravel()
    keep_all = (
        np.ones(rows_all.shape, bool)
        if voxel_mask is None
        else np.asarray(voxel_mask, bool)[sl].ravel()
    )
    rows_all, keep_idx = rows_all[keep_all], np.flatnonzero(keep_all)
    jobs = []
    for b in range(len(beams)):
        rects = beamlets.rectangles_mm(b)
        offset = beamlets.beam_slice(b).start
        jobs += [(b, offset + i, rects[i : i + batch]) for i in range(0, len(rects), batch)]
    rows, cols, vals = [], [], []
    t0 = time.perf_counter()
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="ccc influence matrix", unit="batch")
    traced: tuple[int, TermaPoints, ConeKernels, np.ndarray] | None = None
    for b, first_col, rects in iterator:
        if traced is None or traced[0] != b:
            pts = terma_points(
                dens,
                ct_grid,
                grid,
                beams[b],
                comm.energies_mev,
                comm.part_weights(),
                xp=xp,
                map_fn=be.map,
            )
            directions = with_beam_axes(lattice, [beams[b].beam_axis])
            kern = cone_kernels(
                comm.kernel, comm.released_share(), [beams[b].beam_axis], directions
            )
            traced = (b, pts, kern, directions)
            w, h = beamlets.width_mm[first_col], beamlets.height_mm[first_col]
            floor = relative_threshold * _column_max_estimate(model, float(w), float(h))
        _, pts, kern, directions = traced
        n = len(rects)
        terma = xp.zeros((2, n, grid.voxel_count), dtype=xp.float32)
        for i, rect in enumerate(rects):
            flu = aperture_fluence(pts.u_mm, pts.v_mm, rect[None, :], np.ones(1), model, xp, be.map)
            terma[:, i, pts.flat_index] = xp.astype(flu * pts.released, xp.float32)
        kernels = ConeKernels(
            np.repeat(kern.fraction, n, axis=1), np.repeat(kern.coeff_per_mm, n, axis=1)
        )
        dose = collapsed_cone_transport(
            xp.reshape(terma, (2, n, *grid.shape)), rho, grid.spacing_mm, directions, kernels, be
        )
        del terma
        dose = to_numpy(xp.reshape(dose, (n, -1)))[:, keep_idx] * np.float32(comm.gy_per_unit)
        for i in range(n):
            nz = np.flatnonzero(dose[i] >= floor) if floor > 0 else np.flatnonzero(dose[i])
            rows.append(rows_all[nz])
            cols.append(np.full(nz.size, first_col + i, dtype=np.int64))
            vals.append(dose[i, nz].astype(np.float32))
    from scipy import sparse as sp

    matrix = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, len(beamlets)),
    ).tocsr()
    matrix.indices = matrix.indices.astype(np.int32)
    matrix.indptr = matrix.indptr.astype(np.int32 if matrix.nnz < 2**31 - 1 else np.int64)
    if be.name != "numpy":
        matrix = be.sparse.csr_matrix(matrix)
    elapsed = time.perf_counter() - t0
    prov = dict(model.provenance())
    prov.update(name=model.name, file=model.path, fingerprint=model.fingerprint())
    settings = {
        "algorithm": "ccc",
        "cones": int(cones),
        "relative_threshold": float(relative_threshold),
        "backend": be.name,
        "code_version": CODE_VERSION,
        "compute_time_s": elapsed,
    }
    logger.info(
        "collapsed-cone influence matrix %s × %s, nnz %d, %.1f s",
        *matrix.shape,
        matrix.nnz,
        elapsed,
    )
    return InfluenceMatrix(matrix, dose_grid, tuple(beams), beamlets, prov, settings)
