"""Measured water-tank data for commissioning a beam model.

A commissioning data set is a folder holding

- PTW MEPHYSTO ``.mcc`` scans (any number of files, each with any number of
  ``BEGIN_SCAN … END_SCAN`` blocks): PDDs and in/cross-plane profiles of rectangular open
  fields, at any SSD and depth.  Field size (``FIELD_CROSSPLANE`` × ``FIELD_INPLANE``, at the
  isocentre), ``SSD``, ``SCAN_DEPTH``, ``SCAN_CURVETYPE``, ``ISOCENTER`` (SAD), ``ENERGY`` and
  the profile's off-axis position (``SCAN_OFFAXIS_INPLANE/CROSSPLANE``) come from each scan's
  header.  Crossplane is BLD x (leaf travel), inplane is BLD y.
- ``commissioning.toml``: output factors and the absolute calibration::

      [output_factors]            # central-axis dose ratios at one geometry
      ssd_mm = 900.0
      depth_mm = 100.0
      reference_field_mm = "100x100"   # its PDD sets the depth function
      [output_factors.factors]    # "X x Y" mm at the isocentre (crossplane x inplane),
      "50x50" = 0.906             # or one number for a square field
      "100x100" = 1.0

      [calibration]               # absolute dose per MU at a reference geometry
      dose_gy_per_mu = 0.01
      field_mm = "100x100"
      ssd_mm = 1000.0
      depth_mm = "dmax"           # or a depth in mm

      [[absolute_dose]]           # optional: further measured points, validation only
      field_mm = "100x100"
      ssd_mm = 900.0
      depth_mm = 100.0
      dose_gy_per_mu = 0.00812

The measured 6 MV data shipped in the pymedphys 0.41 wheel (Apache-2.0; PTW 60008 diode,
SSD 900 mm, 5 × 5 and 10 × 10 cm², PDDs and profiles at 15, 50, 100 and 200 mm, in
``pymedphys/tests/experimental/mephysto/data/measurements/``) are one such folder; its two
CSV files are translated into the table above by :func:`pymedphys_6mv_data`.  The data are
read in place and never copied into this repository; pymedphys is part of the ``test`` extra.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

from ._arguments import PATH, check_arguments
from .errors import BeamModelError

__all__ = [
    "MeasuredData",
    "MeasuredScan",
    "measured_data_dir",
    "pymedphys_6mv_data",
    "read_mcc",
    "read_measured_data",
    "read_measured_6mv",
]

CURVES = ("PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE")
TABLE_NAME = "commissioning.toml"


@dataclass(frozen=True)
class MeasuredScan:
    """One water-tank scan.

    Attributes
    ----------
    curve : {"PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE"}
    field_mm : float
        Field side along BLD x (crossplane, ``FIELD_CROSSPLANE``) at the isocentre, mm.
    ssd_mm : float
    depth_mm : float or None
        Scan depth of a profile (None for a PDD), mm.
    position_mm : (n,) ndarray of float64
        Depth (PDD) or off-axis position at the scan depth (profiles), mm, increasing.
    value : (n,) ndarray of float64
        Detector reading (relative).
    field_inplane_mm : float
        Field side along BLD y (inplane, ``FIELD_INPLANE``), mm; equals ``field_mm`` when the
        header lacks it.
    offaxis_mm : float
        Position of the profile line along the other lateral axis (``SCAN_OFFAXIS_INPLANE``
        of a crossplane profile, ``SCAN_OFFAXIS_CROSSPLANE`` of an inplane one), mm.
    sad_mm : float
        Source-axis distance (``ISOCENTER``), mm.
    energy_mv : float or None
        Nominal energy (``ENERGY``), MV.
    source : str
        ``"<file>, scan <n>"``, for messages.
    """

    curve: str
    field_mm: float
    ssd_mm: float
    depth_mm: float | None
    position_mm: np.ndarray
    value: np.ndarray
    field_inplane_mm: float | None = None
    offaxis_mm: float = 0.0
    sad_mm: float = 1000.0
    energy_mv: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.field_inplane_mm is None:
            object.__setattr__(self, "field_inplane_mm", self.field_mm)

    @property
    def field(self) -> tuple[float, float]:
        """``(x, y)`` field sides at the isocentre (crossplane, inplane), mm."""
        inplane = self.field_mm if self.field_inplane_mm is None else self.field_inplane_mm
        return (float(self.field_mm), float(inplane))


def field_label(field: tuple[float, float]) -> str:
    """``"100x100"`` for a ``(x, y)`` field in mm."""
    return f"{field[0]:g}x{field[1]:g}"


def point_label(point: dict) -> str:
    """``"100x100 SSD 900 depth 100mm"`` for an ``absolute_dose`` entry."""
    return f"{field_label(point['field_mm'])} SSD {point['ssd_mm']:g} depth {point['depth_mm']:g}mm"


# ------------------------------------------------------------------ .mcc files
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
        not one of :data:`CURVES`, or a scan holds fewer than 3 points.  The message names
        the file and the scan.
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
        return float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise BeamModelError(
            f"{where}: data row {line!r} is not two numbers (position, value)."
        ) from None


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
    if curve not in CURVES:
        raise BeamModelError(
            f"{where}: SCAN_CURVETYPE is {curve!r}; expected one of {', '.join(CURVES)}."
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
    pos, val = _sorted_unique(np.asarray(rows, float))
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


def _sorted_unique(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted increasing; readings at a repeated position averaged."""
    pos, inverse, counts = np.unique(arr[:, 0], return_inverse=True, return_counts=True)
    if pos.size == arr.shape[0]:
        order = np.argsort(arr[:, 0])
        return arr[order, 0], arr[order, 1]
    return pos, np.bincount(inverse, weights=arr[:, 1]) / counts


