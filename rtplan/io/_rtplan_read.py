"""Read a DICOM RT-PLAN from any system into a :class:`rtplan.DeliverablePlan`.

Supported: photon beams shaped by an MLCX and/or jaws — BeamType STATIC or DYNAMIC:
step-and-shoot (devices moving between control points of equal cumulative meterset
weight, PS3.3 C.8.8.14.1), sliding-window dynamic MLC and jaw tracking (devices moving
while meterset accrues) and arcs/VMAT (the gantry rotating as (300A,011F)
*GantryRotationDirection* CW or CC says, through 0 degrees where it must).  A beam where
something moves while meterset is delivered (an arc, a sliding window) is read as an
:class:`rtplan.delivery.ArcBeam` that keeps its control points; its dose is that of static
apertures at most ``ARC_SAMPLE_DEG`` of gantry rotation and ``LEAF_SAMPLE_MM`` of leaf or
jaw travel apart (:mod:`rtplan.delivery._arc`).  Device types ASYMX/X, ASYMY/Y and MLCX (Varian
and Elekta exports); leaf boundaries are taken from the plan; a control point that omits a
device, angle or position keeps the previous value, as DICOM specifies.  A jaws-only field
(no MLCX) is read with a virtual one-pair MLC whose leaves sit on the X jaws, so its
aperture is exactly the jaw opening.

Refused with a clear :class:`~rtplan.errors.InputError` (never computed wrongly): a
gantry angle that changes while the rotation direction is NONE, a collimator or couch that
rotates within the beam, wedges, compensators, blocks, boli, electron/proton/ion beams, an
MLCY, a beam energy the dose engine is not modelled for, a patient position different from
the CT's, leaf positions outside the MLC's limits, overlapping leaves, a beam that would
need more than ``MAX_SAMPLES_PER_BEAM`` apertures, a missing (300A,0086) *BeamMeterset*,
a (300A,0110) *NumberOfControlPoints* that is not the number of control points, a
(300A,0134) *CumulativeMetersetWeight* that decreases (the control point named), an arc
control point without its (300A,011E) *GantryAngle* and an arc that changes direction.
A plan whose FrameOfReferenceUID or referenced RT-STRUCT differs from the loaded
patient's raises :class:`~rtplan.errors.ReferenceMismatchError` naming both UIDs.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dose_engine import FLUENCE_MODES, MLCParameters

from .._internal.arguments import path_argument, require_instance
from .._internal.messages import quote
from ..delivery._arc import (
    POSITION_TOL_MM,
    ArcBeam,
    ControlPoint,
    gantry_sweeps_deg,
    sample_control_points,
)
from ..delivery._deliverable import DeliverableBeam, DeliverablePlan, Segment
from ..delivery._machine import JawModel, Machine, MLCModel, available_machines, load_machine
from ..errors import DicomReadError, InputError, ReferenceMismatchError, SegmentError
from ..patient._patient import Patient
from ._dicom_common import floats, read_dataset, tag_str
from ._uids import RT_PLAN_STORAGE

__all__ = ["RtPlanBeams", "read_rtplan", "read_rtplan_beams", "read_rtplan_delivery"]

log = logging.getLogger("rtplan.io")

#: Leaves may touch (A == B); A > B + this is an overlap, mm.
OVERLAP_TOL_MM = 0.01
_JAW_TYPES = {"ASYMX": "X", "X": "X", "ASYMY": "Y", "Y": "Y"}
#: LeafPositionBoundaries of the virtual one-pair MLC given to jaws-only fields, mm.
VIRTUAL_MLC_BOUNDARIES_MM = np.array([-200.0, 200.0])
#: Beam-level sequences of accessories that change the dose (PS3.3 C.8.8.14); a beam
#: holding any of them is refused, whatever its (300A,00D0) NumberOfWedges etc. say.
ACCESSORY_SEQUENCES = (
    "WedgeSequence",
    "CompensatorSequence",
    "BlockSequence",
    "ReferencedBolusSequence",
    "ApplicatorSequence",
    "GeneralAccessorySequence",
)


@dataclass(frozen=True)
class _ParsedSegment:
    leaf_positions_mm: np.ndarray  # (2, n_pairs)
    jaws_mm: dict  # {"X": (x1, x2) or None, "Y": (y1, y2) or None}
    mu: float
    gantry_deg: float | None  # an arc's sample angle; None: the beam's


@dataclass(frozen=True)
class _ParsedBeam:
    number: int
    name: str
    machine_name: str
    gantry_deg: float
    collimator_deg: float
    couch_deg: float
    isocenter_mm: tuple
    sad_mm: float
    leaf_boundaries_mm: np.ndarray
    virtual_mlc: bool
    has_x_jaws: bool
    has_y_jaws: bool
    segments: tuple
    meterset_mu: float
    energy_mv: float | None
    fluence_mode: str  # "STANDARD" or "FFF"
    control_points: tuple  # of ControlPoint, weights normalised to end at 1
    rotation: str | None  # the beam's GantryRotationDirection if it is dynamic, else None


class _Ctx:
    """Names the file and beam in error messages."""

    def __init__(self, path: Path):
        self.path = path

    def err(self, msg: str, cls=InputError):
        return cls(f"{self.path}: {msg}")


def _float(value, ctx: _Ctx, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ctx.err(f"{what} is {value!r}; expected a number.") from None
    if not np.isfinite(v):
        raise ctx.err(f"{what} is {value!r}; expected a finite number.")
    return v


def _int(value, ctx: _Ctx, what: str) -> int:
    """An integer element (IS), or an error naming it: never a bare ValueError."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ctx.err(f"{what} is {quote(value, 40)}; expected an integer.") from None
    if not np.isfinite(f) or f != int(f):
        raise ctx.err(f"{what} is {quote(value, 40)}; expected an integer.")
    return int(f)


def _beam_number(item, ctx: _Ctx, keyword: str, where: str) -> int:
    """(300A,00C0) *BeamNumber* or (300C,0006) *ReferencedBeamNumber* of ``item``, required."""
    value = item.get(keyword, None)
    if value in (None, ""):
        raise ctx.err(f"{where} lacks {tag_str(keyword)}; every beam needs its number.")
    return _int(value, ctx, f"{where}: {tag_str(keyword)}")


