"""One water-tank scan from its measured points ``(x, y, z, reading)``.

W2CAD and OmniPro ASCII files store every point with its three tank coordinates (IEC 61217:
``x`` crossplane = BLD x, ``y`` inplane = BLD y, ``z`` depth below the water surface, mm);
the kind of scan follows from which coordinates change along it.  Both readers hand their
points here, so the classification, the plausibility checks and the error wording are the
same for every format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._scan import MeasuredScan, sorted_unique
from .errors import BeamModelError

__all__ = [
    "ScanBlock",
    "ScanHeader",
    "check_scan_count",
    "marker_count",
    "point_row",
    "read_scan_text",
    "scan_from_points",
]

#: A coordinate that moves less than this along a scan is constant, mm.
CONSTANT_MM = 1.0
#: A PDD may run this far from the central axis, mm.
PDD_AXIS_MM = 2.0
#: Largest distance of a diagonal scan's points from a straight line through the axis, mm.
DIAGONAL_LINE_MM = 1.0
#: A step backwards along a scan larger than this is refused (non-monotonic scan), mm.
BACKSTEP_MM = 0.01
#: Plausible field sides at the isocentre, mm (a field in cm would be 1-60 mm).
FIELD_RANGE_MM = (5.0, 600.0)


@dataclass(frozen=True)
class ScanHeader:
    """What a file's header says about one scan.

    Attributes
    ----------
    kind : tuple of {"PDD", "PROFILE", "DIAGONAL"}
        The kinds the header allows; the points must form one of them.
    axis : {"X", "Y"} or None
        Declared profile axis (crossplane X, inplane Y), if any.
    field_mm : (x_mm, y_mm)
        Field sides at the isocentre (crossplane, inplane), mm.
    ssd_mm : float
    depth_mm : float or None
        Declared scan depth of a profile, mm (checked against the points).
    energy_mv : float or None
    where : str
        ``"<file>, scan <n> (line <k>)"`` for messages.
    """

    kind: tuple[str, ...]
    axis: str | None
    field_mm: tuple[float, float]
    ssd_mm: float
    depth_mm: float | None
    energy_mv: float | None
    where: str


def scan_from_points(
    header: ScanHeader, points: np.ndarray, lines: list[int], path: str, *, sad_mm: float = 1000.0
) -> MeasuredScan:
    """A :class:`MeasuredScan` from measured points.

    Parameters
    ----------
    header : ScanHeader
    points : (n, 4) ndarray of float64
        ``x, y, z`` (mm, IEC 61217 tank coordinates; ``z`` may be given negative downwards,
        then every ``z`` must be <= 0) and the reading, in file order.
    lines : list of int
        File line of each point, for messages.
    path : str
        The file, for messages.
    sad_mm : float

    Returns
    -------
    MeasuredScan
        ``PDD`` (position = depth), ``CROSSPLANE_PROFILE`` / ``INPLANE_PROFILE`` (position =
        x or y at the scan depth, ``offaxis_mm`` = the other one) or ``DIAGONAL_PROFILE``
        (position = signed distance from the axis along the line, ``direction`` = its unit
        vector in BLD (x, y) with x > 0).

    Raises
    ------
    BeamModelError
        Fewer than 3 points, a field outside :data:`FIELD_RANGE_MM`, points that move along
        no axis or along depth and laterally at once, a PDD off the axis, a declared kind,
        axis or depth the points contradict, a scan that steps backwards, a diagonal that is
        not a line through the axis, or a non-positive maximum reading.
    """
    where = header.where
    if points.shape[0] < 3:
        raise BeamModelError(f"{where}: {points.shape[0]} data points; need at least 3.")
    for side in header.field_mm:
        if not FIELD_RANGE_MM[0] <= side <= FIELD_RANGE_MM[1]:
            raise BeamModelError(
                f"{where}: field side {side:g} mm is outside {FIELD_RANGE_MM[0]:g}-"
                f"{FIELD_RANGE_MM[1]:g} mm; field sizes must be given in mm at the isocentre."
            )
    x, y, z, value = (points[:, i].copy() for i in range(4))
    if np.all(z <= 0.0) and np.any(z < 0.0):
        z = -z  # tank coordinates with z negative downwards
    if np.any(z < -CONSTANT_MM):
        raise BeamModelError(f"{where}: depths of both signs ({z.min():g} to {z.max():g} mm).")
    if not value.max() > 0:
        raise BeamModelError(f"{where}: no positive reading in the scan.")
    moves = [np.ptp(c) > CONSTANT_MM for c in (x, y, z)]
    if moves[2] and (moves[0] or moves[1]):
        raise BeamModelError(
            f"{where}: the points move in depth and laterally at once; expected a PDD (only z "
            "changes) or a profile (constant z)."
        )
    if moves[2]:
        kind = "PDD"
    elif moves[0] and moves[1]:
        kind = "DIAGONAL"
    elif moves[0] or moves[1]:
        kind = "PROFILE"
    else:
        raise BeamModelError(f"{where}: all points lie at one position; not a scan.")
    if kind not in header.kind:
        raise BeamModelError(
            f"{where}: the header declares a {' or '.join(header.kind)} scan but the points "
            f"form a {kind}."
        )
    common: dict[str, Any] = {
        "field_mm": header.field_mm[0],
        "field_inplane_mm": header.field_mm[1],
        "ssd_mm": header.ssd_mm,
        "sad_mm": sad_mm,
        "energy_mv": header.energy_mv,
        "source": where,
    }
    if kind == "PDD":
        off = max(np.max(np.abs(x)), np.max(np.abs(y)))
        if off > PDD_AXIS_MM:
            raise BeamModelError(
                f"{where}: PDD points lie up to {off:.1f} mm from the central axis; expected "
                f"a central-axis PDD (within {PDD_AXIS_MM:g} mm)."
            )
        _require_monotonic(z, lines, path)
        pos, val = sorted_unique(np.column_stack([z, value]))
        return MeasuredScan(curve="PDD", depth_mm=None, position_mm=pos, value=val, **common)
    depth = float(np.median(z))
    if header.depth_mm is not None and abs(header.depth_mm - depth) > CONSTANT_MM:
        raise BeamModelError(
            f"{where}: the header gives the scan depth {header.depth_mm:g} mm but the points "
            f"lie at {depth:g} mm (both must be mm)."
        )
    if kind == "DIAGONAL":
        return _diagonal(x, y, value, lines, path, depth, common)
    axis = "X" if moves[0] else "Y"
    position = x if axis == "X" else y
    if header.axis is not None and header.axis != axis:
        raise BeamModelError(
            f"{where}: the header declares a profile along {header.axis} but the points move "
            f"along {axis}."
        )
    _require_monotonic(position, lines, path)
    pos, val = sorted_unique(np.column_stack([position, value]))
    return MeasuredScan(
        curve="CROSSPLANE_PROFILE" if axis == "X" else "INPLANE_PROFILE",
        depth_mm=depth,
        position_mm=pos,
        value=val,
        offaxis_mm=float(np.median(y if axis == "X" else x)),
        **common,
    )


def _diagonal(x, y, value, lines, path, depth, common) -> MeasuredScan:
    """A diagonal profile: a straight line through the axis, position signed along it."""
    i, j = int(np.argmin(x)), int(np.argmax(x))
    dx, dy = x[j] - x[i], y[j] - y[i]
    norm = math.hypot(dx, dy)
    ux, uy = dx / norm, dy / norm
    distance = np.abs(x * uy - y * ux)  # from the line through the axis along (ux, uy)
    if distance.max() > DIAGONAL_LINE_MM:
        k = int(np.argmax(distance))
        raise BeamModelError(
            f"{path}, line {lines[k]}: this diagonal scan point lies {distance[k]:.1f} mm from "
            "the straight line through the central axis; expected a diagonal through the axis."
        )
    position = x * ux + y * uy
    _require_monotonic(position, lines, path)
    pos, val = sorted_unique(np.column_stack([position, value]))
    return MeasuredScan(
        curve="DIAGONAL_PROFILE",
        depth_mm=depth,
        position_mm=pos,
        value=val,
        direction=(float(ux), float(uy)),
        **common,
    )


def _require_monotonic(position: np.ndarray, lines: list[int], path: str) -> None:
    """Refuse a scan whose points step back along its direction (a shuffled or merged scan)."""
    step = np.diff(position)
    sign = 1.0 if position[-1] >= position[0] else -1.0
    back = np.nonzero(sign * step < -BACKSTEP_MM)[0]
    if back.size:
        k = int(back[0]) + 1
        raise BeamModelError(
            f"{path}, line {lines[k]}: position {position[k]:g} mm steps back from "
            f"{position[k - 1]:g} mm; expected the points of one scan in monotonic order."
        )


def read_scan_text(path) -> str:
    """The text of a scan file (Latin-1: vendors write degree signs and umlauts)."""
    try:
        return Path(path).read_text(encoding="latin-1")
    except OSError as exc:
        raise BeamModelError(f"{path}: cannot be read ({exc}).") from exc


def point_row(text: str, path, lineno: int) -> tuple[float, float, float, float]:
    """``x, y, z, reading`` from the numbers of a data line (finite, four of them)."""
    parts = text.split()
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise BeamModelError(
            f"{path}, line {lineno}: data point {text.strip()!r} is not four finite numbers "
            "(x y z reading, mm)."
        )
    return numbers  # type: ignore[return-value]


def marker_count(line: str, path, lineno: int) -> int:
    """The whole number after a file marker such as ``$NUMS 002`` or ``:MSR 2``."""
    parts = line.split()
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        raise BeamModelError(
            f"{path}, line {lineno}: {line!r} does not give a whole number after the marker."
        ) from None


def check_scan_count(
    path, scans: list, declared: tuple[int, int] | None, marker: str, noun: str
) -> None:
    """Refuse a file whose ``marker`` line (``$NUMS``, ``:MSR``) declared another scan count."""
    if declared is not None and declared[0] != len(scans):
        raise BeamModelError(
            f"{path}, line {declared[1]}: {marker} gives {declared[0]} {noun}s but the file "
            f"holds {len(scans)} (truncated file?)."
        )


class ScanBlock:
    """The header lines and points of one scan while a reader collects them.

    Parameters
    ----------
    start : int
        Line number of the scan's first line.
    index : int
        1-based number of the scan in its file.
    noun : str
        What the format calls a scan (``"scan"``, ``"measurement"``), for messages.
    """

    def __init__(self, start: int, index: int, noun: str = "scan") -> None:
        self.start = start
        self.index = index
        self.noun = noun
        self.header: dict[str, tuple[str, int]] = {}
        self.points: list[tuple[float, float, float, float]] = []
        self.lines: list[int] = []

    def add_header(self, line: str, lineno: int) -> None:
        """Record a ``%KEY value  # comment`` line (keys upper-cased)."""
        key, value = (line.split(None, 1) + [""])[:2]
        self.header[key.upper()] = (value.split("#")[0].strip(), lineno)

    def add_point(self, text: str, path, lineno: int) -> None:
        """Record a data point ``x y z reading`` (:func:`point_row`)."""
        self.points.append(point_row(text, path, lineno))
        self.lines.append(lineno)

    def value(self, key: str, path) -> tuple[str, int]:
        """``(text, line)`` of header ``key``; a missing key is refused, naming the scan."""
        if key not in self.header:
            raise BeamModelError(
                f"{path}, {self.noun} {self.index} (line {self.start}): lacks the header line "
                f"{key}."
            )
        return self.header[key]

    def check_point_count(self, key: str, path) -> None:
        """Refuse a scan whose header ``key`` (e.g. ``%PNTS``) gives another point count."""
        if key not in self.header:
            return
        text, lineno = self.header[key]
        try:
            declared = int(float(text.split()[0]))
        except (IndexError, ValueError):
            raise BeamModelError(
                f"{path}, line {lineno}: {key} {text!r} is not a whole number."
            ) from None
        if declared != len(self.points):
            raise BeamModelError(
                f"{path}, line {lineno}: {key} gives {declared} points but the {self.noun} "
                f"holds {len(self.points)} (truncated {self.noun}?)."
            )

    def to_scan(self, header: ScanHeader, path) -> MeasuredScan:
        """The scan from the collected points (:func:`scan_from_points`)."""
        return scan_from_points(header, np.asarray(self.points, float), self.lines, str(path))
