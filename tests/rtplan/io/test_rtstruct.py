"""RT Structure Set reader and read_patient's reference checks, including RT-STRUCTs as
other planning systems write them."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

import rtplan
from rtplan.errors import DicomReadError, DicomWarning, ReferenceMismatchError, StructureError
from rtplan.io import read_structure_set

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
    ss = read_structure_set(PYDICOM_RTSTRUCT)
    reference = dcdump_rois(PYDICOM_RTSTRUCT)
    assert reference == {
        1: ("patient", "EXTERNAL"),
        2: ("Isocenter 1", "ISOCENTER"),
        3: ("Isocenter 2", "ISOCENTER"),
    }
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
    ss = read_structure_set(cshape_dicom.rtstruct_path)
    ds = pydicom.dcmread(cshape_dicom.rtstruct_path)
    ref = [
        np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        for c in ds.ROIContourSequence[1].ContourSequence
    ]
    got = ss.structures["PTV"].contours
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_structure_lookup_lists_names(cshape_dicom):
    patient = rtplan.read_patient(cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    with pytest.raises(StructureError, match=r"No structure named 'Cord'.*'Body', 'PTV', 'Core'"):
        patient.structure("Cord")


def _mutated_rs(src, dst, fn):
    ds = pydicom.dcmread(src)
    fn(ds)
    ds.save_as(dst)
    return dst


def test_other_frame_of_reference_is_refused(cshape_dicom, tmp_path):
    ct_for = pydicom.dcmread(cshape_dicom.ct_files[0]).FrameOfReferenceUID
    with pytest.raises(
        ReferenceMismatchError,
        match=rf"1\.2\.826\.0\.1\.3680043\.8\.498\.2010020400001\.2 .*{ct_for}",
    ):
        rtplan.read_patient(cshape_dicom.ct_dir, PYDICOM_RTSTRUCT)


def test_other_series_same_frame_warns_and_goes_on(cshape_dicom, tmp_path):
    other = generate_uid()

    def fn(ds):
        (
            ds.ReferencedFrameOfReferenceSequence[0]
            .RTReferencedStudySequence[0]
            .RTReferencedSeriesSequence[0]
            .SeriesInstanceUID
        ) = other

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    ct_series = pydicom.dcmread(cshape_dicom.ct_files[0]).SeriesInstanceUID
    with pytest.warns(DicomWarning, match=rf"{other}.*{ct_series}"):
        patient = rtplan.read_patient(cshape_dicom.ct_dir, rs)
    assert list(patient.structures) == ["Body", "PTV", "Core"]


def test_contour_with_two_points_names_roi_and_contour(cshape_dicom, tmp_path):
    def fn(ds):
        item = ds.ROIContourSequence[2].ContourSequence[3]
        item.ContourData = item.ContourData[:6]
        item.NumberOfContourPoints = 2

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    with pytest.raises(StructureError, match=r"ROI 'Core' \(number 3\), contour 3 has 2 point"):
        read_structure_set(rs)
    with pytest.raises(StructureError, match="'Core'"):
        rtplan.read_patient(cshape_dicom.ct_dir, rs)


def test_empty_roi_warns_and_is_kept(cshape_dicom, tmp_path):
    def fn(ds):
        del ds.ROIContourSequence[1].ContourSequence

    rs = _mutated_rs(cshape_dicom.rtstruct_path, tmp_path / "RS.dcm", fn)
    with pytest.warns(DicomWarning, match="without contours: PTV"):
        ss = read_structure_set(rs)
    assert ss.empty_rois == ("PTV",)
    ptv = ss.structures["PTV"]
    assert (
        ptv.is_empty
        and ptv.volume_cc(
            ss.structures["Body"].contours and rtplan.Grid((2, 2, 2), (0, 0, 0), (1, 1, 1))
        )
        == 0.0
    )


def test_truncated_and_wrong_objects(cshape_dicom, tmp_path):
    data = Path(cshape_dicom.rtstruct_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomReadError, match=r"cut\.dcm.*(truncated|malformed|not valid)"):
        read_structure_set(cut)
    with pytest.raises(DicomReadError, match="not an RT Structure Set.*Modality is 'CT'"):
        read_structure_set(cshape_dicom.ct_files[0])
    junk = tmp_path / "junk.dcm"
    junk.write_text("x" * 400)
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_structure_set(junk)


def test_read_patient_fields(cshape_dicom, cshape_patient):
    p = rtplan.read_patient(cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    ds = pydicom.dcmread(cshape_dicom.rtstruct_path)
    assert p.structure_set_uid == ds.SOPInstanceUID
    assert p.frame_of_reference_uid == cshape_patient.frame_of_reference_uid
    assert p.study_instance_uid == cshape_patient.study_instance_uid
    assert p.ct_series_instance_uid == cshape_patient.ct_series_instance_uid
    assert p.ct_sop_instance_uids == cshape_patient.ct_sop_instance_uids
    assert p.position == "HFS"
    assert str(p.dicom_patient.PatientID) == "RTPLAN-PHANTOM-CSHAPE"


# ====================================================================================
# RT-STRUCTs as other planning systems write them.
# ====================================================================================


def _small_rs(small_phantom_dicom, tmp_path, fn, name="RS.dcm"):
    return _mutated_rs(small_phantom_dicom.rtstruct_path, tmp_path / name, fn)


def _contour(points_xy, z, kind="CLOSED_PLANAR"):
    item = Dataset()
    item.ContourGeometricType = kind
    pts = [[x, y, z] for x, y in points_xy]
    item.NumberOfContourPoints = len(pts)
    item.ContourData = [f"{v:g}" for p in pts for v in p]
    return item


def _square(half):
    return [(-half, -half), (half, -half), (half, half), (-half, half)]


def test_repeated_closing_point_is_dropped(small_phantom_dicom, small_phantom_patient, tmp_path):
    def close_all(ds):
        for roi in ds.ROIContourSequence:
            for item in roi.ContourSequence:
                data = list(item.ContourData)
                item.ContourData = data + data[:3]
                item.NumberOfContourPoints = len(data) // 3 + 1

    rs = _small_rs(small_phantom_dicom, tmp_path, close_all)
    ss = read_structure_set(rs)
    original = read_structure_set(small_phantom_dicom.rtstruct_path)
    grid = small_phantom_patient.grid
    for name, ref in original.structures.items():
        got = ss.structures[name]
        assert [len(c) for c in got.contours] == [len(c) for c in ref.contours]
        for a, b in zip(got.contours, ref.contours, strict=True):
            np.testing.assert_array_equal(a, b)
        assert got.volume_cc(grid) == ref.volume_cc(grid)


@pytest.mark.parametrize("kind", ["CLOSEDPLANAR_XOR", "CLOSED_PLANAR"])
def test_nested_contours_make_a_hole(kind, small_phantom_dicom, tmp_path):
    """Outer 40 mm and inner 20 mm squares on each of 4 planes: XOR (even-odd) area."""
    zs = [-12.5, -7.5, -2.5, 2.5]

    def fn(ds):
        ds.ROIContourSequence[1].ContourSequence = Sequence(
            [_contour(_square(20), z, kind) for z in zs]
            + [_contour(_square(10), z, kind) for z in zs]
        )

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    patient = rtplan.read_patient(small_phantom_dicom.ct_dir, rs)
    target = patient.structure("CentralTarget")
    # Voxel faces lie on multiples of 5 mm: the occupancy is exact.
    assert target.volume_cc(patient.grid) == pytest.approx(4 * (40**2 - 20**2) * 5 / 1000)
    m = target.mask(patient.grid)
    k = int(np.argmin(np.abs(patient.grid.zyx_axes_mm()[0] - (-2.5))))
    j = i = int(np.argmin(np.abs(patient.grid.zyx_axes_mm()[1])))
    assert not m[k, j, i] and m[k, j, i + 3]  # centre is the hole, ring is inside


def test_open_point_and_unknown_contour_types(small_phantom_dicom, tmp_path):
    def fn(ds):
        ds.ROIContourSequence[1].ContourSequence = Sequence(
            [
                _contour(_square(20), -2.5),
                _contour(_square(15), 2.5, "OPEN_PLANAR"),
                _contour([(1.0, 2.0)], 3.0, "POINT"),
                _contour(_square(15), 7.5, "CLOSED PLANAR"),  # a typo some exporters make
            ]
        )

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.warns(DicomWarning) as record:
        ss = read_structure_set(rs)
    text = " | ".join(str(w.message) for w in record)
    assert "OPEN_PLANAR contours of CentralTarget ignored (open contours enclose no volume)" in text
    assert "CLOSED PLANAR contours of CentralTarget ignored (unknown" in text
    target = ss.structures["CentralTarget"]
    assert len(target.contours) == 1
    np.testing.assert_array_equal(target.points_mm, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("how", ["no_sequence", "empty_sequence"])
def test_roi_without_contours_warns(how, small_phantom_dicom, tmp_path):
    def fn(ds):
        if how == "no_sequence":
            del ds.ROIContourSequence[2].ContourSequence
        else:
            ds.ROIContourSequence[2].ContourSequence = Sequence([])

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.warns(DicomWarning, match="without contours: SuperiorTarget"):
        ss = read_structure_set(rs)
    assert ss.structures["SuperiorTarget"].is_empty


def test_contours_of_an_undeclared_roi_number_name_both(small_phantom_dicom, tmp_path):
    def fn(ds):
        ds.ROIContourSequence[3].ReferencedROINumber = 99

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.raises(
        StructureError,
        match=r"item 3 of \(3006,0039\) ROIContourSequence "
        r"refers to \(3006,0084\) ReferencedROINumber 99.*"
        r"StructureSetROISequence \(ROI numbers 1, 2, 3, "
        r"4\)",
    ):
        read_structure_set(rs)


def test_duplicate_roi_names_are_kept_apart_not_guessed(small_phantom_dicom, tmp_path):
    def fn(ds):
        ds.StructureSetROISequence[2].ROIName = "PTV"
        ds.StructureSetROISequence[3].ROIName = "PTV"
        ds.StructureSetROISequence[1].ROIName = ""  # Type 2: may be empty

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.warns(
        DicomWarning,
        match=r"share the \(3006,0026\) ROIName 'PTV'.*"
        r"'PTV \[ROI 3\]'",
    ):
        patient = rtplan.read_patient(small_phantom_dicom.ct_dir, rs)
    assert list(patient.structures) == ["Body", "ROI 2", "PTV [ROI 3]", "PTV [ROI 4]"]
    assert patient.structure("PTV [ROI 4]").number == 4
    with pytest.raises(StructureError, match=r"'PTV \[ROI 3\]', 'PTV \[ROI 4\]'"):
        patient.structure("PTV")


def test_contour_data_length_and_point_count_errors_name_roi_and_contour(
    small_phantom_dicom, tmp_path
):
    def not_triplets(ds):
        item = ds.ROIContourSequence[1].ContourSequence[2]
        item.ContourData = list(item.ContourData)[:-1]

    def wrong_count(ds):
        ds.ROIContourSequence[1].ContourSequence[2].NumberOfContourPoints = 7

    rs = _small_rs(small_phantom_dicom, tmp_path, not_triplets)
    with pytest.raises(
        StructureError,
        match=r"ROI 'CentralTarget' \(number 2\), contour 2: "
        r"\(3006,0050\) ContourData holds \d+ values, not a "
        r"multiple of 3",
    ):
        read_structure_set(rs)
    rs = _small_rs(small_phantom_dicom, tmp_path, wrong_count, "RS2.dcm")
    with pytest.raises(
        StructureError,
        match=r"ROI 'CentralTarget' \(number 2\), contour 2: "
        r"\(3006,0046\) NumberOfContourPoints is 7 but "
        r"\(3006,0050\) ContourData holds \d+ points",
    ):
        read_structure_set(rs)


def test_contours_off_the_ct_slices_warn_naming_roi_and_z(small_phantom_dicom, tmp_path):
    # CT slices every 5 mm from z = -27.5 to 27.5 mm.
    def fn(ds):
        ds.ROIContourSequence[1].ContourSequence = Sequence(
            [_contour(_square(20), z) for z in (-2.5, 2.5, 4.0)]
        )  # 4.0: 1.5 mm off a slice
        ds.ROIContourSequence[2].ContourSequence = Sequence(
            [_contour(_square(10), z) for z in (40.0, 45.0)]
        )  # beyond the CT

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.warns(DicomWarning) as record:
        patient = rtplan.read_patient(small_phantom_dicom.ct_dir, rs)
    text = " | ".join(str(w.message) for w in record)
    assert re.search(
        r"outside the CT's z range \(-27\.50 \.\. 27\.50 mm.*'SuperiorTarget' "
        r"\(all of it\) at z = 40\.00, 45\.00 mm",
        text,
    ), text
    assert re.search(
        r"do not lie on a CT slice.*'CentralTarget' at z = 4\.00 mm \(up to "
        r"1\.50 mm from a slice\)",
        text,
    ), text
    assert patient.structure("SuperiorTarget").voxel_count(patient.grid) == 0


def test_structure_set_without_series_references_loads_quietly(small_phantom_dicom, tmp_path):
    def fn(ds):
        del ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patient = rtplan.read_patient(small_phantom_dicom.ct_dir, rs)
    assert read_structure_set(rs).referenced_series_uids == ()
    assert "CentralTarget" in patient.structures


def test_frame_of_reference_from_the_rois_when_several_are_listed(small_phantom_dicom, tmp_path):
    """A registered MR frame listed first in (3006,0010) must not hide the CT's."""

    def fn(ds):
        mr = Dataset()
        mr.FrameOfReferenceUID = generate_uid()
        ds.ReferencedFrameOfReferenceSequence.insert(0, mr)

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    ct_for = pydicom.dcmread(small_phantom_dicom.ct_files[0]).FrameOfReferenceUID
    ss = read_structure_set(rs)
    assert ss.frame_of_reference_uid == ct_for
    assert len(ss.referenced_frame_of_reference_uids) == 2
    rtplan.read_patient(small_phantom_dicom.ct_dir, rs)


