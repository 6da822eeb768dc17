"""IBA OmniPro-Accept "RFA300 ASCII Measurement Dump (BDS format)" scan files.

Layout (OmniPro-Accept 6/7 ASCII export)::

    :MSR    2   # No. of measurement in file     (checked)
    :SYS BDS 0  # Beam Data Scanner System
    #
    # RFA300 ASCII Measurement Dump ( BDS format )
    # Measurement number    1
    %VNR 1.0                  starts a measurement
    %MOD    RAT
    %TYP    SCN               only scans (SCN) are read
    %SCN    PRO               DPT depth dose, PRO profile, DIA diagonal
    %FLD    ION
    %DAT    12-09-2011
    %FSZ    100 100           field width (X, crossplane) and height (Y, inplane), mm
    %BMT    PHO     6.0       photons and nominal energy, MV
    %SSD    1000              mm
    %WEG    0                 wedge angle (a wedged scan is refused)
    %PRD    500               profile depth, 0.1 mm (checked against the points)
    %PTS    3                 number of points (checked)
    %STS    -100.0 0.0 50.0   # start, mm (not used)
    %EDS     100.0 0.0 50.0   # end, mm (not used)
    !   comment lines
    =   -100.0  0.0  50.0  12.5      x y z (mm) and reading
    ...
    :EOM  # End of Measurement
    :EOF  # End of File

Data points are IEC X (crossplane), Y (inplane), Z (depth; OmniPro tanks often count it
negative downwards, which :func:`~dose_engine._scan_points.scan_from_points` accepts).  The
kind of scan, its depth and a diagonal's line follow from the points and must agree with
``%SCN`` (``DPT`` or not) and ``%PRD``.

Sources followed: the annotated RFA300 sample in T. van Soest's BistroMath ``Wellhofer.pas``
(LGPL-3.0, github.com/kegge13/BistroMath: every key, its unit — ``%PRD`` in 0.1 mm, ``%FSZ``
in mm — and the ``:EOM``/``:EOF`` markers) and M. Geurts' ``ParseIBAtxt.m``
(github.com/mwgeurts/water_tank, GPL-3.0, "tested with OmniPro 6 and 7 exported ASCII
files": data as IEC X, Y, Z, signal; negative depths).  The order of ``%FSZ`` (width =
crossplane first) follows the OmniPro field dialog; for a rectangular field check one
profile's width.  No code was copied.
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

__all__ = ["read_omnipro_ascii"]

#: ``%SCN`` values read, and the scan kinds each allows (exports label crossline profiles
#: ``DIA`` as well, so the points decide between a profile and a diagonal).
OMNIPRO_SCANS = {"DPT": ("PDD",), "PRO": ("PROFILE", "DIAGONAL"), "DIA": ("PROFILE", "DIAGONAL")}


@check_arguments(path=PATH)
def read_omnipro_ascii(path: str | Path) -> list[MeasuredScan]:
    """Read the scans of an OmniPro-Accept RFA300 ASCII (BDS) file.

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
        If the file cannot be read or breaks the layout (module docstring): a point outside
        a measurement, a missing or malformed ``%FSZ``, ``%SSD``, ``%SCN`` or ``%BMT``, a
        non-photon, wedged or non-scan measurement, a ``%PTS`` or ``:MSR`` count that does
        not match, a point that is not four finite numbers, or points that contradict the
        header.  The message names the file and the line.
    """
    path = Path(path)
    text = read_scan_text(path)
    scans: list[MeasuredScan] = []
    declared: tuple[int, int] | None = None
    block: _Measurement | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        word = line.split()[0].upper()
        if word == ":MSR":
            declared = (marker_count(line, path, lineno), lineno)
        elif word == ":SYS":
            continue
        elif word == ":EOM":
            if block is None:
                raise BeamModelError(f"{path}, line {lineno}: :EOM without a measurement.")
            scans.append(block.scan(path))
            block = None
        elif word == ":EOF":
            break
        elif line.startswith("%"):
            if block is None:
                block = _Measurement(start=lineno, index=len(scans) + 1, noun="measurement")
            block.add_header(line, lineno)
        elif line.startswith("="):
            if block is None:
                raise BeamModelError(
                    f"{path}, line {lineno}: data point before any %-header of a measurement."
                )
            block.add_point(line[1:].split("#")[0], path, lineno)
        else:
            raise BeamModelError(
                f"{path}, line {lineno}: {line[:40]!r} is not a :MSR/:SYS/:EOM/:EOF marker, a "
                "%KEY header line, an '= x y z reading' point or a #/! comment."
            )
    if block is not None:
        raise BeamModelError(
            f"{path}: the measurement starting at line {block.start} has no :EOM (truncated file?)."
        )
    if not scans:
        raise BeamModelError(
            f"{path}: no measurement (%… header, = points, :EOM) found; is this an OmniPro "
            "RFA300 ASCII file?"
        )
    check_scan_count(path, scans, declared, ":MSR", "measurement")
    return scans


class _Measurement(ScanBlock):
    """The header lines and points of one measurement (``%VNR … :EOM``)."""

    def _fields(self, key: str, path: Path, count: int) -> tuple[list[str], int]:
        value, lineno = self.value(key, path)
        parts = value.split()
        if len(parts) < count:
            raise BeamModelError(
                f"{path}, line {lineno}: {key} {value!r} has fewer than {count} value(s)."
            )
        return parts, lineno

    def _numbers(self, key: str, path: Path, count: int) -> list[float]:
        parts, lineno = self._fields(key, path, count)
        try:
            return [float(p) for p in parts[:count]]
        except ValueError:
            raise BeamModelError(
                f"{path}, line {lineno}: {key} {' '.join(parts)!r}; expected {count} number(s)."
            ) from None

    def scan(self, path: Path) -> MeasuredScan:
        parts, kind_line = self._fields("%SCN", path, 1)
        kind_text = parts[0]
        kind = OMNIPRO_SCANS.get(kind_text.upper())
        if kind is None:
            raise BeamModelError(
                f"{path}, line {kind_line}: %SCN {kind_text!r}; expected DPT (depth dose), PRO "
                "(profile) or DIA (diagonal)."
            )
        if "%TYP" in self.header and self.header["%TYP"][0].upper() != "SCN":
            raise BeamModelError(
                f"{path}, line {self.header['%TYP'][1]}: %TYP {self.header['%TYP'][0]!r}; only "
                "scans (SCN) are read."
            )
        beam, beam_line = self._fields("%BMT", path, 1)
        if beam[0].upper() != "PHO":
            raise BeamModelError(
                f"{path}, line {beam_line}: %BMT {beam[0]!r}; only photon beams (PHO) are read."
            )
        try:
            energy = float(beam[1]) if len(beam) > 1 else None
        except ValueError:
            raise BeamModelError(
                f"{path}, line {beam_line}: %BMT energy {beam[1]!r} is not a number (MV)."
            ) from None
        if "%WEG" in self.header and self._numbers("%WEG", path, 1)[0] != 0:
            raise BeamModelError(
                f"{path}, line {self.header['%WEG'][1]}: a wedged measurement (%WEG "
                f"{self.header['%WEG'][0]}); only open fields are used for commissioning."
            )
        self.check_point_count("%PTS", path)
        fx, fy = self._numbers("%FSZ", path, 2)
        depth = None
        if kind != ("PDD",) and "%PRD" in self.header:
            depth = self._numbers("%PRD", path, 1)[0] / 10.0  # 0.1 mm
        header = ScanHeader(
            kind=kind,
            axis=None,
            field_mm=(fx, fy),
            ssd_mm=self._numbers("%SSD", path, 1)[0],
            depth_mm=depth,
            energy_mv=energy,
            where=f"{path}, scan {self.index}",
        )
        return self.to_scan(header, path)
