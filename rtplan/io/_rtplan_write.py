"""Write a deliverable plan (static, step-and-shoot, arcs) as a DICOM RT-PLAN (PS3.3 A.20).

Modules written: Patient and General Study (copied from the CT), RT Series (a new
RTPLAN series), Frame of Reference (the CT's), General Equipment, RT General Plan
(C.8.8.9; geometry PATIENT, referencing the RT-STRUCT), RT Prescription (C.8.8.10),
RT Patient Setup (C.8.8.12), RT Fraction Scheme (C.8.8.13), RT Beams (C.8.8.14),
Approval (C.8.8.16; UNAPPROVED — a physicist approves the plan in the record-and-verify
system) and SOP Common.

Each beam is a photon MLC beam.  One segment → BeamType STATIC with two control
points; several segments → BeamType DYNAMIC (step-and-shoot, C.8.8.14.1: the
beam-limiting devices move only between a pair of control points with equal
cumulative meterset weight).  Segment ``k`` is control points ``2k`` and ``2k+1``:
same jaw and leaf positions, cumulative meterset weight rising by the segment's share
of the beam meterset.  An :class:`rtplan.delivery.ArcBeam` (an arc, or a dynamic MLC beam)
is BeamType DYNAMIC with its own control points: (300A,011E) *GantryAngle* at each,
(300A,011F) *GantryRotationDirection* CW/CC (NONE for a dynamic MLC beam) at the first,
(300A,0115) *DoseRateSet* at the first (the machine's maximum dose rate unless the control
point sets one) and wherever a control point sets one.  Arcs that break the machine's arc
limits (:func:`rtplan.delivery.check_deliverability`) are refused.  Every control point
carries all jaw and MLC positions.

https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.8.8.14.html
"""

from __future__ import annotations

import datetime as _dt
import logging
import os

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .._internal.arguments import path_argument, require_instance
from ..delivery._arc import ArcBeam
from ..delivery._deliverability import check_deliverability
from ..delivery._deliverable import DeliverablePlan
from ..errors import InputError
from ..patient._patient import Patient
from ..patient._ssd import ssd_mm
from ._raw_ds import raw_ds_element, raw_item
from ._uids import (
    RT_PLAN_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    base_dataset,
    new_uid,
    write_dataset,
)

__all__ = ["write_rtplan"]

log = logging.getLogger("rtplan.io")

#: (300A,0134) CumulativeMetersetWeight decimals (the last weight is exactly 1).
_WEIGHT_DECIMALS = 8
_LEAF_JAW_POSITIONS = Tag(0x300A, 0x011C)


def _ds(value: float, decimals: int = 4) -> str:
    """A DS string: ``value`` rounded to ``decimals``, without a trailing '.0' noise."""
    v = round(float(value), decimals)
    if v == 0:
        v = 0.0  # no "-0"
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-") else "0"


def _jaw_device_types(machine) -> list[str]:
    """``["ASYMX", "ASYMY"]``, or ``["ASYMY"]`` for a machine without X jaws (Agility)."""
    return [d for d in machine.dicom_device_types() if d != "MLCX"]


def _bld_positions(seg, device_types: list[str]) -> list[Dataset]:
    """Jaw and MLC positions of ``seg``: a :class:`rtplan.Segment` or an arc's
    :class:`rtplan.delivery.ControlPoint` (both have ``jaws_mm`` and ``leaf_positions_mm``)."""
    items = []
    for dev in device_types:
        key = "X" if dev == "ASYMX" else "Y"
        lo, hi = (float(v) for v in seg.jaws_mm[key])
        item = Dataset()
        item.RTBeamLimitingDeviceType = dev
        item.LeafJawPositions = [_ds(lo), _ds(hi)]
        items.append(item)
    leaves = np.asarray(seg.leaf_positions_mm, dtype=float)
    item = raw_item()
    item.RTBeamLimitingDeviceType = "MLCX"
    item[_LEAF_JAW_POSITIONS] = raw_ds_element(_LEAF_JAW_POSITIONS, map(_ds, leaves.reshape(-1)))
    items.append(item)
    return items


