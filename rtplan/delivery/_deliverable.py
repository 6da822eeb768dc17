"""Deliverable plans: MLC segments with monitor units, beams made of segments, plans.

Contract (read by the RT-PLAN writer and reader)
-----------------------------------------------
All positions are mm at the isocentre plane in IEC 61217 beam-limiting-device (BLD)
coordinates: ``x`` along leaf travel, ``y`` along leaf stacking (see
:mod:`rtplan.delivery._machine`).

:class:`Segment` — one static MLC aperture (step-and-shoot), or one sample of an arc or a
sliding-window beam read from another system (then ``gantry_angle_deg`` may differ from the
beam's; the writer refuses such beams: rtplan does not export arcs yet).

* ``leaf_positions_mm``: ``(2, n_pairs)`` float; row 0 = bank A (X1, −x side) tip positions,
  row 1 = bank B (X2, +x side) tip positions; column ``i`` = leaf pair ``i`` ordered along
  +y.  In DICOM, (300A,011C) *LeafJawPositions* of the MLCX item is
  ``leaf_positions_mm.ravel()`` (all A leaves, then all B leaves), with the pair boundaries
  ``leaf_boundaries_mm`` = (300A,00BE) *LeafPositionBoundaries*.
* ``jaws_mm``: ``{"X": (x1, x2), "Y": (y1, y2)}`` — only the jaws the machine has; the
  (300A,011C) *LeafJawPositions* of the ASYMX / ASYMY items.
* ``total_mu``: the meterset of this segment summed over **all fractions** (MU).  The
  planner works in total MU; an RT-PLAN stores per-fraction meterset, so the writer divides
  by the number of fractions (:meth:`DeliverableBeam.per_fraction_mu`).

:class:`DeliverableBeam` — a step-and-shoot beam: its :class:`dose_engine.Beam` geometry,
:class:`~rtplan.Machine`, and segments.  Written as 2 control points per segment with the
same MLC/jaw positions and :meth:`DeliverableBeam.cumulative_meterset_weights` as
(300A,0134) *CumulativeMetersetWeight* (0 at the first control point, 1 at the last);
(300A,00C4) *BeamType* ``"DYNAMIC"`` (the MLC changes between control points; static
per segment), (300A,010E) *FinalCumulativeMetersetWeight* 1, and (300A,0086)
*BeamMeterset* = ``per_fraction_mu(fractions)``.

:class:`DeliverablePlan` — beams, number of fractions, prescription (total dose, target name).

Closed leaf pairs
-----------------
A pair whose gap ``B − A`` is at most ``closed_gap_mm`` (the machine's
``min_leaf_gap_mm``) is closed for :meth:`Segment.open_rectangles_mm` (sequencing, the
open area).  The dose sees every leaf: :meth:`DeliverableBeam.segment_fluence` applies the
machine's leaf and jaw transmission, dosimetric leaf gap, interleaf leakage and
tongue-and-groove (:func:`dose_engine.aperture_fluence`).  The sequencer parks closed
pairs under a jaw where the machine has X jaws.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from dose_engine import BeamModel, MLCParameters, aperture_fluence_edges, collimator_scatter_scale

from .._internal.arguments import ARRAY, INTEGER, NUMBER, TEXT, check_arguments, sequence_of
from ..errors import SegmentError
from ._machine import GAP_TOLERANCE_MM, Machine

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Beam

__all__ = ["DeliverableBeam", "DeliverablePlan", "Segment", "SegmentError"]

logger = logging.getLogger("rtplan.delivery")


def _where(where: str) -> str:
    return f"{where}: " if where else ""


def checked_jaws(jaws_mm: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``jaws_mm`` as ``{"X": (x1, x2), "Y": (y1, y2)}`` of floats (mm), only the keys given.

    Raises
    ------
    rtplan.errors.SegmentError
        A key other than ``"X"``/``"Y"``, or a jaw that is not 2 finite positions.
    """
    unknown = set(jaws_mm) - {"X", "Y"}
    if unknown:
        raise SegmentError(f"`jaws_mm` keys must be 'X' and/or 'Y'; got {sorted(unknown)}.")
    jaws = {}
    for key in ("X", "Y"):
        if key in jaws_mm:
            pos = tuple(float(v) for v in jaws_mm[key])
            if len(pos) != 2 or not all(math.isfinite(v) for v in pos):
                raise SegmentError(
                    f"`jaws_mm[{key!r}]` must be 2 finite positions (jaw1, jaw2); got "
                    f"{jaws_mm[key]!r}."
                )
            jaws[key] = pos
    return jaws


