"""CT series loader (rtplan.io.load_ct): round trip, patient positions, bad input."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from rtplan import Image
from rtplan.errors import DicomReadError, InputError, SeriesError
from rtplan.io import load_ct
from rtplan.phantoms import make_phantom, write_patient


@pytest.fixture
def ct_copy(small_phantom_dicom, tmp_path) -> Path:
    """A private copy of the small phantom's CT folder, free to mutate."""
    dst = tmp_path / "CT"
    shutil.copytree(small_phantom_dicom.ct_dir, dst)
    return dst


def rewrite(folder: Path, fn) -> None:
    for i, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        fn(ds, i)
        ds.save_as(path)


def test_round_trip_hu_and_grid(small_phantom_dicom, small_phantom_patient):
    ct = load_ct(small_phantom_dicom.ct_dir)
    assert ct.image.grid == small_phantom_patient.ct.grid
    assert ct.image.array.dtype == np.float32
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)
    assert ct.position == "HFS"
    assert ct.sop_instance_uids == small_phantom_patient.ct_sop_instance_uids
    assert ct.frame_of_reference_uid == small_phantom_patient.frame_of_reference_uid
    # dicom_patient holds Patient + General Study module elements only.
    kws = {e.keyword for e in ct.dicom_patient}
    assert {"PatientName", "PatientID", "StudyInstanceUID", "StudyDate"} <= kws
    assert not kws & {"Modality", "SOPInstanceUID", "PixelData", "SeriesInstanceUID"}


# Expected (0020,0037) for each position as written; the loader must undo the flips.
POSITION_TABLE = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}


@pytest.mark.parametrize("position", list(POSITION_TABLE))
def test_patient_positions_load_to_the_same_physical_grid(position, tmp_path):
    base = make_phantom("multitarget", pixel_spacing_mm=5.0, slice_spacing_mm=5.0,
                        matrix_size=(36, 28), n_slices=6, position=position)
    hu = base.ct.array.copy()
    # A marker voxel on the patient's left (+x), posterior (+y), superior (+z) side.
    k, j, i = 4, 20, 30
    hu[k, j, i] = 1000.0
    patient = dataclasses.replace(base, ct=Image(hu, base.ct.grid))
    written = write_patient(patient, tmp_path / position)

    # Independent look at the stored files: orientation and where the marker sits.
    first = pydicom.dcmread(written.ct_files[k])
    iop = tuple(int(round(float(v))) for v in first.ImageOrientationPatient)
    assert iop == POSITION_TABLE[position]
    stored = first.pixel_array.astype(float) * float(first.RescaleSlope) + float(
        first.RescaleIntercept)
    row, col = np.argwhere(stored == 1000.0)[0]
    # Patient position of the stored pixel from the DICOM formula (PS3.3 C.7.6.2.1.1).
    ipp = np.array([float(v) for v in first.ImagePositionPatient])
    dy, dx = (float(v) for v in first.PixelSpacing)
    point = ipp + np.array(iop[:3]) * dx * col + np.array(iop[3:]) * dy * row
    np.testing.assert_allclose(point, base.ct.grid.index_to_point((k, j, i)))

    import subprocess

    report = subprocess.run(["dciodvfy", str(written.ct_files[k])], capture_output=True,
                            text=True)
    assert "Error" not in report.stderr + report.stdout

    ct = load_ct(written.ct_dir)
    assert ct.position == position
    assert ct.image_orientation_patient == POSITION_TABLE[position]
    g = ct.image.grid
    assert g.spacing_mm == (5.0, 5.0, 5.0)
    np.testing.assert_allclose(g.origin_mm, (-87.5, -67.5, -12.5))  # centred, +x +y +z up
    assert tuple(np.argwhere(ct.image.array == 1000.0)[0]) == (k, j, i)
    np.testing.assert_array_equal(ct.image.array, hu)


def test_ignores_non_dicom_files_and_other_modalities(ct_copy, small_phantom_dicom):
    (ct_copy / "README.txt").write_text("notes about this scan\n")
    (ct_copy / ".DS_Store").write_bytes(b"\0\1\2")
    shutil.copy(small_phantom_dicom.rtstruct_path, ct_copy / "RS.dcm")
    ct = load_ct(ct_copy)
    assert ct.image.shape == (12, 40, 40)


