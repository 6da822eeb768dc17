"""Deliverability of a plan: delivery time, MU, leaf speed, complexity and machine limits.

One job: from each beam's control points (an :class:`~rtplan.delivery.ArcBeam`'s own; two
per segment of a step-and-shoot beam, as the RT-PLAN writer writes them) and the machine's
:class:`~rtplan.delivery.ArcLimits`, per fraction:

Delivery time of an interval between control points ``k`` and ``k + 1``
    The slowest of the gantry (``|Δθ| / gantry_speed``), the leaves
    (``max |Δx| / leaf_speed``) and the meterset at the dose rate the machine uses.  With
    the beam on, the dose rate is the highest the mechanics allow,
    ``ΔMU / max(t_gantry, t_leaves)``, capped by the maximum dose rate and the interval's
    (300A,0115) *DoseRateSet*; a machine with binned dose rates
    (``continuous_dose_rate = false``) rounds it down to an allowed step.  With the beam off
    (``ΔMU = 0``) the mechanics alone.  Beam holds, acceleration and the time between beams
    are not modelled.  Jaws are not timed (they follow the leaves on both shipped machines).
Maximum leaf speed used
    ``max |Δx| / t`` over the intervals, mm/s.
Modulation complexity score (MCS)
    McNiven, Sharpe and Purdie, "A new metric for assessing IMRT modulation complexity and
    plan deliverability", Med. Phys. 37(2), 505-515 (2010), doi:10.1118/1.3276775.  For each
    aperture, the leaf sequence variability ``LSV = LSV_A × LSV_B`` with, per bank over the
    ``N`` open leaf pairs inside the jaws (in order along y),
    ``LSV_bank = Σ_{n<N} (pos_max − |pos_n − pos_{n+1}|) / ((N − 1) pos_max)`` and
    ``pos_max = max(pos) − min(pos)`` (1 when the bank is straight or ``N = 1``, so that an
    open rectangular field scores 1, as the paper states); the aperture area variability
    ``AAV = Σ_a (B_a − A_a) / Σ_a (max B_a − min A_a)``, the denominator over the beam's
    apertures (the maximum aperture).  ``MCS_beam = Σ_i LSV_i AAV_i MU_i / MU_beam`` and
    the plan's is the MU-weighted mean of its beams'.  An aperture is a control point; its
    MU is half of each neighbouring interval's (for a step-and-shoot segment: its MU), as
    Masi et al. extended the score to VMAT (Med. Phys. 40(7), 071718 (2013),
    doi:10.1118/1.4810969).
Mean aperture area
    The MU-weighted mean of the open area (leaf pairs wider than the machine's minimum
    gap, clipped by the jaws) of the control points, cm².
Limits (each violation names beam, control point and the machine-file key)
    ``arc.control_point_spacing_deg`` (arcs), ``arc.min_mu_per_control_point`` (an
    interval with the beam on and less meterset), ``arc.max_dose_rate_mu_per_min`` and
    ``arc.dose_rate_steps_mu_per_min`` (a DoseRateSet above the maximum or not an allowed
    step; binned dose rates whose lowest step delivers the interval's meterset faster than
    the gantry and leaves can move, which would need leaves or gantry beyond
    ``arc.leaf_speed_mm_per_s`` / ``arc.gantry_speed_deg_per_s``), and the MLC and jaw
    limits at every control point (:meth:`rtplan.Segment.validate`, key ``mlc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SegmentError
from ._arc import ArcBeam
from ._arc_limits import ArcLimits
from ._deliverable import DeliverableBeam, Segment
from ._machine import GAP_TOLERANCE_MM

__all__ = [
    "BeamDeliverability",
    "Deliverability",
    "Violation",
    "check_deliverability",
    "modulation_complexity",
]

#: Spacings, MU and dose rates within these of a limit are at the limit.
_DEG_TOL, _MU_TOL, _RATE_TOL = 1e-6, 1e-9, 1e-6


@dataclass(frozen=True)
class Violation:
    """A machine limit a beam breaks.

    Attributes
    ----------
    beam_number : int
    control_point : int
        Index of the control point (the first of an interval).
    limit : str
        The machine-file key (``"arc.control_point_spacing_deg"``) or ``"mlc"``.
    message : str
        One sentence with the value found and the limit.
    """

    beam_number: int
    control_point: int
    limit: str
    message: str

    def __str__(self) -> str:
        return f"beam {self.beam_number} control point {self.control_point}: {self.message}"


@dataclass(frozen=True)
class BeamDeliverability:
    """Deliverability of one beam, per fraction (see the module docstring).

    Attributes
    ----------
    number : int
    name : str
    is_arc : bool
    n_control_points : int
    mu : float, MU
        Meterset per fraction.
    delivery_time_s : float or None, s
        ``None`` for a static beam on a machine without arc limits.
    max_leaf_speed_mm_per_s : float or None, mm/s
    mcs : float
        Modulation complexity score, in [0, 1] (1: open, unmodulated).
    mean_aperture_area_cm2 : float, cm²
    violations : tuple of Violation
    """

    number: int
    name: str
    is_arc: bool
    n_control_points: int
    mu: float
    delivery_time_s: float | None
    max_leaf_speed_mm_per_s: float | None
    mcs: float
    mean_aperture_area_cm2: float
    violations: tuple[Violation, ...]


@dataclass(frozen=True)
class Deliverability:
    """Deliverability of a plan: its beams', per fraction.

    Attributes
    ----------
    beams : tuple of BeamDeliverability
    fractions : int
    """

    beams: tuple[BeamDeliverability, ...]
    fractions: int

    @property
    def total_mu(self) -> float:
        """Meterset of all beams per fraction, MU."""
        return float(sum(b.mu for b in self.beams))

    @property
    def delivery_time_s(self) -> float | None:
        """Sum of the beams' delivery times, s (beam changes not included)."""
        times = [b.delivery_time_s for b in self.beams]
        return None if any(t is None for t in times) else float(sum(times))

    @property
    def mcs(self) -> float:
        """The plan's modulation complexity score: the MU-weighted mean of its beams'."""
        return float(sum(b.mcs * b.mu for b in self.beams) / self.total_mu)

    @property
    def violations(self) -> tuple[Violation, ...]:
        """Every violation of every beam."""
        return tuple(v for b in self.beams for v in b.violations)

    @property
    def ok(self) -> bool:
        """Whether every limit holds."""
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``rtplan check --json``, plan.json)."""
        return {
            "fractions": self.fractions,
            "total_mu_per_fraction": self.total_mu,
            "delivery_time_s": self.delivery_time_s,
            "mcs": self.mcs,
            "ok": self.ok,
            "beams": [
                {
                    "number": b.number,
                    "name": b.name,
                    "is_arc": b.is_arc,
                    "n_control_points": b.n_control_points,
                    "mu_per_fraction": b.mu,
                    "delivery_time_s": b.delivery_time_s,
                    "max_leaf_speed_mm_per_s": b.max_leaf_speed_mm_per_s,
                    "mcs": b.mcs,
                    "mean_aperture_area_cm2": b.mean_aperture_area_cm2,
                }
                for b in self.beams
            ],
            "violations": [
                {
                    "beam": v.beam_number,
                    "control_point": v.control_point,
                    "limit": v.limit,
                    "message": v.message,
                }
                for v in self.violations
            ],
        }


@dataclass(frozen=True)
class _ControlPoints:
    """A beam's control points as arrays: what the metrics read."""

    sweeps_deg: np.ndarray  # (n - 1,) signed
    leaves_mm: np.ndarray  # (n, 2, n_pairs)
    jaws_mm: dict  # axis -> (n, 2)
    cumulative_mu: np.ndarray  # (n,) per fraction
    dose_rates: list  # (n,) DoseRateSet or None


