"""Read any supported water-tank scan file, the format recognised from its content.

=====================  ===============================  =====================================
format                 recognised by (first lines)      reader
=====================  ===============================  =====================================
PTW MEPHYSTO ``.mcc``  ``BEGIN_SCAN_DATA``              :func:`~dose_engine._mcc.read_mcc`
Varian W2CAD           ``$NUMS`` or ``$STOM``           :func:`~dose_engine._w2cad.read_w2cad`
IBA OmniPro RFA300     ``:MSR`` or ``:SYS``             :func:`~dose_engine._omnipro_ascii.
ASCII (BDS)                                             read_omnipro_ascii`
=====================  ===============================  =====================================

The extension does not choose the reader (W2CAD and OmniPro files are both ``.asc``); it only
decides which files of a folder are scan files (:data:`SCAN_SUFFIXES`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._arguments import PATH, check_arguments
from ._mcc import read_mcc
from ._omnipro_ascii import read_omnipro_ascii
from ._scan import MeasuredScan
from ._scan_points import read_scan_text
from ._w2cad import read_w2cad
from .errors import BeamModelError

__all__ = ["SCAN_SUFFIXES", "read_scan_file", "scan_files_in", "scan_format"]

#: File name endings (any case) taken as scan files when a folder is given.
SCAN_SUFFIXES = (".mcc", ".asc", ".cdp")
#: Lines looked at to recognise a format.
SNIFF_LINES = 40

_FORMATS: tuple[tuple[str, tuple[str, ...], Callable[[Path], list[MeasuredScan]]], ...] = (
    ("mcc", ("BEGIN_SCAN_DATA",), read_mcc),
    ("w2cad", ("$NUMS", "$STOM"), read_w2cad),
    ("omnipro", (":MSR", ":SYS"), read_omnipro_ascii),
)


@check_arguments(path=PATH)
def scan_format(path: str | Path) -> str:
    """``"mcc"``, ``"w2cad"`` or ``"omnipro"``: the format of a scan file, from its content.

    Raises
    ------
    BeamModelError
        If the file cannot be read or none of the formats' first markers appears in its
        first :data:`SNIFF_LINES` non-blank lines.
    """
    lines = [ln.strip().upper() for ln in read_scan_text(path).splitlines() if ln.strip()]
    for line in lines[:SNIFF_LINES]:
        for name, markers, _ in _FORMATS:
            if line.startswith(markers):
                return name
    raise BeamModelError(
        f"{path}: not a recognised scan file; expected a PTW .mcc (BEGIN_SCAN_DATA), a Varian "
        "W2CAD ($NUMS/$STOM) or an IBA OmniPro RFA300 ASCII file (:MSR) in its first lines."
    )


@check_arguments(path=PATH)
def read_scan_file(path: str | Path) -> list[MeasuredScan]:
    """The scans of one file, read by the reader its content calls for (:func:`scan_format`)."""
    name = scan_format(path)
    reader = next(r for n, _, r in _FORMATS if n == name)
    return reader(Path(path))


def scan_files_in(folder: Path) -> list[Path]:
    """The scan files of a folder (:data:`SCAN_SUFFIXES`, any case), in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES)