def test_rescale_slope_and_intercept_are_applied(ct_copy, small_phantom_patient):
    def halve(ds, i):
        raw = ds.pixel_array.astype(np.int32) + int(float(ds.RescaleIntercept))  # HU
        ds.RescaleSlope = "2"
        ds.RescaleIntercept = "-1000"
        ds.PixelData = ((raw + 1000) // 2).astype("<i2").tobytes()

    rewrite(ct_copy, halve)
    ct = load_ct(ct_copy)
    hu = small_phantom_patient.ct.array
    expected = 2 * ((hu + 1000) // 2) - 1000
    np.testing.assert_array_equal(ct.image.array, expected)


# ------------------------------------------------------------------ bad input
def test_missing_slice_names_the_gap(ct_copy):
    files = sorted(ct_copy.glob("*.dcm"))
    files[5].unlink()  # slices every 5 mm from z = -27.5 mm: this one is z = -2.5 mm
    with pytest.raises(SeriesError, match=r"Missing slice.*gap of 10\.00 mm between slice "
                                          r"positions z = -7\.5 mm and z = 2\.5 mm"):
        load_ct(ct_copy)


def test_two_series_in_one_folder(ct_copy, small_phantom_dicom, tmp_path):
    other_uid = generate_uid()
    for path in sorted(small_phantom_dicom.ct_dir.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = other_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(ct_copy / f"other_{path.name}")
    with pytest.raises(SeriesError, match=r"mixes 2 CT series.*\(3 slices\).*series_uid"):
        load_ct(ct_copy)
    original = pydicom.dcmread(small_phantom_dicom.ct_files[0]).SeriesInstanceUID
    assert load_ct(ct_copy, series_uid=original).image.shape == (12, 40, 40)
    with pytest.raises(SeriesError, match="is not in"):
        load_ct(ct_copy, series_uid="1.2.3")


def test_oblique_series_is_refused(ct_copy):
    c, s = np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10))

    def tilt(ds, i):
        ds.ImageOrientationPatient = [f"{c:.6f}", f"{s:.6f}", "0", f"{-s:.6f}", f"{c:.6f}", "0"]

    rewrite(ct_copy, tilt)
    with pytest.raises(SeriesError, match=r"not axial.*\(±1,0,0,0,±1,0\)"):
        load_ct(ct_copy)


def test_gantry_tilted_series_is_refused(ct_copy):
    def shear(ds, i):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.9 * i, z]  # y drifts with z: tilted gantry

    rewrite(ct_copy, shear)
    with pytest.raises(SeriesError, match="gantry-tilted"):
        load_ct(ct_copy)


def test_duplicated_position_is_refused(ct_copy):
    src = sorted(ct_copy.glob("*.dcm"))[3]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(ct_copy / "copy.dcm")
    with pytest.raises(SeriesError, match=r"Duplicated slice position z = -12\.5 mm"):
        load_ct(ct_copy)


def test_unequal_pixel_spacing_is_refused(ct_copy):
    rewrite(ct_copy, lambda ds, i: setattr(ds, "PixelSpacing", ["4.9", "5"]) if i == 7 else None)
    with pytest.raises(SeriesError, match="PixelSpacing"):
        load_ct(ct_copy)


def test_truncated_file_is_named(ct_copy):
    victim = sorted(ct_copy.glob("*.dcm"))[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 1500])
    with pytest.raises(DicomReadError, match=rf"{victim.name}.*truncated"):
        load_ct(ct_copy)


def test_non_dicom_file_posing_as_dcm(ct_copy):
    fake = ct_copy / "CT.9999.dcm"
    fake.write_text("this is a spreadsheet export, not an image\n" * 20)
    with pytest.raises(DicomReadError, match=r"CT\.9999\.dcm' is not a DICOM file"):
        load_ct(ct_copy)


def test_folder_without_ct(tmp_path, small_phantom_dicom):
    shutil.copy(small_phantom_dicom.rtstruct_path, tmp_path / "RS.dcm")
    with pytest.raises(SeriesError, match="No CT image found"):
        load_ct(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_ct(tmp_path / "nowhere")


def test_non_uniform_spacing_is_refused(ct_copy):
    def shift(ds, i):
        if i >= 6:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 1.0]  # 6 mm once, 5 mm elsewhere

    rewrite(ct_copy, shift)
    with pytest.raises(SeriesError, match=r"Non-uniform slice spacing.*6\.000 mm.*5\.000 mm"):
        load_ct(ct_copy)


def test_unequal_matrix_size_is_refused(ct_copy):
    def shrink(ds, i):
        if i == 2:
            ds.Columns = 20
            ds.PixelData = ds.PixelData[: 40 * 20 * 2]

    rewrite(ct_copy, shrink)
    with pytest.raises(SeriesError, match=r"40x20 pixels but .* is 40x40"):
        load_ct(ct_copy)


def test_missing_patient_position_warns_and_assumes_hfs(ct_copy):
    from rtplan.errors import DicomWarning

    rewrite(ct_copy, lambda ds, i: delattr(ds, "PatientPosition"))
    with pytest.warns(DicomWarning, match="no \\(0018,5100\\) PatientPosition; assuming HFS"):
        ct = load_ct(ct_copy)
    assert ct.position == "HFS"
