"""Dose from MLC apertures: the one segment → fluence rectangles → dose path of rtplan.

Every segment's fluence, with the MLC and jaw physics (leaf and jaw transmission, rounded
leaf ends, interleaf leakage, tongue-and-groove: :meth:`rtplan.DeliverableBeam.segment_fluence`,
:func:`dose_engine.aperture_fluence`), is a set of weighted rectangles in the isocentre
plane (IEC BLD coordinates, mm) scaled by its segment's meterset; identical rectangles of a
beam are merged (dose is linear in MU) and :func:`dose_engine.field_dose` sums them on the
dose grid.  The final dose of planning, the second check of a read RT-PLAN
(:func:`rtplan.compute_plan_dose`) and the sequencing benches all take this path.  The MLC
parameters are the machine's, overridden by a commissioned beam model's
(:func:`resolve_mlc_parameters`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dose_engine import BeamModel, MLCParameters, field_dose, load_beam_model
from dose_engine._field_dose import ray_frame

from .._internal.arguments import ARRAY, check_arguments, sequence_of
from ..delivery._deliverable import DeliverableBeam
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Grid

__all__ = [
    "aperture_dose",
    "beam_doses_by_frame",
    "FramePart",
    "beam_rectangles_mm",
    "frame_group_doses",
    "frame_groups",
    "merge_rectangles",
    "named_aperture_dose",
    "plan_aperture_dose",
    "resolve_mlc_parameters",
]


def resolve_mlc_parameters(machine, model: BeamModel | None) -> MLCParameters:
    """The MLC and jaw parameters a dose on ``machine`` with ``model`` uses.

    The machine file's ``[dosimetry]`` values (:attr:`rtplan.Machine.dosimetry`), each
    replaced by the commissioned one when the beam model carries an ``"mlc"`` table
    (``commissioning.toml``'s ``[mlc]``, written by ``python -m dose_engine.fit``).

    Parameters
    ----------
    machine : rtplan.Machine
    model : dose_engine.BeamModel or None

    Returns
    -------
    dose_engine.MLCParameters

    Raises
    ------
    dose_engine.BeamModelError
        The model's ``"mlc"`` entries are unknown or implausible (named with the file).
    """
    params = machine.dosimetry
    commissioned = {} if model is None else dict(model.parameters.get("mlc") or {})
    commissioned.pop("applied_to_dose", None)
    if not commissioned:
        return params
    return params.updated(
        commissioned,
        source=f"beam model {model.path} over machine {machine.name!r}",  # type: ignore[union-attr]
    )


def merge_rectangles(rectangles_mm, mu) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical rectangles, summing their meterset.

    Dose is linear in meterset, so a leaf-pair opening that recurs in several segments
    of a beam (common after sweep sequencing: typically 2–3 times fewer rectangles) is
    computed once with the summed MU.

    Parameters
    ----------
    rectangles_mm : (n, 4) ndarray, mm
        ``[x1, x2, y1, y2]`` in IEC BLD coordinates at the isocentre plane.
    mu : (n,) ndarray, MU

    Returns
    -------
    rectangles_mm : (m, 4) ndarray, mm
        Unique rectangles (equal to 1e-6 mm), m ≤ n.
    mu : (m,) ndarray, MU
        Summed meterset of each.
    """
    rects = np.asarray(rectangles_mm, dtype=float)
    unique, inverse = np.unique(np.round(rects, 6), axis=0, return_inverse=True)
    summed = np.bincount(
        inverse.ravel(), weights=np.asarray(mu, dtype=float), minlength=unique.shape[0]
    )
    return unique, summed


def beam_rectangles_mm(
    dbeam: DeliverableBeam,
    parameters: MLCParameters | None = None,
    *,
    model: BeamModel | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fluence of every segment of ``dbeam`` as rectangles with their meterset, merged.

    Parameters
    ----------
    dbeam : DeliverableBeam
    parameters : dose_engine.MLCParameters, optional
        MLC and jaw parameters; default the machine's.
    model : dose_engine.BeamModel, optional, keyword-only
        With a model, each segment's head scatter is what its jaws and leaves let
        through (:meth:`rtplan.DeliverableBeam.segment_fluence`).

    Returns
    -------
    rectangles_mm : (n, 4) ndarray, mm
        ``[x1, x2, y1, y2]`` in IEC BLD coordinates at the isocentre plane; ``n = 0`` when
        no segment has meterset.
    mu : (n,) ndarray, MU
        Meterset × fluence weight of each (summed over the segments; may be negative for
        the correction rectangles of :func:`dose_engine.aperture_fluence`).

    Raises
    ------
    rtplan.errors.InputError
        ``dbeam`` is an arc (:attr:`rtplan.DeliverableBeam.is_arc`).
    """
    if dbeam.is_arc:
        raise InputError(
            f"beam {dbeam.number} ({dbeam.name!r}) is an arc: its segments have several gantry "
            "angles, so its fluence is not one map (aperture_dose computes it per angle)."
        )
    rects, mus = [], []
    for k, seg in enumerate(dbeam.segments):
        if seg.total_mu > 0:
            r, w = dbeam.segment_fluence(k, parameters, model=model)
            rects.append(r)
            mus.append(w * seg.total_mu)
    if not rects:
        return np.zeros((0, 4)), np.zeros(0)
    return merge_rectangles(np.concatenate(rects), np.concatenate(mus))


@check_arguments(
    dbeam="rtplan.delivery._deliverable:DeliverableBeam",
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
)
def aperture_dose(
    dbeam: DeliverableBeam,
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    model: Any = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
    mlc_parameters: MLCParameters | None = None,
    points_cache: dict | None = None,
) -> np.ndarray:
    """Dose of a sequenced beam computed from its apertures (not from the fluence map).

    The fluence rectangles of :func:`beam_rectangles_mm` (with the MLC and jaw parameters
    of :func:`resolve_mlc_parameters`, each segment's head scatter through its jaws and leaves;
    identical ones merged) go into one ``dose_engine.field_dose`` call (the pencil-beam
    dose is additive); an arc read from another system gets one call per gantry angle of
    its segments (its control points, sub-sampled by the reader).

    Parameters
    ----------
    dbeam : DeliverableBeam
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Relative electron density.
    ct_grid, dose_grid : dose_engine.Grid
    model : dose_engine BeamModel, optional
        Default: the dose engine's shipped 6 MV model.
    backend : {"numpy", "cupy"}, keyword-only
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional, keyword-only
    mlc_parameters : dose_engine.MLCParameters, optional, keyword-only
        Default: :func:`resolve_mlc_parameters` of the beam's machine and ``model``.
    points_cache : dict, optional, keyword-only
        Each static beam's ray-traced voxels, kept for later doses on the same
        ``density``, grids and ``voxel_mask`` (``dose_engine.field_dose``).

    Returns
    -------
    (nz, ny, nx) array of float32, Gy
        Total dose over all fractions (segment MU are totals), on the backend's device.

    Raises
    ------
    dose_engine.errors.InvalidGeometryError
        The dose engine refuses the beam (e.g. an isocentre outside the CT).
    """
    model = model if isinstance(model, BeamModel) else load_beam_model(model)
    if mlc_parameters is None:
        mlc_parameters = resolve_mlc_parameters(dbeam.machine, model)
    total = None
    for part in static_parts(dbeam):
        rectangles_mm, mu = beam_rectangles_mm(part, mlc_parameters, model=model)
        if mu.size == 0:
            continue
        dose = field_dose(
            density,
            ct_grid,
            dose_grid,
            part.beam,
            rectangles_mm,
            mu,
            model,
            backend=backend,
            voxel_mask=voxel_mask,
            points_cache=points_cache,
        )
        total = dose if total is None else total + dose
    return np.zeros(dose_grid.shape, dtype=np.float32) if total is None else total


def named_aperture_dose(
    dbeam: DeliverableBeam,
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    model: BeamModel,
    *,
    what: str,
    backend: str = "numpy",
    voxel_mask=None,
    points_cache: dict | None = None,
):
    """:func:`aperture_dose`, a beam the dose engine refuses reported as an
    :class:`~rtplan.errors.InputError` that starts with ``what`` (the beam, e.g.
    ``"beam 2 ('A2')"``, and for one gantry angle of an arc that angle)."""
    from dose_engine.errors import InvalidGeometryError

    try:
        return aperture_dose(
            dbeam,
            density,
            ct_grid,
            dose_grid,
            model,
            backend=backend,
            voxel_mask=voxel_mask,
            points_cache=points_cache,
        )
    except InvalidGeometryError as exc:
        raise InputError(f"{what}: {exc}") from exc


def static_parts(dbeam: DeliverableBeam) -> list[DeliverableBeam]:
    """``dbeam`` as static beams: itself, or for an arc one beam per gantry angle of its
    segments (the pencil-beam dose of each angle is one convolution; the dose is additive)."""
    if not dbeam.is_arc:
        return [dbeam]
    by_angle: dict[float, list] = {}
    for seg in dbeam.segments:
        angle = (
            dbeam.beam.gantry_angle_deg if seg.gantry_angle_deg is None else seg.gantry_angle_deg
        )
        by_angle.setdefault(angle, []).append(seg)
    return [
        DeliverableBeam(
            dbeam.number,
            dbeam.name,
            replace(dbeam.beam, gantry_angle_deg=angle),
            dbeam.machine,
            tuple(segs),
        )
        for angle, segs in by_angle.items()
        if sum(s.total_mu for s in segs) > 0
    ]


class FramePart(NamedTuple):
    """One static part of a plan's beam (:func:`static_parts`), as :func:`frame_groups`
    groups them."""

    #: Index of its beam in the plan.
    index: int
    part: DeliverableBeam
    #: The part in messages: the beam, and for an arc the gantry angle.
    what: str


def frame_groups(dbeams: Sequence[DeliverableBeam]) -> list[list[FramePart]]:
    """The static parts of ``dbeams`` (:func:`static_parts`) grouped by ray frame.

    Parts whose beams differ only in collimator angle (the two default VMAT arcs at each
    gantry angle) share a group, so that :func:`frame_group_doses` traces their rays once
    (``dose_engine.field_dose``'s ``points_cache``).  Groups come in the order of their
    first part; each holds its parts in the order of ``dbeams``.
    """
    groups: dict = {}
    for index, dbeam in enumerate(dbeams):
        what = f"beam {dbeam.number} ({dbeam.name!r})"
        for part in static_parts(dbeam):
            angle = f" at gantry {part.beam.gantry_angle_deg:g} deg" if dbeam.is_arc else ""
            groups.setdefault(ray_frame(part.beam), []).append(FramePart(index, part, what + angle))
    return list(groups.values())


def frame_group_doses(
    group: Sequence[FramePart],
    models: Sequence[BeamModel],
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    *,
    backend: str = "numpy",
    voxel_mask=None,
    points_cache: dict | None = None,
) -> list:
    """The dose of each part of one group of :func:`frame_groups`, rays traced once.

    Parameters
    ----------
    group : sequence of FramePart
        One group of :func:`frame_groups`.
    models : sequence of dose_engine.BeamModel
        The beam model of each beam, by beam index.
    density, ct_grid, dose_grid, backend, voxel_mask
        As :func:`aperture_dose`.
    points_cache : dict, optional, keyword-only
        As :func:`aperture_dose`; default: one for this group only (freed on return).

    Returns
    -------
    list of (nz, ny, nx) arrays of float32, Gy
        One per part, in the order of ``group``.

    Raises
    ------
    rtplan.errors.InputError
        The dose engine refuses a part; the message names the beam (and an arc's angle).
    """
    cache: dict = {} if points_cache is None else points_cache
    return [
        named_aperture_dose(
            part,
            density,
            ct_grid,
            dose_grid,
            models[index],
            what=what,
            backend=backend,
            voxel_mask=voxel_mask,
            points_cache=cache,
        )
        for index, part, what in group
    ]


def beam_doses_by_frame(
    groups: Sequence[Sequence[FramePart]], group_doses: Iterable[list]
) -> Iterator[tuple[int, Any]]:
    """Each beam's dose, summed from the doses of its parts in ``groups``' order.

    Parameters
    ----------
    groups : sequence of groups of :func:`frame_groups`
    group_doses : iterable of lists of arrays
        :func:`frame_group_doses` of each group, in order (computed here or as Dask tasks:
        the same sums, to the last bit).

    Yields
    ------
    (int, array)
        ``(beam index, dose)`` as soon as the beam's last group is done; a beam without
        meterset does not appear.
    """
    last = {item.index: g for g, group in enumerate(groups) for item in group}
    totals: dict[int, Any] = {}
    for g, (group, doses) in enumerate(zip(groups, group_doses, strict=True)):
        for item, dose in zip(group, doses, strict=True):
            i = item.index
            totals[i] = dose if i not in totals else totals[i] + dose
        for i in sorted({item.index for item in group if last[item.index] == g}):
            yield i, totals.pop(i)


@check_arguments(
    dbeams=sequence_of("rtplan.delivery._deliverable:DeliverableBeam"),
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
)
def plan_aperture_dose(
    dbeams: Sequence[DeliverableBeam],
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    model: Any = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
) -> np.ndarray:
    """Sum of :func:`aperture_dose` over beams, Gy (total over all fractions)."""
    total = None
    for b in dbeams:
        d = aperture_dose(
            b, density, ct_grid, dose_grid, model, backend=backend, voxel_mask=voxel_mask
        )
        total = d if total is None else total + d
    if total is None:
        return np.zeros(dose_grid.shape, dtype=np.float32)
    return total
