"""dicom3tools validation of what rtplan writes.

- ``dciodvfy`` (IOD conformance): no error and no warning on the RT-PLAN of a Varian-style
  (ASYMX + ASYMY + MLCX) and an Agility-style (ASYMY + MLCX) machine, nor on the RT-DOSE
  header (validated on a 16-bit copy, see :func:`_dciodvfy.to_16bit_copy`).
- ``dcentvfy`` (consistency of Patient, Study, Series and Frame of Reference entities and of
  references across files): CT slices, RT-STRUCT, RT-PLAN and RT-DOSE agree.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pydicom
import pytest
from _dciodvfy import to_16bit_copy

from dose_engine._beam import Beam
from rtplan import (
    DeliverableBeam,
    DeliverablePlan,
    Segment,
    compute_plan_dose,
    load_machine,
    read_patient,
)
from rtplan.io import write_rtdose, write_rtplan
from rtplan.phantoms import write_phantom


def rect_segment(machine, x1, x2, y1, y2, total_mu):
    c = machine.mlc.leaf_centers_mm
    inside = (c > y1) & (c < y2)
    leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
    jaws = {k: v for k, v in (("X", (x1, x2)), ("Y", (y1, y2))) if k in machine.jaws}
    return Segment(leaves, jaws, total_mu, machine.mlc.leaf_boundaries_mm)


def run_tool(*args) -> list[str]:
    run = subprocess.run(list(map(str, args)), capture_output=True, text=True, check=False)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("validators")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=8.0, slice_spacing_mm=8.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = patient.structure("PTV").centroid_mm(patient.ct.grid)
    out = {"written": written, "patient": patient}
    for name in ("VarianMLC120", "AgilityMLC160"):
        m = load_machine(name)
        beams = [
            DeliverableBeam(
                k + 1,
                f"G{g:g}",
                Beam(g, collimator_angle_deg=c, isocenter_mm=iso),
                m,
                (
                    rect_segment(m, -40.0, 40.0, -40.0, 40.0, 50.0),
                    rect_segment(m, -10.0, 30.0, -20.0, 10.0, 20.0),
                ),
            )
            for k, (g, c) in enumerate(((0.0, 0.0), (72.0, 15.0), (288.0, 345.0)))
        ]
        # One single-segment beam too: BeamType STATIC with 2 control points.
        beams.append(
            DeliverableBeam(
                4,
                "static",
                Beam(180.0, isocenter_mm=iso),
                m,
                (rect_segment(m, -30.0, 30.0, -30.0, 30.0, 25.0),),
            )
        )
        plan = DeliverablePlan(beams, 2, 4.0, "PTV", label=name[:16])
        rp = root / f"RP_{name}.dcm"
        ds = write_rtplan(rp, plan, patient, plan_name=f"validator test {name}")
        out[name] = rp
        if name == "VarianMLC120":
            dose = compute_plan_dose(plan, patient, dose_grid_mm=8.0)
            rd = root / "RD.dcm"
            write_rtdose(
                rd, dose.dose_gy, dose.grid, patient, plan_sop_instance_uid=ds.SOPInstanceUID
            )
            out["RD"] = rd
            out["RD16"] = to_16bit_copy(rd, root / "RD16.dcm")
    return out


@pytest.mark.parametrize("machine", ["VarianMLC120", "AgilityMLC160"])
def test_dciodvfy_rtplan_has_no_error_and_no_warning(objects, machine):
    types = [b.BeamType for b in pydicom.dcmread(objects[machine]).BeamSequence]
    assert types == ["DYNAMIC", "DYNAMIC", "DYNAMIC", "STATIC"]
    lines = run_tool("dciodvfy", objects[machine])
    assert lines and lines[0] == "RTPlan", lines  # recognised as the RT Plan IOD
    problems = [ln for ln in lines if ln.startswith(("Error", "Warning"))]
    assert problems == [], problems


def test_dciodvfy_rtdose_header_has_no_error_and_no_warning(objects):
    lines = run_tool("dciodvfy", objects["RD16"])
    assert lines and lines[0] == "RTDose", lines
    problems = [ln for ln in lines if ln.startswith(("Error", "Warning"))]
    assert problems == [], problems


def test_dciodvfy_catches_a_broken_plan(objects, tmp_path):
    """The check can fail: drop a Type 1 element and dciodvfy reports it."""
    ds = pydicom.dcmread(objects["VarianMLC120"])
    del ds.BeamSequence[0].NumberOfControlPoints
    ds.save_as(tmp_path / "broken.dcm")
    lines = run_tool("dciodvfy", tmp_path / "broken.dcm")
    assert any(ln.startswith("Error") and "NumberOfControlPoints" in ln for ln in lines), lines


def test_dcentvfy_ct_rtstruct_rtplan_rtdose_are_consistent(objects):
    w = objects["written"]
    files = [
        *w.ct_files,
        w.rtstruct_path,
        objects["VarianMLC120"],
        objects["AgilityMLC160"],
        objects["RD16"],
    ]
    lines = run_tool("dcentvfy", *files)
    study_uid = objects["patient"].study_instance_uid
    # Accepted: the phantom's RT-STRUCT lists the study in (3006,0012)
    # RTReferencedStudySequence by its StudyInstanceUID (SOP class "Detached Study
    # Management", as treatment planning systems write it); dcentvfy looks for a file with
    # that SOPInstanceUID and reports it missing.  The study is not a file, so the report
    # says nothing about the RT-PLAN or RT-DOSE.
    accepted = re.compile(
        rf"^Error - Missing SOPInstanceUID that was referenced - {re.escape(study_uid)} "
        rf"for file <{re.escape(str(w.rtstruct_path))}>$"
    )
    problems = [
        ln for ln in lines if ln.startswith(("Error", "Warning")) and not accepted.match(ln)
    ]
    assert problems == [], problems


def test_dcentvfy_catches_an_inconsistent_plan(objects, tmp_path):
    """The check can fail: an RT-PLAN whose patient's birth date disagrees with the CT's."""
    ds = pydicom.dcmread(objects["VarianMLC120"])
    ds.PatientBirthDate = "19000101"
    ds.save_as(tmp_path / "RP_other.dcm")
    w = objects["written"]
    lines = run_tool("dcentvfy", *w.ct_files, w.rtstruct_path, tmp_path / "RP_other.dcm")
    assert any("Birth" in ln for ln in lines if ln.startswith(("Error", "Warning"))), lines
