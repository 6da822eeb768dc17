"""Derived structures written to a new RT-STRUCT: original ROIs unchanged, new SOP
instance and series, same frame of reference and CT references, dciodvfy-clean, reloadable
with volumes within partial-volume tolerance."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest

import rtplan
from rtplan.errors import OutputExistsError
from rtplan.io import write_patient, write_structure_set
from rtplan.phantoms import make_phantom
from rtplan.structures import BODY_OUTLINE_NAME, body_outline, expand, roi


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsderived")
    w = write_patient(
        make_phantom("cshape", pixel_spacing_mm=2.5, slice_spacing_mm=3.0), root / "in"
    )
    patient = rtplan.read_patient(w.ct_dir, w.rtstruct_path)
    derived = (
        patient.derive("PTV+5", expand("PTV", 5.0), roi_type="PTV")
        .derive("Core-PTV+5", roi("Core") - "PTV+5", roi_type="ORGAN")
        .derive(
            "Ring",
            expand("PTV", {"anterior": 10, "posterior": 10, "left": 10, "right": 10}) - "PTV",
        )
    )
    outline = body_outline(derived)
    derived = rtplan.Patient(
        **{**derived.__dict__, "structures": {**derived.structures, outline.name: outline}}
    )
    out = write_structure_set(root / "RS_derived.dcm", derived)
    return w, patient, derived, out


def test_reloaded_rois_original_unchanged_and_derived_within_tolerance(written):
    w, patient, derived, out = written
    again = rtplan.read_patient(w.ct_dir, out)
    g = patient.grid
    assert list(again.structures) == list(derived.structures)
    for name, s in patient.structures.items():  # the originals, point for point
        r = again.structure(name)
        assert (r.number, r.roi_type, r.color_rgb) == (s.number, s.roi_type, s.color_rgb)
        assert len(r.contours) == len(s.contours)
        for a, b in zip(r.contours, s.contours, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)
    for name in ("PTV+5", "Core-PTV+5", "Ring", BODY_OUTLINE_NAME):
        want = derived.structure(name).volume_cc(g)
        got = again.structure(name).volume_cc(g)
        # the 0.5 iso-line of the occupancy, re-rasterised: boundary interpolation only
        assert got == pytest.approx(want, rel=0.01), name
        assert again.structure(name).roi_type == derived.structure(name).roi_type
    assert again.structure(BODY_OUTLINE_NAME).volume_cc(g) == pytest.approx(
        patient.structure("Body").volume_cc(g), rel=0.01
    )


def test_new_instance_same_frame_and_ct_references(written):
    w, patient, derived, out = written
    old = pydicom.dcmread(w.rtstruct_path)
    new = pydicom.dcmread(out)
    assert new.SOPInstanceUID != old.SOPInstanceUID
    assert new.SeriesInstanceUID != old.SeriesInstanceUID
    assert new.FrameOfReferenceUID == old.FrameOfReferenceUID == patient.frame_of_reference_uid
    assert new.StudyInstanceUID == old.StudyInstanceUID
    ref = new.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    series = ref.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == patient.ct_series_instance_uid
    ct_uids = set(patient.ct_sop_instance_uids)
    algo = {r.ROIName: r.ROIGenerationAlgorithm for r in new.StructureSetROISequence}
    assert algo["PTV"] == "MANUAL" and algo["PTV+5"] == "AUTOMATIC"
    assert algo[BODY_OUTLINE_NAME] == "AUTOMATIC"
    number = {r.ROIName: r.ROINumber for r in new.StructureSetROISequence}
    by_number = {rc.ReferencedROINumber: rc for rc in new.ROIContourSequence}
    for item in by_number[number["PTV+5"]].ContourSequence:
        (img,) = item.ContourImageSequence
        assert img.ReferencedSOPInstanceUID in ct_uids  # every contour on a CT slice


def test_dciodvfy_reports_no_errors_or_warnings(written):
    *_, out = written
    proc = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    assert report.strip().splitlines()[0] == "RTStructureSet", report
    assert "Error" not in report and "Warning" not in report, report


def test_existing_file_is_refused(written):
    *_, derived, out = written
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_structure_set(out, derived)
    assert out.read_bytes() == before


def test_ct_and_rtstruct_are_written_in_utf8_so_any_roi_name_survives(tmp_path):
    """CT and RT-STRUCT use (0008,0005) ISO_IR 192 like RT-PLAN and RT-DOSE (issue 14): a
    ROI name outside Latin-1 is written and read back unchanged."""
    from dataclasses import replace

    patient = make_phantom("cshape", pixel_spacing_mm=10.0, slice_spacing_mm=10.0)
    name = "Rückenmark 脊髄"
    core = replace(patient.structures["Core"], name=name)
    structures = {
        (name if k == "Core" else k): (core if k == "Core" else s)
        for k, s in patient.structures.items()
    }
    w = write_patient(replace(patient, structures=structures), tmp_path / "pt")
    ct = pydicom.dcmread(w.ct_files[0], stop_before_pixels=True)
    rs = pydicom.dcmread(w.rtstruct_path)
    assert ct.SpecificCharacterSet == rs.SpecificCharacterSet == "ISO_IR 192"
    assert name.encode("utf-8") in w.rtstruct_path.read_bytes()
    assert name in rtplan.read_structure_set(w.rtstruct_path).structures