def _angle_deg(value, ctx: _Ctx, what: str) -> float:
    """An IEC 61217 angle in [0, 360) degrees (PS3.3 C.8.8.14); never wrapped silently."""
    v = _float(value, ctx, what)
    if not 0.0 <= v < 360.0:
        raise ctx.err(
            f"{what} is {v:g} degrees; DICOM angles lie in [0, 360) (PS3.3 C.8.8.14). The "
            "exporter is broken: rtplan does not guess what it meant."
        )
    return v


def _check_references(ds, patient, ctx: _Ctx) -> None:
    plan_for = str(ds.get("FrameOfReferenceUID", ""))
    if plan_for != patient.frame_of_reference_uid:
        raise ctx.err(
            f"(0020,0052) FrameOfReferenceUID is {plan_for or '(missing)'} but the CT's is "
            f"{patient.frame_of_reference_uid}; this plan belongs to another CT. Load the CT "
            "the plan was made on.",
            ReferenceMismatchError,
        )
    refs = ds.get("ReferencedStructureSetSequence", None)
    ss_uid = patient.structure_set_uid
    if not refs:
        raise ctx.err(
            "(300C,0060) ReferencedStructureSetSequence is missing; expected a reference to "
            f"the loaded RT-STRUCT {ss_uid}.",
            ReferenceMismatchError,
        )
    plan_ss = [str(r.get("ReferencedSOPInstanceUID", "")) for r in refs]
    if ss_uid not in plan_ss:
        raise ctx.err(
            f"(300C,0060) ReferencedStructureSetSequence references RT-STRUCT "
            f"{', '.join(plan_ss)} but the loaded RT-STRUCT is {ss_uid}; load the structure "
            "set the plan was made with.",
            ReferenceMismatchError,
        )


def _fraction_group(ds, ctx: _Ctx, fraction_group_number: int | None):
    groups = ds.get("FractionGroupSequence", None)
    if not groups:
        raise ctx.err("(300A,0070) FractionGroupSequence is missing; the plan has no fractions.")
    numbers = [
        _int(g.get("FractionGroupNumber", i + 1), ctx, "(300A,0071) FractionGroupNumber")
        for i, g in enumerate(groups)
    ]
    if fraction_group_number is None:
        if len(groups) > 1:
            raise ctx.err(
                f"(300A,0070) FractionGroupSequence has {len(groups)} fraction groups "
                f"({numbers}); choose one with `fraction_group_number`."
            )
        return groups[0]
    if fraction_group_number not in numbers:
        raise ctx.err(
            f"(300A,0070) FractionGroupSequence has no fraction group {fraction_group_number}; "
            f"available: {numbers}."
        )
    return groups[numbers.index(fraction_group_number)]


def _device_map(bseq_item, ctx: _Ctx, bnum: int):
    """Device types → (NumberOfLeafJawPairs, boundaries); refuse anything but jaws + MLCX."""
    devices = {}
    for dev in bseq_item.get("BeamLimitingDeviceSequence", []):
        dtype = str(dev.get("RTBeamLimitingDeviceType", "")).upper()
        if dtype in _JAW_TYPES:
            devices[dtype] = (1, None)
        elif dtype == "MLCX":
            n = _int(
                dev.get("NumberOfLeafJawPairs", 0) or 0,
                ctx,
                f"beam {bnum}: (300A,00BC) NumberOfLeafJawPairs",
            )
            bounds = dev.get("LeafPositionBoundaries", None)
            if bounds is None or len(bounds) != n + 1 or n < 1:
                raise ctx.err(
                    f"beam {bnum}: (300A,00BE) LeafPositionBoundaries has "
                    f"{0 if bounds is None else len(bounds)} values for {n} leaf pairs; expected "
                    f"{n + 1}."
                )
            b = np.array([float(v) for v in bounds])
            if np.any(np.diff(b) <= 0):
                raise ctx.err(
                    f"beam {bnum}: (300A,00BE) LeafPositionBoundaries are not increasing."
                )
            devices["MLCX"] = (n, b)
        elif dtype == "MLCY":
            raise ctx.err(
                f"beam {bnum}: (300A,00B8) RTBeamLimitingDeviceType MLCY (leaves travelling "
                "along Y) is not supported; only MLCX beams can be computed."
            )
        else:
            raise ctx.err(
                f"beam {bnum}: (300A,00B8) RTBeamLimitingDeviceType {dtype!r} is not supported; "
                "expected ASYMX/X, ASYMY/Y and MLCX."
            )
    if "MLCX" not in devices and "ASYMX" not in devices and "X" not in devices:
        raise ctx.err(
            f"beam {bnum}: (300A,00B6) BeamLimitingDeviceSequence has neither an MLCX nor X "
            "jaws; the field is not collimated along X."
        )
    if "ASYMX" in devices and "X" in devices or "ASYMY" in devices and "Y" in devices:
        raise ctx.err(
            f"beam {bnum}: (300A,00B6) BeamLimitingDeviceSequence lists two jaw systems in one "
            "direction; not supported."
        )
    return devices


#: (3002,0052) *FluenceModeID* values of flattening-filter-free beams (Varian writes "SRS"
#: for its 6 MV stereotactic FFF mode).
FFF_MODE_IDS = ("FFF", "SRS")


def _plan_fluence_mode(b, ctx: _Ctx, bnum: int, strict: bool) -> tuple[str, str]:
    """``(mode, text)`` of a beam's (3002,0050) *PrimaryFluenceModeSequence*: ``"FFF"`` for
    FluenceModeID FFF or SRS, else ``"STANDARD"``; ``text`` quotes the elements.  ``strict``:
    refuse another NON_STANDARD mode (no beam model is for it)."""
    plan_mode, text = "STANDARD", "STANDARD"
    for item in b.get("PrimaryFluenceModeSequence", None) or []:
        mode = str(item.get("FluenceMode", "") or "").strip().upper()
        mode_id = str(item.get("FluenceModeID", "") or "").strip().upper()
        if mode == "NON_STANDARD" or mode_id in FFF_MODE_IDS:
            text = f"{mode or '(empty)'}, (3002,0052) FluenceModeID {quote(mode_id, 40)}"
            if mode_id not in FFF_MODE_IDS:
                if strict:
                    raise ctx.err(
                        f"beam {bnum}: (3002,0051) FluenceMode is {text}; that fluence mode is "
                        "not modelled by the dose engine (FFF needs an FFF beam model)."
                    )
                continue
            plan_mode = "FFF"
    return plan_mode, text