def _control_points(dbeam: DeliverableBeam, fractions: int) -> _ControlPoints:
    if isinstance(dbeam, ArcBeam):
        cps = dbeam.control_points
        return _ControlPoints(
            dbeam.gantry_sweeps_deg,
            np.stack([c.leaf_positions_mm for c in cps]),
            {k: np.array([c.jaws_mm[k] for c in cps]) for k in dbeam.machine.jaws},
            dbeam.cumulative_meterset_weights() * dbeam.meterset_mu / fractions,
            [c.dose_rate_mu_per_min for c in cps],
        )
    if dbeam.is_arc:
        raise SegmentError(
            f"beam {dbeam.number} ({dbeam.name!r}) is an arc given as segments only; build it "
            "as an rtplan.delivery.ArcBeam from its control points to check it."
        )
    segs = [s for s in dbeam.segments for _ in range(2)]
    return _ControlPoints(
        np.zeros(len(segs) - 1),
        np.stack([s.leaf_positions_mm for s in segs]),
        {k: np.array([s.jaws_mm[k] for s in segs]) for k in segs[0].jaws_mm},
        dbeam.cumulative_meterset_weights() * dbeam.total_mu / fractions,
        [None] * len(segs),
    )


def _open_pairs(leaves: np.ndarray, jaws: dict, boundaries: np.ndarray, closed_gap_mm: float):
    """Leaf positions clipped to the X jaws and the mask of open pairs inside the jaws."""
    a, b = leaves
    if "X" in jaws:
        a, b = np.clip(a, *jaws["X"]), np.clip(b, *jaws["X"])
    inside = np.ones(a.size, dtype=bool)
    if "Y" in jaws:
        y1, y2 = jaws["Y"]
        inside = (boundaries[1:] > y1 + GAP_TOLERANCE_MM) & (
            boundaries[:-1] < y2 - GAP_TOLERANCE_MM
        )
    return a, b, inside & (b - a > closed_gap_mm + GAP_TOLERANCE_MM)


