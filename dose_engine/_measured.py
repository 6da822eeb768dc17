"""Measured 6 MV water-tank data shipped in the pymedphys wheel (Apache-2.0).

pymedphys 0.41 ships PTW MEPHYSTO ``.mcc`` scans of a 6 MV beam (PDD and in/cross-plane
profiles at 15, 50, 100 and 200 mm depth, SSD 900 mm, PTW 60008 diode) for 5 × 5 and
10 × 10 cm² fields, plus output factors and absolute dose, in
``pymedphys/tests/experimental/mephysto/data/measurements/``.  The data are read in place
and never copied into this repository; pymedphys is part of the ``test`` extra.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BeamModelError

__all__ = ["MeasuredScan", "measured_data_dir", "read_mcc", "read_measured_6mv"]


@dataclass(frozen=True)
class MeasuredScan:
    """One water-tank scan.

    Attributes
    ----------
    curve : {"PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE"}
    field_mm : float
        Square field side at the isocentre (SAD 1000 mm), mm.
    ssd_mm : float
    depth_mm : float or None
        Scan depth of a profile (None for a PDD).
    position_mm : (n,) ndarray
        Depth (PDD) or off-axis position at the scan depth (profiles), mm.
    value : (n,) ndarray
        Detector reading (relative).
    """

    curve: str
    field_mm: float
    ssd_mm: float
    depth_mm: float | None
    position_mm: np.ndarray
    value: np.ndarray


def measured_data_dir() -> Path:
    """Folder of the measured data inside the installed pymedphys wheel.

    Raises
    ------
    BeamModelError
        If pymedphys (``pip install 'rtplan[test]'``) or its data folder is missing.
    """
    spec = importlib.util.find_spec("pymedphys")
    if spec is None or spec.origin is None:
        raise BeamModelError(
            "The measured 6 MV data come from the pymedphys wheel, which is not installed; "
            "install the test extra: pip install 'rtplan[test]'."
        )
    folder = (
        Path(spec.origin).parent / "tests" / "experimental" / "mephysto" / "data" / "measurements"
    )
    if not (folder / "06MV_10x10.mcc").is_file():
        raise BeamModelError(
            f"Measured data folder {folder} lacks 06MV_10x10.mcc; reinstall pymedphys>=0.41."
        )
    return folder


def read_mcc(path: str | Path) -> list[MeasuredScan]:
    """Read the scans of a PTW MEPHYSTO ``.mcc`` file (BEGIN_SCAN … BEGIN_DATA blocks)."""
    path = Path(path)
    scans: list[MeasuredScan] = []
    header: dict[str, str] = {}
    rows: list[tuple[float, float]] = []
    in_data = False
    for raw in path.read_text(encoding="latin-1").splitlines():
        line = raw.strip()
        if line.startswith("BEGIN_SCAN") and not line.startswith("BEGIN_SCAN_DATA"):
            header, rows = {}, []
        elif line == "BEGIN_DATA":
            in_data = True
        elif line == "END_DATA":
            in_data = False
        elif line.startswith("END_SCAN") and not line.startswith("END_SCAN_DATA"):
            try:
                curve = header["SCAN_CURVETYPE"]
                field = float(header["FIELD_CROSSPLANE"])
                ssd = float(header["SSD"])
            except KeyError as exc:
                raise BeamModelError(f"{path}: scan lacks header {exc}.") from None
            depth = float(header["SCAN_DEPTH"]) if "SCAN_DEPTH" in header else None
            arr = np.asarray(rows, float)
            scans.append(
                MeasuredScan(
                    curve, field, ssd, None if curve == "PDD" else depth, arr[:, 0], arr[:, 1]
                )
            )
        elif in_data:
            parts = line.split()
            rows.append((float(parts[0]), float(parts[1])))
        elif "=" in line:
            k, _, v = line.partition("=")
            header[k.strip()] = v.strip()
    return scans


def read_measured_6mv() -> dict:
    """All shipped 6 MV measurements.

    Returns
    -------
    dict
        ``{"scans": {field_mm: [MeasuredScan, ...]}, "output_factor": {field_mm: OF},
        "absolute": {"dmax_ssd1000": cGy/MU, "d10_ssd1000": ..., "ratio_ssd900_ssd1000": ...,
        "d10_ssd900": ...}}``.
    """
    folder = measured_data_dir()
    scans = {50.0: read_mcc(folder / "06MV_05x05.mcc"), 100.0: read_mcc(folder / "06MV_10x10.mcc")}
    with open(folder / "OutputFactors.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    of = {}
    for name, value in zip(rows[0][1:], rows[1][1:], strict=True):
        side_cm = float(name.strip().split("x")[0])
        of[side_cm * 10.0] = float(value)
    with open(folder / "AbsoluteDose.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    vals = [float(v) for v in rows[1][1:]]
    absolute = {
        "dmax_ssd1000": vals[0],
        "d10_ssd1000": vals[1],
        "ratio_ssd900_ssd1000": vals[2],
        "d10_ssd900": vals[3],
    }
    return {"scans": scans, "output_factor": of, "absolute": absolute}
