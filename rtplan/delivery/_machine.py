"""Treatment machine models: multileaf collimator (MLC) geometry and jaws.

Contract (read by the RT-PLAN writer/reader and by the leaf sequencer)
---------------------------------------------------------------------
Every length is in mm, projected to the isocentre plane, in IEC 61217 beam-limiting-device
(BLD) coordinates: ``x`` along leaf travel (MLCX, ASYMX), ``y`` along leaf stacking (ASYMY).

* :class:`MLCModel` — ``leaf_boundaries_mm`` is ``(n_pairs + 1,)`` increasing along +y,
  exactly (300A,00BE) *LeafPositionBoundaries* of the MLCX item of (300A,00B6)
  *BeamLimitingDeviceSequence*.  Leaf pair ``i`` covers ``[boundaries[i], boundaries[i+1])``.
  Bank A is the X1 (−x) side, bank B the X2 (+x) side, as in (300A,011C)
  *LeafJawPositions* (first all A leaves, then all B leaves).
* :class:`JawModel` — one pair of jaws (``"X"`` = ASYMX, ``"Y"`` = ASYMY); jaw 1 on the
  negative side, jaw 2 on the positive side.
* :class:`Machine` — a linac: (300A,00B2) *TreatmentMachineName*, its MLC, the jaws it has,
  SAD, nominal energy.  :meth:`Machine.dicom_device_types` gives the
  (300A,00B8) *RTBeamLimitingDeviceType* values in the order a plan lists them.

Constraints (checked by :meth:`rtplan.Segment.validate`)
--------------------------------------------------------
``leaf_position_range_mm``
    ``(lo, hi)``: every leaf tip position lies in this interval.
``max_overtravel_mm``
    How far a leaf may cross the central axis: bank A ≤ ``+max_overtravel_mm``, bank B
    ≥ ``−max_overtravel_mm``.
``min_leaf_gap_mm``
    Minimum distance between the two opposing leaves of one pair when the pair is not fully
    closed: the gap ``B − A`` is either 0 ("fully closed", as DICOM files commonly write
    closed pairs, ``A == B``) or ≥ ``min_leaf_gap_mm`` (both within :data:`GAP_TOLERANCE_MM`).
    ``A > B`` (colliding leaves) is always refused.  A pair whose gap is at most
    ``min_leaf_gap_mm`` counts as *closed* for sequencing; the dose calculation sees its real
    gap, widened by the dosimetric leaf gap (:mod:`dose_engine._mlc_fluence`).
``max_leaf_travel_mm``
    Varian's carriage limit (called "maximum leaf span" or "leaf extension" in vendor
    documents): within one segment, the most extended and the most retracted leaf of one bank
    may differ by at most this distance (Millennium: 150 mm).  ``inf`` when the leaves travel
    independently (Agility).
``interdigitation``
    If false, a bank-A leaf may not pass the opposing bank-B leaf of an *adjacent* pair:
    ``A[i] ≤ B[i ± 1]`` for every pair ``i`` (the interleaf collision constraint of e.g.
    Elekta MLCi).  Both Varian Millennium and Elekta Agility allow interdigitation.

Jaw ``j`` in ``{"X", "Y"}``: jaw 1 lies in ``[lo, +max_overtravel_mm]``, jaw 2 in
``[−max_overtravel_mm, hi]`` with ``(lo, hi) = position_range_mm``, and jaw 1 ≤ jaw 2.

Machine files
-------------
TOML, shipped in ``rtplan/data/machines/`` (``VarianMLC120``: Varian-style 120-leaf
Millennium, X and Y jaws; ``AgilityMLC160``: Elekta Agility-style 160-leaf, Y diaphragms
only) or any user file, loaded by :func:`load_machine`.  The leaf boundaries are given either
as ``leaf_widths_mm`` (list) or ``leaf_width_mm`` + ``n_leaf_pairs``, plus
``first_boundary_mm``; or directly as ``leaf_boundaries_mm``.  An optional ``[dosimetry]``
table gives the dose calculation's MLC and jaw parameters (:class:`dose_engine.MLCParameters`:
``transmission``, ``dosimetric_leaf_gap_mm``, ``interleaf_leakage``,
``tongue_and_groove_mm``, ``jaw_transmission``, and the devices' distances from the source
``source_to_mlc_mm``, ``source_to_x_jaws_mm``, ``source_to_y_jaws_mm`` for the head scatter;
docs/commissioning.md lists the shipped values and their sources).  An optional ``[arc]``
table gives the delivery limits of arcs (:mod:`rtplan.delivery._arc_limits`: gantry speed,
dose rates, leaf speed, minimum MU per control point, control-point spacing, arc collimator
angle); without it the machine serves static beams only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np

from dose_engine import FLUENCE_MODES, BeamModelError, MLCParameters

from .._internal.arguments import ARRAY, PATH, TEXT, check_arguments
from .._internal.toml_files import parse_toml, read_named_toml
from ..errors import MachineError
from ._arc_limits import ArcLimits, parse_arc_limits

__all__ = [
    "GAP_TOLERANCE_MM",
    "ArcLimits",
    "JawModel",
    "MLCModel",
    "Machine",
    "MachineError",
    "available_machines",
    "load_machine",
    "parse_machine",
]

logger = logging.getLogger("rtplan.machine")

#: Positions closer than this (mm) are treated as equal by the constraint checks.
GAP_TOLERANCE_MM = 1e-6

#: Jaw names and their (300A,00B8) RTBeamLimitingDeviceType, in the order plans list them.
_JAW_DEVICE_TYPES = {"X": "ASYMX", "Y": "ASYMY"}


@check_arguments(name=TEXT, leaf_boundaries_mm=ARRAY)
@dataclass(frozen=True, eq=False)
class MLCModel:
    """Geometry and mechanical limits of a multileaf collimator (MLCX: leaves travel along x).

    Parameters
    ----------
    name : str
        MLC model name (free text).
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm
        Leaf pair boundaries along BLD +y, strictly increasing; as (300A,00BE)
        *LeafPositionBoundaries*.
    min_leaf_gap_mm : float, mm
        Minimum gap between the opposing leaves of one pair unless fully closed.
    max_leaf_travel_mm : float, mm
        Maximum spread of the positions of one bank's leaves within a segment (carriage
        limit); ``inf`` for none.
    leaf_position_range_mm : (2,) tuple of float, mm
        ``(lo, hi)`` limits of every leaf tip position along x.
    max_overtravel_mm : float, mm
        Bank A tips stay ≤ ``+max_overtravel_mm``, bank B tips ≥ ``−max_overtravel_mm``.
    interdigitation : bool
        Whether a leaf may pass the opposing leaf of an adjacent pair.

    Notes
    -----
    See the module docstring for the exact definition of each constraint.
    """

    name: str
    leaf_boundaries_mm: np.ndarray
    min_leaf_gap_mm: float = 0.0
    max_leaf_travel_mm: float = math.inf
    leaf_position_range_mm: tuple[float, float] = (-200.0, 200.0)
    max_overtravel_mm: float = math.inf
    interdigitation: bool = True

    def __post_init__(self) -> None:
        b = np.array(self.leaf_boundaries_mm, dtype=float).ravel()
        if b.size < 2 or not np.all(np.isfinite(b)) or np.any(np.diff(b) <= 0):
            raise MachineError(
                f"MLC {self.name!r}: `leaf_boundaries_mm` must be at least 2 finite, strictly "
                "increasing values (LeafPositionBoundaries); got "
                f"{np.asarray(self.leaf_boundaries_mm)!r}."
            )
        b.setflags(write=False)
        object.__setattr__(self, "leaf_boundaries_mm", b)
        lo, hi = (float(v) for v in self.leaf_position_range_mm)
        if not (lo < hi):
            raise MachineError(
                f"MLC {self.name!r}: `leaf_position_range_mm` must be (lo, hi) with lo < hi; "
                f"got {self.leaf_position_range_mm!r}."
            )
        object.__setattr__(self, "leaf_position_range_mm", (lo, hi))
        for key in ("min_leaf_gap_mm", "max_leaf_travel_mm", "max_overtravel_mm"):
            v = float(getattr(self, key))
            if math.isnan(v) or v < 0:
                raise MachineError(f"MLC {self.name!r}: `{key}` must be ≥ 0; got {v!r}.")
            object.__setattr__(self, key, v)
        object.__setattr__(self, "interdigitation", bool(self.interdigitation))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MLCModel):
            return NotImplemented
        return (
            self.name == other.name
            and np.array_equal(self.leaf_boundaries_mm, other.leaf_boundaries_mm)
            and (
                self.min_leaf_gap_mm,
                self.max_leaf_travel_mm,
                self.leaf_position_range_mm,
                self.max_overtravel_mm,
                self.interdigitation,
            )
            == (
                other.min_leaf_gap_mm,
                other.max_leaf_travel_mm,
                other.leaf_position_range_mm,
                other.max_overtravel_mm,
                other.interdigitation,
            )
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.leaf_boundaries_mm.tolist())))

    def __repr__(self) -> str:
        return (
            f"MLCModel(name={self.name!r}, n_pairs={self.n_pairs}, leaf_widths_mm="
            f"{sorted(set(self.leaf_widths_mm.round(3).tolist()))}, span_mm="
            f"({self.leaf_boundaries_mm[0]:g}, {self.leaf_boundaries_mm[-1]:g}), min_leaf_gap_mm="
            f"{self.min_leaf_gap_mm:g}, max_leaf_travel_mm={self.max_leaf_travel_mm:g}, "
            f"interdigitation={self.interdigitation})"
        )

    @property
    def n_pairs(self) -> int:
        """Number of leaf pairs (half the number of leaves)."""
        return int(self.leaf_boundaries_mm.size - 1)

    @property
    def leaf_widths_mm(self) -> np.ndarray:
        """``(n_pairs,)`` leaf widths at the isocentre plane, mm."""
        return np.diff(self.leaf_boundaries_mm)

    @property
    def leaf_centers_mm(self) -> np.ndarray:
        """``(n_pairs,)`` y of the centre of each leaf pair, mm (BLD)."""
        b = self.leaf_boundaries_mm
        return 0.5 * (b[:-1] + b[1:])

    def bank_limits_mm(self) -> np.ndarray:
        """``(2, 2)`` array: row 0 = (min, max) for bank A tips, row 1 for bank B tips, mm."""
        lo, hi = self.leaf_position_range_mm
        ot = self.max_overtravel_mm
        return np.array([[lo, min(hi, ot)], [max(lo, -ot), hi]])

    def leaf_pair_index_for_y(self, y_mm) -> np.ndarray:
        """Index of the leaf pair covering each ``y_mm`` (BLD), or −1 outside the MLC.

        A point on a boundary belongs to the pair above it (half-open ``[b_i, b_{i+1})``).

        Parameters
        ----------
        y_mm : array_like of float, mm

        Returns
        -------
        ndarray of int, same shape as ``y_mm``
        """
        y = np.asarray(y_mm, dtype=float)
        idx = np.searchsorted(self.leaf_boundaries_mm, y, side="right") - 1
        outside = (idx < 0) | (idx >= self.n_pairs)
        return np.where(outside, -1, idx)


@check_arguments(name=TEXT)
@dataclass(frozen=True)
class JawModel:
    """One pair of jaws: ``"X"`` (ASYMX, jaws X1/X2) or ``"Y"`` (ASYMY, jaws Y1/Y2).

    Parameters
    ----------
    name : {"X", "Y"}
        Axis the jaws move along (BLD).
    position_range_mm : (2,) tuple of float, mm
        ``(lo, hi)``: jaw 1 ≥ lo, jaw 2 ≤ hi.
    max_overtravel_mm : float, mm
        Jaw 1 ≤ ``+max_overtravel_mm``; jaw 2 ≥ ``−max_overtravel_mm``.
    """

    name: str
    position_range_mm: tuple[float, float] = (-200.0, 200.0)
    max_overtravel_mm: float = 100.0

    def __post_init__(self) -> None:
        if self.name not in _JAW_DEVICE_TYPES:
            raise MachineError(
                f"Jaw name must be one of {sorted(_JAW_DEVICE_TYPES)}; got {self.name!r}."
            )
        lo, hi = (float(v) for v in self.position_range_mm)
        if not lo < hi:
            raise MachineError(
                f"Jaws {self.name}: `position_range_mm` must be (lo, hi) with lo < hi; got "
                f"{self.position_range_mm!r}."
            )
        object.__setattr__(self, "position_range_mm", (lo, hi))
        object.__setattr__(self, "max_overtravel_mm", float(self.max_overtravel_mm))

    @property
    def dicom_device_type(self) -> str:
        """(300A,00B8) *RTBeamLimitingDeviceType*: ``"ASYMX"`` or ``"ASYMY"``."""
        return _JAW_DEVICE_TYPES[self.name]

    def limits_mm(self) -> np.ndarray:
        """``(2, 2)``: row 0 = (min, max) of jaw 1, row 1 = (min, max) of jaw 2, mm."""
        lo, hi = self.position_range_mm
        ot = self.max_overtravel_mm
        return np.array([[lo, min(hi, ot)], [max(lo, -ot), hi]])

    def clip(self, jaw1_mm: float, jaw2_mm: float) -> tuple[float, float]:
        """Clip a wanted opening ``(jaw1, jaw2)`` to what the jaws can reach (opens wider)."""
        lim = self.limits_mm()
        return (float(np.clip(jaw1_mm, *lim[0])), float(np.clip(jaw2_mm, *lim[1])))


@check_arguments(name=TEXT, mlc="rtplan.delivery._machine:MLCModel")
@dataclass(frozen=True)
class Machine:
    """A treatment machine: MLC, jaws and beam data the planner and RT-PLAN writer need.

    Parameters
    ----------
    name : str
        (300A,00B2) *TreatmentMachineName*.
    mlc : MLCModel
    jaws : mapping of str to JawModel
        The jaws the machine has, keyed ``"X"`` and/or ``"Y"``.  Stored read-only in the
        order X, Y.
    sad_mm : float, mm
        (300A,00B4) *SourceAxisDistance* (default 1000).
    nominal_energy_mv : float, MV
        (300A,0114) *NominalBeamEnergy* (default 6).
    radiation_type : str
        (300A,00C6) *RadiationType* (default ``"PHOTON"``).
    manufacturer : str
        (0008,0070) *Manufacturer* of the model (free text).
    dosimetry : dose_engine.MLCParameters
        Leaf and jaw transmission, dosimetric leaf gap, interleaf leakage and
        tongue-and-groove width: the machine file's ``[dosimetry]`` table (default: none
        of these effects); a commissioned beam model's ``"mlc"`` entries override them
        (:func:`rtplan.dose.resolve_mlc_parameters`).
    arc : ArcLimits, optional
        Gantry speed, dose rates, leaf speed, minimum MU per control point, control-point
        spacing and arc collimator angle: the machine file's ``[arc]`` table.  ``None``: the
        machine is for static beams only (:meth:`require_arc_limits`).
    source : str
        How messages name the machine file (``'file.toml' (shipped)``); not compared.
    fluence_mode : {"STANDARD", "FFF"}
        (3002,0051) *FluenceMode* of its beams: flattened (STANDARD, default) or
        flattening-filter free (NON_STANDARD, (3002,0052) *FluenceModeID* FFF).  With
        ``nominal_energy_mv`` it picks each beam's dose model
        (:func:`rtplan.dose.resolve_beam_models`).
    """

    name: str
    mlc: MLCModel
    jaws: Mapping[str, JawModel] = field(default_factory=dict)
    sad_mm: float = 1000.0
    nominal_energy_mv: float = 6.0
    radiation_type: str = "PHOTON"
    manufacturer: str = ""
    dosimetry: MLCParameters = field(default_factory=MLCParameters)
    arc: ArcLimits | None = None
    source: str = ""
    fluence_mode: str = "STANDARD"

    def __post_init__(self) -> None:
        if self.fluence_mode not in FLUENCE_MODES:
            raise MachineError(
                f"Machine {self.name!r}: `fluence_mode` must be one of "
                f"{', '.join(FLUENCE_MODES)}; got {self.fluence_mode!r}."
            )
        if not (self.nominal_energy_mv > 0 and math.isfinite(self.nominal_energy_mv)):
            raise MachineError(
                f"Machine {self.name!r}: `nominal_energy_mv` must be > 0 (MV); got "
                f"{self.nominal_energy_mv!r}."
            )
        if self.arc is not None and not isinstance(self.arc, ArcLimits):
            raise MachineError(
                f"Machine {self.name!r}: `arc` must be an rtplan.delivery ArcLimits or None; got "
                f"{type(self.arc).__name__}."
            )
        if not isinstance(self.dosimetry, MLCParameters):
            raise MachineError(
                f"Machine {self.name!r}: `dosimetry` must be a dose_engine.MLCParameters; got "
                f"{type(self.dosimetry).__name__}."
            )
        jaws = dict(self.jaws)
        for key, jaw in jaws.items():
            if not isinstance(jaw, JawModel) or jaw.name != key:
                raise MachineError(
                    f"Machine {self.name!r}: `jaws[{key!r}]` must be a JawModel named {key!r}; "
                    f"got {jaw!r}."
                )
        ordered = {k: jaws[k] for k in ("X", "Y") if k in jaws}
        object.__setattr__(self, "jaws", MappingProxyType(ordered))
        if not (self.sad_mm > 0 and math.isfinite(self.sad_mm)):
            raise MachineError(f"Machine {self.name!r}: `sad_mm` must be > 0; got {self.sad_mm!r}.")

    def __hash__(self) -> int:
        return hash((self.name, self.mlc, tuple(self.jaws.items()), self.sad_mm))

    def __reduce__(self):
        # mappingproxy cannot be pickled (Dask ships plans between processes)
        return (
            Machine,
            (
                self.name,
                self.mlc,
                dict(self.jaws),
                self.sad_mm,
                self.nominal_energy_mv,
                self.radiation_type,
                self.manufacturer,
                self.dosimetry,
                self.arc,
                self.source,
                self.fluence_mode,
            ),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Machine):
            return NotImplemented
        return (
            self.name == other.name
            and self.mlc == other.mlc
            and dict(self.jaws) == dict(other.jaws)
            and (self.sad_mm, self.nominal_energy_mv, self.radiation_type, self.dosimetry)
            == (other.sad_mm, other.nominal_energy_mv, other.radiation_type, other.dosimetry)
            and self.fluence_mode == other.fluence_mode
            and self.arc == other.arc
        )

    def require_arc_limits(self, what: str = "an arc") -> ArcLimits:
        """The machine's :class:`ArcLimits`, or an error naming the machine file.

        Parameters
        ----------
        what : str
            What needs the limits, for the message (``"beam 1 (an arc)"``).

        Raises
        ------
        MachineError
            The machine has no ``[arc]`` table.
        """
        if self.arc is None:
            where = f"machine file {self.source}" if self.source else f"machine {self.name!r}"
            raise MachineError(
                f"{what} needs the arc limits of the machine, but {where} has no `[arc]` table "
                "(missing key `arc.gantry_speed_deg_per_s`); add it (docs/vmat.md lists the "
                "keys) or use a shipped machine."
            )
        return self.arc

    @property
    def has_x_jaws(self) -> bool:
        """Whether the machine has ASYMX jaws."""
        return "X" in self.jaws

    @property
    def has_y_jaws(self) -> bool:
        """Whether the machine has ASYMY jaws (diaphragms)."""
        return "Y" in self.jaws

    def dicom_device_types(self) -> tuple[str, ...]:
        """(300A,00B8) *RTBeamLimitingDeviceType* values, in the order a plan lists them.

        Jaws first (``"ASYMX"``, ``"ASYMY"`` if present), then ``"MLCX"``; e.g.
        ``("ASYMX", "ASYMY", "MLCX")`` for a Varian-style and ``("ASYMY", "MLCX")`` for an
        Agility-style machine.
        """
        return tuple(j.dicom_device_type for j in self.jaws.values()) + ("MLCX",)

    def leaf_pair_index_for_y(self, y_mm) -> np.ndarray:
        """Shortcut for :meth:`MLCModel.leaf_pair_index_for_y`."""
        return self.mlc.leaf_pair_index_for_y(y_mm)


# ---------------------------------------------------------------------------- loading
def _machines_dir():
    return resources.files("rtplan").joinpath("data", "machines")


def _shipped_tables() -> dict[str, tuple[dict[str, Any], Any]]:
    """Every shipped machine file, parsed, with its file, by file stem."""
    out = {}
    for f in _machines_dir().iterdir():
        if f.name.endswith(".toml"):
            data = parse_toml(
                f.read_bytes(), source=f"'{f.name}'", what="Machine file", error=MachineError
            )
            out[f.name[: -len(".toml")]] = (data, f)
    return out


def available_machines() -> tuple[str, ...]:
    """Names of the machine models shipped with rtplan (usable in :func:`load_machine`)."""
    tables = _shipped_tables().items()
    return tuple(sorted(str(data.get("name", stem)) for stem, (data, _) in tables))


def _shipped_files() -> dict[str, Any]:
    """Shipped machine files by machine name and by file stem."""
    out = {}
    for stem, (data, f) in _shipped_tables().items():
        out[str(data.get("name", ""))] = f
        out[stem] = f
    return out


@check_arguments(name_or_path=PATH)
def load_machine(name_or_path: str | os.PathLike) -> Machine:
    """Load a shipped machine model by name, or a machine TOML file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`available_machines` (``"VarianMLC120"``, ``"AgilityMLC160"``;
        the file stem ``"varian_millennium120"`` also works) or a ``.toml`` path.

    Returns
    -------
    Machine

    Raises
    ------
    MachineError
        Unknown name (the message lists the shipped ones), unreadable or malformed file
        (the message names the file and the key).

    Examples
    --------
    >>> from rtplan import load_machine
    >>> m = load_machine("VarianMLC120")
    >>> m.mlc.n_pairs, m.dicom_device_types()
    (60, ('ASYMX', 'ASYMY', 'MLCX'))
    """
    data, source = read_named_toml(
        name_or_path,
        _shipped_files(),
        kind="machine",
        listed=available_machines(),
        error=MachineError,
    )
    return parse_machine(data, source=source)


def _get(table: Mapping, key: str, where: str, source: str, kind: type | tuple, default=...):
    if key not in table:
        if default is ...:
            raise MachineError(f"Machine file {source}: missing key `{where}{key}`.")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise MachineError(
            f"Machine file {source}: key `{where}{key}` must be {names}; got {value!r}."
        )
    return value


def _number_list(table, key, where, source, *, length=None):
    value = _get(table, key, where, source, list)
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise MachineError(
            f"Machine file {source}: key `{where}{key}` must be a list of numbers; got {value!r}."
        )
    if length is not None and len(value) != length:
        raise MachineError(
            f"Machine file {source}: key `{where}{key}` must have {length} numbers; got {value!r}."
        )
    return [float(v) for v in value]


def parse_machine(data: Mapping[str, Any], *, source: str = "<dict>") -> Machine:
    """Build a :class:`Machine` from a parsed TOML document (see the module docstring).

    Raises
    ------
    MachineError
        A key is missing or has the wrong type or value; the message names ``source`` and
        the key.
    """
    num = (int, float)
    name = _get(data, "name", "", source, str)
    mlc_t = _get(data, "mlc", "", source, dict)
    w = "mlc."
    if "leaf_boundaries_mm" in mlc_t:
        bounds = _number_list(mlc_t, "leaf_boundaries_mm", w, source)
    else:
        first = float(_get(mlc_t, "first_boundary_mm", w, source, num))
        if "leaf_widths_mm" in mlc_t:
            widths = _number_list(mlc_t, "leaf_widths_mm", w, source)
        else:
            width = float(_get(mlc_t, "leaf_width_mm", w, source, num))
            n = _get(mlc_t, "n_leaf_pairs", w, source, int)
            if n < 1:
                raise MachineError(
                    f"Machine file {source}: `mlc.n_leaf_pairs` must be ≥ 1; got {n}."
                )
            widths = [width] * n
        if any(not (x > 0) for x in widths):
            raise MachineError(
                f"Machine file {source}: leaf widths (`mlc.leaf_widths_mm`/`mlc.leaf_width_mm`) "
                f"must be > 0; got {widths!r}."
            )
        bounds = list(first + np.concatenate([[0.0], np.cumsum(widths)]))
    try:
        mlc = MLCModel(
            name=str(_get(mlc_t, "name", w, source, str, default="MLCX")),
            leaf_boundaries_mm=np.asarray(bounds),
            min_leaf_gap_mm=float(_get(mlc_t, "min_leaf_gap_mm", w, source, num)),
            max_leaf_travel_mm=float(
                _get(mlc_t, "max_leaf_travel_mm", w, source, num, default=math.inf)
            ),
            leaf_position_range_mm=tuple(
                _number_list(mlc_t, "leaf_position_range_mm", w, source, length=2)
            ),
            max_overtravel_mm=float(
                _get(mlc_t, "max_overtravel_mm", w, source, num, default=math.inf)
            ),
            interdigitation=_get(mlc_t, "interdigitation", w, source, bool),
        )
    except MachineError as exc:
        raise MachineError(f"Machine file {source}: {exc}") from None
    jaws_t = _get(data, "jaws", "", source, dict, default={})
    jaws = {}
    for key, jt in jaws_t.items():
        if key not in _JAW_DEVICE_TYPES:
            raise MachineError(
                f"Machine file {source}: unknown jaw table `jaws.{key}`; expected `jaws.X` "
                "(ASYMX) and/or `jaws.Y` (ASYMY)."
            )
        if not isinstance(jt, dict):
            raise MachineError(f"Machine file {source}: `jaws.{key}` must be a table; got {jt!r}.")
        jw = f"jaws.{key}."
        try:
            jaws[key] = JawModel(
                name=key,
                position_range_mm=tuple(
                    _number_list(jt, "position_range_mm", jw, source, length=2)
                ),
                max_overtravel_mm=float(_get(jt, "max_overtravel_mm", jw, source, num)),
            )
        except MachineError as exc:
            raise MachineError(f"Machine file {source}: {exc}") from None
    dosimetry_t = _get(data, "dosimetry", "", source, dict, default={})
    try:
        dosimetry = MLCParameters.from_mapping(dosimetry_t, source=f"machine file {source}")
    except BeamModelError as exc:
        raise MachineError(f"Machine file {source}: `[dosimetry]`: {exc}") from None
    arc_t = _get(data, "arc", "", source, dict, default=None)
    arc = None if arc_t is None else parse_arc_limits(arc_t, source=source)
    try:
        return Machine(
            name=name,
            mlc=mlc,
            jaws=jaws,
            sad_mm=float(_get(data, "sad_mm", "", source, num, default=1000.0)),
            nominal_energy_mv=float(_get(data, "nominal_energy_mv", "", source, num, default=6.0)),
            fluence_mode=str(_get(data, "fluence_mode", "", source, str, default="STANDARD")),
            radiation_type=str(_get(data, "radiation_type", "", source, str, default="PHOTON")),
            manufacturer=str(_get(data, "manufacturer", "", source, str, default="")),
            dosimetry=dosimetry,
            arc=arc,
            source=source,
        )
    except MachineError as exc:
        raise MachineError(f"Machine file {source}: {exc}") from None