def test_no_frame_of_reference_at_all_is_refused(small_phantom_dicom, tmp_path):
    def fn(ds):
        del ds.ReferencedFrameOfReferenceSequence
        for item in ds.StructureSetROISequence:
            del item.ReferencedFrameOfReferenceUID
        if "FrameOfReferenceUID" in ds:
            del ds.FrameOfReferenceUID

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    with pytest.raises(DicomReadError, match=r"names no frame of reference.*\(3006,0024\)"):
        read_structure_set(rs)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Lèvre supérieure"),
        ("ISO_IR 192", "Rückenmark 脊髄"),
    ],
)
def test_non_ascii_roi_names(charset, name, small_phantom_dicom, tmp_path):
    def fn(ds):
        ds.SpecificCharacterSet = charset
        ds.StructureSetROISequence[1].ROIName = name

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    raw = rs.read_bytes()
    assert name.encode("utf-8" if charset == "ISO_IR 192" else "latin-1") in raw
    ss = read_structure_set(rs)
    assert list(ss.structures)[1] == name
    assert ss.structures[name].number == 2


@pytest.mark.parametrize("encoding", ["implicit", "deflated", "big_endian", "no_preamble"])
def test_structure_set_encodings(encoding, small_phantom_dicom, tmp_path):
    from pydicom import uid
    from pydicom.filewriter import dcmwrite

    ds = pydicom.dcmread(small_phantom_dicom.rtstruct_path)
    out = tmp_path / "RS.dcm"
    if encoding == "implicit":
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
        ds.save_as(out, implicit_vr=True, little_endian=True)
    elif encoding == "deflated":
        ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
        ds.save_as(out)
    elif encoding == "big_endian":
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
        dcmwrite(out, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        ds.preamble = None
        del ds.file_meta
        dcmwrite(out, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    ref = read_structure_set(small_phantom_dicom.rtstruct_path)
    got = read_structure_set(out)
    assert list(got.structures) == list(ref.structures)
    for name, s in ref.structures.items():
        assert len(got.structures[name].contours) == len(s.contours)
        for a, b in zip(got.structures[name].contours, s.contours, strict=True):
            np.testing.assert_array_equal(a, b)


def test_nul_padded_contour_data(small_phantom_dicom, tmp_path):
    """Some exporters pad odd-length DS values with NUL instead of a space."""
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(small_phantom_dicom.rtstruct_path)
    text = b"-20\\-20\\-2.5\\20\\-20\\-2.5\\20\\20\\-2.5\\-20\\20\\-2.5\x00"
    item = ds.ROIContourSequence[1].ContourSequence[0]
    item.NumberOfContourPoints = 4
    item[0x30060050] = RawDataElement(
        pydicom.tag.Tag(0x30060050), "DS", len(text), text, 0, False, True
    )
    ds.save_as(tmp_path / "RS.dcm")
    ss = read_structure_set(tmp_path / "RS.dcm")
    np.testing.assert_array_equal(ss.structures["CentralTarget"].contours[0][2], [20, 20, -2.5])


def test_real_pydicom_rtstruct_in_a_ct_folder_is_ignored_by_load_ct(small_phantom_dicom, tmp_path):
    ct = tmp_path / "CT"
    shutil.copytree(small_phantom_dicom.ct_dir, ct)
    shutil.copy(PYDICOM_RTSTRUCT, ct / "RS.other.dcm")  # no preamble, implicit VR
    patient = rtplan.read_patient(ct, small_phantom_dicom.rtstruct_path)
    assert patient.ct.shape == (12, 40, 40)


def test_folder_given_as_rtstruct_is_named(small_phantom_dicom):
    with pytest.raises(rtplan.errors.InputError, match="is a folder; pass the RT Structure Set"):
        read_structure_set(small_phantom_dicom.ct_dir)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Rückenmark".encode(), "Rückenmark"),  # UTF-8 without a declared character set
        ("Lèvre".encode("latin-1") + b" ", "Lèvre"),  # Latin-1 without a declared character set
    ],
)
def test_undeclared_character_set(raw, expected, small_phantom_dicom, tmp_path):
    from pydicom.dataelem import RawDataElement

    def fn(ds):
        del ds.SpecificCharacterSet
        ds.StructureSetROISequence[1][0x30060026] = RawDataElement(
            pydicom.tag.Tag(0x30060026), "LO", len(raw), raw, 0, False, True
        )

    rs = _small_rs(small_phantom_dicom, tmp_path, fn)
    assert list(read_structure_set(rs).structures)[1] == expected