# ------------------------------------------------------------------ data set
@dataclass(frozen=True)
class MeasuredData:
    """A commissioning data set: scans, output factors and absolute calibration.

    Attributes
    ----------
    scans : tuple of MeasuredScan
    output_factors : dict (x_mm, y_mm) → float
        Central-axis dose relative to the reference field, at ``of_ssd_mm``/``of_depth_mm``.
    of_ssd_mm, of_depth_mm : float
        Geometry of the output factors, mm.
    reference_field_mm : (x_mm, y_mm)
        The field whose PDD sets the depth function and to which output factors refer.
    calibration : dict
        ``dose_gy_per_mu``, ``field_mm`` ((x, y) tuple), ``ssd_mm`` and ``depth_mm`` (mm, or
        ``"dmax"``).
    absolute_dose : tuple of dict
        Measured points for validation: ``field_mm``, ``ssd_mm``, ``depth_mm``,
        ``dose_gy_per_mu``.
    source : str
        Folder of the scans.
    table : str
        The output-factor and calibration table (file name, or a note when given in memory).
    """

    scans: tuple[MeasuredScan, ...]
    output_factors: dict
    of_ssd_mm: float
    of_depth_mm: float
    reference_field_mm: tuple[float, float]
    calibration: dict
    absolute_dose: tuple = ()
    source: str = ""
    table: str = ""

    @property
    def sad_mm(self) -> float:
        """Source-axis distance common to every scan, mm."""
        return float(self.scans[0].sad_mm)

    @property
    def energy_mv(self) -> float | None:
        return self.scans[0].energy_mv

    def pdds(self) -> list[MeasuredScan]:
        return [s for s in self.scans if s.curve == "PDD"]

    def profiles(self) -> list[MeasuredScan]:
        return [s for s in self.scans if s.curve != "PDD"]

    def reference_pdd(self) -> MeasuredScan:
        """PDD of the reference field (at the output-factor SSD when there are several)."""
        refs = [s for s in self.pdds() if s.field == self.reference_field_mm]
        if not refs:
            found = sorted({field_label(s.field) for s in self.pdds()}) or ["none"]
            raise BeamModelError(
                f"{self.table}: `output_factors.reference_field_mm` is "
                f"{field_label(self.reference_field_mm)} but no .mcc scan in {self.source} holds "
                "a PDD of that "
                f"field (PDDs found: {', '.join(found)}); add it or choose another reference."
            )
        return min(refs, key=lambda s: abs(s.ssd_mm - self.of_ssd_mm))

    def select(self, keep: Callable[[MeasuredScan], bool]) -> MeasuredData:
        """The same data set with only the scans for which ``keep(scan)`` is true.

        The output factors and calibration are kept; the subset is checked again (it
        still needs the reference PDD and a profile).
        """
        out = replace(self, scans=tuple(s for s in self.scans if keep(s)))
        out.check()
        return out

    def check(self) -> None:
        """Refuse a data set the fit cannot use.

        Raises
        ------
        BeamModelError
            No scans, no profile, no PDD of the reference field, scans from machines with
            different SAD, an output-factor table without the reference field, or a
            non-positive output factor or calibration dose.
        """
        if not self.scans:
            raise BeamModelError(f"{self.source}: no .mcc scans found.")
        if not self.profiles():
            raise BeamModelError(
                f"{self.source}: the .mcc files hold no INPLANE_PROFILE or CROSSPLANE_PROFILE "
                "scan; the lateral kernel cannot be fitted without profiles."
            )
        sads = sorted({s.sad_mm for s in self.scans})
        if len(sads) > 1:
            raise BeamModelError(
                f"{self.source}: scans have different ISOCENTER (SAD) values {sads} mm; "
                "one data set describes one machine."
            )
        if self.reference_field_mm not in self.output_factors:
            raise BeamModelError(
                f"{self.table}: `output_factors.factors` lacks the reference field "
                f"{field_label(self.reference_field_mm)} (has "
                f"{', '.join(field_label(f) for f in self.output_factors) or 'nothing'})."
            )
        bad = [field_label(f) for f, v in self.output_factors.items() if not v > 0]
        if bad:
            raise BeamModelError(
                f"{self.table}: `output_factors.factors` has non-positive values for {bad}."
            )
        if not self.calibration["dose_gy_per_mu"] > 0:
            raise BeamModelError(
                f"{self.table}: `calibration.dose_gy_per_mu` must be positive; got "
                f"{self.calibration['dose_gy_per_mu']}."
            )
        self.reference_pdd()


