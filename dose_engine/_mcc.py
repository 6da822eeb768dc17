"""PTW MEPHYSTO ``.mcc`` scan files (``BEGIN_SCAN … BEGIN_DATA … END_SCAN`` blocks).

Field size (``FIELD_CROSSPLANE`` × ``FIELD_INPLANE``, at the isocentre), ``SSD``,
``SCAN_DEPTH``, ``SCAN_CURVETYPE``, ``ISOCENTER`` (SAD), ``ENERGY`` and the profile's
off-axis position (``SCAN_OFFAXIS_INPLANE/CROSSPLANE``) come from each scan's header.
Crossplane is BLD x (leaf travel), inplane is BLD y.  Diagonal scans
(``SCAN_DIAGONAL=FIRST_DIAGONAL|SECOND_DIAGONAL``) are refused: their position axis is not
documented well enough to read them without guessing (export them as W2CAD, whose points
carry all three coordinates).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._arguments import PATH, check_arguments
from ._scan import MeasuredScan, sorted_unique
from .errors import BeamModelError

__all__ = ["MCC_CURVES", "read_mcc"]

#: The ``SCAN_CURVETYPE`` values read from ``.mcc`` files.
MCC_CURVES = ("PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE")


@check_arguments(path=PATH)
def read_mcc(path: str | Path) -> list[MeasuredScan]:
    """Read the scans of a PTW MEPHYSTO ``.mcc`` file (``BEGIN_SCAN … BEGIN_DATA`` blocks).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    scans : list of MeasuredScan
        In file order; positions sorted increasing (duplicates averaged).

    Raises
    ------
    BeamModelError
        If the file cannot be read, a scan lacks ``SCAN_CURVETYPE``, ``FIELD_CROSSPLANE``,
        ``SSD`` (or ``SCAN_DEPTH`` for a profile), a number does not parse, a curve type is
        not one of :data:`MCC_CURVES`, the scan is diagonal, or a scan holds fewer than 3
        points.  The message names the file and the scan (or line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise BeamModelError(f"{path}: cannot be read ({exc}).") from exc
    scans: list[MeasuredScan] = []
    header: dict[str, str] = {}
    rows: list[tuple[float, float]] = []
    in_data = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("BEGIN_SCAN") and not line.startswith("BEGIN_SCAN_DATA"):
            header, rows = {}, []
        elif line == "BEGIN_DATA":
            in_data = True
        elif line == "END_DATA":
            in_data = False
        elif line.startswith("END_SCAN") and not line.startswith("END_SCAN_DATA"):
            scans.append(_scan_from(header, rows, f"{path}, scan {len(scans) + 1}"))
        elif in_data:
            rows.append(_data_row(line, f"{path}, line {lineno}"))
        elif "=" in line:
            k, _, v = line.partition("=")
            header[k.strip()] = v.strip()
    if not scans:
        raise BeamModelError(
            f"{path}: no BEGIN_SCAN … END_SCAN block found; is this a PTW MEPHYSTO .mcc file?"
        )
    return scans


def _data_row(line: str, where: str) -> tuple[float, float]:
    parts = line.split()
    try:
        row = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        row = (math.nan, math.nan)
    if not all(math.isfinite(v) for v in row):
        raise BeamModelError(
            f"{where}: data row {line!r} is not two finite numbers (position, value)."
        )
    return row


def _header_float(header: dict[str, str], key: str, where: str, default=None) -> float:
    if key not in header:
        if default is not None:
            return default
        raise BeamModelError(f"{where}: scan lacks the header field {key}.")
    try:
        return float(header[key])
    except ValueError:
        raise BeamModelError(
            f"{where}: header field {key}={header[key]!r} is not a number."
        ) from None


def _scan_from(header: dict[str, str], rows: list, where: str) -> MeasuredScan:
    curve = header.get("SCAN_CURVETYPE")
    if curve not in MCC_CURVES:
        raise BeamModelError(
            f"{where}: SCAN_CURVETYPE is {curve!r}; expected one of {', '.join(MCC_CURVES)}."
        )
    diagonal = header.get("SCAN_DIAGONAL", "NOT_DIAGONAL")
    if diagonal != "NOT_DIAGONAL":
        raise BeamModelError(
            f"{where}: SCAN_DIAGONAL={diagonal}; diagonal .mcc scans are not read (their "
            "position axis is ambiguous). Remove the scan or export the data as W2CAD."
        )
    field_x = _header_float(header, "FIELD_CROSSPLANE", where)
    field_y = _header_float(header, "FIELD_INPLANE", where, default=field_x)
    ssd = _header_float(header, "SSD", where)
    depth = None if curve == "PDD" else _header_float(header, "SCAN_DEPTH", where)
    off_key = "SCAN_OFFAXIS_INPLANE" if curve == "CROSSPLANE_PROFILE" else "SCAN_OFFAXIS_CROSSPLANE"
    offaxis = 0.0 if curve == "PDD" else _header_float(header, off_key, where, default=0.0)
    energy = _header_float(header, "ENERGY", where, default=math.nan)
    if len(rows) < 3:
        raise BeamModelError(f"{where}: {curve} holds {len(rows)} data points; need at least 3.")
    pos, val = sorted_unique(np.asarray(rows, float))
    return MeasuredScan(
        curve=curve,
        field_mm=field_x,
        ssd_mm=ssd,
        depth_mm=depth,
        position_mm=pos,
        value=val,
        field_inplane_mm=field_y,
        offaxis_mm=offaxis,
        sad_mm=_header_float(header, "ISOCENTER", where, default=1000.0),
        energy_mv=None if math.isnan(energy) else energy,
        source=where,
    )
