"""Measured water-tank data for commissioning a beam model.

A commissioning data set is a folder (or a list of files) holding

- water-tank scans: PDDs and in-plane, cross-plane and diagonal profiles of rectangular
  open fields, at any SSD and depth, in any mix of the formats
  :mod:`dose_engine._scan_files` recognises from their content: PTW MEPHYSTO ``.mcc``
  (:mod:`dose_engine._mcc`), Varian W2CAD (:mod:`dose_engine._w2cad`) and IBA OmniPro
  RFA300 ASCII (:mod:`dose_engine._omnipro_ascii`).  In a folder, the files ending in
  ``.mcc``, ``.asc`` or ``.cdp`` are read.  Crossplane is BLD x (leaf travel), inplane is
  BLD y; field sizes are at the isocentre, in mm.
- ``commissioning.toml``: output factors, the absolute calibration and, optionally, the MLC
  parameters::

      energy_mv = 6.0             # optional (W2CAD files carry no energy); must match
                                  # the scans that state one
      fluence_mode = "STANDARD"   # optional: "FFF" for a flattening-filter-free beam
      [output_factors]            # central-axis dose ratios at one geometry
      ssd_mm = 900.0
      depth_mm = 100.0
      reference_field_mm = "100x100"   # its PDD sets the depth function
      table = "output_factors.csv"     # optional: X jaw across, Y jaw down, relative
                                       # to this file (dose_engine._output_factor_table)
      [output_factors.factors]    # optional with `table`: "X x Y" mm at the isocentre
      "50x50" = 0.906             # (crossplane x inplane), or one number for a square
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

      [mlc]                       # optional: applied to every aperture dose (MLC_KEYS)
      transmission = 0.015        # closed-leaf transmission, fraction of open-field dose
      dosimetric_leaf_gap_mm = 1.6
      interleaf_leakage = 0.022   # fraction; at least the transmission
      tongue_and_groove_mm = 0.5  # band about each leaf boundary shielded by either leaf
      jaw_transmission = 0.003    # fraction, outside the jaws
      source_to_mlc_mm = 509.0    # target to the middle of the leaves, mm (head scatter)

The measured 6 MV data shipped in the pymedphys 0.41 wheel (Apache-2.0; PTW 60008 diode,
SSD 900 mm, 5 × 5 and 10 × 10 cm², PDDs and profiles at 15, 50, 100 and 200 mm, in
``pymedphys/tests/experimental/mephysto/data/measurements/``) are one such folder; its two
CSV files are translated into the table above by :func:`pymedphys_6mv_data`.  The data are
read in place and never copied into this repository; pymedphys is part of the ``test`` extra.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

from ._arguments import PATH, check_arguments, either, sequence_of
from ._mcc import read_mcc
from ._mlc_fluence import PARAMETER_RANGES
from ._model import FLUENCE_MODES
from ._output_factor_table import read_output_factor_table
from ._scan import MeasuredScan, field_label
from ._scan_files import read_scan_file, scan_files_in
from .errors import BeamModelError

__all__ = [
    "MeasuredData",
    "MeasuredScan",
    "hold_out",
    "measured_data_dir",
    "pymedphys_6mv_data",
    "read_mcc",
    "read_measured_data",
    "read_measured_6mv",
]

TABLE_NAME = "commissioning.toml"
#: ``[mlc]`` entries of ``commissioning.toml``: (lowest, highest) plausible value (the
#: dose calculation's :class:`~dose_engine.MLCParameters`).  The upper bounds catch per cent
#: given for fractions and cm for mm; published values: transmission 0.01-0.02, DLG
#: 0.3-2.2 mm, interleaf leakage 0.015-0.03 (AAPM TG-50, doi:10.1118/1.1434014; LoSasso et
#: al. 1998, doi:10.1118/1.598381).
MLC_KEYS = PARAMETER_RANGES


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
    mlc : dict or None
        The ``[mlc]`` entries (:data:`MLC_KEYS`), when the table has them.
    nominal_energy_mv : float or None
        The table's ``energy_mv`` (see :attr:`energy_mv`).
    fluence_mode : {"STANDARD", "FFF"}
        The table's ``fluence_mode``: a flattened beam (default) or a flattening-filter-free
        one, whose peaked profiles the fit follows with a central peak instead of a dip
        (:data:`dose_engine._fit.HORN_BOUNDS`).
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
    mlc: dict | None = None
    nominal_energy_mv: float | None = None
    fluence_mode: str = "STANDARD"

    @property
    def sad_mm(self) -> float:
        """Source-axis distance common to every scan, mm."""
        return float(self.scans[0].sad_mm)

    @property
    def energy_mv(self) -> float | None:
        """Nominal energy, MV: the table's ``energy_mv``, else the scans' (None if neither
        states it; W2CAD files carry none)."""
        if self.nominal_energy_mv is not None:
            return self.nominal_energy_mv
        return next((s.energy_mv for s in self.scans if s.energy_mv is not None), None)

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
                f"{field_label(self.reference_field_mm)} but no scan in {self.source} holds "
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
            different SAD or of different energies (or of another energy than the table's
            ``energy_mv``), an output-factor table without the reference field, or a
            non-positive output factor or calibration dose.
        """
        if not self.scans:
            raise BeamModelError(f"{self.source}: no scans found.")
        if not self.profiles():
            raise BeamModelError(
                f"{self.source}: the scan files hold no INPLANE_PROFILE, CROSSPLANE_PROFILE or "
                "DIAGONAL_PROFILE scan; the lateral kernel cannot be fitted without profiles."
            )
        energies = {s.energy_mv: s for s in self.scans if s.energy_mv is not None}
        stated = self.nominal_energy_mv
        off = [s for e, s in energies.items() if stated is not None and abs(e - stated) > 0.01]
        if off:
            s = next(s for s in self.scans if s.energy_mv == off[0].energy_mv)
            raise BeamModelError(
                f"{self.table}: `energy_mv` is {stated:g} MV but {s.source} was measured at "
                f"{s.energy_mv:g} MV."
            )
        if len(energies) > 1:
            a, b = list(energies.values())[:2]
            raise BeamModelError(
                f"{self.source}: scans of different energies ({a.source}: {a.energy_mv:g} MV, "
                f"{b.source}: {b.energy_mv:g} MV); one data set describes one beam."
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


def hold_out(measured: MeasuredData, fields_mm) -> MeasuredData:
    """The data set without the scans and output factors of ``fields_mm`` (for a fit whose
    validation on those fields is then a prediction).

    Raises
    ------
    BeamModelError
        A field that is the reference field or that no scan or output factor holds.
    """
    fields = {(float(x), float(y)) for x, y in fields_mm}
    present = {s.field for s in measured.scans} | set(measured.output_factors)
    for f in sorted(fields):
        if f == measured.reference_field_mm:
            raise BeamModelError(
                f"--hold-out {field_label(f)}: the reference field sets the depth function "
                "and the output factors; it cannot be held out of the fit."
            )
        if f not in present:
            names = ", ".join(field_label(g) for g in sorted(present))
            raise BeamModelError(
                f"--hold-out {field_label(f)}: {measured.source} holds no scan or output "
                f"factor of that field (fields: {names})."
            )
    if not fields:
        return measured
    out = replace(
        measured,
        scans=tuple(s for s in measured.scans if s.field not in fields),
        output_factors={f: v for f, v in measured.output_factors.items() if f not in fields},
    )
    out.check()
    return out


@check_arguments(source=either(PATH, sequence_of(PATH)))
def read_measured_data(
    source: str | Path | Sequence[str | Path], *, table: str | Path | dict | None = None
) -> MeasuredData:
    """Read a commissioning data set (see the module docstring for the layout).

    Parameters
    ----------
    source : str, Path or sequence of them
        A folder (its ``.mcc``, ``.asc`` and ``.cdp`` files are read in name order;
        sub-folders are ignored), or scan files and folders (any extension for a file; its
        content decides the reader).
    table : str, Path or dict, optional
        The output-factor and calibration table: a TOML file, or its parsed content.
        Default: ``commissioning.toml`` in the folder (or in the first file's folder).

    Returns
    -------
    MeasuredData

    Raises
    ------
    BeamModelError
        Unreadable or malformed files or missing entries; the message names the file and
        the line or field.
    """
    paths = [Path(source)] if isinstance(source, str | Path) else [Path(p) for p in source]
    if not paths:
        raise BeamModelError("No measurement folder or scan file given.")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = scan_files_in(p)
            if not found:
                raise BeamModelError(
                    f"Measurement folder {p} holds no scan file (.mcc, .asc or .cdp)."
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise BeamModelError(f"Measurement folder or file {p} does not exist.")
    home = paths[0] if paths[0].is_dir() else paths[0].parent
    if isinstance(table, dict):
        content, table_name, table_dir = table, "commissioning table (given in memory)", home
    else:
        table_path = home / TABLE_NAME if table is None else Path(table)
        content, table_name, table_dir = _read_toml(table_path), str(table_path), table_path.parent
    scans = tuple(s for f in files for s in read_scan_file(f))
    data = _data_from_table(content, table_name, scans, table_dir)
    data = replace(data, source=", ".join(str(p) for p in paths))
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


def _output_factors(content: dict, name: str, table_dir: Path) -> dict:
    """``output_factors.factors`` and the rows of ``output_factors.table``, merged."""
    node = _entry(content, "output_factors", name)
    factors = node.get("factors", {}) if isinstance(node, dict) else None
    if not isinstance(factors, dict):
        raise BeamModelError(f"{name}: `output_factors.factors` must be a table.")
    of = {}
    for key, value in factors.items():
        where = f"{name}: `output_factors.factors.{key}`"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BeamModelError(f"{where} must be a number; got {value!r}.")
        of[parse_field(key, where)] = float(value)
    if "table" in node:
        if not isinstance(node["table"], str):
            raise BeamModelError(f"{name}: `output_factors.table` must be a file name.")
        table_path = table_dir / node["table"]
        for field, value in read_output_factor_table(table_path).items():
            if field in of and abs(of[field] - value) > 1e-9:
                raise BeamModelError(
                    f"{name}: `output_factors.factors` gives {field_label(field)} = "
                    f"{of[field]:g} but {table_path} gives {value:g}."
                )
            of[field] = value
    if not of:
        raise BeamModelError(
            f"{name}: no output factors; give `output_factors.factors` or `output_factors.table`."
        )
    return of


def _mlc(content: dict, name: str) -> dict | None:
    """The ``[mlc]`` entries, checked against :data:`MLC_KEYS`."""
    node = content.get("mlc")
    if node is None:
        return None
    if not isinstance(node, dict):
        raise BeamModelError(f"{name}: `mlc` must be a table.")
    unknown = sorted(set(node) - set(MLC_KEYS))
    if unknown:
        raise BeamModelError(
            f"{name}: unknown `mlc` entries {unknown}; expected {', '.join(MLC_KEYS)}."
        )
    out = {}
    for key, value in node.items():
        lo, hi = MLC_KEYS[key]
        number = _number(content, f"mlc.{key}", name)
        if not lo <= number <= hi:
            unit = " mm" if key.endswith("_mm") else " (a fraction, not per cent)"
            raise BeamModelError(f"{name}: `mlc.{key}` = {value!r} is outside {lo:g}-{hi:g}{unit}.")
        out[key] = number
    if "interleaf_leakage" in out and out["interleaf_leakage"] < out.get("transmission", 0.0):
        raise BeamModelError(
            f"{name}: `mlc.interleaf_leakage` ({out['interleaf_leakage']:g}) is below "
            f"`mlc.transmission` ({out['transmission']:g}); leakage between leaves is the "
            "larger of the two."
        )
    return out


def _energy(content: dict, name: str) -> float | None:
    """The optional top-level ``energy_mv`` (MV, positive)."""
    if "energy_mv" not in content:
        return None
    energy = _number(content, "energy_mv", name)
    if not energy > 0:
        raise BeamModelError(f"{name}: `energy_mv` must be positive (MV); got {energy:g}.")
    return energy


def _fluence_mode(content: dict, name: str) -> str:
    """The optional top-level ``fluence_mode`` (``"STANDARD"``, the default, or ``"FFF"``)."""
    mode = content.get("fluence_mode", "STANDARD")
    if not isinstance(mode, str) or mode.strip().upper() not in FLUENCE_MODES:
        raise BeamModelError(
            f"{name}: `fluence_mode` must be one of {', '.join(FLUENCE_MODES)}; got {mode!r}."
        )
    return mode.strip().upper()


def _data_from_table(content: dict, name: str, scans: tuple, table_dir: Path) -> MeasuredData:
    of = _output_factors(content, name, table_dir)
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
        mlc=_mlc(content, name),
        nominal_energy_mv=_energy(content, name),
        fluence_mode=_fluence_mode(content, name),
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