@check_arguments(folder=PATH)
def read_measured_data(
    folder: str | Path, *, table: str | Path | dict | None = None
) -> MeasuredData:
    """Read a commissioning data set (see the module docstring for the layout).

    Parameters
    ----------
    folder : str or Path
        Folder of ``.mcc`` files (read in name order; sub-folders are ignored).
    table : str, Path or dict, optional
        The output-factor and calibration table: a TOML file, or its parsed content.
        Default: ``folder / "commissioning.toml"``.

    Returns
    -------
    MeasuredData

    Raises
    ------
    BeamModelError
        Unreadable or malformed files or missing entries; the message names the file and
        the field.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BeamModelError(f"Measurement folder {folder} does not exist or is not a folder.")
    if isinstance(table, dict):
        content, table_name = table, "commissioning table (given in memory)"
    else:
        table_path = folder / TABLE_NAME if table is None else Path(table)
        content, table_name = _read_toml(table_path), str(table_path)
    files = sorted(folder.glob("*.mcc"))
    if not files:
        raise BeamModelError(f"Measurement folder {folder} holds no .mcc file.")
    scans = tuple(s for f in files for s in read_mcc(f))
    data = replace(_data_from_table(content, table_name, scans), source=str(folder))
    data.check()
    return data


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise BeamModelError(
            f"Commissioning table {path} cannot be read ({exc}); write the output factors "
            "and calibration there (see dose_engine._measured) or pass `table=` "
            "(`--table` on the command line)."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise BeamModelError(f"Commissioning table {path} is not valid TOML ({exc}).") from exc


def _entry(content: dict, dotted: str, name: str):
    node = content
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BeamModelError(f"{name}: missing entry `{dotted}`.")
        node = node[part]
    return node


def _number(content: dict, dotted: str, name: str) -> float:
    value = _entry(content, dotted, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BeamModelError(f"{name}: `{dotted}` must be a number; got {value!r}.")
    return float(value)


def parse_field(value, where: str) -> tuple[float, float]:
    """A field size ``100``, ``"100x100"``, ``"40 x 60"`` or ``[40, 60]`` → ``(x_mm, y_mm)``."""
    try:
        if isinstance(value, str):
            parts = [float(p) for p in value.lower().replace("×", "x").split("x")]
        elif isinstance(value, list | tuple):
            parts = [float(p) for p in value]
        else:
            parts = [float(value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p > 0 for p in parts):
        raise BeamModelError(
            f'{where}: field size {value!r} is not `side` or `"XxY"` in mm (positive).'
        )
    return (parts[0], parts[1])


def _data_from_table(content: dict, name: str, scans: tuple) -> MeasuredData:
    factors = _entry(content, "output_factors.factors", name)
    if not isinstance(factors, dict) or not factors:
        raise BeamModelError(f"{name}: `output_factors.factors` must be a non-empty table.")
    of = {}
    for key, value in factors.items():
        where = f"{name}: `output_factors.factors.{key}`"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BeamModelError(f"{where} must be a number; got {value!r}.")
        of[parse_field(key, where)] = float(value)
    depth = _entry(content, "calibration.depth_mm", name)
    if depth != "dmax" and (isinstance(depth, bool) or not isinstance(depth, int | float)):
        raise BeamModelError(f'{name}: `calibration.depth_mm` must be mm or "dmax"; got {depth!r}.')
    calibration = {
        "dose_gy_per_mu": _number(content, "calibration.dose_gy_per_mu", name),
        "field_mm": parse_field(_entry(content, "calibration.field_mm", name), name),
        "ssd_mm": _number(content, "calibration.ssd_mm", name),
        "depth_mm": depth if depth == "dmax" else float(depth),
    }
    points = []
    for i, p in enumerate(content.get("absolute_dose", [])):
        where = f"{name}: `absolute_dose[{i}]`"
        points.append(
            {
                "field_mm": parse_field(_entry(p, "field_mm", where), where),
                "ssd_mm": _number(p, "ssd_mm", where),
                "depth_mm": _number(p, "depth_mm", where),
                "dose_gy_per_mu": _number(p, "dose_gy_per_mu", where),
            }
        )
    return MeasuredData(
        scans=scans,
        output_factors=of,
        of_ssd_mm=_number(content, "output_factors.ssd_mm", name),
        of_depth_mm=_number(content, "output_factors.depth_mm", name),
        reference_field_mm=parse_field(
            _entry(content, "output_factors.reference_field_mm", name), name
        ),
        calibration=calibration,
        absolute_dose=tuple(points),
        table=name,
    )


# ------------------------------------------------------------------ pymedphys 6 MV
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


def _pymedphys_csvs(folder: Path) -> tuple[dict, dict]:
    """``OutputFactors.csv`` → {side_mm: OF}; ``AbsoluteDose.csv`` → {column: cGy/MU or ratio}."""
    with open(folder / "OutputFactors.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    of = {}
    for name, value in zip(rows[0][1:], rows[1][1:], strict=True):
        of[float(name.strip().split("x")[0]) * 10.0] = float(value)
    with open(folder / "AbsoluteDose.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    vals = [float(v) for v in rows[1][1:]]
    keys = ("dmax_ssd1000", "d10_ssd1000", "ratio_ssd900_ssd1000", "d10_ssd900")
    return of, dict(zip(keys, vals, strict=True))


def _pymedphys_table(of: dict, absolute: dict) -> dict:
    """The wheel's CSV content as a ``commissioning.toml`` table (SSD 900 mm, 100 mm depth)."""

    def point(ssd, cgy):
        return {"field_mm": 100.0, "ssd_mm": ssd, "depth_mm": 100.0, "dose_gy_per_mu": cgy / 100}

    return {
        "output_factors": {
            "ssd_mm": 900.0,
            "depth_mm": 100.0,
            "reference_field_mm": 100.0,
            "factors": {f"{side:g}": value for side, value in of.items()},
        },
        "calibration": {
            "dose_gy_per_mu": absolute["dmax_ssd1000"] / 100.0,
            "field_mm": 100.0,
            "ssd_mm": 1000.0,
            "depth_mm": "dmax",
        },
        "absolute_dose": [
            point(1000.0, absolute["d10_ssd1000"]),
            point(900.0, absolute["d10_ssd900"]),
        ],
    }