def _lsv_bank(pos: np.ndarray) -> float:
    if pos.size < 2:
        return 1.0
    pos_max = float(pos.max() - pos.min())
    if pos_max <= GAP_TOLERANCE_MM:
        return 1.0
    return float(np.sum(pos_max - np.abs(np.diff(pos))) / ((pos.size - 1) * pos_max))


def modulation_complexity(
    leaves_mm: np.ndarray,
    jaws_mm: dict,
    weights: np.ndarray,
    leaf_boundaries_mm: np.ndarray,
    *,
    closed_gap_mm: float = 0.0,
) -> float:
    """Modulation complexity score of one beam (McNiven et al. 2010; module docstring).

    Parameters
    ----------
    leaves_mm : (n, 2, n_pairs) array of float, mm
        Bank A and bank B leaf positions of each aperture (BLD x).
    jaws_mm : dict of str to (n, 2) array of float, mm
        Jaw positions of each aperture, only the jaws the machine has.
    weights : (n,) array of float, MU
        Meterset of each aperture.
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm
    closed_gap_mm : float, mm, keyword-only
        Pairs at most this wide are closed (the machine's minimum leaf gap).

    Returns
    -------
    float
        In [0, 1]; 1 for open rectangular apertures of equal area; 0 when no aperture is
        open.
    """
    weights = np.asarray(weights, dtype=float)
    parts = []
    lo = np.full(leaves_mm.shape[2], np.inf)
    hi = np.full(leaves_mm.shape[2], -np.inf)
    for i in range(weights.size):
        jaws = {k: v[i] for k, v in jaws_mm.items()}
        a, b, open_ = _open_pairs(leaves_mm[i], jaws, leaf_boundaries_mm, closed_gap_mm)
        parts.append((a, b, open_))
        if weights[i] > 0:
            lo[open_] = np.minimum(lo[open_], a[open_])
            hi[open_] = np.maximum(hi[open_], b[open_])
    ever = np.isfinite(lo)
    max_area = float(np.sum(hi[ever] - lo[ever]))
    if weights.sum() <= 0 or max_area <= 0:
        return 0.0
    score = 0.0
    for w, (a, b, open_) in zip(weights, parts, strict=True):
        if w <= 0 or not open_.any():
            continue
        lsv = _lsv_bank(a[open_]) * _lsv_bank(b[open_])
        aav = float(np.sum(b[open_] - a[open_])) / max_area
        score += w * lsv * aav
    return float(score / weights.sum())


