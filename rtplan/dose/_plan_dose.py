"""Dose of a deliverable plan: every segment of every beam through the dose engine.

This is the final-dose step of planning and the independent "second check" of any
RT-PLAN read by :func:`rtplan.io.read_rtplan`: each beam's dose comes from its apertures
(:func:`rtplan.dose.aperture_dose`, the one segment → rectangles → dose path).  Segment
meterset is the total over all fractions, so the result is the total plan dose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose_engine import BeamModel, Grid, HUTable, to_numpy

from .._internal.arguments import require_instance
from ..errors import InputError
from ..patient._patient import Patient
from ..structures import body_grid, body_structure
from ._aperture import (
    beam_doses_by_frame,
    beam_rectangles_mm,
    frame_group_doses,
    frame_groups,
    resolve_mlc_parameters,
    static_parts,
)
from ._distributed import distributed_group_doses
from ._models import BeamModels, beam_model_key, key_label, resolve_beam_models

__all__ = [
    "ALGORITHM_LABELS",
    "DOSE_ALGORITHMS",
    "DOSE_QUANTITY",
    "PlanDose",
    "beam_model_fluence_mode",
    "compute_plan_dose",
    "require_model_sad",
    "resolve_beam_model",
    "resolve_density_table",
]

log = logging.getLogger("rtplan.recalc")

#: Dose algorithms of :func:`compute_plan_dose`: the pencil beam (the planning engine) and
#: the collapsed-cone convolution/superposition (``dose_engine.collapsed_cone_dose``).
DOSE_ALGORITHMS: tuple[str, ...] = ("pencil_beam", "ccc")
#: How each dose algorithm is named in what rtplan writes (RT-DOSE SeriesDescription and
#: DoseComment, plan.json, report.html).
ALGORITHM_LABELS = {"pencil_beam": "pencil beam", "ccc": "collapsed cone"}
#: What both engines compute: water kernels (pencil beam: water depth doses) scaled by the
#: CT's density, i.e. dose to water (not dose to medium).
DOSE_QUANTITY = "dose to water"


@dataclass(frozen=True, eq=False)
class PlanDose:
    """Total dose of a plan on a dose grid.

    Attributes
    ----------
    dose_gy : (Z, Y, X) ndarray of float64, Gy
        Total over all fractions, at the voxel centres of ``grid``.
    grid : dose_engine.Grid
        Dose grid (LPS, mm), covering the CT.
    beam_max_gy : dict of int to float
        Maximum dose of each beam alone, keyed by beam number (a quick sanity figure).
    algorithm : {"pencil_beam", "ccc"}
        The dose algorithm that computed it (see :data:`DOSE_ALGORITHMS`).
    beam_models : dict of int to str
        The beam model of each beam, keyed by beam number (``"10X 'name'"``).
    """

    dose_gy: np.ndarray
    grid: Grid
    beam_max_gy: dict
    algorithm: str = "pencil_beam"
    beam_models: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"PlanDose(max={float(self.dose_gy.max()):.4g} Gy, grid={self.grid!r}, "
            f"beams={sorted(self.beam_max_gy)}, algorithm={self.algorithm!r})"
        )


def resolve_beam_model(beam_model: BeamModel | str | os.PathLike | None) -> BeamModel:
    """The beam model to compute dose with.

    Parameters
    ----------
    beam_model : dose_engine.BeamModel, path-like or None
        A model, a model JSON file (``python -m dose_engine.fit``) or ``None`` for the
        shipped 6 MV model.

    Returns
    -------
    dose_engine.BeamModel

    Raises
    ------
    dose_engine.BeamModelError
        The file is missing, unreadable, not JSON or lacks keys; the message names it.
    """
    from dose_engine import load_beam_model

    if isinstance(beam_model, BeamModel):
        return beam_model
    return load_beam_model(None if beam_model is None else os.fspath(beam_model))


def resolve_density_table(density_table: HUTable | str | os.PathLike | None) -> HUTable:
    """The CT-to-density table every dose is computed with.

    Parameters
    ----------
    density_table : dose_engine.HUTable, path-like or None
        A table, a clinic's calibration file (CSV, TOML or JSON: two columns, HU and
        relative electron or mass density; :func:`dose_engine.load_hu_table`) or ``None``
        for the shipped generic table.

    Returns
    -------
    dose_engine.HUTable

    Raises
    ------
    dose_engine.BeamModelError
        The file is unreadable, malformed or implausible; the message names it and the line.
    """
    from dose_engine import load_hu_table

    if isinstance(density_table, HUTable):
        return density_table
    return load_hu_table(None if density_table is None else os.fspath(density_table))


def beam_model_fluence_mode(model: BeamModel) -> str:
    """Fluence mode of a beam model: its file's ``"fluence_mode"``, else ``"STANDARD"``.

    ``"STANDARD"`` is a flattened beam, ``"FFF"`` a flattening-filter-free one; the RT-PLAN
    reader refuses beams of the other mode (:func:`rtplan.io.read_rtplan`).

    Parameters
    ----------
    model : dose_engine.BeamModel

    Returns
    -------
    str
    """
    return model.fluence_mode


def require_model_sad(model: BeamModel, sad_mm: float, *, what: str) -> None:
    """Refuse a beam model fitted for another source-axis distance.

    Parameters
    ----------
    model : dose_engine.BeamModel
    sad_mm : float, mm
        Source-axis distance of the machine or beam the model is to be used for.
    what : str
        That machine or beam, for the message (``"machine 'VarianMLC120'"``).

    Raises
    ------
    rtplan.errors.InputError
        The SADs differ by more than 1e-6 mm; the message names the model file and both SADs.
    """
    if abs(float(sad_mm) - model.sad_mm) > 1e-6:
        raise InputError(
            f"Beam model {model.path} ('{model.name}') was fitted for SAD {model.sad_mm:g} mm, "
            f"but {what} has SAD {float(sad_mm):g} mm; use a model commissioned for this machine."
        )


#: Fewest CT slices a dose is computed on: the CT is the patient, so one or two slices
#: model a slab a few mm thick (no scatter from beyond it) and every dose would be wrong.
MIN_CT_SLICES = 3


def require_ct_volume(patient, what: str) -> None:
    """Refuse a CT of fewer than :data:`MIN_CT_SLICES` slices before ``what`` is computed."""
    n_slices = patient.ct.grid.shape[0]
    if n_slices < MIN_CT_SLICES:
        raise InputError(
            f"The CT has {n_slices} slice(s); {what} needs a volume of at least "
            f"{MIN_CT_SLICES} slices covering the targets (dose, scatter and DVHs are 3-D). "
            "Load the complete CT series."
        )


def compute_plan_dose(
    plan,
    patient,
    *,
    dose_grid_mm: float = 3.0,
    dose_grid: Grid | None = None,
    model: BeamModel | BeamModels | str | os.PathLike | None = None,
    backend: str = "numpy",
    voxel_mask: np.ndarray | None = None,
    density_table: HUTable | str | os.PathLike | None = None,
    algorithm: str = "pencil_beam",
    points_cache: dict | None = None,
    client: Any = None,
) -> PlanDose:
    """Total dose of ``plan`` on ``patient``'s CT, in the body.

    The pencil beam computes the beams' static parts (a static beam, or an arc's gantry
    angles, :func:`~rtplan.dose._aperture.static_parts`) one ray frame at a time
    (:func:`~rtplan.dose._aperture.frame_groups`): parts that differ only in collimator
    angle, such as two arcs at the same gantry angle, share one ray tracing.

    Dose is computed on the voxels of the dose grid that the body touches (any overlap
    with the patient's EXTERNAL ROI, else the body outline found in the CT, as for the
    rows of :func:`rtplan.influence_matrix`); every other voxel holds 0 Gy. The work
    therefore scales with the body, not with the box around it or the field of view.

    Parameters
    ----------
    plan : rtplan.DeliverablePlan
        Or any object with ``beams`` (DeliverableBeam, whose segments hold the MU summed
        over all fractions).
    patient : rtplan.Patient
        CT in HU; converted to relative electron density by
        :func:`dose_engine.hu_to_density` with ``density_table``.
    dose_grid_mm : float, keyword-only
        Isotropic dose-grid spacing (mm) of a grid covering the body plus one dose voxel
        (:func:`rtplan.structures.body_grid`: the patient's EXTERNAL ROI, else the body
        outline found in the CT), as in planning; ignored when ``dose_grid`` is given.
    dose_grid : dose_engine.Grid, optional
        Explicit dose grid.
    model : dose_engine.BeamModel, path-like, BeamModels or a list of models, optional
        The beam models (:func:`rtplan.dose.resolve_beam_models`): each beam is computed
        with the one for its machine's nominal energy and fluence mode; a beam none is for
        is refused.  Default: the shipped models (6X, 10X, 6FFF).
    backend : {"numpy", "cupy"}
    voxel_mask : (Z, Y, X) bool ndarray on the dose grid, optional
        The voxels to compute (planning passes the body and every planning structure);
        default: the body's voxels.
    density_table : dose_engine.HUTable or path-like, optional
        The scanner's CT-to-density calibration (:func:`resolve_density_table`); default:
        the shipped generic table.
    algorithm : {"pencil_beam", "ccc"}, keyword-only
        ``"ccc"``: collapsed-cone convolution/superposition (lung, bone; all beams in one
        transport, 72 cones), commissioned from the same beam model.
    points_cache : dict, optional, keyword-only
        Each beam's ray-traced voxels (pencil beam: ``dose_engine.field_dose``; collapsed
        cone: its TERMA's rays through the transport grid, ``dose_engine.collapsed_cone_dose``),
        filled by the first dose and reused by later ones; pass the same dict only to doses
        on the same patient, ``dose_grid``, ``voxel_mask`` and ``density_table`` (planning
        keeps one across its final-dose correction loop).
    client : distributed.Client, optional, keyword-only
        Pencil beam: compute each static beam and each gantry angle of the arcs as a task
        on this Dask cluster (:func:`~rtplan.dose._distributed.distributed_group_doses`;
        the same dose to the last bit). The collapsed cone transports all beams at once in this
        process and does not use it.

    Returns
    -------
    PlanDose

    Raises
    ------
    rtplan.errors.InputError
        For a CT of fewer than :data:`MIN_CT_SLICES` slices (the patient would be a slab),
        a non-positive ``dose_grid_mm``, or a beam the dose engine refuses (isocentre
        outside the CT), a beam whose energy and fluence mode no model is for (the message
        names the beam and lists the models), or a beam whose SAD differs from the model's
        (the message names the model file, the beam and both SADs).
    dose_engine.BeamModelError
        ``model`` is a file that cannot be read as a beam model; the message names it.
    """
    from dose_engine._density import hu_to_density

    if algorithm not in DOSE_ALGORITHMS:
        raise InputError(
            f"`algorithm` must be one of {', '.join(DOSE_ALGORITHMS)}; got {algorithm!r}."
        )
    require_instance(patient, "patient", Patient, "an rtplan.Patient (rtplan.read_patient)")
    require_ct_volume(patient, "a dose")
    if not hasattr(plan, "beams"):
        raise TypeError(
            f"`plan` must be a DeliverablePlan (or have `beams`); got {type(plan).__name__}."
        )
    body = None
    if dose_grid is None:
        if isinstance(dose_grid_mm, bool) or not isinstance(dose_grid_mm, int | float):
            raise TypeError(f"`dose_grid_mm` must be a number (mm); got {dose_grid_mm!r}.")
        if not (np.isfinite(dose_grid_mm) and dose_grid_mm > 0):
            raise InputError(f"`dose_grid_mm` must be a positive spacing; got {dose_grid_mm!r}.")
        body = body_structure(patient)
        dose_grid = body_grid(patient.ct.grid, body, float(dose_grid_mm))
    if voxel_mask is None:
        body = body_structure(patient) if body is None else body
        voxel_mask = body.occupancy(dose_grid) > 0
    voxel_mask = np.asarray(voxel_mask, dtype=bool)
    if voxel_mask.shape != tuple(dose_grid.shape):
        raise InputError(
            f"`voxel_mask` has shape {voxel_mask.shape} but the dose grid has {dose_grid.shape} "
            "voxels (nz, ny, nx)."
        )
    if not voxel_mask.any():
        raise InputError(
            "The dose grid holds no voxel of the body (`voxel_mask` is empty); give a grid "
            "that covers the patient."
        )
    models = resolve_beam_models(model)
    beam_models = {}
    for dbeam in plan.beams:
        beam_models[dbeam.number] = m = models.for_beam(dbeam)
        require_model_sad(m, dbeam.beam.sad_mm, what=f"beam {dbeam.number} ({dbeam.name!r})")
    table = resolve_density_table(density_table)
    density = np.asarray(hu_to_density(np.asarray(patient.ct.array, dtype=np.float32), table))
    if algorithm == "ccc":
        return _collapsed_cone_plan_dose(
            plan,
            density,
            patient.ct.grid,
            dose_grid,
            beam_models,
            backend,
            voxel_mask,
            points_cache,
        )
    models_in_order = [beam_models[dbeam.number] for dbeam in plan.beams]
    groups = frame_groups(plan.beams)
    if client is not None:
        group_doses: Iterable = distributed_group_doses(
            groups,
            density,
            patient.ct.grid,
            dose_grid,
            models_in_order,
            client=client,
            backend=backend,
            voxel_mask=voxel_mask,
        )
    else:  # one gantry angle (ray frame) at a time, so that only the beams' sums are kept
        group_doses = (
            frame_group_doses(
                group,
                models_in_order,
                density,
                patient.ct.grid,
                dose_grid,
                backend=backend,
                voxel_mask=voxel_mask,
                points_cache=points_cache,
            )
            for group in groups
        )
    total = np.zeros(dose_grid.shape, dtype=np.float64)
    beam_max = {dbeam.number: 0.0 for dbeam in plan.beams}
    for index, d in beam_doses_by_frame(groups, group_doses):
        dbeam = plan.beams[index]
        d = np.asarray(to_numpy(d), dtype=np.float64)
        beam_max[dbeam.number] = float(d.max())
        total += d
        log.info(
            "beam %d: %d segments, %.1f MU, max %.3f Gy, beam model %s",
            dbeam.number,
            len(dbeam.segments),
            dbeam.total_mu,
            beam_max[dbeam.number],
            beam_models[dbeam.number].name,
        )
    return PlanDose(total, dose_grid, beam_max, beam_models=_model_names(beam_models))


def _model_names(beam_models: dict) -> dict[int, str]:
    """``{beam number: "6X 'model name'"}`` for :attr:`PlanDose.beam_models`."""
    return {n: f"{key_label(beam_model_key(m))} {m.name!r}" for n, m in beam_models.items()}


def _collapsed_cone_plan_dose(
    plan, density, ct_grid, dose_grid, beam_models: dict, backend, voxel_mask, points_cache
):
    """:func:`compute_plan_dose` with ``algorithm="ccc"``: the beams of each beam model in
    one transport (each model needs its collapsed-cone commissioning)."""
    from dose_engine import collapsed_cone_dose
    from dose_engine._ccc_commission import load_ccc_commissioning
    from dose_engine.errors import InvalidGeometryError

    groups: dict[str, tuple[BeamModel, list]] = {}
    for dbeam in plan.beams:
        model = beam_models[dbeam.number]
        groups.setdefault(model.fingerprint(), (model, []))[1].append(dbeam)
    for model, _ in groups.values():  # every model before any transport
        load_ccc_commissioning(model)
    total = np.zeros(dose_grid.shape, dtype=np.float64)
    beam_max = {dbeam.number: 0.0 for dbeam in plan.beams}
    for model, beams in groups.values():
        used, rects, mus = [], [], []
        for dbeam in beams:
            for part in static_parts(dbeam):  # an arc: one part per gantry angle
                r, m = beam_rectangles_mm(
                    part, resolve_mlc_parameters(part.machine, model), model=model
                )
                if m.size:
                    used.append(part)
                    rects.append(r)
                    mus.append(m)
        if not used:
            continue
        try:
            per_beam = collapsed_cone_dose(
                density,
                ct_grid,
                dose_grid,
                [dbeam.beam for dbeam in used],
                rects,
                mus,
                model,
                backend=backend,
                voxel_mask=voxel_mask,
                per_beam=True,
                points_cache=points_cache,
            )
        except InvalidGeometryError as exc:
            raise InputError(f"collapsed-cone dose: {exc}") from exc
        per_beam = np.asarray(to_numpy(per_beam), dtype=np.float64)
        by_number: dict[int, np.ndarray] = {}
        for part, d in zip(used, per_beam, strict=True):
            by_number[part.number] = by_number.get(part.number, 0.0) + d
            total += d
        for number, d in by_number.items():
            beam_max[number] = float(np.max(d))
        log.info("collapsed cone: %d beams, %s, max %.3f Gy", len(used), model.name, total.max())
    return PlanDose(total, dose_grid, beam_max, "ccc", _model_names(beam_models))