def _check_beam_model(
    ctx: _Ctx, bnum: int, energy: float | None, mode: str, text: str, allowed, models: str
) -> float | None:
    """Refuse a beam whose energy and fluence mode no beam model is for; return its energy.

    ``allowed`` holds the ``(energy MV, fluence mode)`` of the models (None: no check).  A
    beam that states no (300A,0114) *NominalBeamEnergy* takes the one energy the models
    have for its mode (refused when there are several).
    """
    if allowed is None:
        return energy
    note = _models_note(models)
    energies = sorted({e for e, m in allowed})
    if energy is None:
        same_mode = sorted({e for e, m in allowed if m == mode})
        if len(same_mode) == 1:
            return same_mode[0]
        raise ctx.err(
            f"beam {bnum}: (300A,0114) NominalBeamEnergy is not stated and the beam models are "
            f"for {', '.join(f'{e:g}' for e in same_mode) or 'no'} MV ({mode}); this beam "
            f"cannot be computed{note}."
        )
    if any(abs(energy - e) <= 1e-6 and m == mode for e, m in allowed):
        return energy
    if not any(abs(energy - e) <= 1e-6 for e in energies):
        model_text = (
            f"the dose engine's beam model is {energies[0]:g} MV"
            if len(allowed) == 1
            else f"no beam model is for {energy:g} MV (the models are for "
            f"{', '.join(f'{e:g}' for e in energies)} MV)"
        )
        raise ctx.err(
            f"beam {bnum}: (300A,0114) NominalBeamEnergy is {energy:g} MV but {model_text}; "
            f"this beam cannot be computed{note}."
        )
    which = "the beam model" if len(allowed) == 1 else f"the beam model for {energy:g} MV"
    if mode == "FFF":
        raise ctx.err(
            f"beam {bnum}: (3002,0051) FluenceMode is {text}, a flattening-filter-free beam, "
            f"but {which} is STANDARD (flattened); its dose would be computed with the wrong "
            f"profile and output. Commission an FFF model and pass it (--beam-model){note}."
        )
    raise ctx.err(
        f"beam {bnum}: (3002,0051) FluenceMode is STANDARD (flattened) but {which} is FFF; "
        f"pass a flattened beam model (--beam-model){note}."
    )


def _models_note(models: str) -> str:
    return f"; beam models available: {models}" if models else ""


def _refuse_unsupported(b, ctx: _Ctx, bnum: int) -> None:
    rtype = str(b.get("RadiationType", "")).upper()
    if rtype != "PHOTON":
        raise ctx.err(
            f"beam {bnum}: (300A,00C6) RadiationType is {rtype or '(empty)'}; only PHOTON beams "
            "can be computed by the photon dose engine."
        )
    for kw, tag, what in (
        ("NumberOfWedges", "(300A,00D0)", "wedges"),
        ("NumberOfCompensators", "(300A,00E0)", "compensators"),
        ("NumberOfBoli", "(300A,00ED)", "boli"),
        ("NumberOfBlocks", "(300A,00F0)", "blocks"),
    ):
        n = _int(b.get(kw, 0) or 0, ctx, f"beam {bnum}: {tag} {kw}")
        if n > 0:
            raise ctx.err(
                f"beam {bnum}: {tag} {kw} is {n}; {what} are not modelled by the dose engine, "
                "so this beam cannot be computed."
            )
    for kw in ACCESSORY_SEQUENCES:
        if kw in b and b[kw].value is not None and len(b[kw].value):
            raise ctx.err(
                f"beam {bnum}: {tag_str(kw)} is present ({len(b[kw].value)} item(s)); this "
                "beam-modifying accessory is not modelled by the dose engine, so the beam "
                "cannot be computed (whatever its Number of ... element says)."
            )
    btype = str(b.get("BeamType", "")).upper()
    if btype not in ("STATIC", "DYNAMIC"):
        raise ctx.err(
            f"beam {bnum}: (300A,00C4) BeamType is {btype!r}; expected STATIC or DYNAMIC."
        )
    unit = str(b.get("PrimaryDosimeterUnit", "MU") or "MU").upper()
    if unit != "MU":
        raise ctx.err(f"beam {bnum}: (300A,00B3) PrimaryDosimeterUnit is {unit!r}; expected MU.")


