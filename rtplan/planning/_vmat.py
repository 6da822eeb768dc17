r"""VMAT planning: arcs optimised on coarse sectors, sequenced, then their MU refined.

The published route of Craft et al. ("Multicriteria VMAT optimization", Med Phys 39:686,
2012, doi:10.1118/1.3675601), in three steps that reuse the static planner's parts:

1. **Sectors** (:func:`arc_layouts`): each arc of the protocol is cut into sectors of
   about ``[beams] arc_sector_deg`` (:func:`rtplan.sequencing.arc_sectors`); a static beam
   at each sector's centre (the arc's collimator and couch) gets beamlets and influence
   rows like any static beam, and the lexicographic optimiser finds their fluence.
2. **Arc sequencing** (:func:`sequence_arcs`): each arc's sector maps, placed on one
   common beamlet lattice, become its control points by
   :func:`rtplan.sequencing.sequence_arc` (sliding-window sweeps; every machine limit
   holds by construction).
3. **MU refinement** (:func:`refine_arc_mu`): with the leaf positions fixed by the
   sequencing, the dose is linear in the meterset ``m_k`` of each interval between two
   control points.  Each interval's column is the dose of its apertures at their own
   gantry angles, sampled as the plan's final dose samples them
   (:func:`rtplan.delivery.sample_control_points`: at most 2° and 2 mm apart), at 1 MU,
   on the voxels the static planner's segment-weight stage fits; the intervals' meterset
   is then fitted with that stage's objective (:func:`rtplan.delivery._segment_weights.fit_weights`:
   weighted squared difference to the optimal fluence's dose, cold target voxels
   weighted up) under bounds that keep every machine limit (below).

Bounds of the MU refinement (per fraction)
------------------------------------------
With ``t_k = max(|Δθ_k| / ω, Δx_k / v)`` the fastest the gantry and leaves can cover
interval ``k``:

* ``m_k ≥ max(m_min, r_lowest t_k [binned dose rates only]) / (0.99 (1 − cap))``: at
  least ``arc.min_mu_per_control_point``, and on a machine with binned dose rates enough
  meterset that the lowest rate does not finish before the mechanics (the 1 % margin
  covers the rounding of exported weights, ``cap`` the normalisation's
  ``normalization_cap_pct``, which may lower the MU afterwards);
* ``m_k ≤ s r_max T_k`` with ``s =`` :data:`MAX_SLOWDOWN`: no more than the maximum
  dose rate delivers in ``s`` times the time ``T_k`` the sequenced interval took
  (:func:`rtplan.delivery.check_deliverability`); a dose rate never exceeds the maximum
  (the gantry slows instead), and no interval takes more than ``s`` times its sequenced
  time on a continuous-dose-rate machine (on a binned one, the rate rounded down to a
  step may lengthen an interval);
* intervals the sequencing left without meterset (leaves crossing with the beam off)
  stay at 0.

Leaf positions are not refined: the columns' apertures are the sequencing's.  The
refined control points carry no (300A,0115) *DoseRateSet*: the machine's maximum, the
rate used in each interval being the highest the mechanics allow (rounded down to a
step on a binned machine).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from dose_engine import Beam, to_numpy

from ..delivery._arc import ArcBeam, ControlPoint, _rebuild_arc, sample_control_points
from ..delivery._deliverability import _control_points, _interval_times
from ..delivery._deliverable import DeliverableBeam, Segment
from ..delivery._segment_weights import fit_weights
from ..dose._aperture import aperture_dose
from ..protocols._protocol import ArcSpec
from ..sequencing import arc_sectors, beam_map_edges_mm, sequence_arc

__all__ = ["ArcLayout", "arc_layouts", "interval_columns", "refine_arc_mu", "sequence_arcs"]

logger = logging.getLogger("rtplan.planning.vmat")

#: Planned margin on the minimum meterset per interval (exported weights are rounded).
_MARGIN = 0.99
#: The MU refinement may slow an interval's gantry to this many times its sequenced time
#: (more meterset at the maximum dose rate); the sequencing already runs most sectors at
#: the maximum rate, so without it no interval could receive more meterset.
MAX_SLOWDOWN = 2.0


@dataclass(frozen=True)
class ArcLayout:
    """One arc of a VMAT plan and the static beams of its sectors (internal record).

    Attributes
    ----------
    number, name : int, str
        (300A,00C0) *BeamNumber* and (300A,00C2) *BeamName* of the arc.
    spec : ArcSpec
        With the collimator angle resolved.
    start_beam : dose_engine.Beam
        The arc's geometry at its first control point.
    beam_indices : tuple of int
        Indices of its sector beams in the plan's beam list (delivery order).
    sector_deg : float, degrees
    """

    number: int
    name: str
    spec: ArcSpec
    start_beam: Beam
    beam_indices: tuple[int, ...]
    sector_deg: float


def arc_layouts(
    arrangement, machine, isocenter_mm, patient_position: str
) -> tuple[list[Beam], list[ArcLayout]]:
    """The sector beams of every arc of a protocol's ``[beams]`` (module docstring, 1).

    Parameters
    ----------
    arrangement : rtplan.protocols.BeamArrangement
        ``technique = "vmat"``.
    machine : rtplan.Machine
        Needs ``[arc]`` limits; an arc without ``collimator_deg`` takes
        ``arc.collimator_angle_deg`` (every second arc: 360 minus it).
    isocenter_mm : (3,) sequence of float, mm (LPS)
    patient_position : str

    Returns
    -------
    beams : list of dose_engine.Beam
        The sector beams, arc after arc.
    layouts : list of ArcLayout

    Raises
    ------
    rtplan.errors.MachineError
        The machine has no ``[arc]`` table.
    """
    limits = machine.require_arc_limits("a VMAT plan ([beams] technique = 'vmat')")
    beams: list[Beam] = []
    layouts = []
    for i, spec in enumerate(arrangement.arcs):
        coll = spec.collimator_deg
        if coll is None:
            coll = limits.collimator_angle_deg
            coll = coll if i % 2 == 0 else (360.0 - coll) % 360.0
        centres, width = arc_sectors(
            spec.start_deg, spec.stop_deg, spec.direction, sector_deg=arrangement.arc_sector_deg
        )

        def beam_at(angle, coll=coll, spec=spec):
            return Beam(
                float(angle),
                collimator_angle_deg=coll,
                couch_angle_deg=spec.couch_deg,
                isocenter_mm=isocenter_mm,
                sad_mm=machine.sad_mm,
                patient_position=patient_position,
            )

        first = len(beams)
        beams.extend(beam_at(a) for a in centres)
        layouts.append(
            ArcLayout(
                number=i + 1,
                name=f"Arc{i + 1} {spec.direction}",
                spec=ArcSpec(spec.start_deg, spec.stop_deg, spec.direction, coll, spec.couch_deg),
                start_beam=beam_at(spec.start_deg),
                beam_indices=tuple(range(first, len(beams))),
                sector_deg=float(width),
            )
        )
    return beams, layouts


def _common_maps(maps, beamlets, indices):
    """The sector maps of one arc on one lattice of beamlets: ``(maps, x_edges, y_edges)``
    (the beamlet grids of all beams are aligned on multiples of the beamlet size)."""
    spans = []
    for b in indices:
        xe, ye = beam_map_edges_mm(beamlets, b)
        w, h = xe[1] - xe[0], ye[1] - ye[0]
        spans.append((round(xe[0] / w), round(ye[0] / h), xe.size - 1, ye.size - 1))
    kx0 = min(s[0] for s in spans)
    ky0 = min(s[1] for s in spans)
    nx = max(s[0] + s[2] for s in spans) - kx0
    ny = max(s[1] + s[3] for s in spans) - ky0
    out = np.zeros((len(indices), ny, nx))
    for k, (b, (x0, y0, cx, cy)) in enumerate(zip(indices, spans, strict=True)):
        out[k, y0 - ky0 : y0 - ky0 + cy, x0 - kx0 : x0 - kx0 + cx] = maps[b]
    return out, (kx0 + np.arange(nx + 1)) * w, (ky0 + np.arange(ny + 1)) * h


def sequence_arcs(fluence_mu, beamlets, layouts, machine, fractions: int) -> list[ArcBeam]:
    """Each arc's control points from its sectors' fluence (module docstring, 2).

    Parameters
    ----------
    fluence_mu : (n_beamlets,) ndarray, MU over all fractions
    beamlets : dose_engine.Beamlets
        Of the sector beams.
    layouts : sequence of ArcLayout
    machine : rtplan.Machine
    fractions : int

    Returns
    -------
    list of ArcBeam
        One per arc whose maps are not all zero.
    """
    maps = beamlets.to_fluence_maps(np.asarray(fluence_mu, dtype=float))
    arcs = []
    for layout in layouts:
        common, xe, ye = _common_maps(maps, beamlets, layout.beam_indices)
        if not common.any():
            logger.info("arc %s: no fluence in any sector; left out", layout.name)
            continue
        res = sequence_arc(
            list(common),
            machine,
            layout.start_beam,
            x_edges_mm=xe,
            y_edges_mm=ye,
            sector_deg=layout.sector_deg,
            rotation_direction=layout.spec.direction,
            fractions=int(fractions),
            number=len(arcs) + 1,
            name=layout.name,
        )
        logger.info("arc %s sequenced: %r", layout.name, res)
        arcs.append(res.arc)
    return arcs


def _interval_beam(arc: ArcBeam, k: int) -> DeliverableBeam:
    """The apertures of interval ``k`` of ``arc`` at 1 MU in total, sampled as the arc's
    own segments are (:func:`rtplan.delivery.sample_control_points`)."""
    c0, c1 = arc.control_points[k], arc.control_points[k + 1]
    pair = [
        ControlPoint(c0.gantry_angle_deg, c0.leaf_positions_mm, dict(c0.jaws_mm), 0.0),
        ControlPoint(c1.gantry_angle_deg, c1.leaf_positions_mm, dict(c1.jaws_mm), 1.0),
    ]
    bounds = arc.machine.mlc.leaf_boundaries_mm
    segments = tuple(
        Segment(leaves, jaws, weight, bounds, gantry)
        for leaves, jaws, weight, gantry in sample_control_points(
            pair, [float(arc.gantry_sweeps_deg[k])]
        )
    )
    return DeliverableBeam(arc.number, arc.name, arc.beam, arc.machine, segments)


def _mu_bounds(arc: ArcBeam, fractions: int, cap_pct: float):
    """``(mu, lower, upper)`` per interval of ``arc``, MU over all fractions (module
    docstring, "Bounds")."""
    limits = arc.machine.require_arc_limits(f"arc {arc.name!r}")
    cp = _control_points(arc, fractions)
    mu = np.diff(cp.cumulative_mu)  # per fraction
    times, _, _ = _interval_times(cp, limits, arc.number, arc.machine.name)
    sweep = np.abs(cp.sweeps_deg)
    travel = np.max(np.abs(np.diff(cp.leaves_mm, axis=0)), axis=(1, 2))
    t_fast = np.maximum(sweep / limits.gantry_speed_deg_per_s, travel / limits.leaf_speed_mm_per_s)
    floor = np.full(mu.size, limits.min_mu_per_control_point)
    if not limits.continuous_dose_rate:
        floor = np.maximum(floor, limits.dose_rate_steps_mu_per_min[0] / 60.0 * t_fast)
    lower = floor / (_MARGIN * (1.0 - cap_pct / 100.0))
    upper = np.maximum(MAX_SLOWDOWN * limits.max_dose_rate_mu_per_min / 60.0 * times, lower)
    off = mu <= 1e-9
    lower[off] = upper[off] = 0.0
    return mu * fractions, lower * fractions, upper * fractions


def _interval_column(
    part: DeliverableBeam,
    density: np.ndarray,
    ct_grid,
    dose_grid,
    model,
    backend: str,
    mlc_parameters,
    voxel_mask: np.ndarray,
    flat: np.ndarray,
    points_cache: dict | None = None,
) -> np.ndarray:
    """One interval's column: the dose of its apertures at 1 MU on the voxels ``flat``
    (float32, Gy per MU over all fractions); a Dask task of :func:`interval_columns`.
    ``points_cache``: the ray-traced voxels of each gantry angle, shared by the intervals
    of every arc (``dose_engine.field_dose``; the same column with or without it)."""
    dose = aperture_dose(
        part,
        density,
        ct_grid,
        dose_grid,
        model,
        backend=backend,
        voxel_mask=voxel_mask,
        mlc_parameters=mlc_parameters,
        points_cache=points_cache,
    )
    return np.asarray(to_numpy(dose), dtype=np.float32).ravel()[flat]


def interval_columns(
    parts: list[DeliverableBeam],
    *,
    density: np.ndarray,
    ct_grid,
    dose_grid,
    model,
    backend: str,
    mlc_parameters,
    voxel_mask: np.ndarray,
    client: Any = None,
) -> np.ndarray:
    """The dose of each interval's apertures at 1 MU on the voxels of ``voxel_mask``.

    Parameters
    ----------
    parts : list of DeliverableBeam
        One per interval (:func:`_interval_beam`: its apertures at one gantry angle).
    density, ct_grid, dose_grid, model, backend, mlc_parameters : keyword-only
        As :func:`rtplan.dose.aperture_dose`.
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, keyword-only
    client : distributed.Client, optional, keyword-only
        Compute each interval as a task on this Dask cluster (the density and the mask
        are sent to every worker once); ``None``: one after the other, here.  The same
        columns either way (each task is the serial computation of its interval).

    Returns
    -------
    (len(parts), n_voxels) ndarray of float32, Gy per MU
        Row ``k``: interval ``k`` on ``flatnonzero(voxel_mask)``.
    """
    flat = np.flatnonzero(voxel_mask.ravel())
    if client is not None:
        density_f, mask_f, flat_f = client.scatter([density, voxel_mask, flat], broadcast=True)
        futures = client.map(
            _interval_column,
            parts,
            density=density_f,
            ct_grid=ct_grid,
            dose_grid=dose_grid,
            model=model,
            backend=backend,
            mlc_parameters=mlc_parameters,
            voxel_mask=mask_f,
            flat=flat_f,
            pure=False,
        )
        return np.stack(client.gather(futures)) if parts else np.zeros((0, flat.size), np.float32)
    out = np.empty((len(parts), flat.size), dtype=np.float32)
    cache: dict = {}  # each angle traced once for all arcs (the mask's voxels: a few MB)
    for k, part in enumerate(parts):
        out[k] = _interval_column(
            part,
            density,
            ct_grid,
            dose_grid,
            model,
            backend,
            mlc_parameters,
            voxel_mask,
            flat,
            cache,
        )
    return out


def refine_arc_mu(
    arcs,
    reference_gy: np.ndarray,
    voxels: np.ndarray,
    weights: np.ndarray,
    underdose: np.ndarray,
    *,
    density,
    ct_grid,
    dose_grid,
    model,
    backend: str,
    mlc_parameters,
    fractions: int,
    cap_pct: float,
    client: Any = None,
) -> tuple[list[ArcBeam], dict[str, Any]]:
    """Re-fit the meterset of every interval of every arc (module docstring, 3).

    Parameters
    ----------
    arcs : sequence of ArcBeam
    reference_gy : (n,) ndarray, Gy
        The optimal fluence's dose on the fitted voxels.
    voxels : (n,) ndarray of int
        Their flat dose-grid indices.
    weights, underdose : (n,) ndarray
        Voxel weights and extra weights when cold
        (:func:`rtplan.delivery._segment_weights.fit_voxels`).
    density, ct_grid, dose_grid, model, backend, mlc_parameters : keyword-only
        As :func:`rtplan.dose.aperture_dose`.
    fractions : int, keyword-only
    cap_pct : float, keyword-only
        The normalisation cap, %: the lower bounds leave room for it.
    client : distributed.Client, optional, keyword-only
        Compute the intervals' columns as Dask tasks (:func:`interval_columns`).

    Returns
    -------
    arcs : list of ArcBeam
        With the refined cumulative meterset weights and meterset.
    record : dict
        ``mu_before`` / ``mu_after`` (per fraction), ``objective_before`` / ``_after``
        (Gy²), ``n_intervals``, ``n_columns``, ``n_voxels``, ``status``, ``message``.
    """
    mask = np.zeros(dose_grid.shape, dtype=bool)
    mask.ravel()[voxels] = True
    flat = np.flatnonzero(mask.ravel())
    parts, m0, lo, hi, where = [], [], [], [], []
    for a, arc in enumerate(arcs):
        mu, lower, upper = _mu_bounds(arc, fractions, cap_pct)
        for k in range(mu.size):
            where.append((a, k))
            m0.append(mu[k])
            lo.append(lower[k])
            hi.append(upper[k])
            if upper[k] > 0:
                parts.append((len(where) - 1, _interval_beam(arc, k)))
    computed = interval_columns(
        [part for _, part in parts],
        density=density,
        ct_grid=ct_grid,
        dose_grid=dose_grid,
        model=model,
        backend=backend,
        mlc_parameters=mlc_parameters,
        voxel_mask=mask,
        client=client,
    )
    column_of = [i for i, _ in parts]
    M = np.zeros((voxels.size, len(where)))
    M[:, column_of] = computed[:, np.searchsorted(flat, voxels)].T
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    fit = fit_weights(M, reference_gy, weights, underdose, np.asarray(m0), lower=lo_a, upper=hi_a)
    m = np.clip(fit.mu, lo_a, hi_a)
    out = []
    for a, arc in enumerate(arcs):
        mk = np.array([m[i] for i, (aa, _) in enumerate(where) if aa == a])
        cum = np.concatenate([[0.0], np.cumsum(mk)])
        total_mu = float(cum[-1])
        cps = [
            ControlPoint(c.gantry_angle_deg, c.leaf_positions_mm, dict(c.jaws_mm), float(w))
            for c, w in zip(arc.control_points, cum / total_mu, strict=True)
        ]
        cps[-1] = ControlPoint(
            cps[-1].gantry_angle_deg, cps[-1].leaf_positions_mm, dict(cps[-1].jaws_mm), 1.0
        )
        out.append(
            _rebuild_arc(
                len(out) + 1, arc.name, arc.beam, arc.machine, cps, total_mu, arc.rotation_direction
            )
        )
    record = {
        "method": "interval meterset re-fitted on the aperture dose of each interval",
        "mu_before": float(np.sum(m0)) / fractions,
        "mu_after": float(m.sum()) / fractions,
        "objective_before": fit.objective_before,
        "objective_after": fit.objective_after,
        "n_intervals": len(where),
        "n_columns": len(parts),
        "n_voxels": int(voxels.size),
        "intervals_at_lower_bound": int(np.sum((m <= lo_a * (1 + 1e-9)) & (hi_a > 0))),
        "intervals_at_upper_bound": int(np.sum((m >= hi_a * (1 - 1e-9)) & (hi_a > 0))),
        "status": str(fit.status),
        "message": fit.message,
    }
    logger.info("arc MU refinement: %s", record)
    return out, record
