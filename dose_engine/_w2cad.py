"""Varian W2CAD (OmniPro "W2CAD" / Eclipse beam-data) ASCII scan files.

Layout, as Eclipse exports it and Varian ships its representative beam data::

    $NUMS 002                 number of scans (optional; checked when present)
    $STOM                     start of one measurement
    # Comment: ...            comment lines
    %VERSION 02
    %DATE 20-09-2011
    %DETY CHA                 detector (CHA chamber, DIO diode, DIA diamond)
    %BMTY PHO                 photons
    %FLSZ 100*100             field X*Y at the isocentre, mm (IEC 61217)
    %TYPE OPP                 OPD depth dose, OPP profile, DPR diagonal profile
                              (WDD, WDP, WLP ...: wedged, refused here)
    %AXIS X                   X crossplane, Y inplane, Z depth, D diagonal
    %PNTS 3                   number of points (checked)
    %STEP 010                 point spacing, 0.1 mm (not used)
    %SSD 1000                 mm
    %DPTH 050                 profile depth, mm (checked against the points)
    <-065.2 +000.0 +050.0 +012.5>   x y z (mm) and reading
    ...
    $ENOM                     end of the measurement
    $ENOF                     end of file (also accepted: $ENDF)

Points carry all three coordinates, so the kind of scan, its depth and a diagonal's line
follow from them (:func:`~dose_engine._scan_points.scan_from_points`) and must agree with
``%TYPE``/``%AXIS``/``%DPTH``.  W2CAD has no energy field (``energy_mv`` is None) and no
SAD (taken as 1000 mm).

Sources followed: the annotated W2CAD sample in T. van Soest's BistroMath
``Wellhofer.pas`` (LGPL-3.0, github.com/kegge13/BistroMath: key list, units of ``%FLSZ``,
``%STEP``, ``%SSD``, ``%DPTH``, ``$ENOF``), M. Geurts' ``ParseW2CAD.m``
(github.com/mwgeurts/water_tank, GPL-3.0: ``%FLSZ`` ``X*Y`` mm, data as IEC X, Y, Z,
signal; depth sign) and the Eclipse Algorithms Reference Guide's beam-data import chapter
(``OPD``/``OPP``/``DPR``/``WDD`` types).  No code was copied.
"""

from __future__ import annotations

from pathlib import Path

from ._arguments import PATH, check_arguments
from ._scan import MeasuredScan
from ._scan_points import (
    ScanBlock,
    ScanHeader,
    check_scan_count,
    marker_count,
    read_scan_text,
)
from .errors import BeamModelError

__all__ = ["read_w2cad"]

#: ``%TYPE`` values read, and the scan kind each declares.
W2CAD_TYPES = {"OPD": ("PDD",), "OPP": ("PROFILE",), "DPR": ("DIAGONAL",)}
#: ``%AXIS`` values and the profile axis each declares (Z and D only fix the kind).
W2CAD_AXES = {"X": "X", "Y": "Y", "Z": None, "D": None}


@check_arguments(path=PATH)
def read_w2cad(path: str | Path) -> list[MeasuredScan]:
    """Read the scans of a W2CAD ASCII file (see the module docstring for the layout).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    scans : list of MeasuredScan
        In file order; positions sorted increasing.

    Raises
    ------
    BeamModelError
        If the file cannot be read or breaks the layout: a line outside ``$STOM … $ENOM``
        that is not a comment, an unknown line inside, a missing or malformed ``%FLSZ``,
        ``%SSD`` or ``%TYPE``, a wedged scan type, a ``%PNTS`` or ``$NUMS`` count that does
        not match, a point that is not four finite numbers, or points that contradict the
        header (see :func:`~dose_engine._scan_points.scan_from_points`).  The message names
        the file and the line.
    """
    path = Path(path)
    text = read_scan_text(path)
    scans: list[MeasuredScan] = []
    declared_count: tuple[int, int] | None = None
    block: _Block | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split()[0].upper()
        if word == "$NUMS":
            declared_count = (marker_count(line, path, lineno), lineno)
        elif word == "$STOM":
            if block is not None:
                raise BeamModelError(
                    f"{path}, line {lineno}: $STOM before the $ENOM of the scan that starts at "
                    f"line {block.start}."
                )
            block = _Block(start=lineno, index=len(scans) + 1)
        elif word == "$ENOM":
            if block is None:
                raise BeamModelError(f"{path}, line {lineno}: $ENOM without a $STOM.")
            scans.append(block.scan(path))
            block = None
        elif word in ("$ENOF", "$ENDF"):
            break
        elif block is None:
            raise BeamModelError(
                f"{path}, line {lineno}: {line[:40]!r} outside a $STOM … $ENOM block; expected "
                "$NUMS, $STOM, $ENOF or a # comment."
            )
        elif line.startswith("<"):
            block.add_point(line.strip("<> \t").split("#")[0], path, lineno)
        elif line.startswith("%"):
            block.add_header(line, lineno)
        else:
            raise BeamModelError(
                f"{path}, line {lineno}: {line[:40]!r} is not a %KEY header line, a "
                "<x y z reading> point or a # comment."
            )
    if block is not None:
        raise BeamModelError(
            f"{path}: the scan starting at line {block.start} has no $ENOM (truncated file?)."
        )
    if not scans:
        raise BeamModelError(f"{path}: no $STOM … $ENOM block found; is this a W2CAD file?")
    check_scan_count(path, scans, declared_count, "$NUMS", "scan")
    return scans


class _Block(ScanBlock):
    """The header lines and points of one ``$STOM … $ENOM`` block."""

    def _number(self, key: str, path: Path) -> float:
        value, lineno = self.value(key, path)
        try:
            return float(value)
        except ValueError:
            raise BeamModelError(
                f"{path}, line {lineno}: {key} {value!r} is not a number."
            ) from None

    def scan(self, path: Path) -> MeasuredScan:
        where = f"{path}, scan {self.index}"
        kind_text, kind_line = self.value("%TYPE", path)
        kind = W2CAD_TYPES.get(kind_text.upper())
        if kind is None:
            raise BeamModelError(
                f"{path}, line {kind_line}: %TYPE {kind_text!r}; expected OPD (depth dose), OPP "
                "(profile) or DPR (diagonal) of an open field (wedged scans are not used)."
            )
        axis_text, axis_line = self.header.get("%AXIS", ("", self.start))
        if axis_text and axis_text.upper() not in W2CAD_AXES:
            raise BeamModelError(
                f"{path}, line {axis_line}: %AXIS {axis_text!r}; expected X, Y, Z or D."
            )
        self.check_point_count("%PNTS", path)
        header = ScanHeader(
            kind=kind,
            axis=W2CAD_AXES.get(axis_text.upper()) if kind == ("PROFILE",) else None,
            field_mm=self._field(path),
            ssd_mm=self._number("%SSD", path),
            depth_mm=self._number("%DPTH", path)
            if kind != ("PDD",) and "%DPTH" in self.header
            else None,
            energy_mv=None,
            where=where,
        )
        return self.to_scan(header, path)

    def _field(self, path: Path) -> tuple[float, float]:
        value, lineno = self.value("%FLSZ", path)
        parts = value.split("*")
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            raise BeamModelError(
                f"{path}, line {lineno}: %FLSZ {value!r}; expected X*Y in mm (e.g. 100*100)."
            ) from None
        return (x, y)