def _parse_beam(b, meterset_mu: float, ctx: _Ctx, allowed, models: str) -> _ParsedBeam:
    """One beam; ``allowed``: the (energy MV, fluence mode) of the beam models (None: any,
    for ``rtplan check``), ``models`` describes them for a refusal."""
    bnum = _beam_number(b, ctx, "BeamNumber", "(300A,00B0) BeamSequence item")
    _refuse_unsupported(b, ctx, bnum)
    fluence_mode, mode_text = _plan_fluence_mode(b, ctx, bnum, strict=allowed is not None)
    devices = _device_map(b, ctx, bnum)
    # A jaws-only field (no MLC) gets a virtual MLC: one leaf pair spanning the whole
    # Y range, its leaves on the X jaws, so that the aperture is exactly the jaw opening.
    virtual_mlc = "MLCX" not in devices
    n_pairs, boundaries = devices.get("MLCX", (1, VIRTUAL_MLC_BOUNDARIES_MM))
    jaw_dirs = {_JAW_TYPES[d]: d for d in devices if d in _JAW_TYPES}
    cps = b.get("ControlPointSequence", [])
    if len(cps) < 2:
        raise ctx.err(
            f"beam {bnum}: (300A,0111) ControlPointSequence has {len(cps)} control points; "
            "expected at least 2."
        )
    declared = b.get("NumberOfControlPoints", None)
    if declared not in (None, "") and _int(
        declared, ctx, f"beam {bnum}: (300A,0110) NumberOfControlPoints"
    ) != len(cps):
        raise ctx.err(
            f"beam {bnum}: (300A,0110) NumberOfControlPoints is {declared} but (300A,0111) "
            f"ControlPointSequence has {len(cps)} items; the plan is inconsistent."
        )
    final = b.get("FinalCumulativeMetersetWeight", None)
    final_w = 1.0 if final in (None, "") else _float(final, ctx, f"beam {bnum}: (300A,010E)")
    if final_w <= 0:
        raise ctx.err(
            f"beam {bnum}: (300A,010E) FinalCumulativeMetersetWeight is {final_w}; expected > 0."
        )

    state: dict = {"rotation": "NONE"}
    positions: list[dict] = []
    weights: list[float] = []
    gantries: list[float] = []
    rotations: list[str] = []
    dose_rates: list[float | None] = []
    for k, cp in enumerate(cps):
        where = f"beam {bnum} control point {k}"
        for kw in ("BeamLimitingDeviceRotationDirection", "PatientSupportRotationDirection"):
            direction = str(cp.get(kw, "") or "").upper()
            if direction in ("CW", "CC"):
                raise ctx.err(
                    f"{where}: {kw} is {direction} (a collimator or couch rotating during "
                    "delivery); only the gantry may rotate."
                )
        direction = str(cp.get("GantryRotationDirection", "") or "").upper()
        if direction in ("CW", "CC", "NONE"):
            state["rotation"] = direction
        elif direction:
            raise ctx.err(
                f"{where}: (300A,011F) GantryRotationDirection is {direction!r}; expected CW, "
                "CC or NONE."
            )
        if (
            k
            and rotations[-1] != "NONE"
            and ("GantryAngle" not in cp or cp.GantryAngle in (None, ""))
        ):
            raise ctx.err(
                f"{where}: (300A,011E) GantryAngle is missing, but the gantry rotates "
                f"({rotations[-1]}) from the previous control point; every control point of an "
                "arc needs its angle."
            )
        for kw, key in (
            ("GantryAngle", "gantry"),
            ("BeamLimitingDeviceAngle", "collimator"),
            ("PatientSupportAngle", "couch"),
        ):
            if kw in cp and cp[kw].value not in (None, ""):
                v = _angle_deg(cp[kw].value, ctx, f"{where}: {tag_str(kw)}")
                moving = key == "gantry" and rotations and rotations[-1] != "NONE"
                if (
                    key in state
                    and not moving
                    and abs((v - state[key] + 180.0) % 360.0 - 180.0) > 1e-3
                ):
                    why = (
                        "but the previous control point's (300A,011F) GantryRotationDirection "
                        "is NONE"
                        if key == "gantry"
                        else f"within the beam ({key} rotation); only the gantry may rotate"
                    )
                    raise ctx.err(
                        f"{where}: {kw} changes from {state[key]:g} to {v:g} degrees {why}."
                    )
                state[key] = v
        if "IsocenterPosition" in cp and cp.IsocenterPosition not in (None, ""):
            iso = tuple(
                _float(v, ctx, f"{where}: (300A,012C) IsocenterPosition")
                for v in cp.IsocenterPosition
            )
            if "iso" in state and np.max(np.abs(np.subtract(iso, state["iso"]))) > 1e-3:
                raise ctx.err(f"{where}: (300A,012C) IsocenterPosition changes within the beam.")
            state["iso"] = iso
        if "DoseRateSet" in cp and cp.DoseRateSet not in (None, ""):
            state["dose_rate"] = _float(cp.DoseRateSet, ctx, f"{where}: (300A,0115) DoseRateSet")
            if state["dose_rate"] <= 0:
                raise ctx.err(
                    f"{where}: (300A,0115) DoseRateSet is {state['dose_rate']:g}; expected > 0."
                )
        if "NominalBeamEnergy" in cp and cp.NominalBeamEnergy not in (None, ""):
            state["energy"] = _float(cp.NominalBeamEnergy, ctx, f"{where}: NominalBeamEnergy")
        for item in cp.get("BeamLimitingDevicePositionSequence", []):
            dtype = str(item.get("RTBeamLimitingDeviceType", "")).upper()
            if dtype not in devices:
                raise ctx.err(
                    f"{where}: position given for device {dtype!r}, which (300A,00B6) "
                    "BeamLimitingDeviceSequence does not declare."
                )
            vals = floats(item, "LeafJawPositions", ctx.path)
            expected = 2 * devices[dtype][0]
            if vals.size != expected:
                raise ctx.err(
                    f"{where}: (300A,011C) LeafJawPositions of {dtype} has {vals.size} values; "
                    f"expected {expected}."
                )
            state[dtype] = vals
        missing = [d for d in devices if d not in state]
        if missing:
            raise ctx.err(
                f"{where}: no (300A,011C) LeafJawPositions for {', '.join(missing)} at or before "
                "this control point."
            )
        w = cp.get("CumulativeMetersetWeight", None)
        if w in (None, ""):
            raise ctx.err(
                f"{where}: (300A,0134) CumulativeMetersetWeight is empty; the plan was exported "
                "without meterset weights."
            )
        weights.append(_float(w, ctx, f"{where}: CumulativeMetersetWeight"))
        if weights[-1] < 0 or (k and weights[-1] < weights[-2] - 1e-9):
            raise ctx.err(
                f"{where}: (300A,0134) CumulativeMetersetWeight is {weights[-1]:g}"
                + (f", below control point {k - 1}'s {weights[-2]:g}" if k else "")
                + "; weights must start ≥ 0 and never decrease."
            )
        dose_rates.append(state.get("dose_rate"))
        positions.append({d: state[d].copy() for d in devices})
        gantries.append(state.get("gantry", math.nan))
        rotations.append(state["rotation"])
    if math.isnan(gantries[0]) or "iso" not in state:
        raise ctx.err(
            f"beam {bnum}: control point 0 lacks (300A,011E) GantryAngle or (300A,012C) "
            "IsocenterPosition."
        )
    energy = _check_beam_model(
        ctx, bnum, state.get("energy"), fluence_mode, mode_text, allowed, models
    )

    w = np.asarray(weights)
    if abs(w[-1] - final_w) > 1e-6 * max(final_w, 1.0):
        raise ctx.err(
            f"beam {bnum}: the last CumulativeMetersetWeight is {w[-1]:g} but (300A,010E) "
            f"FinalCumulativeMetersetWeight is {final_w:g}."
        )
    sweeps = [
        float(gantry_sweeps_deg(gantries[k : k + 2], rotations[k])[0]) for k in range(len(cps) - 1)
    ]
    control_points = []
    for k, pos in enumerate(positions):
        if virtual_mlc:
            leaves = np.asarray(pos[jaw_dirs["X"]], dtype=float).reshape(2, 1)
        else:
            leaves = pos["MLCX"].reshape(2, n_pairs)
        jaws = {axis: tuple(pos[dev]) for axis, dev in jaw_dirs.items()}
        weight = min(w[k] / final_w, 1.0)
        control_points.append(ControlPoint(gantries[k], leaves, jaws, weight, dose_rates[k]))
    samples = sample_control_points(control_points, sweeps, where=f"{ctx.path}: beam {bnum}: ")
    segments = [
        _ParsedSegment(
            leaves,
            {axis: jaws.get(axis) for axis in ("X", "Y")},
            float(meterset_mu * weight),
            gantry,
        )
        for leaves, jaws, weight, gantry in samples
    ]
    rotation = _dynamic_rotation(control_points, sweeps, rotations, ctx, bnum)
    return _ParsedBeam(
        number=bnum,
        name=str(b.get("BeamName", "") or f"beam {bnum}"),
        machine_name=str(b.get("TreatmentMachineName", "") or ""),
        gantry_deg=gantries[0],
        collimator_deg=state.get("collimator", 0.0),
        couch_deg=state.get("couch", 0.0),
        isocenter_mm=state["iso"],
        sad_mm=_float(
            b.get("SourceAxisDistance", 1000.0) or 1000.0, ctx, f"beam {bnum}: SourceAxisDistance"
        ),
        leaf_boundaries_mm=boundaries,
        virtual_mlc=virtual_mlc,
        has_x_jaws="X" in jaw_dirs,
        has_y_jaws="Y" in jaw_dirs,
        segments=tuple(segments),
        meterset_mu=meterset_mu,
        energy_mv=energy,
        fluence_mode=fluence_mode,
        control_points=tuple(control_points),
        rotation=rotation,
    )