@check_arguments(
    leaf_positions_mm=ARRAY,
    jaws_mm="collections.abc:Mapping",
    total_mu=NUMBER,
    leaf_boundaries_mm=ARRAY,
)
@dataclass(frozen=True, eq=False)
class Segment:
    """One static MLC + jaw aperture delivered with ``total_mu`` monitor units.

    Parameters
    ----------
    leaf_positions_mm : (2, n_pairs) array of float, mm
        Row 0 bank A (X1, −x), row 1 bank B (X2, +x) leaf tip positions, BLD x.
    jaws_mm : mapping of str to (float, float), mm
        ``{"X": (x1, x2), "Y": (y1, y2)}`` with only the jaws the machine has.
    total_mu : float, MU
        Meterset of this segment summed over all fractions (≥ 0).
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm
        Leaf pair boundaries along BLD +y ((300A,00BE) *LeafPositionBoundaries*).
    gantry_angle_deg : float, degrees, optional
        IEC 61217 gantry angle of this aperture when it is one sample of an arc (read from
        another system's arc or VMAT beam, :func:`rtplan.io.read_rtplan`), in [0, 360);
        ``None``: the beam's own angle (a static, step-and-shoot aperture).

    Raises
    ------
    SegmentError
        Shapes disagree, values are not finite, ``total_mu`` < 0, an unknown jaw name or a
        gantry angle outside [0, 360).  Machine limits are checked by :meth:`validate`.
    """

    leaf_positions_mm: np.ndarray
    jaws_mm: Mapping[str, tuple[float, float]]
    total_mu: float
    leaf_boundaries_mm: np.ndarray
    gantry_angle_deg: float | None = None

    def __post_init__(self) -> None:
        b = np.array(self.leaf_boundaries_mm, dtype=float).ravel()
        if b.size < 2 or not np.all(np.isfinite(b)) or np.any(np.diff(b) <= 0):
            raise SegmentError(
                "`leaf_boundaries_mm` must be ≥ 2 finite strictly increasing values; got "
                f"{self.leaf_boundaries_mm!r}."
            )
        leaves = np.array(self.leaf_positions_mm, dtype=float)
        if leaves.ndim != 2 or leaves.shape != (2, b.size - 1):
            raise SegmentError(
                f"`leaf_positions_mm` must have shape (2, {b.size - 1}) (bank A row, bank B row, "
                f"one column per leaf pair); got shape {leaves.shape}."
            )
        if not np.all(np.isfinite(leaves)):
            raise SegmentError("`leaf_positions_mm` contains non-finite values.")
        b.setflags(write=False)
        leaves.setflags(write=False)
        jaws = checked_jaws(self.jaws_mm)
        mu = float(self.total_mu)
        if not (math.isfinite(mu) and mu >= 0):
            raise SegmentError(f"`total_mu` must be finite and ≥ 0; got {self.total_mu!r}.")
        object.__setattr__(self, "leaf_boundaries_mm", b)
        object.__setattr__(self, "leaf_positions_mm", leaves)
        object.__setattr__(self, "jaws_mm", MappingProxyType(jaws))
        object.__setattr__(self, "total_mu", mu)
        if self.gantry_angle_deg is not None:
            g = float(self.gantry_angle_deg)
            if not (math.isfinite(g) and 0.0 <= g < 360.0):
                raise SegmentError(
                    f"`gantry_angle_deg` must be in [0, 360) degrees or None; got "
                    f"{self.gantry_angle_deg!r}."
                )
            object.__setattr__(self, "gantry_angle_deg", g)

    def __repr__(self) -> str:
        return (
            f"Segment(total_mu={self.total_mu:.4g}, n_pairs={self.n_pairs}, "
            f"n_open_pairs={len(self.open_rectangles_mm())}, jaws_mm={dict(self.jaws_mm)})"
        )

    def __reduce__(self):
        # mappingproxy cannot be pickled (Dask ships plans between processes)
        return (
            Segment,
            (
                np.array(self.leaf_positions_mm),
                dict(self.jaws_mm),
                self.total_mu,
                np.array(self.leaf_boundaries_mm),
                self.gantry_angle_deg,
            ),
        )

    @property
    def n_pairs(self) -> int:
        """Number of leaf pairs."""
        return int(self.leaf_positions_mm.shape[1])

    def with_mu(self, total_mu: float) -> Segment:
        """A copy of this aperture with another meterset (total over all fractions, MU)."""
        return Segment(
            self.leaf_positions_mm,
            self.jaws_mm,
            total_mu,
            self.leaf_boundaries_mm,
            self.gantry_angle_deg,
        )

    def open_rectangles_mm(self, *, closed_gap_mm: float = 0.0) -> np.ndarray:
        """The open part of each leaf pair, clipped by the jaws, as rectangles.

        Parameters
        ----------
        closed_gap_mm : float, mm, keyword-only
            Pairs whose gap ``B − A`` is at most this (plus 1e-6 mm) count as closed and are
            dropped; pass the machine's ``min_leaf_gap_mm`` (as
            :meth:`DeliverableBeam.segment_rectangles_mm` does).

        Returns
        -------
        (n, 4) ndarray of float, mm
            ``[x1, x2, y1, y2]`` in BLD coordinates at the isocentre plane, one row per open
            leaf pair (ordered along +y), ready for ``dose_engine.field_dose``.
        """
        a, b = self.leaf_positions_mm
        lo, hi = self.leaf_boundaries_mm[:-1], self.leaf_boundaries_mm[1:]
        x1, x2 = a.copy(), b.copy()
        open_pair = (b - a) > closed_gap_mm + GAP_TOLERANCE_MM
        if "X" in self.jaws_mm:
            jx1, jx2 = self.jaws_mm["X"]
            x1, x2 = np.maximum(x1, jx1), np.minimum(x2, jx2)
        y1, y2 = lo.copy(), hi.copy()
        if "Y" in self.jaws_mm:
            jy1, jy2 = self.jaws_mm["Y"]
            y1, y2 = np.maximum(y1, jy1), np.minimum(y2, jy2)
        keep = open_pair & (x2 - x1 > GAP_TOLERANCE_MM) & (y2 - y1 > GAP_TOLERANCE_MM)
        return np.stack([x1[keep], x2[keep], y1[keep], y2[keep]], axis=1)

    def open_area_mm2(self, *, closed_gap_mm: float = 0.0) -> float:
        """Total open area at the isocentre plane, mm² (sum of :meth:`open_rectangles_mm`)."""
        r = self.open_rectangles_mm(closed_gap_mm=closed_gap_mm)
        return float(np.sum((r[:, 1] - r[:, 0]) * (r[:, 3] - r[:, 2])))

    def validate(self, machine: Machine, *, where: str = "") -> None:
        """Check this segment against the machine's MLC and jaw limits.

        Parameters
        ----------
        machine : Machine
        where : str, keyword-only
            Context put in front of error messages (e.g. ``"plan.dcm beam 2 control point
            4"``) so the RT-PLAN reader can name the file and element.

        Raises
        ------
        SegmentError
            Leaf count or boundaries differ from the MLC's; a leaf outside its range or
            over-travel; opposing leaves overlapping (``A > B``) or closer than
            ``min_leaf_gap_mm`` without being closed; one bank spreading more than
            ``max_leaf_travel_mm``; interdigitation on a machine that forbids it; a jaw
            missing, extra, outside its range or jaw 1 > jaw 2.  The message names the
            leaf pair or jaw, the value found and the limit.
        """
        w = _where(where)
        mlc = machine.mlc
        tol = GAP_TOLERANCE_MM
        if self.n_pairs != mlc.n_pairs:
            raise SegmentError(
                f"{w}segment has {self.n_pairs} leaf pairs but MLC {mlc.name!r} of machine "
                f"{machine.name!r} has {mlc.n_pairs}."
            )
        if not np.allclose(self.leaf_boundaries_mm, mlc.leaf_boundaries_mm, atol=1e-3, rtol=0):
            raise SegmentError(
                f"{w}LeafPositionBoundaries differ from those of MLC {mlc.name!r} of machine "
                f"{machine.name!r}; was the plan made for another machine?"
            )
        a, b = self.leaf_positions_mm
        lim = mlc.bank_limits_mm()
        for bank, pos, (lo, hi) in (("A", a, lim[0]), ("B", b, lim[1])):
            bad = np.flatnonzero((pos < lo - tol) | (pos > hi + tol))
            if bad.size:
                i = int(bad[0])
                raise SegmentError(
                    f"{w}leaf {bank}{i + 1} (pair {i}) at {pos[i]:.3f} mm is outside the range "
                    f"[{lo:g}, {hi:g}] mm of bank {bank} of MLC {mlc.name!r} "
                    f"({bad.size} leaves out of range)."
                )
        gap = b - a
        bad = np.flatnonzero(gap < -tol)
        if bad.size:
            i = int(bad[0])
            raise SegmentError(
                f"{w}leaves of pair {i} overlap: bank A at {a[i]:.3f} mm is beyond bank B at "
                f"{b[i]:.3f} mm (A must be ≤ B; {bad.size} pairs overlap)."
            )
        g = mlc.min_leaf_gap_mm
        bad = np.flatnonzero((gap > tol) & (gap < g - tol))
        if bad.size:
            i = int(bad[0])
            raise SegmentError(
                f"{w}leaf pair {i} has a gap of {gap[i]:.3f} mm, below the minimum leaf gap "
                f"{g:g} mm of MLC {mlc.name!r}; close it fully (A == B) or open it to ≥ {g:g} mm."
            )
        for bank, pos in (("A", a), ("B", b)):
            spread = float(pos.max() - pos.min())
            if spread > mlc.max_leaf_travel_mm + tol:
                raise SegmentError(
                    f"{w}bank {bank} leaves spread over {spread:.3f} mm (from {pos.min():.3f} to "
                    f"{pos.max():.3f} mm), more than the maximum leaf travel "
                    f"{mlc.max_leaf_travel_mm:g} mm of MLC {mlc.name!r}; split the field."
                )
        if not mlc.interdigitation and self.n_pairs > 1:
            up = np.flatnonzero(a[:-1] > b[1:] + tol)
            down = np.flatnonzero(a[1:] > b[:-1] + tol)
            if up.size or down.size:
                i, j = (int(up[0]), int(up[0]) + 1) if up.size else (int(down[0]) + 1, int(down[0]))
                raise SegmentError(
                    f"{w}interdigitation: leaf A of pair {i} at {a[i]:.3f} mm passes leaf B of "
                    f"adjacent pair {j} at {b[j]:.3f} mm, which MLC {mlc.name!r} does not allow."
                )
        if set(self.jaws_mm) != set(machine.jaws):
            raise SegmentError(
                f"{w}segment has jaws {sorted(self.jaws_mm)} but machine {machine.name!r} has "
                f"jaws {sorted(machine.jaws)} ({', '.join(machine.dicom_device_types())})."
            )
        for key, (j1, j2) in self.jaws_mm.items():
            jl = machine.jaws[key].limits_mm()
            for label, v, (lo, hi) in ((f"{key}1", j1, jl[0]), (f"{key}2", j2, jl[1])):
                if v < lo - tol or v > hi + tol:
                    raise SegmentError(
                        f"{w}jaw {label} at {v:.3f} mm is outside its range [{lo:g}, {hi:g}] mm "
                        f"on machine {machine.name!r}."
                    )
            if j1 > j2 + tol:
                raise SegmentError(
                    f"{w}jaw {key}1 at {j1:.3f} mm is beyond jaw {key}2 at {j2:.3f} mm "
                    f"({key}1 must be ≤ {key}2)."
                )


