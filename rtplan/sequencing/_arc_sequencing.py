"""Arc sequencing: fluence maps of consecutive gantry sectors to the control points of an arc.

One job: the fluence map (MU per beamlet) optimised for the beam at the centre of each
gantry sector of an arc is delivered, across that sector, by a unidirectional sliding-window
sweep of every leaf pair (Craft et al. 2012, section II.C; Bzdusek et al. 2009), the sweep
direction alternating from sector to sector so that the leaves end one sector where the
next one starts.

Sweep of one leaf-pair unit across one sector
---------------------------------------------
Rows of the map are grouped with the leaf pairs over them into units
(:func:`rtplan.sequencing.leaf_units`; a unit delivers the height-weighted mean of its
rows).  In the sweep direction, cell ``j`` (width ``w``) is crossed by the leading leaf
(uncovering it) between cumulative meterset ``s_L,j`` and ``s_L,j + τ`` and by the
trailing leaf (covering it) between ``s_T,j = s_L,j + f_j`` and ``s_T,j + τ``, both at the
same speed, so every point of the cell is open for exactly ``f_j`` MU.  The earliest such
schedule (Spirou & Chui 1994, Stein et al. 1994) is
``s_L,j+1 = s_L,j + τ + max(f_j − f_j+1, 0)``, which takes
``M_u = Σ_j max(f_j − f_j−1, 0) + n τ`` MU for the unit (``f_−1 = 0``): the sum of the
positive increments of the row plus the transit of ``n`` cells.  Every unit sweeps the
sector's sweep range (below; closed where its fluence is zero) over the sector meterset
``M = max_u Σ max(Δf, 0) + n τ``: a unit with less modulation crosses each cell more
slowly, ``τ_u = (M − Σ max(Δf_u, 0)) / n ≥ τ``, rather than waiting (a smoother
trajectory, which the control points below follow more closely).

Sweep range
-----------
A sweep towards +x starts where the previous one ended (the first at the first column any
unit uses) and ends beyond the last column used by its own sector and by the next one,
which sweeps back towards −x from there to before the first column used by itself and the
next sector; and so on.  The leaves thus cross only the columns the maps need, and each
sector's ``n`` is the number of columns between its start and end edges.

Dose rate, gantry and leaf speed (per fraction, by construction)
----------------------------------------------------------------
With ``B = max_u Σ max(Δf, 0)`` and the dose rate ``r`` (MU/s) of the sector:

* ``r = min(r_max, B v / (n w))``: the transit meterset ``n τ`` equals ``B`` at the leaf
  speed ``v`` (a choice: a higher rate shortens the sector but adds transit MU); on a
  machine with binned dose rates, rounded down to an allowed step (the lowest step if
  below it);
* ``τ = max(w r / v', (r Δθ / (c ω) − B) / n, (N m_min / c − B) / n)`` with ``c = 0.99``:
  leaves no faster than ``v' = c v − g ω / (2 δ)`` (``g`` the minimum leaf gap, ``δ`` the
  control-point spacing: room for the gap rounding below), the gantry no faster than
  ``c ω`` over the sector's ``Δθ``, and at least ``m_min / c``
  (``arc.min_mu_per_control_point``) per interval (the 1 % margins keep the exported,
  rounded, control points within the limits and on the planned dose-rate step);
* the sector lasts ``T = M / r ≥ Δθ / ω``; the gantry turns at ``Δθ / T`` and the dose rate
  is constant over the sector.

Control points are spaced ``δ = Δθ / N`` (the machine's minimum ``arc.control_point_spacing_deg``
unless given) at equal meterset; the leaf positions at each are those of the sweep, and the
machine moves them linearly in between, which smooths the sweep's corners: the delivered
fluence (:func:`rtplan.sequencing.control_point_fluence`) departs from the map near the
cells where a leaf starts or stops (measured in ``tests/rtplan/sequencing/test_arc_sequencing.py``).
Pairs open by less than the MLC's minimum leaf gap at a control point are closed (below half
of it) or opened to it, about their centre.  Pairs that cover no map row stay closed
behind the trailing leaf of the nearest unit.  Jaws are fixed to the map for the whole arc.

References
----------
.. [1] D. Craft, D. McQuaid, J. Wala, W. Chen, E. Salari, T. Bortfeld, "Multicriteria VMAT
   optimization", Med Phys 39:686–696 (2012), doi:10.1118/1.3675601.
.. [2] K. Bzdusek, H. Friberger, K. Eriksson, B. Hårdemark, D. Robinson, M. Kaus,
   "Development and evaluation of an efficient approach to volumetric arc therapy
   planning", Med Phys 36:2328–2339 (2009), doi:10.1118/1.3132234.
.. [3] S. V. Spirou, C.-S. Chui, "Generation of arbitrary intensity profiles by dynamic
   jaws or multileaf collimators", Med Phys 21:1031–1041 (1994), doi:10.1118/1.597345.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._internal.arguments import (
    ARRAY,
    INTEGER,
    NUMBER,
    TEXT,
    check_arguments,
    optional,
    sequence_of,
)
from ..delivery._arc import ArcBeam, ControlPoint
from ..delivery._deliverable import Segment
from ..delivery._machine import Machine
from ..errors import SegmentError, SequencingError
from ._sweep import _edges, leaf_units

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Beam

__all__ = ["ArcSequencingResult", "arc_sectors", "sequence_arc"]

_TOL = 1e-9
#: Leaves and gantry are planned this much below their speed limits (and the meterset per
#: interval this much above its minimum) so that the rounding of exported leaf positions
#: and weights (DICOM DS) cannot put an interval beyond a limit or below a dose-rate step.
_MARGIN = 0.99


@dataclass(frozen=True, eq=False)
class ArcSequencingResult:
    """An arc sequenced from its sectors' fluence maps; per-sector values are per fraction.

    Attributes
    ----------
    arc : ArcBeam
        The control points (meterset over all fractions).
    sector_control_points : tuple of (int, int)
        First and last control point index of each sector (the last is the next sector's
        first).
    sector_directions : tuple of int
        ``+1``: leaves swept towards +x (bank B leading), ``−1``: towards −x.
    sector_mu : (n_sectors,) ndarray of float, MU per fraction
    modulation_mu : (n_sectors,) ndarray of float, MU per fraction
        ``max_u Σ max(Δf, 0)`` of each sector's map in its sweep direction.
    transit_mu_per_cell : (n_sectors,) ndarray of float, MU per fraction
        ``τ``: the meterset while the most modulated unit's leaves cross one cell;
        ``sector_mu = modulation_mu + n τ`` with ``n`` the cells between the sector's
        sweep edges.
    dose_rate_mu_per_min : (n_sectors,) ndarray of float, MU/min
        0 for a sector with nothing to deliver.
    sector_time_s : (n_sectors,) ndarray of float, s
    sweep_edges_mm : (n_sectors + 1,) ndarray of float, mm
        BLD x where the sweeps start and end: sector ``s`` sweeps from
        ``sweep_edges_mm[s]`` to ``sweep_edges_mm[s + 1]``.
    """

    arc: ArcBeam
    sector_control_points: tuple[tuple[int, int], ...]
    sector_directions: tuple[int, ...]
    sector_mu: np.ndarray
    modulation_mu: np.ndarray
    transit_mu_per_cell: np.ndarray
    dose_rate_mu_per_min: np.ndarray
    sector_time_s: np.ndarray
    sweep_edges_mm: np.ndarray

    @property
    def delivery_time_s(self) -> float:
        """Planned delivery time of the arc, s (acceleration not modelled)."""
        return float(self.sector_time_s.sum())

    def __repr__(self) -> str:
        return (
            f"ArcSequencingResult(n_sectors={len(self.sector_directions)}, n_control_points="
            f"{len(self.arc.control_points)}, mu_per_fraction={self.sector_mu.sum():.4g}, "
            f"delivery_time_s={self.delivery_time_s:.3g})"
        )


@check_arguments(start_deg=NUMBER, stop_deg=NUMBER, rotation_direction=TEXT, sector_deg=NUMBER)
def arc_sectors(
    start_deg: float, stop_deg: float, rotation_direction: str, *, sector_deg: float
) -> tuple[np.ndarray, float]:
    """Gantry angles of the sector centres of an arc: the static beams whose fluence maps
    :func:`sequence_arc` turns into the arc.

    Parameters
    ----------
    start_deg, stop_deg : float, degrees
        IEC 61217 gantry angles of the arc's first and last control point, in [0, 360).
    rotation_direction : {"CW", "CC"}
    sector_deg : float, degrees, keyword-only
        Wanted sector width; the arc is split into ``max(1, round(length / sector_deg))``
        equal sectors.

    Returns
    -------
    centres_deg : (n_sectors,) ndarray of float, degrees
        In delivery order, in [0, 360).
    width_deg : float, degrees
        The width of each sector (pass it as ``sector_deg`` to :func:`sequence_arc`).

    Raises
    ------
    SequencingError
        Angles outside [0, 360), equal start and stop (a full arc is e.g. 181 to 179 CW), a
        direction other than CW/CC, a width that is not positive.

    Examples
    --------
    >>> centres, width = arc_sectors(181.0, 179.0, "CW", sector_deg=20.0)
    >>> width, centres[:3].tolist(), centres.size
    (19.88888888888889, [190.94444444444446, 210.83333333333334, 230.72222222222223], 18)
    """
    start, stop, width = float(start_deg), float(stop_deg), float(sector_deg)
    for label, v in (("start_deg", start), ("stop_deg", stop)):
        if not (math.isfinite(v) and 0.0 <= v < 360.0):
            raise SequencingError(f"`{label}` must be in [0, 360) degrees; got {v!r}.")
    if rotation_direction not in ("CW", "CC"):
        raise SequencingError(
            f"`rotation_direction` must be 'CW' or 'CC'; got {rotation_direction!r}."
        )
    if not (math.isfinite(width) and width > 0):
        raise SequencingError(f"`sector_deg` must be > 0 degrees; got {sector_deg!r}.")
    sign = 1.0 if rotation_direction == "CW" else -1.0
    length = (sign * (stop - start)) % 360.0
    if length == 0.0:
        raise SequencingError(
            f"The arc starts and stops at {start:g} degrees; give distinct angles (a full arc "
            "is e.g. 181 to 179 degrees CW)."
        )
    n = max(1, round(length / width))
    width = length / n
    centres = (start + sign * width * (np.arange(n) + 0.5)) % 360.0
    return centres, width


def _unit_maps(maps: np.ndarray, ye: np.ndarray, lb: np.ndarray):
    """Height-weighted mean fluence of each leaf-pair unit: ``(n_sectors, n_units, n_cols)``."""
    row_unit, pair_unit = leaf_units(ye, lb)
    n_units = int(row_unit.max()) + 1
    unit_h = np.zeros(n_units)
    np.add.at(unit_h, row_unit, np.diff(ye))
    out = np.zeros((maps.shape[0], n_units, maps.shape[2]))
    for u in range(n_units):
        rows = row_unit == u
        out[:, u] = np.tensordot(maps[:, rows], np.diff(ye)[rows], axes=([1], [0])) / unit_h[u]
    return out, pair_unit


def _sweep_edges(units: np.ndarray) -> list[int]:
    """Map edge indices where each sector's sweep starts and ends: ``edges[s]`` to
    ``edges[s + 1]`` (module docstring, "Sweep range")."""
    n_sectors, _, n_cols = units.shape
    used = units.max(axis=1) > 0  # (n_sectors, n_cols)
    lo = [int(np.argmax(u)) if u.any() else None for u in used]
    hi = [n_cols - int(np.argmax(u[::-1])) if u.any() else None for u in used]
    edges = [lo[0] if lo[0] is not None else next((v for v in lo if v is not None), 0)]
    for s in range(n_sectors):
        if s % 2 == 0:  # towards +x: beyond this sector's and the next one's last column
            cand = [edges[-1], hi[s]] + ([hi[s + 1]] if s + 1 < n_sectors else [])
            edges.append(max(v for v in cand if v is not None))
        else:
            cand = [edges[-1], lo[s]] + ([lo[s + 1]] if s + 1 < n_sectors else [])
            edges.append(min(v for v in cand if v is not None))
    return edges


def _sweep_positions(f: np.ndarray, total: float, at_mu: np.ndarray):
    """Leading and trailing leaf positions (cells from the start edge) of one unit's sweep
    over ``total`` MU at cumulative meterset ``at_mu`` (module docstring); ``f`` in sweep
    order."""
    n = f.size
    bound = float(np.sum(np.maximum(np.diff(f, prepend=0.0), 0.0)))
    tau = (total - bound) / n  # this unit's slack slows its crossings (no wait)
    rises = np.maximum(f[:-1] - f[1:], 0.0)
    s_lead = np.concatenate([[0.0], np.cumsum(tau + rises)])
    s_trail = s_lead + f
    cells = np.arange(n, dtype=float)

    def trajectory(starts):
        t = np.concatenate([[0.0], np.column_stack([starts, starts + tau]).ravel(), [total]])
        p = np.concatenate([[0.0], np.column_stack([cells, cells + 1]).ravel(), [float(n)]])
        return np.interp(at_mu, t, p)

    return trajectory(s_lead), trajectory(s_trail)


def _sector_rate(bound, n, w, spacing_deg, n_intervals, arc, min_gap_mm):
    """Dose rate (MU/s), transit per cell (MU) and time (s) of a sector (module docstring)."""
    sweep_deg = spacing_deg * n_intervals
    t_gantry = sweep_deg / arc.gantry_speed_deg_per_s
    v = arc.leaf_speed_mm_per_s
    # gap rounding moves each leaf end of an interval by at most g / 4: keep room for it
    v_design = _MARGIN * v - 0.5 * min_gap_mm * arc.gantry_speed_deg_per_s / spacing_deg
    if v_design < 0.5 * v:
        raise SequencingError(
            f"Control points {spacing_deg:g} degrees apart leave too little time to round leaf "
            f"gaps to the minimum gap {min_gap_mm:g} mm at leaf speeds up to {v:g} mm/s; "
            "space them further apart."
        )
    if bound <= _TOL:
        return 0.0, 0.0, max(t_gantry, n * w / v)
    rate = min(arc.max_dose_rate_mu_per_min / 60.0, bound * v / (n * w))
    if not arc.continuous_dose_rate:
        steps = [s / 60.0 for s in arc.dose_rate_steps_mu_per_min]
        rate = max([s for s in steps if s <= rate * (1 + 1e-12)] or [steps[0]])
    tau = max(
        w * rate / v_design,
        (rate * t_gantry / _MARGIN - bound) / n,
        (n_intervals * arc.min_mu_per_control_point / _MARGIN - bound) / n,
    )
    return rate, tau, (bound + n * tau) / rate


def _snap_gaps(a: np.ndarray, b: np.ndarray, g: float) -> tuple[np.ndarray, np.ndarray]:
    """Close pairs open by less than ``g / 2`` and open those below ``g`` to ``g``, about
    their centre."""
    if g <= 0:
        return a, b
    gap = b - a
    mid = 0.5 * (a + b)
    close = (gap > 0) & (gap < g / 2)
    widen = (gap >= g / 2) & (gap < g)
    a = np.where(close, mid, np.where(widen, mid - g / 2, a))
    b = np.where(close, mid, np.where(widen, mid + g / 2, b))
    return a, b


@check_arguments(
    fluence_maps_mu=sequence_of(ARRAY),
    machine="rtplan.delivery._machine:Machine",
    beam="dose_engine._beam:Beam",
    x_edges_mm=ARRAY,
    y_edges_mm=ARRAY,
    sector_deg=NUMBER,
    rotation_direction=TEXT,
    fractions=INTEGER,
    number=INTEGER,
    name=TEXT,
    control_point_spacing_deg=optional(NUMBER),
)
def sequence_arc(
    fluence_maps_mu: Sequence[np.ndarray],
    machine: Machine,
    beam: Beam,
    *,
    x_edges_mm,
    y_edges_mm,
    sector_deg: float,
    rotation_direction: str,
    fractions: int,
    number: int = 1,
    name: str = "arc1",
    control_point_spacing_deg: float | None = None,
) -> ArcSequencingResult:
    """Control points that deliver each sector's fluence map by a sliding-window sweep.

    Parameters
    ----------
    fluence_maps_mu : sequence of (n_rows, n_cols) arrays of float, MU
        One map per sector, in delivery order, MU per beamlet over all fractions (as the
        planner's fluence), rows along BLD +y, columns along +x.
    machine : Machine
        With ``[arc]`` limits.
    beam : dose_engine.Beam
        Geometry of the arc at its first control point (gantry at the arc's start).
    x_edges_mm, y_edges_mm : 1-D arrays of float, mm, keyword-only
        Cell edges of the maps (BLD, isocentre plane); columns of equal width.
    sector_deg : float, degrees, keyword-only
        Gantry rotation of each sector; sector ``s`` spans
        ``[s Δθ, (s + 1) Δθ]`` from the start in the rotation direction.
    rotation_direction : {"CW", "CC"}, keyword-only
    fractions : int, keyword-only
        Machine limits hold per fraction.
    number, name : keyword-only
        (300A,00C0) *BeamNumber* and (300A,00C2) *BeamName*.
    control_point_spacing_deg : float, degrees, optional, keyword-only
        Default: the machine's minimum; ``sector_deg`` is split into
        ``floor(sector_deg / spacing)`` equal intervals, which must lie within
        ``arc.control_point_spacing_deg``.

    Returns
    -------
    ArcSequencingResult

    Raises
    ------
    SequencingError
        No map, maps of different shapes or not matching the edges, negative or
        non-finite fluence, ``fractions`` < 1, unequal column widths, all maps zero, a
        map wider than the MLC's carriage (``max_leaf_travel_mm``), a sector that cannot
        be split within the machine's control-point spacing, an arc over 360 degrees, a
        rotation direction other than CW/CC, or a control point outside the MLC or jaw
        limits.
    rtplan.errors.MachineError
        The machine has no ``[arc]`` limits.
    """
    arc = machine.require_arc_limits(f"arc sequencing of beam {number} ({name!r})")
    if rotation_direction not in ("CW", "CC"):
        raise SequencingError(
            f"`rotation_direction` must be 'CW' or 'CC'; got {rotation_direction!r}."
        )
    if isinstance(fractions, bool) or int(fractions) != fractions or fractions < 1:
        raise SequencingError(f"`fractions` must be an integer ≥ 1; got {fractions!r}.")
    xe, ye = _edges("x_edges_mm", x_edges_mm), _edges("y_edges_mm", y_edges_mm)
    shapes = {np.shape(m) for m in fluence_maps_mu}
    if shapes != {(ye.size - 1, xe.size - 1)}:
        raise SequencingError(
            f"`fluence_maps_mu` must be one or more maps of shape ({ye.size - 1}, "
            f"{xe.size - 1}) (the cells of the edges); got shapes {sorted(shapes)}."
        )
    maps = np.stack([np.asarray(m, dtype=float) for m in fluence_maps_mu]) / int(fractions)
    if not np.all(np.isfinite(maps)) or np.any(maps < 0):
        raise SequencingError("`fluence_maps_mu` must be finite and ≥ 0 MU.")
    w = float(np.diff(xe)[0])
    if not np.allclose(np.diff(xe), w, rtol=0, atol=1e-6):
        raise SequencingError(
            f"`x_edges_mm` must give columns of equal width; got widths {np.diff(xe)!r}."
        )
    mlc = machine.mlc
    if xe[-1] - xe[0] > mlc.max_leaf_travel_mm + 1e-6:
        raise SequencingError(
            f"The maps span {xe[-1] - xe[0]:g} mm along x, more than the maximum leaf travel "
            f"{mlc.max_leaf_travel_mm:g} mm of MLC {mlc.name!r}; split the arc's field."
        )
    n_sectors = maps.shape[0]
    lo, hi = arc.control_point_spacing_deg
    spacing = lo if control_point_spacing_deg is None else float(control_point_spacing_deg)
    n_int = max(1, math.floor(float(sector_deg) / spacing + 1e-9))
    spacing = float(sector_deg) / n_int
    if not (lo - 1e-9 <= spacing <= hi + 1e-9):
        raise SequencingError(
            f"A sector of {sector_deg:g} degrees split into {n_int} intervals of {spacing:g} "
            f"degrees is outside the control-point spacing [{lo:g}, {hi:g}] degrees of machine "
            f"{machine.name!r}; choose another `sector_deg` or `control_point_spacing_deg`."
        )
    if n_sectors * float(sector_deg) > 360.0 + 1e-6:
        raise SequencingError(
            f"{n_sectors} sectors of {sector_deg:g} degrees exceed a full rotation."
        )

    units, pair_unit = _unit_maps(maps, ye, mlc.leaf_boundaries_mm)
    n_units = units.shape[1]
    nearest = pair_unit.copy()
    inside = np.flatnonzero(pair_unit >= 0)
    nearest[: inside[0]] = pair_unit[inside[0]]
    nearest[inside[-1] + 1 :] = pair_unit[inside[-1]]
    g = mlc.min_leaf_gap_mm
    jaws = {}
    if machine.has_x_jaws:
        jaws["X"] = machine.jaws["X"].clip(float(xe[0]), float(xe[-1]))
    if machine.has_y_jaws:
        jaws["Y"] = machine.jaws["Y"].clip(float(ye[0]), float(ye[-1]))

    sign = 1.0 if rotation_direction == "CW" else -1.0
    start = float(beam.gantry_angle_deg)
    leaves, angles, cum_mu, rates_set = [], [], [], []
    sector_cps, directions = [], []
    stats = np.zeros((5, n_sectors))  # mu, modulation, tau, rate (MU/min), time
    done_mu = 0.0
    edges = _sweep_edges(units)
    for s in range(n_sectors):
        direction = 1 if s % 2 == 0 else -1
        c0, c1 = edges[s], edges[s + 1]  # map edge indices the sweep starts and ends at
        n = abs(c1 - c0)
        f = units[s, :, c0:c1] if direction > 0 else units[s, :, c1:c0][:, ::-1]
        bounds = np.sum(np.maximum(np.diff(f, axis=1, prepend=0.0), 0.0), axis=1)
        bound = float(bounds.max(initial=0.0))
        rate, tau, time_s = _sector_rate(bound, n, w, spacing, n_int, arc, g)
        total = bound + n * tau if rate > 0 else 0.0
        stats[:, s] = total, bound, tau, rate * 60.0, time_s
        at_mu = total * np.arange(n_int + 1) / n_int
        at_mu[-1] = total
        lead = np.empty((n_units, n_int + 1))
        trail = np.empty((n_units, n_int + 1))
        for u in range(n_units):
            if total > 0:
                lead[u], trail[u] = _sweep_positions(f[u], total, at_mu)
            else:  # nothing to deliver: closed leaves cross with the beam off
                lead[u] = trail[u] = n * np.arange(n_int + 1) / n_int
        if direction > 0:
            a_units, b_units = xe[c0] + w * trail, xe[c0] + w * lead
        else:
            a_units, b_units = xe[c0] - w * lead, xe[c0] - w * trail
        first = 0 if s == 0 else 1  # a sector's first control point is the previous' last
        sector_cps.append((len(angles) - first, len(angles) - first + n_int))
        directions.append(direction)
        binned_rate = rate * 60.0 if not arc.continuous_dose_rate and rate > 0 else None
        if s > 0:  # the sector's first interval starts at the previous sector's last point
            rates_set[-1] = binned_rate
        for k in range(first, n_int + 1):
            a = a_units[nearest, k].copy()
            b = b_units[nearest, k].copy()
            outside = pair_unit < 0
            b[outside] = a[outside]
            a, b = _snap_gaps(a, b, g)
            leaves.append(np.stack([a, b]))
            angles.append((start + sign * spacing * (s * n_int + k)) % 360.0)
            cum_mu.append(done_mu + at_mu[k])
            rates_set.append(binned_rate if k < n_int else None)
        done_mu += total

    if done_mu <= _TOL:
        raise SequencingError(
            f"Beam {number} ({name!r}): every sector's fluence map is zero; nothing to deliver."
        )
    weights = np.asarray(cum_mu) / done_mu
    weights[-1] = 1.0
    cps = tuple(
        ControlPoint(angle, lv, jaws, float(wt), rs)
        for angle, lv, wt, rs in zip(angles, leaves, weights, rates_set, strict=True)
    )
    try:
        arc_beam = ArcBeam(
            number,
            name,
            beam,
            machine,
            control_points=cps,
            meterset_mu=done_mu * int(fractions),
            rotation_direction=rotation_direction,
        )
        for k, cp in enumerate(cps):
            Segment(cp.leaf_positions_mm, dict(cp.jaws_mm), 0.0, mlc.leaf_boundaries_mm).validate(
                machine, where=f"beam {number} control point {k}"
            )
    except SegmentError as exc:
        raise SequencingError(
            f"Arc sequencing for machine {machine.name!r} produced an undeliverable control "
            f"point: {exc}"
        ) from None
    return ArcSequencingResult(
        arc=arc_beam,
        sector_control_points=tuple(sector_cps),
        sector_directions=tuple(directions),
        sector_mu=stats[0],
        modulation_mu=stats[1],
        transit_mu_per_cell=stats[2],
        dose_rate_mu_per_min=stats[3],
        sector_time_s=stats[4],
        sweep_edges_mm=xe[edges],
    )