def _dynamic_rotation(control_points, sweeps, rotations, ctx: _Ctx, bnum: int) -> str | None:
    """The beam's rotation direction if something moves while meterset is delivered
    (an arc: CW or CC; a dynamic MLC beam: NONE), else None (static or step-and-shoot)."""
    directions = {rotations[k] for k, s in enumerate(sweeps) if s != 0}
    if len(directions) > 1:
        moving = [k for k, s in enumerate(sweeps) if s != 0]
        k = next(k for k in moving if rotations[k] != rotations[moving[0]])
        raise ctx.err(
            f"beam {bnum} control point {k}: (300A,011F) GantryRotationDirection changes within "
            "the arc (CW and CC in one beam); split it into one beam per direction."
        )
    if directions:
        return directions.pop()
    for c0, c1 in zip(control_points, control_points[1:], strict=False):
        if c1.cumulative_meterset_weight <= c0.cumulative_meterset_weight + 1e-12:
            continue
        moves = np.max(np.abs(c1.leaf_positions_mm - c0.leaf_positions_mm)) > POSITION_TOL_MM
        moves = moves or any(
            max(abs(a - b) for a, b in zip(c0.jaws_mm[j], c1.jaws_mm[j], strict=True))
            > POSITION_TOL_MM
            for j in c0.jaws_mm
        )
        if moves:
            return "NONE"
    return None


def _generic_machine(pb: _ParsedBeam):
    jaws = {}
    if pb.has_x_jaws:
        jaws["X"] = JawModel("X", (-200.0, 200.0), 200.0)
    if pb.has_y_jaws:
        jaws["Y"] = JawModel("Y", (-200.0, 200.0), 200.0)
    return Machine(
        name=pb.machine_name or "unknown",
        mlc=MLCModel(
            name="virtual (jaws only)" if pb.virtual_mlc else "MLCX",
            leaf_boundaries_mm=pb.leaf_boundaries_mm,
            min_leaf_gap_mm=0.0,
            leaf_position_range_mm=(-200.0, 200.0),
        ),
        jaws=jaws,
        sad_mm=pb.sad_mm,
        nominal_energy_mv=pb.energy_mv if pb.energy_mv is not None else 6.0,
        fluence_mode=pb.fluence_mode,
        dosimetry=_shipped_dosimetry(pb),
    )


def _shipped_dosimetry(pb: _ParsedBeam) -> MLCParameters:
    """The MLC and jaw parameters of the shipped machine whose leaf boundaries the plan's
    MLC has (a Millennium 120 under another machine name), else none (logged)."""
    if pb.virtual_mlc:
        return MLCParameters()
    for name in available_machines():
        shipped = load_machine(name)
        b = shipped.mlc.leaf_boundaries_mm
        if b.shape == pb.leaf_boundaries_mm.shape and np.allclose(
            b, pb.leaf_boundaries_mm, atol=1e-3
        ):
            return shipped.dosimetry
    log.warning(
        "beam %d: no shipped machine has this MLC; its dose has no leaf transmission, leaf "
        "gap or tongue-and-groove unless the beam model is commissioned with them ([mlc])",
        pb.number,
    )
    return MLCParameters()


