"""Influence matrices for a :class:`~rtplan.Patient`: the rtplan side of ``dose_engine``.

A few lines in a notebook::

    import rtplan
    patient = rtplan.phantoms.make_phantom("cshape")
    im = rtplan.influence_matrix(patient, target="PTV", n_beams=9, dose_grid_mm=3)
    im.matrix        # scipy CSR, float32, Gy/MU, voxels (flat C order) x beamlets
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dose_engine import (
    Beam,
    BeamModel,
    Grid,
    HUTable,
    InfluenceMatrix,
    beamlets_for_target,
    cached_influence_matrix,
    compute_ccc_influence_matrix,
    compute_influence_matrix,
    hu_to_density,
    isocenter_at_centroid,
)

from .._internal.arguments import check_arguments
from ..errors import InputError
from ..structures import body_outline
from ._plan_dose import (
    require_ct_volume,
    require_model_sad,
    resolve_beam_model,
    resolve_density_table,
)

__all__ = ["INFLUENCE_ALGORITHMS", "body_mask", "influence_matrix"]

logger = logging.getLogger("rtplan.influence")

#: Engines an influence matrix can come from: the pencil beam (fast; cached) and the
#: collapsed cone (one transport per beamlet; docs/dose_algorithms.md).
INFLUENCE_ALGORITHMS = ("pencil_beam", "ccc")


def body_mask(patient, dose_grid: Grid):
    """Union of the EXTERNAL structures on ``dose_grid`` (any overlap); without any, the
    body outline found in the CT (:func:`rtplan.structures.body_outline`).

    Voxels outside the body get no rows in the influence matrix (they would only hold
    dose in air or in the couch).
    """
    mask = None
    for s in patient.structures.values():
        if str(getattr(s, "roi_type", "")).upper() == "EXTERNAL" and not s.is_empty:
            occ = s.occupancy(dose_grid) > 0
            mask = occ if mask is None else (mask | occ)
    if mask is None:
        mask = body_outline(patient).occupancy(dose_grid) > 0
    return mask


def _compute(
    patient,
    dose_grid,
    beams,
    beamlets,
    *,
    backend,
    cache_dir,
    progress,
    model,
    table,
    algorithm,
    cones,
):
    density = hu_to_density(patient.ct.array, table)
    mask = body_mask(patient, dose_grid)
    common = dict(voxel_mask=mask, backend=backend, progress=progress)
    if algorithm == "ccc":
        return compute_ccc_influence_matrix(
            density, patient.ct.grid, dose_grid, beams, beamlets, model, cones=cones, **common
        )
    if cache_dir is not None:
        return cached_influence_matrix(
            density,
            patient.ct.grid,
            dose_grid,
            beams,
            beamlets,
            model,
            cache_dir=cache_dir,
            **common,
        )
    return compute_influence_matrix(
        density, patient.ct.grid, dose_grid, beams, beamlets, model, **common
    )


def check_influence_algorithm(algorithm, cones, cache_dir) -> None:
    """Refuse an unknown ``algorithm``, ``cones`` other than an even integer ≥ 48, or a
    ``cache_dir`` with the collapsed cone (the HDF5 cache holds pencil-beam matrices)."""
    if algorithm not in INFLUENCE_ALGORITHMS:
        raise InputError(
            f"`algorithm` must be one of {', '.join(INFLUENCE_ALGORITHMS)}; got {algorithm!r}."
        )
    if isinstance(cones, bool) or not isinstance(cones, int) or cones < 48 or cones % 2:
        raise InputError(
            f"`cones` must be an even integer ≥ 48 (the fewest meant for optimisation); "
            f"got {cones!r}."
        )
    if algorithm == "ccc" and cache_dir is not None:
        raise InputError(
            "`cache_dir` caches pencil-beam influence matrices only; compute the "
            "collapsed-cone matrix without it and save it with dose_engine.save_influence_matrix."
        )


@check_arguments(patient="rtplan.patient._patient:Patient")
def influence_matrix(
    patient,
    *,
    target: str = "PTV",
    n_beams: int = 9,
    gantry_angles_deg: Sequence[float] | None = None,
    collimator_angle_deg: float = 0.0,
    couch_angle_deg: float = 0.0,
    dose_grid_mm: float = 3.0,
    beamlet_mm: float = 5.0,
    margin_mm: float = 5.0,
    sad_mm: float = 1000.0,
    backend: str = "numpy",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    beam_model: BeamModel | str | os.PathLike | None = None,
    density_table: HUTable | str | os.PathLike | None = None,
    algorithm: str = "pencil_beam",
    cones: int = 48,
) -> InfluenceMatrix:
    """Influence matrix for a patient with sensible defaults.

    Isocentre at the target centroid, ``n_beams`` equispaced coplanar beams (or the given
    gantry angles), ``beamlet_mm`` square beamlets covering the target plus ``margin_mm``,
    a dose grid of ``dose_grid_mm`` covering the CT, rows restricted to the body (its
    EXTERNAL ROI, else the body outline found in the CT).

    Parameters
    ----------
    patient : rtplan.Patient
    target : str
        Name of the target structure (e.g. "PTV").
    n_beams : int
    gantry_angles_deg : sequence of float, optional
        Overrides ``n_beams``.
    dose_grid_mm : float
        Dose-grid spacing, mm.
    cache_dir : path, optional
        HDF5 cache folder; unchanged inputs load instead of recomputing.
    beam_model : dose_engine.BeamModel or path-like, optional
        A commissioned beam model or its JSON file (default: the shipped 6 MV model).
    density_table : dose_engine.HUTable or path-like, optional
        The scanner's CT-to-density table or its file (default: the shipped generic table;
        :func:`rtplan.dose.resolve_density_table`).
    algorithm : {"pencil_beam", "ccc"}
        The engine of every beamlet's dose: the pencil beam (default) or the collapsed cone
        (:func:`dose_engine.compute_ccc_influence_matrix`: one transport per beamlet, a few
        hundred times a field's dose; the matrix's ``settings["algorithm"]`` says which).
    cones : int
        Transport directions of the collapsed cone (even, ≥ 48; default 48).

        .. versionadded:: 0.1.0
           ``algorithm`` and ``cones``.

    Returns
    -------
    dose_engine.InfluenceMatrix

    Raises
    ------
    StructureError
        If ``target`` is not a structure of the patient (the message lists the names).
    InputError
        If the target covers no voxel of the dose grid, the beam model was fitted for
        another SAD than ``sad_mm``, the CT has fewer than 3 slices, ``algorithm`` is
        unknown, ``cones`` is not an even integer ≥ 48, or ``cache_dir`` is given with
        the collapsed cone.
    dose_engine.BeamModelError
        ``beam_model`` is a file that cannot be read as a beam model, or
        ``density_table`` one that cannot be read as a CT-to-density table, or
        ``algorithm="ccc"`` with a model that has no collapsed-cone commissioning.
    """
    check_influence_algorithm(algorithm, cones, cache_dir)
    require_ct_volume(patient, "an influence matrix")
    model = resolve_beam_model(beam_model)
    if algorithm == "ccc":
        from dose_engine._ccc_commission import load_ccc_commissioning

        load_ccc_commissioning(model)  # refused before any work
    table = resolve_density_table(density_table)
    require_model_sad(model, sad_mm, what="the requested beams")
    structure = patient.structure(target)
    dose_grid = patient.ct.grid.with_spacing(float(dose_grid_mm))
    occ = structure.occupancy(dose_grid)
    if not np.any(occ > 0):
        raise InputError(
            f"Target {target!r} covers no voxel of the {dose_grid_mm:g} mm dose grid; check "
            "the structure's contours."
        )
    iso = isocenter_at_centroid(occ, dose_grid)
    if gantry_angles_deg is None:
        gantry_angles_deg = [k * 360.0 / int(n_beams) for k in range(int(n_beams))]
    beams = [
        Beam(
            float(g),  # Beam refuses angles outside [0, 360): never wrapped
            collimator_angle_deg=collimator_angle_deg,
            couch_angle_deg=couch_angle_deg,
            isocenter_mm=iso,
            sad_mm=sad_mm,
            patient_position=patient.position,
        )
        for g in gantry_angles_deg
    ]
    points = dose_grid.index_to_point(np.argwhere(occ > 0))
    beamlets = beamlets_for_target(
        beams,
        points,
        beamlet_width_mm=beamlet_mm,
        beamlet_height_mm=beamlet_mm,
        margin_mm=margin_mm,
    )
    logger.info("%d beams, %d beamlets, dose grid %s", len(beams), len(beamlets), dose_grid)
    return _compute(
        patient,
        dose_grid,
        beams,
        beamlets,
        backend=backend,
        cache_dir=cache_dir,
        progress=progress,
        model=model,
        table=table,
        algorithm=algorithm,
        cones=cones,
    )
