"""Beams given by their control points: arcs (VMAT) and dynamic MLC beams.

Contract (read by the RT-PLAN writer and reader, the dose and the deliverability checks)
---------------------------------------------------------------------------------------
:class:`ControlPoint` — one item of (300A,0111) *ControlPointSequence*: the IEC 61217
gantry angle, the leaf and jaw positions (mm, BLD, as :class:`rtplan.Segment`), the
(300A,0134) *CumulativeMetersetWeight* normalised to end at 1, and optionally the
(300A,0115) *DoseRateSet* (MU/min).

:class:`ArcBeam` — a :class:`rtplan.DeliverableBeam` whose delivery is its control points:
the gantry rotates (``rotation_direction`` ``"CW"`` or ``"CC"``, (300A,011F)
*GantryRotationDirection*; an arc may pass through 0 degrees) or stays
(``"NONE"``: sliding-window dynamic MLC) while leaves, jaws and meterset move linearly
from one control point to the next.  Its :attr:`~rtplan.DeliverableBeam.segments` are
static apertures that stand for that delivery (:func:`sample_control_points`): at most
:data:`ARC_SAMPLE_DEG` of gantry rotation and :data:`LEAF_SAMPLE_MM` of leaf or jaw travel
apart, each at the middle of its interval with an equal share of the interval's meterset
and the centre angle of its angular bin (the apertures of one bin share one dose
computation); an arc's apertures carry their own
:attr:`rtplan.Segment.gantry_angle_deg`.  The dose of the beam is the dose of these
apertures, the same path as for static beams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..errors import SegmentError
from ._deliverable import DeliverableBeam, Segment, checked_jaws

__all__ = [
    "ARC_SAMPLE_DEG",
    "LEAF_SAMPLE_MM",
    "MAX_SAMPLES_PER_BEAM",
    "POSITION_TOL_MM",
    "ArcBeam",
    "ControlPoint",
    "gantry_sweeps_deg",
    "sample_control_points",
]

#: Arcs are computed as static apertures at most this far apart in gantry angle, degrees.
ARC_SAMPLE_DEG = 2.0
#: Leaves and jaws that move while meterset is delivered (sliding window, VMAT) are
#: computed as static apertures at most this far apart along their travel, mm.
LEAF_SAMPLE_MM = 2.0
#: Refuse beams that would need more static apertures than this (hostile or corrupt plans).
MAX_SAMPLES_PER_BEAM = 20_000
#: Leaf or jaw positions equal within this tolerance are "not moving", mm.
POSITION_TOL_MM = 0.01
#: (300A,011F) *GantryRotationDirection* values.
ROTATION_DIRECTIONS = ("CW", "CC", "NONE")


@dataclass(frozen=True, eq=False)
class ControlPoint:
    """One control point of an arc or dynamic beam.

    Parameters
    ----------
    gantry_angle_deg : float, degrees
        (300A,011E) *GantryAngle*, IEC 61217, in [0, 360).
    leaf_positions_mm : (2, n_pairs) array of float, mm
        Bank A row, bank B row (BLD x), as :attr:`rtplan.Segment.leaf_positions_mm`.
    jaws_mm : mapping of str to (float, float), mm
        ``{"X": (x1, x2), "Y": (y1, y2)}``, only the jaws the machine has.
    cumulative_meterset_weight : float
        (300A,0134), the fraction of the beam's meterset delivered before this control
        point, in [0, 1].
    dose_rate_mu_per_min : float, MU/min, optional
        (300A,0115) *DoseRateSet*: the dose rate set for the interval that starts here;
        ``None``: the previous control point's (or the machine's maximum).

    Raises
    ------
    SegmentError
        An angle outside [0, 360), leaf positions not ``(2, n)`` or not finite, jaws not
        ``(jaw1, jaw2)`` pairs keyed ``"X"``/``"Y"``, a weight outside [0, 1], a dose
        rate that is not positive.
    """

    gantry_angle_deg: float
    leaf_positions_mm: np.ndarray
    jaws_mm: Mapping[str, tuple[float, float]]
    cumulative_meterset_weight: float
    dose_rate_mu_per_min: float | None = None

    def __post_init__(self) -> None:
        g = float(self.gantry_angle_deg)
        if not (math.isfinite(g) and 0.0 <= g < 360.0):
            raise SegmentError(
                f"`gantry_angle_deg` must be in [0, 360) degrees; got {self.gantry_angle_deg!r}."
            )
        leaves = np.array(self.leaf_positions_mm, dtype=float)
        if leaves.ndim != 2 or leaves.shape[0] != 2 or not np.all(np.isfinite(leaves)):
            raise SegmentError(
                "`leaf_positions_mm` must be a finite (2, n_pairs) array (bank A row, bank B "
                f"row); got shape {leaves.shape}."
            )
        leaves.setflags(write=False)
        jaws = checked_jaws(self.jaws_mm)
        w = float(self.cumulative_meterset_weight)
        if not (0.0 <= w <= 1.0):
            raise SegmentError(
                f"`cumulative_meterset_weight` must be in [0, 1]; got "
                f"{self.cumulative_meterset_weight!r}."
            )
        rate = self.dose_rate_mu_per_min
        if rate is not None:
            rate = float(rate)
            if not (math.isfinite(rate) and rate > 0):
                raise SegmentError(f"`dose_rate_mu_per_min` must be > 0; got {rate!r}.")
        object.__setattr__(self, "gantry_angle_deg", g)
        object.__setattr__(self, "leaf_positions_mm", leaves)
        object.__setattr__(self, "jaws_mm", MappingProxyType(jaws))
        object.__setattr__(self, "cumulative_meterset_weight", w)
        object.__setattr__(self, "dose_rate_mu_per_min", rate)

    def __reduce__(self):
        # mappingproxy cannot be pickled (Dask ships plans between processes)
        return (
            ControlPoint,
            (
                self.gantry_angle_deg,
                np.array(self.leaf_positions_mm),
                dict(self.jaws_mm),
                self.cumulative_meterset_weight,
                self.dose_rate_mu_per_min,
            ),
        )


def gantry_sweeps_deg(gantry_angles_deg: Sequence[float], rotation_direction: str) -> np.ndarray:
    """Signed gantry rotation between neighbouring control points, degrees.

    Positive clockwise (IEC 61217 gantry angles increase clockwise); an arc through 0
    degrees wraps: CW from 350 to 10 is +20, CC from 10 to 350 is −20.

    Parameters
    ----------
    gantry_angles_deg : (n,) sequence of float, degrees
    rotation_direction : {"CW", "CC", "NONE"}

    Returns
    -------
    (n - 1,) ndarray of float, degrees
    """
    g = np.asarray(gantry_angles_deg, dtype=float)
    if rotation_direction == "CW":
        return (g[1:] - g[:-1]) % 360.0
    if rotation_direction == "CC":
        return -((g[:-1] - g[1:]) % 360.0)
    return np.zeros(max(g.size - 1, 0))


def _n_samples(sweep_deg: float, travel_mm: float) -> tuple[int, int]:
    """Static apertures that stand for the delivery between two control points, and the
    gantry angles they share."""
    by_angle = math.ceil(abs(sweep_deg) / ARC_SAMPLE_DEG - 1e-9)
    by_travel = math.ceil(travel_mm / LEAF_SAMPLE_MM - 1e-9) if travel_mm > POSITION_TOL_MM else 0
    return max(1, by_angle, by_travel), max(1, by_angle)


def sample_control_points(
    control_points: Sequence[ControlPoint], sweeps_deg: Sequence[float], *, where: str = ""
) -> list[tuple[np.ndarray, dict, float, float | None]]:
    """Static apertures that stand for the delivery between control points.

    Between control points ``k`` and ``k + 1`` whose weights differ, ``n`` apertures at
    the middle of ``n`` equal sub-intervals, positions interpolated linearly, each with
    ``1 / n`` of the interval's weight; ``n`` is the smallest number keeping samples at
    most :data:`ARC_SAMPLE_DEG` of gantry rotation and :data:`LEAF_SAMPLE_MM` of leaf or
    jaw travel apart.  The rotation is cut into ``ceil(|Δθ| / ARC_SAMPLE_DEG)`` equal
    angular bins and each aperture takes the centre angle of the bin its sub-interval's
    middle falls in, so apertures sampled for leaf travel share a gantry angle (one dose
    computation per angle) and angles stay at most :data:`ARC_SAMPLE_DEG` apart.
    Intervals of equal weight deliver nothing (devices move with the beam off) and give no
    aperture.

    .. versionchanged:: 0.1.0
       Apertures of one angular bin share its centre angle (they had each their own).

    Parameters
    ----------
    control_points : sequence of ControlPoint
    sweeps_deg : (n - 1,) sequence of float, degrees
        Signed rotation of each interval (:func:`gantry_sweeps_deg`).
    where : str, keyword-only
        Put in front of the error message (``"plan.dcm: beam 2: "``).

    Returns
    -------
    list of (leaves, jaws, weight, gantry)
        ``(2, n_pairs)`` leaf positions (mm), jaws ``{"X": (x1, x2), ...}`` (mm), the
        fraction of the beam meterset, and the gantry angle (degrees in [0, 360)) when
        some interval rotates, else ``None``.

    Raises
    ------
    SegmentError
        More than :data:`MAX_SAMPLES_PER_BEAM` apertures.
    """
    arc = any(abs(s) > 0 for s in sweeps_deg)
    out: list[tuple[np.ndarray, dict, float, float | None]] = []
    for k in range(len(control_points) - 1):
        c0, c1 = control_points[k], control_points[k + 1]
        dw = c1.cumulative_meterset_weight - c0.cumulative_meterset_weight
        if dw <= 1e-12:
            continue
        jaw0 = {key: np.asarray(v) for key, v in c0.jaws_mm.items()}
        jaw1 = {key: np.asarray(c1.jaws_mm.get(key, v)) for key, v in c0.jaws_mm.items()}
        travel = float(np.max(np.abs(c1.leaf_positions_mm - c0.leaf_positions_mm)))
        for key in jaw0:
            travel = max(travel, float(np.max(np.abs(jaw1[key] - jaw0[key]))))
        n_sub, n_angles = _n_samples(float(sweeps_deg[k]), travel)
        if len(out) + n_sub > MAX_SAMPLES_PER_BEAM:
            raise SegmentError(
                f"{where}more than {MAX_SAMPLES_PER_BEAM} apertures after sampling its arc every "
                f"{ARC_SAMPLE_DEG:g} degrees and its leaf motion every {LEAF_SAMPLE_MM:g} mm; "
                "too large a beam to compute."
            )
        for j in range(n_sub):
            t = (j + 0.5) / n_sub  # the middle of each sub-interval
            leaves = (1 - t) * c0.leaf_positions_mm + t * c1.leaf_positions_mm
            jaws = {
                key: tuple(float(v) for v in (1 - t) * jaw0[key] + t * jaw1[key]) for key in jaw0
            }
            # the samples of one angular bin share its centre angle (one dose per angle)
            t_angle = (math.floor(j * n_angles / n_sub) + 0.5) / n_angles
            gantry = float((c0.gantry_angle_deg + t_angle * sweeps_deg[k]) % 360.0) if arc else None
            out.append((leaves, jaws, float(dw / n_sub), gantry))
    return out


@dataclass(frozen=True, eq=False)
class ArcBeam(DeliverableBeam):
    """A beam delivered as its control points: an arc (VMAT) or a dynamic MLC beam.

    Build it with keywords: ``ArcBeam(number, name, beam, machine, control_points=...,
    meterset_mu=..., rotation_direction="CW")``; its ``segments`` are computed from the
    control points (module docstring); segments passed in (by :func:`dataclasses.replace`)
    must be those.

    Parameters
    ----------
    number, name, beam, machine
        As :class:`rtplan.DeliverableBeam`; ``beam.gantry_angle_deg`` is the first control
        point's angle, ``beam`` gives collimator, couch, isocentre and patient position.
    control_points : sequence of ControlPoint
        In delivery order, at least 2; weights non-decreasing from 0 to 1.
    meterset_mu : float, MU
        Meterset of the beam summed over all fractions (as :attr:`rtplan.Segment.total_mu`).
    rotation_direction : {"CW", "CC", "NONE"}
        (300A,011F) *GantryRotationDirection* of the whole beam; ``"NONE"``: every control
        point at the beam's gantry angle (sliding window).

    Raises
    ------
    SegmentError
        Fewer than 2 control points, control points whose leaf count or jaws differ from the
        machine's, weights that decrease or do not end at 1 (naming the control point), a
        rotation direction outside CW/CC/NONE, a gantry angle that changes with ``"NONE"``
        or a first angle that is not the beam's, an arc of more than 360 degrees, a
        meterset ≤ 0.  Machine limits: :meth:`rtplan.DeliverableBeam.validate` (leaves,
        jaws) and :func:`rtplan.delivery.check_deliverability` (speeds, dose rates,
        spacing, MU per control point).
    """

    control_points: tuple[ControlPoint, ...] = ()
    meterset_mu: float = 0.0
    rotation_direction: str = "CW"

    def __post_init__(self) -> None:
        who = f"Beam {self.number} ({self.name!r})"
        cps = tuple(self.control_points)
        if len(cps) < 2 or not all(isinstance(c, ControlPoint) for c in cps):
            raise SegmentError(
                f"{who}: `control_points` must be at least 2 ControlPoint; got {len(cps)} item(s)."
            )
        if self.rotation_direction not in ROTATION_DIRECTIONS:
            raise SegmentError(
                f"{who}: `rotation_direction` must be one of {', '.join(ROTATION_DIRECTIONS)}; "
                f"got {self.rotation_direction!r}."
            )
        n_pairs = self.machine.mlc.n_pairs
        jaws = set(self.machine.jaws)
        prev_w = 0.0
        for k, cp in enumerate(cps):
            at = f"{who} control point {k}"
            if cp.leaf_positions_mm.shape != (2, n_pairs):
                raise SegmentError(
                    f"{at}: leaf positions have shape {cp.leaf_positions_mm.shape}; MLC "
                    f"{self.machine.mlc.name!r} of machine {self.machine.name!r} needs "
                    f"(2, {n_pairs})."
                )
            if set(cp.jaws_mm) != jaws:
                raise SegmentError(
                    f"{at}: jaws {sorted(cp.jaws_mm)}; machine {self.machine.name!r} has jaws "
                    f"{sorted(jaws)}."
                )
            if cp.cumulative_meterset_weight < prev_w - 1e-9:
                raise SegmentError(
                    f"{at}: (300A,0134) CumulativeMetersetWeight {cp.cumulative_meterset_weight:g}"
                    f" is below the previous control point's {prev_w:g}; weights must not "
                    "decrease."
                )
            prev_w = cp.cumulative_meterset_weight
        if cps[0].cumulative_meterset_weight != 0.0:
            raise SegmentError(
                f"{who} control point 0: CumulativeMetersetWeight is "
                f"{cps[0].cumulative_meterset_weight:g}; the first control point's must be 0."
            )
        if abs(cps[-1].cumulative_meterset_weight - 1.0) > 1e-6:
            raise SegmentError(
                f"{who} control point {len(cps) - 1}: the last CumulativeMetersetWeight is "
                f"{cps[-1].cumulative_meterset_weight:g}; expected 1."
            )
        g0 = self.beam.gantry_angle_deg
        if abs((cps[0].gantry_angle_deg - g0 + 180.0) % 360.0 - 180.0) > 1e-6:
            raise SegmentError(
                f"{who} control point 0: gantry angle {cps[0].gantry_angle_deg:g} degrees but "
                f"the beam's geometry is at {g0:g}; build the Beam at the arc's start angle."
            )
        sweeps = gantry_sweeps_deg([c.gantry_angle_deg for c in cps], self.rotation_direction)
        if self.rotation_direction == "NONE":
            moved = [
                k
                for k, c in enumerate(cps)
                if abs((c.gantry_angle_deg - g0 + 180.0) % 360.0 - 180.0) > 1e-6
            ]
            if moved:
                raise SegmentError(
                    f"{who} control point {moved[0]}: gantry angle "
                    f"{cps[moved[0]].gantry_angle_deg:g} degrees differs from the first "
                    "control point's but the rotation direction is NONE."
                )
        elif float(np.sum(np.abs(sweeps))) > 360.0 + 1e-6:
            raise SegmentError(
                f"{who}: the arc rotates {float(np.sum(np.abs(sweeps))):g} degrees "
                f"{self.rotation_direction}; at most 360."
            )
        mu = float(self.meterset_mu)
        if not (math.isfinite(mu) and mu > 0):
            raise SegmentError(f"{who}: `meterset_mu` must be > 0; got {self.meterset_mu!r}.")
        bounds = self.machine.mlc.leaf_boundaries_mm
        segments = tuple(
            Segment(leaves, jaws_mm, mu * w, bounds, gantry)
            for leaves, jaws_mm, w, gantry in sample_control_points(cps, sweeps, where=f"{who}: ")
        )
        if self.segments and not _same_segments(self.segments, segments):
            raise SegmentError(
                f"{who}: an ArcBeam's segments are computed from its `control_points`; pass "
                "control points (and `meterset_mu`), not `segments`."
            )
        object.__setattr__(self, "control_points", cps)
        object.__setattr__(self, "meterset_mu", mu)
        object.__setattr__(self, "segments", segments)
        super().__post_init__()

    def __repr__(self) -> str:
        return (
            f"ArcBeam(number={self.number}, name={self.name!r}, rotation_direction="
            f"{self.rotation_direction!r}, n_control_points={len(self.control_points)}, "
            f"total_mu={self.total_mu:.4g}, machine={self.machine.name!r})"
        )

    def __reduce__(self):
        return (
            _rebuild_arc,
            (
                self.number,
                self.name,
                self.beam,
                self.machine,
                self.control_points,
                self.meterset_mu,
                self.rotation_direction,
            ),
        )

    def validate(self, *, where: str = "") -> None:
        """Validate every control point's aperture against the machine
        (:meth:`Segment.validate`).

        The apertures sampled between control points (:attr:`segments`) are not checked:
        the leaves move linearly from one control point to the next, so every limit that
        holds at both ends holds in between (ranges, overlap, travel, interdigitation and
        jaws are convex), except the minimum leaf gap, through which a pair opening from
        closed passes as the machine moves it.
        """
        prefix = f"{where} " if where else ""
        bounds = self.machine.mlc.leaf_boundaries_mm
        for k, cp in enumerate(self.control_points):
            Segment(cp.leaf_positions_mm, dict(cp.jaws_mm), 0.0, bounds).validate(
                self.machine, where=f"{prefix}beam {self.number} control point {k}"
            )

    def scaled(self, factor: float) -> ArcBeam:
        """A copy delivering ``factor`` times the meterset (control points unchanged; the
        segments follow from them)."""
        return _rebuild_arc(
            self.number,
            self.name,
            self.beam,
            self.machine,
            self.control_points,
            self.meterset_mu * factor,
            self.rotation_direction,
        )

    @property
    def gantry_sweeps_deg(self) -> np.ndarray:
        """``(n_control_points - 1,)`` signed rotation of each interval, degrees."""
        return gantry_sweeps_deg(
            [c.gantry_angle_deg for c in self.control_points], self.rotation_direction
        )

    def cumulative_meterset_weights(self) -> np.ndarray:
        """(300A,0134) *CumulativeMetersetWeight* of the control points, ``(n,)``."""
        return np.array([c.cumulative_meterset_weight for c in self.control_points])


def _same_segments(given, computed) -> bool:
    """Whether ``given`` are the apertures computed from the control points (as
    :func:`dataclasses.replace` passes them back)."""
    return len(given) == len(computed) and all(
        a.total_mu == b.total_mu
        and a.gantry_angle_deg == b.gantry_angle_deg
        and np.array_equal(a.leaf_positions_mm, b.leaf_positions_mm)
        and dict(a.jaws_mm) == dict(b.jaws_mm)
        for a, b in zip(given, computed, strict=True)
    )


def _rebuild_arc(number, name, beam, machine, control_points, meterset_mu, rotation_direction):
    return ArcBeam(
        number,
        name,
        beam,
        machine,
        control_points=control_points,
        meterset_mu=meterset_mu,
        rotation_direction=rotation_direction,
    )