def _machine_for(pb: _ParsedBeam, machine, cache: dict):
    """The given machine, else the shipped one of that name when its MLC and jaws match the
    plan, else a generic machine built from the plan (leaf limits ±200 mm)."""
    if machine is not None:
        return machine
    key = (pb.machine_name, tuple(pb.leaf_boundaries_mm.tolist()), pb.has_x_jaws, pb.has_y_jaws)
    if key in cache:
        return cache[key]

    found = None
    if pb.machine_name in available_machines():
        shipped = load_machine(pb.machine_name)
        b = shipped.mlc.leaf_boundaries_mm
        if (
            b.shape == pb.leaf_boundaries_mm.shape
            and np.allclose(b, pb.leaf_boundaries_mm, atol=1e-3)
            and shipped.has_x_jaws == pb.has_x_jaws
            and shipped.has_y_jaws == pb.has_y_jaws
        ):
            found = shipped
    if found is None:
        found = _generic_machine(pb)
        log.info(
            "beam %d: machine %r is not a shipped model with this MLC; checking leaves against "
            "generic limits ±200 mm",
            pb.number,
            pb.machine_name,
        )
    cache[key] = found
    return found


def _beam_machine(machine, pb: _ParsedBeam):
    """``machine`` delivering the beam's energy (if stated) and fluence mode: they choose
    its dose model (:func:`rtplan.dose.resolve_beam_models`)."""
    energy = machine.nominal_energy_mv if pb.energy_mv is None else pb.energy_mv
    if (energy, pb.fluence_mode) == (machine.nominal_energy_mv, machine.fluence_mode):
        return machine
    return replace(machine, nominal_energy_mv=energy, fluence_mode=pb.fluence_mode)


def _check_leaf_range(pb: _ParsedBeam, machine, ctx: _Ctx) -> None:
    """Leaf tips inside the MLC's range and banks not overlapping, naming the DICOM element."""
    lim = machine.mlc.bank_limits_mm()
    for k, seg in enumerate(pb.segments):
        leaves = seg.leaf_positions_mm
        for bank in (0, 1):
            lo, hi = lim[bank]
            bad = np.flatnonzero(
                (leaves[bank] < lo - POSITION_TOL_MM) | (leaves[bank] > hi + POSITION_TOL_MM)
            )
            if bad.size:
                i = int(bad[0])
                raise ctx.err(
                    f"beam {pb.number} segment {k}: (300A,011C) LeafJawPositions of MLCX: leaf "
                    f"{'AB'[bank]}{i + 1} at {leaves[bank, i]:.2f} mm is outside the MLC's limits "
                    f"[{lo:g}, {hi:g}] mm (machine '{machine.name}')."
                )
        over = leaves[0] - leaves[1]
        if np.any(over > OVERLAP_TOL_MM):
            i = int(np.argmax(over))
            raise ctx.err(
                f"beam {pb.number} segment {k}: (300A,011C) LeafJawPositions of MLCX: leaves of "
                f"pair {i + 1} overlap (bank A at {leaves[0, i]:.2f} mm is beyond bank B at "
                f"{leaves[1, i]:.2f} mm)."
            )


@dataclass(frozen=True, eq=False)
class RtPlanBeams:
    """What :func:`read_rtplan_beams` read: enough to compute the plan's dose.

    Attributes
    ----------
    beams : tuple of rtplan.DeliverableBeam
        Segment ``total_mu`` is the meterset over all fractions.
    fractions : int
        (300A,0078) *NumberOfFractionsPlanned*.
    total_dose_gy : float or None
        (300A,0026) *TargetPrescriptionDose* of the first TARGET dose reference, if any.
    target_name : str
        Structure of that dose reference ((300C,0084) *ReferencedROINumber*), else its
        (300A,0016) *DoseReferenceDescription*, else "".
    label : str
        (300A,0002) *RTPlanLabel*.
    sop_instance_uid : str
        (0008,0018) of the RT-PLAN, for the RT-DOSE's ReferencedRTPlanSequence.
    """

    beams: tuple
    fractions: int
    total_dose_gy: float | None
    target_name: str
    label: str
    sop_instance_uid: str


def _prescription(ds, patient, ctx: _Ctx):
    """(total dose Gy or None, target name or "") from the first TARGET dose reference."""
    structures = {} if patient is None else patient.structures
    by_number = {int(s.number): name for name, s in structures.items()}
    for dref in ds.get("DoseReferenceSequence", []):
        if str(dref.get("DoseReferenceType", "")).upper() != "TARGET":
            continue
        rx = dref.get("TargetPrescriptionDose", None)
        roi = dref.get("ReferencedROINumber", None)
        name = (
            by_number.get(_int(roi, ctx, "(300C,0084) ReferencedROINumber"), "")
            if roi not in (None, "")
            else ""
        )
        if not name:
            name = str(dref.get("DoseReferenceDescription", "") or "")
        if rx in (None, ""):
            return None, name
        rx_gy = _float(rx, ctx, "(300A,0026) TargetPrescriptionDose")
        if rx_gy < 0:
            raise ctx.err(
                f"(300A,0026) TargetPrescriptionDose is {rx_gy:g} Gy; expected a positive dose."
            )
        return (rx_gy if rx_gy > 0 else None), name  # 0: not stated
    return None, ""


def _build_beams(
    parsed, n_fx: int, patient, machine, ctx: _Ctx, ds, setup_positions
) -> RtPlanBeams:
    from dose_engine._beam import Beam

    cache: dict = {}
    out = []
    for pb in parsed:
        m = _beam_machine(_machine_for(pb, machine, cache), pb)
        _check_leaf_range(pb, m, ctx)
        geom = Beam(
            pb.gantry_deg,
            collimator_angle_deg=pb.collimator_deg,
            couch_angle_deg=pb.couch_deg,
            isocenter_mm=pb.isocenter_mm,
            sad_mm=pb.sad_mm,
            patient_position=(setup_positions[pb.number] if patient is None else patient.position),
        )
        if pb.rotation is None:
            segments = tuple(
                Segment(
                    seg.leaf_positions_mm,
                    {k: v for k, v in seg.jaws_mm.items() if v is not None},
                    seg.mu * n_fx,
                    pb.leaf_boundaries_mm,
                    seg.gantry_deg,
                )
                for seg in pb.segments
            )
            dbeam = DeliverableBeam(pb.number, pb.name, geom, m, segments)
        else:
            try:
                dbeam = ArcBeam(
                    pb.number,
                    pb.name,
                    geom,
                    m,
                    control_points=pb.control_points,
                    meterset_mu=pb.meterset_mu * n_fx,
                    rotation_direction=pb.rotation,
                )
            except SegmentError as exc:
                raise ctx.err(f"beam {pb.number}: {exc}") from None
        dbeam.validate(where=f"{ctx.path}: (300A,011C) LeafJawPositions,")
        out.append(dbeam)
    rx, target = _prescription(ds, patient, ctx)
    return RtPlanBeams(
        tuple(out), n_fx, rx, target, str(ds.get("RTPlanLabel", "") or ""), str(ds.SOPInstanceUID)
    )