def _interval_times(
    cp: _ControlPoints, arc: ArcLimits, beam_number: int, machine_name: str
) -> tuple[np.ndarray, np.ndarray, list[Violation]]:
    """Delivery time (s) and leaf speed (mm/s) of each interval, and the dose-rate
    violations (module docstring)."""
    n = cp.cumulative_mu.size
    times, speeds, out = np.zeros(n - 1), np.zeros(n - 1), []
    rate_set = None
    for k in range(n - 1):
        if cp.dose_rates[k] is not None:
            rate_set = cp.dose_rates[k]
        dmu = float(cp.cumulative_mu[k + 1] - cp.cumulative_mu[k])
        dtheta = abs(float(cp.sweeps_deg[k]))
        dleaf = float(np.max(np.abs(cp.leaves_mm[k + 1] - cp.leaves_mm[k])))
        t_mech = max(dtheta / arc.gantry_speed_deg_per_s, dleaf / arc.leaf_speed_mm_per_s)
        t = t_mech
        if dmu > _MU_TOL:
            cap = arc.max_dose_rate_mu_per_min if rate_set is None else rate_set
            cap = min(cap, arc.max_dose_rate_mu_per_min)
            need = dmu * 60.0 / t_mech if t_mech > 0 else math.inf
            if arc.continuous_dose_rate:
                rate = min(need, cap)
            else:
                allowed = [
                    s for s in arc.dose_rate_steps_mu_per_min if s <= min(need, cap) + _RATE_TOL
                ]
                rate = allowed[-1] if allowed else arc.dose_rate_steps_mu_per_min[0]
                if not allowed:
                    t_fast = dmu * 60.0 / rate
                    out.append(
                        Violation(
                            beam_number,
                            k,
                            "arc.dose_rate_steps_mu_per_min",
                            f"{dmu:.4g} MU over {dtheta:.3g} degrees and {dleaf:.3g} mm of leaf "
                            f"travel needs a dose rate of {need:.4g} MU/min, below the lowest "
                            f"step {rate:g} MU/min of machine {machine_name!r}: the gantry would "
                            f"turn at {dtheta / t_fast:.3g} deg/s (limit "
                            f"{arc.gantry_speed_deg_per_s:g}) and the leaves move at "
                            f"{dleaf / t_fast:.3g} mm/s (limit {arc.leaf_speed_mm_per_s:g}).",
                        )
                    )
            t = dmu * 60.0 / rate
        times[k] = t
        speeds[k] = dleaf / t if t > 0 else 0.0
    return times, speeds, out


def _limit_violations(
    dbeam: DeliverableBeam, cp: _ControlPoints, arc: ArcLimits | None, is_arc: bool
) -> list[Violation]:
    out = []
    num = dbeam.number
    machine = dbeam.machine
    bounds = machine.mlc.leaf_boundaries_mm
    for k in range(cp.cumulative_mu.size):
        seg = Segment(cp.leaves_mm[k], {j: v[k] for j, v in cp.jaws_mm.items()}, 0.0, bounds)
        try:
            seg.validate(machine)
        except SegmentError as exc:
            out.append(Violation(num, k, "mlc", str(exc)))
    if arc is None:
        return out
    for k, rate in enumerate(cp.dose_rates):
        if rate is None:
            continue
        if rate > arc.max_dose_rate_mu_per_min + _RATE_TOL:
            out.append(
                Violation(
                    num,
                    k,
                    "arc.max_dose_rate_mu_per_min",
                    f"(300A,0115) DoseRateSet {rate:g} MU/min is above the maximum "
                    f"{arc.max_dose_rate_mu_per_min:g} MU/min of machine {machine.name!r}.",
                )
            )
        elif not any(abs(rate - s) <= _RATE_TOL for s in arc.dose_rate_steps_mu_per_min):
            out.append(
                Violation(
                    num,
                    k,
                    "arc.dose_rate_steps_mu_per_min",
                    f"(300A,0115) DoseRateSet {rate:g} MU/min is not one of the dose rates "
                    f"{list(arc.dose_rate_steps_mu_per_min)} of machine {machine.name!r}.",
                )
            )
    dmu = np.diff(cp.cumulative_mu)
    lo, hi = arc.control_point_spacing_deg
    for k in range(dmu.size):
        if _MU_TOL < dmu[k] < arc.min_mu_per_control_point - _MU_TOL:
            out.append(
                Violation(
                    num,
                    k,
                    "arc.min_mu_per_control_point",
                    f"{dmu[k]:.4g} MU to the next control point, below the minimum "
                    f"{arc.min_mu_per_control_point:g} MU of machine {machine.name!r}.",
                )
            )
        spacing = abs(float(cp.sweeps_deg[k]))
        if is_arc and not (lo - _DEG_TOL <= spacing <= hi + _DEG_TOL):
            out.append(
                Violation(
                    num,
                    k,
                    "arc.control_point_spacing_deg",
                    f"{spacing:.4g} degrees to the next control point, outside the spacing "
                    f"[{lo:g}, {hi:g}] degrees of machine {machine.name!r}.",
                )
            )
    return out


