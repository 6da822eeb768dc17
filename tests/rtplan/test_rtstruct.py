"""RT Structure Set reader and load_patient's reference checks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import rtplan
from rtplan.errors import DicomReadError, DicomWarning, ReferenceMismatchError, StructureError
from rtplan.io import load_structure_set

PYDICOM_RTSTRUCT = get_testdata_file("rtstruct.dcm")


def dcdump_rois(path) -> dict[int, tuple[str, str]]:
    """ROI number → (name, RTROIInterpretedType) as dicom3tools' dcdump prints them."""
    text = subprocess.run(["dcdump", str(path)], capture_output=True, text=True).stderr
    text += subprocess.run(["dcdump", str(path)], capture_output=True, text=True).stdout
    value = r"\s+VR=<\w+>\s+VL=<0x[0-9a-f]+>\s+<([^>]*)>"
    numbers = [int(v) for v in re.findall(r"\(0x3006,0x0022\).*?" + value, text)]
    names = [v.strip() for v in re.findall(r"\(0x3006,0x0026\).*?" + value, text)]
    types: dict[int, str] = {}
    last_ref = None
    for line in text.splitlines():
        m = re.search(r"\((0x3006,0x0084|0x3006,0x00a4)\).*?" + value, line)
        if m and m.group(1) == "0x3006,0x0084":
            last_ref = int(m.group(2))
        elif m:
            types[last_ref] = m.group(2).strip()
    return {n: (name, types.get(n, "")) for n, name in zip(numbers, names, strict=True)}


def test_pydicom_example_rtstruct_matches_dcdump():
    assert Path(pydicom.examples.get_path("rt_ss")) == Path(PYDICOM_RTSTRUCT)
    ss = load_structure_set(PYDICOM_RTSTRUCT)
    reference = dcdump_rois(PYDICOM_RTSTRUCT)
    assert reference == {1: ("patient", "EXTERNAL"), 2: ("Isocenter 1", "ISOCENTER"),
                         3: ("Isocenter 2", "ISOCENTER")}
    got = {s.number: (s.name, s.roi_type) for s in ss.structures.values()}
    assert got == reference
    body = ss.structures["patient"]
    assert len(body.contours) == 3 and body.color_rgb == (220, 160, 120)
    assert np.allclose(body.z_planes_mm, [-200, -190, -180])
    for name in ("Isocenter 1", "Isocenter 2"):
        iso = ss.structures[name]
        assert iso.is_point and iso.contours == []
        np.testing.assert_array_equal(iso.points_mm, [[0.0, 0.0, 0.0]])
    assert ss.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2"
    assert ss.referenced_series_uids == ("1.2.826.0.1.3680043.8.498.2010020400001.2.1.1",)
    # Without its CT, measuring needs an assumed grid: a warning says so.
    with pytest.warns(DicomWarning, match="without its CT"):
        grid = ss.contour_grid()
    # 400 x 300 mm rectangles on 3 planes 10 mm apart: 3 slabs of 120 cm2 x 1 cm.
    assert body.volume_cc(grid) == pytest.approx(3 * 40 * 30 * 1.0, rel=1e-3)


def test_fast_contour_parse_equals_pydicom(cshape_dicom):
    ss = load_structure_set(cshape_dicom.rtstruct_path)
    ds = pydicom.dcmread(cshape_dicom.rtstruct_path)
    ref = [np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
           for c in ds.ROIContourSequence[1].ContourSequence]
    got = ss.structures["PTV"].contours
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_structure_lookup_lists_names(cshape_dicom):
    patient = rtplan.load_patient(cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    with pytest.raises(StructureError, match=r"No structure named 'Cord'.*'Body', 'PTV', 'Core'"):
        patient.structure("Cord")


def _mutated_rs(src, dst, fn):
    ds = pydicom.dcmread(src)
    fn(ds)
    ds.save_as(dst)
    return dst


def test_other_frame_of_reference_is_refused(cshape_dicom, tmp_path):
    ct_for = pydicom.dcmread(cshape_dicom.ct_files[0]).FrameOfReferenceUID
    with pytest.raises(ReferenceMismatchError,
                       match=rf"1\.2\.826\.0\.1\.3680043\.8\.498\.2010020400001\.2 .*{ct_for}"):
        rtplan.load_patient(cshape_dicom.ct_dir, PYDICOM_RTSTRUCT)


def test_other_series_same_frame_warns_and_goes_on(cshape_dicom, tmp_path):
    other = generate_uid()

    def fn(ds):
        (ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
         .RTReferencedSeriesSequence[0].SeriesInstanceUID) = other

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    ct_series = pydicom.dcmread(cshape_dicom.ct_files[0]).SeriesInstanceUID
    with pytest.warns(DicomWarning, match=rf"{other}.*{ct_series}"):
        patient = rtplan.load_patient(cshape_dicom.ct_dir, rs)
    assert list(patient.structures) == ["Body", "PTV", "Core"]


def test_contour_with_two_points_names_roi_and_contour(cshape_dicom, tmp_path):
    def fn(ds):
        item = ds.ROIContourSequence[2].ContourSequence[3]
        item.ContourData = item.ContourData[:6]
        item.NumberOfContourPoints = 2

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    with pytest.raises(StructureError, match=r"ROI 'Core' \(number 3\), contour 3 has 2 point"):
        load_structure_set(rs)
    with pytest.raises(StructureError, match="'Core'"):
        rtplan.load_patient(cshape_dicom.ct_dir, rs)


def test_empty_roi_warns_and_is_kept(cshape_dicom, tmp_path):
    def fn(ds):
        del ds.ROIContourSequence[1].ContourSequence

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    with pytest.warns(DicomWarning, match="without contours: PTV"):
        ss = load_structure_set(rs)
    assert ss.empty_rois == ("PTV",)
    ptv = ss.structures["PTV"]
    assert ptv.is_empty and ptv.volume_cc(ss.structures["Body"].contours and
                                          rtplan.Grid((2, 2, 2), (0, 0, 0), (1, 1, 1))) == 0.0


def test_truncated_and_wrong_objects(cshape_dicom, tmp_path):
    data = Path(cshape_dicom.rtstruct_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomReadError, match=r"cut\.dcm.*(truncated|malformed|not valid)"):
        load_structure_set(cut)
    with pytest.raises(DicomReadError, match="not an RT Structure Set.*Modality is 'CT'"):
        load_structure_set(cshape_dicom.ct_files[0])
    junk = tmp_path / "junk.dcm"
    junk.write_text("x" * 400)
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        load_structure_set(junk)


def test_load_patient_fields(cshape_dicom, cshape_patient):
    p = rtplan.load_patient(cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    ds = pydicom.dcmread(cshape_dicom.rtstruct_path)
    assert p.structure_set_uid == ds.SOPInstanceUID
    assert p.frame_of_reference_uid == cshape_patient.frame_of_reference_uid
    assert p.study_instance_uid == cshape_patient.study_instance_uid
    assert p.ct_series_instance_uid == cshape_patient.ct_series_instance_uid
    assert p.ct_sop_instance_uids == cshape_patient.ct_sop_instance_uids
    assert p.position == "HFS"
    assert str(p.dicom_patient.PatientID) == "RTPLAN-PHANTOM-CSHAPE"