def read_rtplan_beams(
    path: str | os.PathLike,
    patient,
    *,
    machine=None,
    fraction_group_number: int | None = None,
    nominal_energy_mv: float = 6.0,
    fluence_mode: str = "STANDARD",
    beam_models: str = "",
    beam_keys=None,
) -> RtPlanBeams:
    """Like :func:`read_rtplan`, without requiring a prescription (for dose recalculation).

    Same checks and errors as :func:`read_rtplan`; returns an :class:`RtPlanBeams` whose
    ``total_dose_gy`` is None when the plan states no prescription.  Each beam's machine
    carries the beam's (300A,0114) *NominalBeamEnergy* and fluence mode (which pick its
    dose model).

    Parameters
    ----------
    beam_keys : collection of (float, str), optional
        ``(energy MV, fluence mode)`` of every beam model the caller can compute with
        (:attr:`rtplan.dose.BeamModels.keys`); a beam none is for is refused.  Default:
        the one model given by ``nominal_energy_mv`` and ``fluence_mode``.
    beam_models : str
        Describes those models, for the refusal's message (``rtplan dose``).
    """
    path = path_argument(path, "path")
    require_instance(patient, "patient", Patient, "an rtplan.Patient (rtplan.read_patient)")
    if beam_keys is None:
        beam_keys = [(nominal_energy_mv, fluence_mode)]
    allowed = frozenset((float(e), str(m)) for e, m in beam_keys)
    for _, mode in allowed:
        if mode not in FLUENCE_MODES:
            raise InputError(
                f"`fluence_mode` must be one of {', '.join(FLUENCE_MODES)}; got {mode!r}."
            )
    return _read_file(path, patient, machine, fraction_group_number, allowed, beam_models)


def _read_file(path: Path, *args) -> RtPlanBeams:
    """:func:`_read_plan_dataset` of the file at ``path``."""
    ctx = _Ctx(path)
    ds = read_dataset(path, what="RT-PLAN")
    # pydicom converts values lazily and warns about malformed ones (e.g. a DS longer than
    # 16 characters): log those, as on import, instead of letting them escape.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = _read_plan_dataset(ds, path, ctx, *args)
    for w in caught:
        log.info("%s: pydicom: %s", path.name, w.message)
    return plan


def _delivery_type(beam) -> str:
    """(300A,00CE) TreatmentDeliveryType of a BeamSequence item (TREATMENT if absent)."""
    if beam is None:
        return "TREATMENT"
    return str(beam.get("TreatmentDeliveryType", "TREATMENT") or "TREATMENT").upper()


def _read_plan_dataset(
    ds,
    path,
    ctx,
    patient,
    machine,
    fraction_group_number,
    allowed,
    beam_models,
):
    if str(ds.get("SOPClassUID", "")) != RT_PLAN_STORAGE:
        raise ctx.err(
            f"(0008,0016) SOPClassUID is {ds.get('SOPClassUID', '(missing)')}; expected RT Plan "
            f"Storage {RT_PLAN_STORAGE}.",
            DicomReadError,
        )
    if patient is not None:
        _check_references(ds, patient, ctx)
    positions = {
        _int(s.get("PatientSetupNumber", 0), ctx, "(300A,0182) PatientSetupNumber"): str(
            s.get("PatientPosition", "") or ""
        )
        for s in ds.get("PatientSetupSequence", [])
    }
    fg = _fraction_group(ds, ctx, fraction_group_number)
    n_fx = fg.get("NumberOfFractionsPlanned", None)
    if n_fx not in (None, ""):
        n_fx = _int(n_fx, ctx, "(300A,0078) NumberOfFractionsPlanned")
    if n_fx in (None, "") or n_fx < 1:
        raise ctx.err(
            f"(300A,0078) NumberOfFractionsPlanned is {n_fx!r} in fraction group "
            f"{fg.get('FractionGroupNumber', 1)}; expected a positive number."
        )
    by_number = {}
    for b in ds.get("BeamSequence", []):
        num = _beam_number(b, ctx, "BeamNumber", "(300A,00B0) BeamSequence item")
        if num in by_number:
            raise ctx.err(f"(300A,00B0) BeamSequence holds two beams numbered {num}.")
        by_number[num] = b
    metersets = {}
    for rb in fg.get("ReferencedBeamSequence", []):
        bnum = _beam_number(
            rb, ctx, "ReferencedBeamNumber", "(300C,0004) ReferencedBeamSequence item"
        )
        if bnum in metersets:
            raise ctx.err(
                f"(300C,0004) ReferencedBeamSequence lists beam {bnum} twice; its meterset "
                "would be ambiguous."
            )
        mset = rb.get("BeamMeterset", None)
        if mset in (None, "") and _delivery_type(by_number.get(bnum)) == "SETUP":
            # A setup beam (imaging, RayStation's SB*) delivers no dose: (300A,0086) is
            # optional for it.
            log.info("setup beam %d has no BeamMeterset; skipped", bnum)
            mset = 0.0
        if mset in (None, ""):
            raise ctx.err(
                f"(300C,0004) ReferencedBeamSequence: beam {bnum} has no BeamMeterset (300A,0086); "
                "the plan was exported without monitor units."
            )
        mset = _float(mset, ctx, f"(300C,0004) ReferencedBeamSequence: beam {bnum} BeamMeterset")
        if mset < 0:
            raise ctx.err(
                f"(300C,0004) ReferencedBeamSequence: beam {bnum} BeamMeterset is {mset:g}; "
                "expected ≥ 0."
            )
        metersets[bnum] = mset
    if not metersets:
        raise ctx.err(
            "(300C,0004) ReferencedBeamSequence is empty; the plan has no treatment beams."
        )
    parsed = []
    setup_positions: dict[int, str] = {}  # without a patient: each beam's own
    for bnum, mset in metersets.items():
        if bnum not in by_number:
            raise ctx.err(
                f"(300C,0004) ReferencedBeamSequence refers to beam {bnum}, which (300A,00B0) "
                "BeamSequence does not contain."
            )
        b = by_number[bnum]
        delivery = _delivery_type(b)
        if delivery != "TREATMENT" and mset > 0:
            # A port film, continuation or setup beam with meterset delivers dose too.
            log.info("beam %d is %s with %.2f MU; its dose is included", bnum, delivery, mset)
        setup_no = _int(
            b.get("ReferencedPatientSetupNumber", 1) or 1,
            ctx,
            f"beam {bnum}: (300C,006A) ReferencedPatientSetupNumber",
        )
        pos = positions.get(setup_no, "")
        if patient is None:
            setup_positions[bnum] = pos or "HFS"
        elif pos and pos != patient.position:
            raise ctx.err(
                f"beam {bnum}: (0018,5100) PatientPosition is {pos} in its patient setup but the "
                f"CT is {patient.position}.",
                ReferenceMismatchError,
            )
        if mset == 0:
            log.info("beam %d has BeamMeterset 0; skipped", bnum)
            continue
        pb = _parse_beam(b, mset, ctx, allowed, beam_models)
        parsed.append(pb)
    if not parsed:
        raise ctx.err("no treatment beam with a positive BeamMeterset; nothing to compute.")
    return _build_beams(parsed, int(n_fx), patient, machine, ctx, ds, setup_positions)