def pymedphys_6mv_data() -> MeasuredData:
    """The pymedphys 6 MV data set through :func:`read_measured_data`.

    Output factors (5 × 5 and 10 × 10 cm²) hold at SSD 900 mm and 100 mm depth, the
    geometry of the scans; calibration 1 cGy/MU at dmax for 10 × 10 cm² at SSD 1000 mm;
    ``d10`` at SSD 1000 and 900 mm are validation points.
    """
    folder = measured_data_dir()
    return read_measured_data(folder, table=_pymedphys_table(*_pymedphys_csvs(folder)))


def read_measured_6mv() -> dict:
    """The pymedphys 6 MV measurements grouped by square field side.

    Returns
    -------
    dict
        ``{"scans": {field_mm: [MeasuredScan, ...]}, "output_factor": {field_mm: OF},
        "absolute": {"dmax_ssd1000": cGy/MU, "d10_ssd1000": ..., "ratio_ssd900_ssd1000": ...,
        "d10_ssd900": ...}}``.

    See Also
    --------
    pymedphys_6mv_data : the same data as a :class:`MeasuredData`.
    """
    data = pymedphys_6mv_data()
    scans: dict[float, list[MeasuredScan]] = {}
    for s in data.scans:
        scans.setdefault(s.field_mm, []).append(s)
    of, absolute = _pymedphys_csvs(measured_data_dir())
    return {"scans": scans, "output_factor": of, "absolute": absolute}