def _beam_deliverability(dbeam: DeliverableBeam, fractions: int) -> BeamDeliverability:
    is_arc = isinstance(dbeam, ArcBeam) and dbeam.rotation_direction != "NONE"
    dynamic = isinstance(dbeam, ArcBeam)
    who = f"beam {dbeam.number} ({dbeam.name!r}, {'an arc' if is_arc else 'dynamic MLC'})"
    arc = dbeam.machine.require_arc_limits(who) if dynamic else dbeam.machine.arc
    cp = _control_points(dbeam, fractions)
    violations = _limit_violations(dbeam, cp, arc, is_arc)
    time_s = leaf_speed = None
    if arc is not None:
        times, speeds, rate_violations = _interval_times(cp, arc, dbeam.number, dbeam.machine.name)
        violations += rate_violations
        time_s, leaf_speed = float(times.sum()), float(speeds.max(initial=0.0))
    dmu = np.diff(cp.cumulative_mu)
    weights = np.concatenate([[0.0], dmu]) / 2 + np.concatenate([dmu, [0.0]]) / 2
    bounds = dbeam.machine.mlc.leaf_boundaries_mm
    closed = dbeam.machine.mlc.min_leaf_gap_mm
    mcs = modulation_complexity(cp.leaves_mm, cp.jaws_mm, weights, bounds, closed_gap_mm=closed)
    areas = np.array(
        [
            Segment(
                cp.leaves_mm[k], {j: v[k] for j, v in cp.jaws_mm.items()}, 0.0, bounds
            ).open_area_mm2(closed_gap_mm=closed)
            for k in range(weights.size)
        ]
    )
    violations.sort(key=lambda v: v.control_point)
    return BeamDeliverability(
        number=dbeam.number,
        name=dbeam.name,
        is_arc=is_arc,
        n_control_points=int(cp.cumulative_mu.size),
        mu=float(cp.cumulative_mu[-1] - cp.cumulative_mu[0]),
        delivery_time_s=time_s,
        max_leaf_speed_mm_per_s=leaf_speed,
        mcs=mcs,
        mean_aperture_area_cm2=float(np.sum(weights * areas) / weights.sum() / 100.0),
        violations=tuple(violations),
    )


def check_deliverability(plan) -> Deliverability:
    """Delivery time, MU, leaf speed, MCS, mean aperture area and limit violations.

    Parameters
    ----------
    plan : rtplan.DeliverablePlan or rtplan.io.RtPlanBeams
        Anything with ``beams`` (DeliverableBeam or ArcBeam, meterset over all fractions)
        and ``fractions``.

    Returns
    -------
    Deliverability
        Per fraction; ``ok`` when every limit holds.

    Raises
    ------
    rtplan.errors.MachineError
        An arc or dynamic beam on a machine without arc limits (the machine file named).
    rtplan.errors.SegmentError
        An arc given as segments only (no control points).

    Examples
    --------
    >>> import numpy as np
    >>> from dose_engine import Beam
    >>> from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
    >>> from rtplan.delivery import check_deliverability
    >>> m = load_machine("AgilityMLC160")
    >>> leaves = np.tile([[-20.0], [20.0]], m.mlc.n_pairs)
    >>> seg = Segment(leaves, {"Y": (-20.0, 20.0)}, 200.0, m.mlc.leaf_boundaries_mm)
    >>> plan = DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), m, [seg])], 2, 4.0, "PTV")
    >>> d = check_deliverability(plan)
    >>> d.total_mu, d.delivery_time_s, d.mcs, d.beams[0].mean_aperture_area_cm2, d.ok
    (100.0, 10.0, 1.0, 16.0, True)
    """
    fractions = int(plan.fractions)
    return Deliverability(tuple(_beam_deliverability(b, fractions) for b in plan.beams), fractions)