def _refuse_undeliverable_arcs(plan: DeliverablePlan, fmt: str) -> None:
    """Raise if an ArcBeam breaks its machine's arc limits (every violation counted, the
    first named)."""
    dynamic = {b.number for b in plan.beams if isinstance(b, ArcBeam)}
    if not dynamic:
        return
    found = [v for v in check_deliverability(plan).violations if v.beam_number in dynamic]
    if found:
        raise InputError(
            f"{fmt}: {found[0]} [{found[0].limit}] ({len(found)} violation(s) of the machine's "
            "limits in all; `rtplan check` lists them); nothing written."
        )


def write_rtplan(
    path: str | os.PathLike,
    plan,
    patient,
    *,
    label: str | None = None,
    plan_name: str | None = None,
    compute_ssd: bool = True,
    overwrite: bool = False,
):
    """Write ``plan`` as a DICOM RT-PLAN for ``patient``.

    Parameters
    ----------
    path : path-like
        Output file, written atomically.
    plan : rtplan.DeliverablePlan
        Sequenced beams (segments with leaf and jaw positions and MU summed over all
        fractions), number of fractions, total prescribed dose and target name.  The
        RT-PLAN stores per-fraction meterset: (300A,0086) *BeamMeterset* is
        ``beam.per_fraction_mu(plan.fractions)``.
    patient : rtplan.Patient
        The CT (Patient/Study elements, FrameOfReferenceUID, PatientPosition) and the
        RT-STRUCT it was loaded with (``structure_set_uid``).
    label : str, optional
        (300A,0002) *RTPlanLabel* (at most 16 characters); default ``plan.label``.
    plan_name : str, optional
        (300A,0003) *RTPlanName*.
    compute_ssd : bool
        Write (300A,0130) *SourceToSurfaceDistance* from :func:`rtplan.ssd_mm` (left out,
        with a logged warning, for a central axis that misses the patient).
    overwrite : bool
        Replace an existing file (``--force``).

    Returns
    -------
    pydicom.Dataset
        The dataset written (its ``SOPInstanceUID`` is what an RT-DOSE references).

    Raises
    ------
    rtplan.errors.InputError
        If a segment breaks the machine's limits (:meth:`rtplan.DeliverablePlan.validate`:
        leaf range, overlapping leaves, minimum gap, jaws), an arc or dynamic beam breaks
        the machine's arc limits (:func:`rtplan.delivery.check_deliverability`: control-point
        spacing, MU per control point, dose rates and the speeds they imply), a beam's
        patient position is not the CT's, the patient has no RT-STRUCT, the target
        structure is unknown, or a beam has segments at several gantry angles without
        control points (build arcs as :class:`rtplan.delivery.ArcBeam`).
    rtplan.errors.MachineError
        An arc on a machine without arc limits.
    rtplan.errors.OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path_argument(path, "path")
    require_instance(plan, "plan", DeliverablePlan, "an rtplan.DeliverablePlan")
    require_instance(patient, "patient", Patient, "an rtplan.Patient (rtplan.read_patient)")
    fmt = f"RT-PLAN '{path}'"
    beams = list(plan.beams)
    arcs = [f"{b.number} ({b.name!r})" for b in beams if b.is_arc and not isinstance(b, ArcBeam)]
    if arcs:
        raise InputError(
            f"{fmt}: beam(s) {', '.join(arcs)} are arcs given as segments at several gantry "
            "angles, without control points; build them as rtplan.delivery.ArcBeam."
        )
    n_fx = int(plan.fractions)
    rx_gy = float(plan.total_dose_gy)
    target = plan.target_name
    if label is None:
        label = plan.label
    if patient.structure_set_uid is None:
        raise InputError(
            f"{fmt}: the patient was loaded without an RT-STRUCT; an RT-PLAN with geometry "
            "PATIENT must reference (300C,0060) the structure set. Load it with the RT-STRUCT."
        )
    for dbeam in beams:
        if dbeam.beam.patient_position != patient.position:
            raise InputError(
                f"{fmt}: beam {dbeam.number} is set up for patient position "
                f"{dbeam.beam.patient_position} but the CT is {patient.position} "
                "((0018,5100) PatientPosition); rebuild the beams for the CT's position."
            )
    # Machine limits (leaf range, overlaps, gaps, jaws): raise on export.
    plan.validate(where=fmt)
    _refuse_undeliverable_arcs(plan, fmt)

    ds = base_dataset(
        patient,
        sop_class_uid=RT_PLAN_STORAGE,
        modality="RTPLAN",
        series_description="rtplan plan",
        series_number=901,
    )
    now = _dt.datetime.now()
    # RT General Plan (C.8.8.9).
    ds.RTPlanLabel = str(label)[:16]
    if plan_name:
        ds.RTPlanName = str(plan_name)[:64]
    ds.RTPlanDate = now.strftime("%Y%m%d")
    ds.RTPlanTime = now.strftime("%H%M%S")
    ds.RTPlanGeometry = "PATIENT"
    ref = Dataset()
    ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ref.ReferencedSOPInstanceUID = patient.structure_set_uid
    ds.ReferencedStructureSetSequence = [ref]

    # RT Prescription (C.8.8.10).
    if target:
        if target not in patient.structures:
            raise InputError(
                f"{fmt}: target structure '{target}' is not in the RT-STRUCT; available: "
                f"{', '.join(patient.structures)}."
            )
        tstruct = patient.structures[target]
        dref = Dataset()
        dref.DoseReferenceNumber = 1
        dref.DoseReferenceUID = new_uid()
        dref.DoseReferenceStructureType = "VOLUME"
        dref.DoseReferenceDescription = str(target)[:64]
        dref.ReferencedROINumber = int(tstruct.number)
        dref.DoseReferenceType = "TARGET"
        dref.TargetPrescriptionDose = _ds(rx_gy, 4)
        ds.DoseReferenceSequence = [dref]

    # RT Patient Setup (C.8.8.12).
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = patient.position
    setup.SetupTechnique = "ISOCENTRIC"
    ds.PatientSetupSequence = [setup]

    # RT Beams (C.8.8.14) and fraction scheme (C.8.8.13).
    beam_items, ref_beams = [], []
    for dbeam in beams:
        machine = dbeam.machine
        boundaries = np.asarray(machine.mlc.leaf_boundaries_mm, dtype=float)
        n_pairs = boundaries.size - 1
        weights = [_ds(w, _WEIGHT_DECIMALS) for w in dbeam.cumulative_meterset_weights()]
        weights[-1] = "1"  # exactly FinalCumulativeMetersetWeight
        geom = dbeam.beam
        devices = _jaw_device_types(machine)

        b = Dataset()
        b.BeamNumber = int(dbeam.number)
        b.BeamName = str(dbeam.name)[:64]
        arc = isinstance(dbeam, ArcBeam)
        n_seg = len(dbeam.segments)
        if arc:
            kind = "dynamic MLC" if dbeam.rotation_direction == "NONE" else "arc"
            b.BeamDescription = f"{kind}, {len(weights)} control points"
        else:
            b.BeamDescription = f"step-and-shoot, {n_seg} segment{'s' if n_seg > 1 else ''}"
        b.BeamType = "DYNAMIC" if arc or n_seg > 1 else "STATIC"
        b.RadiationType = str(machine.radiation_type or "PHOTON")
        if machine.manufacturer:
            b.Manufacturer = str(machine.manufacturer)[:64]
        b.TreatmentMachineName = str(machine.name)[:16]
        b.PrimaryDosimeterUnit = "MU"
        if machine.fluence_mode == "FFF":  # (3002,0050); absent: a flattened (STANDARD) beam
            mode = Dataset()
            mode.FluenceMode = "NON_STANDARD"
            mode.FluenceModeID = "FFF"
            b.PrimaryFluenceModeSequence = [mode]
        b.SourceAxisDistance = _ds(geom.sad_mm, 2)
        bld = []
        for dev in devices:
            item = Dataset()
            item.RTBeamLimitingDeviceType = dev
            item.NumberOfLeafJawPairs = 1
            bld.append(item)
        item = Dataset()
        item.RTBeamLimitingDeviceType = "MLCX"
        item.NumberOfLeafJawPairs = n_pairs
        item.LeafPositionBoundaries = [_ds(v) for v in boundaries]
        bld.append(item)
        b.BeamLimitingDeviceSequence = bld
        b.ReferencedPatientSetupNumber = 1
        b.TreatmentDeliveryType = "TREATMENT"
        b.NumberOfWedges = 0
        b.NumberOfCompensators = 0
        b.NumberOfBoli = 0
        b.NumberOfBlocks = 0
        b.FinalCumulativeMetersetWeight = "1"
        b.NumberOfControlPoints = len(weights)
        ssd = None
        if compute_ssd:
            try:
                ssd = ssd_mm(geom, patient)
            except InputError as exc:  # (300A,0130) is Type 3: leave it out, say why
                log.warning("beam %d: no SourceToSurfaceDistance written: %s", dbeam.number, exc)
        cps = []
        for k, w in enumerate(weights):
            seg = dbeam.control_points[k] if arc else dbeam.segments[k // 2]
            cp = Dataset()
            cp.ControlPointIndex = k
            cp.CumulativeMetersetWeight = w
            if k == 0:
                cp.NominalBeamEnergy = _ds(machine.nominal_energy_mv, 2)
            if arc:
                rate = seg.dose_rate_mu_per_min
                if k == 0 and rate is None:
                    rate = machine.require_arc_limits(
                        f"beam {dbeam.number}"
                    ).max_dose_rate_mu_per_min
                if rate is not None and k < len(weights) - 1:
                    cp.DoseRateSet = _ds(rate, 3)
            cp.BeamLimitingDevicePositionSequence = _bld_positions(seg, devices)
            if arc and k > 0:
                cp.GantryAngle = _ds(seg.gantry_angle_deg)
            if k == 0:
                cp.GantryAngle = _ds(geom.gantry_angle_deg)
                cp.GantryRotationDirection = dbeam.rotation_direction if arc else "NONE"
                cp.BeamLimitingDeviceAngle = _ds(geom.collimator_angle_deg)
                cp.BeamLimitingDeviceRotationDirection = "NONE"
                cp.PatientSupportAngle = _ds(geom.couch_angle_deg)
                cp.PatientSupportRotationDirection = "NONE"
                cp.TableTopEccentricAngle = "0"
                cp.TableTopEccentricRotationDirection = "NONE"
                cp.TableTopPitchAngle = 0.0
                cp.TableTopPitchRotationDirection = "NONE"
                cp.TableTopRollAngle = 0.0
                cp.TableTopRollRotationDirection = "NONE"
                cp.TableTopVerticalPosition = None
                cp.TableTopLongitudinalPosition = None
                cp.TableTopLateralPosition = None
                cp.IsocenterPosition = [_ds(v, 4) for v in geom.isocenter_mm]
                if ssd is not None:
                    cp.SourceToSurfaceDistance = _ds(ssd, 1)
            cps.append(cp)
        b.ControlPointSequence = cps
        beam_items.append(b)

        rb = Dataset()
        rb.ReferencedBeamNumber = int(dbeam.number)
        rb.BeamMeterset = _ds(dbeam.per_fraction_mu(n_fx), 6)
        ref_beams.append(rb)

    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = n_fx
    fg.NumberOfBeams = len(beams)
    fg.NumberOfBrachyApplicationSetups = 0
    fg.ReferencedBeamSequence = ref_beams
    ds.FractionGroupSequence = [fg]
    ds.BeamSequence = beam_items

    # Approval (C.8.8.16).
    ds.ApprovalStatus = "UNAPPROVED"

    write_dataset(ds, path, overwrite=overwrite)
    log.info("RT-PLAN: %d beams, %d fractions", len(beams), n_fx)
    return ds