@check_arguments(
    number=INTEGER,
    name=TEXT,
    beam="dose_engine._beam:Beam",
    machine="rtplan.delivery._machine:Machine",
)
@dataclass(frozen=True, eq=False)
class DeliverableBeam:
    """A step-and-shoot beam: geometry, machine and MLC segments with monitor units.

    Parameters
    ----------
    number : int
        (300A,00C0) *BeamNumber* (≥ 1, unique in the plan).
    name : str
        (300A,00C2) *BeamName*.
    beam : dose_engine.Beam
        IEC 61217 gantry, collimator and couch angles, isocentre (LPS mm), SAD, patient
        position.
    machine : Machine
    segments : sequence of Segment
        In delivery order; at least one, total MU > 0.

    Raises
    ------
    SegmentError
        No segment, zero total MU, or a segment whose leaf boundaries differ from the
        machine's MLC.  Machine limits are checked by :meth:`validate`.
    """

    number: int
    name: str
    beam: Beam
    machine: Machine
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        segs = tuple(self.segments)
        if not segs or not all(isinstance(s, Segment) for s in segs):
            raise SegmentError(
                f"Beam {self.number} ({self.name!r}): `segments` must be a non-empty sequence of "
                f"Segment; got {self.segments!r}."
            )
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "number", int(self.number))
        if self.total_mu <= 0:
            raise SegmentError(
                f"Beam {self.number} ({self.name!r}): total meterset is {self.total_mu} MU; a "
                "beam needs > 0 MU."
            )

    @property
    def is_arc(self) -> bool:
        """Whether some segment has a gantry angle other than the beam's (an arc read from
        another system)."""
        g = self.beam.gantry_angle_deg
        return any(s.gantry_angle_deg not in (None, g) for s in self.segments)

    def __repr__(self) -> str:
        return (
            f"DeliverableBeam(number={self.number}, name={self.name!r}, total_mu="
            f"{self.total_mu:.4g}, n_segments={len(self.segments)}, machine={self.machine.name!r})"
        )

    @property
    def total_mu(self) -> float:
        """Meterset of the beam summed over all fractions, MU."""
        return float(sum(s.total_mu for s in self.segments))

    def scaled(self, factor: float) -> DeliverableBeam:
        """A copy delivering ``factor`` times the meterset (apertures unchanged)."""
        from dataclasses import replace

        return replace(self, segments=tuple(s.with_mu(s.total_mu * factor) for s in self.segments))

    def per_fraction_mu(self, fractions: int) -> float:
        """(300A,0086) *BeamMeterset*: ``total_mu / fractions``, MU."""
        if int(fractions) < 1:
            raise SegmentError(f"`fractions` must be ≥ 1; got {fractions!r}.")
        return self.total_mu / int(fractions)

    def cumulative_meterset_weights(self) -> np.ndarray:
        """(300A,0134) *CumulativeMetersetWeight* of the ``2 * n_segments`` control points.

        Segment ``k`` is delivered between control points ``2k`` and ``2k + 1`` (same MLC and
        jaws); the weight is the fraction of the beam meterset delivered before that control
        point: ``[0, w0, w0, w0 + w1, ..., 1]``.

        Returns
        -------
        (2 * n_segments,) ndarray of float
            Non-decreasing, first 0, last exactly 1.
        """
        mu = np.array([s.total_mu for s in self.segments])
        cum = np.cumsum(mu) / mu.sum()
        cum[-1] = 1.0
        out = np.empty(2 * mu.size)
        out[0::2] = np.concatenate([[0.0], cum[:-1]])
        out[1::2] = cum
        return out

    def segment_rectangles_mm(self, k: int) -> np.ndarray:
        """Open rectangles ``(n, 4)`` [x1, x2, y1, y2] (mm, BLD) of segment ``k`` on this
        machine (pairs at the machine's minimum gap count as closed)."""
        return self.segments[k].open_rectangles_mm(closed_gap_mm=self.machine.mlc.min_leaf_gap_mm)

    def segment_fluence(
        self, k: int, parameters: MLCParameters | None = None, *, model: BeamModel | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fluence of segment ``k`` per MU as weighted rectangles, with the MLC physics.

        Parameters
        ----------
        k : int
            Segment index.
        parameters : dose_engine.MLCParameters, optional
            Leaf and jaw parameters; default the machine's (:attr:`Machine.dosimetry`).
        model : dose_engine.BeamModel, optional, keyword-only
            With a model, the weights are scaled so that the head scatter is what the
            jaws and the leaves, each from its own height, let through
            (:func:`dose_engine.collimator_scatter_scale`).

        Returns
        -------
        rectangles_mm : (n, 4) ndarray of float, mm
            ``[x1, x2, y1, y2]`` (BLD, isocentre plane).
        weights : (n,) ndarray of float
            Fluence per MU of each (see :func:`dose_engine.aperture_fluence`).
        """
        rects, weights, _ = self.segment_fluence_edges(k, parameters, model=model)
        return rects, weights

    def segment_fluence_edges(
        self, k: int, parameters: MLCParameters | None = None, *, model: BeamModel | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`segment_fluence` with the leaf each rectangle's x edges follow.

        Returns
        -------
        rectangles_mm : (n, 4) ndarray of float, mm
        weights : (n,) ndarray of float
            As :meth:`segment_fluence`.
        edge_leaf : (n, 2) ndarray of int64
            Flat leaf index (``pair``: bank A, ``n_pairs + pair``: bank B) that each
            rectangle's ``x1`` and ``x2`` follow, ``-1`` for none
            (:func:`dose_engine.aperture_fluence_edges`).  The head-scatter scale of
            ``model`` depends on the whole aperture, not on one edge: it is in the weights.
        """
        seg = self.segments[k]
        p = self.machine.dosimetry if parameters is None else parameters
        reach = self.machine.mlc.leaf_position_range_mm
        geometry = (seg.leaf_positions_mm, seg.leaf_boundaries_mm, seg.jaws_mm, p)
        rects, weights, edges = aperture_fluence_edges(*geometry, reach_x_mm=reach)
        if model is None:
            return rects, weights, edges
        scale = collimator_scatter_scale(model, rects, weights, *geometry, reach_x_mm=reach)
        return rects, weights * scale, edges

    def validate(self, *, where: str = "") -> None:
        """Validate every segment against the machine (see :meth:`Segment.validate`)."""
        prefix = f"{where} " if where else ""
        for k, seg in enumerate(self.segments):
            seg.validate(self.machine, where=f"{prefix}beam {self.number} segment {k}")


@check_arguments(
    beams=sequence_of("rtplan.delivery._deliverable:DeliverableBeam"),
    fractions=INTEGER,
    total_dose_gy=NUMBER,
    target_name=TEXT,
)
@dataclass(frozen=True, eq=False)
class DeliverablePlan:
    """A deliverable plan: step-and-shoot beams and the prescription the RT-PLAN records.

    Parameters
    ----------
    beams : sequence of DeliverableBeam
        Unique beam numbers.
    fractions : int
        (300A,0078) *NumberOfFractionsPlanned* (≥ 1).
    total_dose_gy : float, Gy
        Prescribed total dose to the target over all fractions ((300A,0026)
        *TargetPrescriptionDose*).
    target_name : str
        Name of the target structure (ROI) the prescription refers to.
    label : str
        (300A,0002) *RTPlanLabel* (≤ 16 characters in DICOM).
    """

    beams: tuple[DeliverableBeam, ...]
    fractions: int
    total_dose_gy: float
    target_name: str
    label: str = "rtplan"

    def __post_init__(self) -> None:
        beams = tuple(self.beams)
        if not beams or not all(isinstance(b, DeliverableBeam) for b in beams):
            raise SegmentError("`beams` must be a non-empty sequence of DeliverableBeam.")
        numbers = [b.number for b in beams]
        if len(set(numbers)) != len(numbers):
            raise SegmentError(f"Beam numbers must be unique; got {numbers}.")
        if int(self.fractions) != self.fractions or int(self.fractions) < 1:
            raise SegmentError(f"`fractions` must be an integer ≥ 1; got {self.fractions!r}.")
        dose = float(self.total_dose_gy)
        if not (math.isfinite(dose) and dose > 0):
            raise SegmentError(f"`total_dose_gy` must be > 0; got {self.total_dose_gy!r}.")
        object.__setattr__(self, "beams", beams)
        object.__setattr__(self, "fractions", int(self.fractions))
        object.__setattr__(self, "total_dose_gy", dose)

    def __repr__(self) -> str:
        return (
            f"DeliverablePlan(label={self.label!r}, n_beams={len(self.beams)}, fractions="
            f"{self.fractions}, total_dose_gy={self.total_dose_gy:g}, target_name="
            f"{self.target_name!r}, total_mu={self.total_mu:.4g})"
        )

    @property
    def n_fractions(self) -> int:
        """Alias of :attr:`fractions` ((300A,0078) *NumberOfFractionsPlanned*)."""
        return self.fractions

    @property
    def prescription_gy(self) -> float:
        """Alias of :attr:`total_dose_gy` (total over all fractions, Gy)."""
        return self.total_dose_gy

    @property
    def dose_per_fraction_gy(self) -> float:
        """Prescribed dose per fraction, Gy."""
        return self.total_dose_gy / self.fractions

    @property
    def total_mu(self) -> float:
        """Sum of the beams' meterset over all fractions, MU."""
        return float(sum(b.total_mu for b in self.beams))

    def validate(self, *, where: str = "") -> None:
        """Validate every beam (see :meth:`DeliverableBeam.validate`)."""
        for beam in self.beams:
            beam.validate(where=where)