def read_rtplan_delivery(
    path: str | os.PathLike, *, machine=None, fraction_group_number: int | None = None
) -> RtPlanBeams:
    """Read an RT-PLAN on its own, without its CT: what each beam delivers.

    For deliverability checks (``rtplan check``) of plans from any system: the same beams
    and refusals as :func:`read_rtplan_beams` except that nothing is compared with a CT or
    structure set (frame of reference, patient position: each beam keeps its setup's)
    and beams of any energy and fluence mode are read.

    Parameters
    ----------
    path : path-like
    machine : rtplan.Machine, optional
        As in :func:`read_rtplan`.
    fraction_group_number : int, optional
        As in :func:`read_rtplan`.

    Returns
    -------
    RtPlanBeams
    """
    path = path_argument(path, "path")
    return _read_file(path, None, machine, fraction_group_number, None, "")


def read_rtplan(
    path: str | os.PathLike,
    patient,
    *,
    machine=None,
    fraction_group_number: int | None = None,
    nominal_energy_mv: float = 6.0,
    prescription_gy: float | None = None,
    fluence_mode: str = "STANDARD",
):
    """Read an RT-PLAN's photon MLC beams into a deliverable plan for ``patient``.

    Parameters
    ----------
    path : path-like
        The RT-PLAN file.
    patient : rtplan.Patient
        The CT and RT-STRUCT the plan was made on: its FrameOfReferenceUID, its
        structure-set UID and its PatientPosition must match the plan.
    machine : rtplan.Machine, optional
        Machine whose MLC limits the leaf positions are checked against. By default the
        machine whose name matches (300A,00B2) *TreatmentMachineName* among
        :func:`rtplan.load_machine`'s machines, else a generic machine built from the
        plan's leaf boundaries with leaf limits ±200 mm.
    fraction_group_number : int, optional
        (300A,0071) of the fraction group to read; needed only when there are several.
    nominal_energy_mv : float
        Energy the dose engine's beam model is commissioned for; beams at another
        (300A,0114) *NominalBeamEnergy* are refused.
    fluence_mode : {"STANDARD", "FFF"}
        Fluence mode of that beam model (:func:`rtplan.dose.beam_model_fluence_mode`):
        beams whose (3002,0050) *PrimaryFluenceModeSequence* says otherwise (FluenceMode
        NON_STANDARD, FluenceModeID FFF or SRS, against a flattened model) are refused,
        naming the file, the beam and the element.
    prescription_gy : float, optional
        Total prescribed dose (Gy) when the plan states none ((300A,0026)
        *TargetPrescriptionDose* of a TARGET dose reference wins otherwise).

    Returns
    -------
    rtplan.DeliverablePlan
        Beams with IEC 61217 geometry, segments (leaf/jaw positions in mm; ``total_mu``
        = per-fraction meterset × (300A,0078) *NumberOfFractionsPlanned*), fractions,
        prescription and target name (the structure whose ROI number the TARGET dose
        reference gives).

    Raises
    ------
    rtplan.errors.DicomReadError
        If the file is not a readable RT-PLAN.
    rtplan.errors.ReferenceMismatchError
        If the plan's frame of reference or structure set is not the patient's.
    rtplan.errors.InputError
        For an unsupported beam (collimator or couch rotation, wedge, compensator, block,
        bolus, non-photon, MLCY, other energy), leaves outside the MLC's limits or
        overlapping (or any other machine limit, :meth:`rtplan.DeliverableBeam.validate`),
        a missing BeamMeterset, or no prescription.
    """
    path = path_argument(path, "path")
    pb = read_rtplan_beams(
        path,
        patient,
        machine=machine,
        fraction_group_number=fraction_group_number,
        nominal_energy_mv=nominal_energy_mv,
        fluence_mode=fluence_mode,
    )

    rx = prescription_gy if prescription_gy is not None else pb.total_dose_gy
    if rx is None:
        raise InputError(
            f"{path}: (300A,0010) DoseReferenceSequence has no TARGET item with (300A,0026) "
            "TargetPrescriptionDose; pass `prescription_gy=` (total Gy) to read this plan."
        )
    return DeliverablePlan(
        pb.beams, pb.fractions, float(rx), pb.target_name, label=pb.label or "rtplan"
    )
