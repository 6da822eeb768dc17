"""CT series loader (rtplan.io.read_ct): round trip, patient positions, bad input, and
DICOM as other scanners and planning systems write it (pydicom's real test files)."""

from __future__ import annotations

import dataclasses
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, generate_uid

from rtplan import Image
from rtplan.errors import DicomReadError, DicomWarning, InputError, SeriesError
from rtplan.io import read_ct, write_patient
from rtplan.phantoms import make_phantom


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
    ct = read_ct(small_phantom_dicom.ct_dir)
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
    base = make_phantom(
        "multitarget",
        pixel_spacing_mm=5.0,
        slice_spacing_mm=5.0,
        matrix_size=(36, 28),
        n_slices=6,
        position=position,
    )
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
        first.RescaleIntercept
    )
    row, col = np.argwhere(stored == 1000.0)[0]
    # Patient position of the stored pixel from the DICOM formula (PS3.3 C.7.6.2.1.1).
    ipp = np.array([float(v) for v in first.ImagePositionPatient])
    dy, dx = (float(v) for v in first.PixelSpacing)
    point = ipp + np.array(iop[:3]) * dx * col + np.array(iop[3:]) * dy * row
    np.testing.assert_allclose(point, base.ct.grid.index_to_point((k, j, i)))

    import subprocess

    report = subprocess.run(["dciodvfy", str(written.ct_files[k])], capture_output=True, text=True)
    assert "Error" not in report.stderr + report.stdout

    ct = read_ct(written.ct_dir)
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
    ct = read_ct(ct_copy)
    assert ct.image.shape == (12, 40, 40)


def test_rescale_slope_and_intercept_are_applied(ct_copy, small_phantom_patient):
    def halve(ds, i):
        raw = ds.pixel_array.astype(np.int32) + int(float(ds.RescaleIntercept))  # HU
        ds.RescaleSlope = "2"
        ds.RescaleIntercept = "-1000"
        ds.PixelData = ((raw + 1000) // 2).astype("<i2").tobytes()

    rewrite(ct_copy, halve)
    ct = read_ct(ct_copy)
    hu = small_phantom_patient.ct.array
    expected = 2 * ((hu + 1000) // 2) - 1000
    np.testing.assert_array_equal(ct.image.array, expected)


# ------------------------------------------------------------------ bad input
def test_missing_slice_names_the_gap(ct_copy):
    files = sorted(ct_copy.glob("*.dcm"))
    files[5].unlink()  # slices every 5 mm from z = -27.5 mm: this one is z = -2.5 mm
    with pytest.raises(
        SeriesError,
        match=r"Missing slice.*gap of 10\.00 mm between slice "
        r"positions z = -7\.5 mm and z = 2\.5 mm",
    ):
        read_ct(ct_copy)


def test_two_series_in_one_folder(ct_copy, small_phantom_dicom, tmp_path):
    other_uid = generate_uid()
    for path in sorted(small_phantom_dicom.ct_dir.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = other_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(ct_copy / f"other_{path.name}")
    with pytest.raises(SeriesError, match=r"mixes 2 CT series.*\(3 slices, axial\).*series_uid"):
        read_ct(ct_copy)
    original = pydicom.dcmread(small_phantom_dicom.ct_files[0]).SeriesInstanceUID
    assert read_ct(ct_copy, series_uid=original).image.shape == (12, 40, 40)
    with pytest.raises(SeriesError, match="is not in"):
        read_ct(ct_copy, series_uid="1.2.3")


def test_oblique_series_is_refused(ct_copy):
    c, s = np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10))

    def tilt(ds, i):
        ds.ImageOrientationPatient = [f"{c:.6f}", f"{s:.6f}", "0", f"{-s:.6f}", f"{c:.6f}", "0"]

    rewrite(ct_copy, tilt)
    with pytest.raises(SeriesError, match=r"not axial.*\(±1,0,0,0,±1,0\)"):
        read_ct(ct_copy)


def test_gantry_tilted_series_is_refused(ct_copy):
    def shear(ds, i):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.9 * i, z]  # y drifts with z: tilted gantry

    rewrite(ct_copy, shear)
    with pytest.raises(SeriesError, match="gantry-tilted"):
        read_ct(ct_copy)


def test_duplicated_position_is_refused(ct_copy):
    src = sorted(ct_copy.glob("*.dcm"))[3]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(ct_copy / "copy.dcm")
    with pytest.raises(SeriesError, match=r"Duplicated slice position z = -12\.5 mm"):
        read_ct(ct_copy)


def test_unequal_pixel_spacing_is_refused(ct_copy):
    rewrite(ct_copy, lambda ds, i: setattr(ds, "PixelSpacing", ["4.9", "5"]) if i == 7 else None)
    with pytest.raises(SeriesError, match="PixelSpacing"):
        read_ct(ct_copy)


def test_truncated_file_is_named(ct_copy):
    victim = sorted(ct_copy.glob("*.dcm"))[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 1500])
    with pytest.raises(DicomReadError, match=rf"{victim.name}.*truncated"):
        read_ct(ct_copy)


def test_non_dicom_file_posing_as_dcm(ct_copy):
    fake = ct_copy / "CT.9999.dcm"
    fake.write_text("this is a spreadsheet export, not an image\n" * 20)
    with pytest.raises(DicomReadError, match=r"CT\.9999\.dcm' is not a DICOM file"):
        read_ct(ct_copy)


def test_folder_without_ct(tmp_path, small_phantom_dicom):
    shutil.copy(small_phantom_dicom.rtstruct_path, tmp_path / "RS.dcm")
    with pytest.raises(SeriesError, match="No CT image found"):
        read_ct(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_ct(tmp_path / "nowhere")
    with pytest.raises(InputError, match="is a file; pass the folder"):
        read_ct(tmp_path / "RS.dcm")


def test_non_uniform_spacing_is_refused(ct_copy):
    def shift(ds, i):
        if i >= 6:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 1.0]  # 6 mm once, 5 mm elsewhere

    rewrite(ct_copy, shift)
    with pytest.raises(SeriesError, match=r"Non-uniform slice spacing.*6\.000 mm.*5\.000 mm"):
        read_ct(ct_copy)


def test_unequal_matrix_size_is_refused(ct_copy):
    def shrink(ds, i):
        if i == 2:
            ds.Columns = 20
            ds.PixelData = ds.PixelData[: 40 * 20 * 2]

    rewrite(ct_copy, shrink)
    with pytest.raises(SeriesError, match=r"40x20 pixels but .* is 40x40"):
        read_ct(ct_copy)


def test_missing_patient_position_warns_and_assumes_hfs(ct_copy):
    rewrite(ct_copy, lambda ds, i: delattr(ds, "PatientPosition"))
    with pytest.warns(DicomWarning, match="no \\(0018,5100\\) PatientPosition; assuming HFS"):
        ct = read_ct(ct_copy)
    assert ct.position == "HFS"


# ====================================================================================
# DICOM from other scanners and planning systems.  Real files come from pydicom's test
# data (a runtime dependency, so always installed); nothing is copied into the repo.
# ====================================================================================


TESTDATA = Path(get_testdata_file("CT_small.dcm")).parent
DICOMDIR_TREE = TESTDATA / "dicomdirtests"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def hu_of(path) -> np.ndarray:
    """HU of one slice computed by pydicom alone (independent of rtplan's reader)."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_real_folder_with_foreign_objects_loads_only_the_ct(tmp_path):
    """CT_small.dcm among every other kind of object pydicom ships, plus clutter."""
    folder = tmp_path / "export"
    folder.mkdir()
    for name in (
        "CT_small.dcm",
        "rtplan.dcm",
        "rtdose.dcm",
        "rtstruct.dcm",
        "badVR.dcm",
        "image_dfl.dcm",
        "SC_rgb_jpeg.dcm",
        "MR_small.dcm",
        "liver_1frame.dcm",
        "ExplVR_LitEndNoMeta.dcm",
        "ExplVR_BigEndNoMeta.dcm",
        "reportsi.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "rtplan.dump",
    ):
        shutil.copy(get_testdata_file(name), folder / name)
    shutil.copy(DICOMDIR_TREE / "DICOMDIR", folder / "DICOMDIR")
    (folder / "zero.dcm").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\0\1\2")
    (folder / "._CT_small.dcm").write_bytes(b"\0\5\26\7" * 20)  # macOS AppleDouble
    (folder / "sub").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "sub" / "copy.dcm")

    with pytest.warns(DicomWarning, match=r"empty \(0-byte\) file.*zero\.dcm"):
        ct = read_ct(folder)
    assert ct.files == (folder / "CT_small.dcm",)
    ref = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    np.testing.assert_array_equal(ct.image.array[0], hu_of(get_testdata_file("CT_small.dcm")))
    assert ct.position == "FFS"  # as stored; (0020,0037) is (1,0,0,0,1,0): no flip
    np.testing.assert_allclose(
        ct.image.grid.origin_mm, [float(v) for v in ref.ImagePositionPatient]
    )
    # One slice: the spacing comes from (0018,0050) SliceThickness.
    assert ct.image.grid.spacing_mm[2] == 5.0
    # recursive=True finds the copy in sub/: same SOPInstanceUID, so it is skipped.
    with pytest.warns(DicomWarning) as record:
        ct2 = read_ct(folder, recursive=True)
    messages = " ".join(str(w.message) for w in record)
    assert "repeat the (0008,0018) SOPInstanceUID" in messages
    assert ct2.image.shape == (1, 128, 128)


def test_pydicom_rt_objects_in_the_ct_folder_do_not_confuse_the_finder(
    ct_copy, small_phantom_patient
):
    for name in ("rtplan.dcm", "rtdose.dcm", "rtstruct.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm"):
        shutil.copy(get_testdata_file(name), ct_copy / name)
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)


def test_real_scout_series_in_subfolders_is_skipped():
    """dicomdirtests/98892001: a 2-image LOCALIZER series and a 5-slice axial series."""
    root = DICOMDIR_TREE / "98892001"
    with pytest.raises(SeriesError, match=r"No CT image found.*pass recursive=True"):
        read_ct(root)
    ct = read_ct(root, recursive=True)
    files = sorted((root / "CT5N").iterdir())
    ref = sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    assert ct.files == tuple(ref)
    assert ct.image.shape == (5, 16, 16)
    assert ct.image.grid.spacing_mm[2] == pytest.approx(2.5)
    for k, p in enumerate(ref):
        np.testing.assert_array_equal(ct.image.array[k], hu_of(p))


def test_real_tree_with_several_series_needs_series_uid():
    with pytest.raises(
        SeriesError,
        match=r"mixes 3 CT series.*\(5 slices, axial\).*"
        r"\(50 slices, no \(0020,0037\) ImageOrientation"
        r"Patient\).*series_uid",
    ):
        read_ct(DICOMDIR_TREE, recursive=True)
    uid = pydicom.dcmread(next((DICOMDIR_TREE / "98892001" / "CT5N").iterdir())).SeriesInstanceUID
    assert read_ct(DICOMDIR_TREE, recursive=True, series_uid=uid).image.shape == (5, 16, 16)


def test_real_ct_without_geometry_names_the_element():
    # TINY_ALPHA: 50 CT Image Storage objects stripped of (0020,0037)/(0020,0032).
    with pytest.raises(DicomReadError, match=r"IM0000.*\(0020,0037\) ImageOrientationPatient"):
        read_ct(DICOMDIR_TREE / "TINY_ALPHA", recursive=True)


def test_real_gantry_tilted_ct_is_refused(tmp_path):
    # J2K_pixelrep_mismatch.dcm: a scanner CT with a 22 degree gantry tilt in (0020,0037).
    shutil.copy(get_testdata_file("J2K_pixelrep_mismatch.dcm"), tmp_path / "tilted.dcm")
    with pytest.raises(
        SeriesError,
        match=r"tilted\.dcm.*not axial \(a gantry tilt of about "
        r"22\.0°\)",
    ):
        read_ct(tmp_path)


def test_real_ct_without_frame_of_reference_is_refused(tmp_path):
    shutil.copy(get_testdata_file("693_J2KI.dcm"), tmp_path / "a.dcm")
    with pytest.raises(DicomReadError, match=r"a\.dcm' lacks \(0020,0052\) FrameOfReferenceUID"):
        read_ct(tmp_path)


def test_real_jpeg2000_ct_decodes_or_names_the_plugin(tmp_path):
    src = get_testdata_file("693_J2KI.dcm")
    ds = pydicom.dcmread(src)
    ds.FrameOfReferenceUID = generate_uid()
    ds.save_as(tmp_path / "j2k.dcm")
    from pydicom.pixels import get_decoder

    if get_decoder(UID("1.2.840.10008.1.2.4.91")).is_available:
        ct = read_ct(tmp_path)
        np.testing.assert_array_equal(ct.image.array[0], hu_of(src))
        # Outside the scan FOV this scanner pads with (0028,0120) PixelPaddingValue -2000,
        # smeared by lossy JPEG 2000: the HU are kept as stored (dose_engine clamps HU
        # below its table to air).
        assert ct.image.array.min() < -2900 and ct.image.array.max() > 1000
    else:
        with pytest.raises(DicomReadError, match=r"JPEG 2000.*Install one of"):
            read_ct(tmp_path)


def _as_ct(ds, z, k):
    """Turn a real MR_small variant into slice ``k`` of a CT series (keeps its encoding)."""
    ds.SOPClassUID = CT_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
    ds.Modality = "CT"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.1.{k + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.ImagePositionPatient = [-83.9063, -91.2, z]
    return ds


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",  # explicit VR little endian
        "MR_small_implicit.dcm",  # implicit VR little endian
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_expb.dcm",  # explicit VR big endian (another writer)
        "MR_small_RLE.dcm",  # RLE lossless, decoded by pydicom itself
        "MR_small_padded.dcm",  # trailing padding after the pixel data
    ],
)
def test_real_transfer_syntaxes_load_identically(name, tmp_path):
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    for k in range(3):
        ds = _as_ct(pydicom.dcmread(get_testdata_file(name)), 0.8 * k, k)
        ds.save_as(tmp_path / f"s{k}.dcm")  # pydicom keeps the original encoding
    written = pydicom.dcmread(tmp_path / "s0.dcm", stop_before_pixels=True)
    assert (
        written.file_meta.TransferSyntaxUID
        == pydicom.dcmread(
            get_testdata_file(name), stop_before_pixels=True
        ).file_meta.TransferSyntaxUID
    )
    ct = read_ct(tmp_path)
    assert ct.image.shape == (3, 64, 64)
    assert ct.image.grid.spacing_mm == pytest.approx((0.3125, 0.3125, 0.8))
    for k in range(3):
        np.testing.assert_array_equal(ct.image.array[k], reference.astype(np.float32) - 1024)


def test_real_compressed_slice_without_plugin_names_file_syntax_and_remedy(tmp_path):
    from pydicom.pixels import get_decoder

    ts = UID("1.2.840.10008.1.2.4.80")  # JPEG-LS lossless
    for k in range(2):
        ds = _as_ct(pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")), 0.8 * k, k)
        ds.save_as(tmp_path / f"s{k}.dcm")
    if get_decoder(ts).is_available:  # a plugin was installed: then it must decode
        ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
        np.testing.assert_array_equal(read_ct(tmp_path).image.array[0], ref - 1024.0)
        return
    with pytest.raises(
        DicomReadError,
        match=r"s0\.dcm': pixel data is compressed as "
        r"JPEG-LS Lossless.*1\.2\.840\.10008\.1\.2\.4\.80"
        r".*Install one of: .*pylibjpeg",
    ):
        read_ct(tmp_path)


@pytest.mark.parametrize("encoding", ["implicit", "deflated", "big_endian", "rle"])
def test_transfer_syntaxes_round_trip(encoding, ct_copy, small_phantom_patient):
    from pydicom import uid

    for path in sorted(ct_copy.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if encoding == "implicit":
            ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
            ds.save_as(path, implicit_vr=True, little_endian=True)
        elif encoding == "deflated":
            ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
            ds.save_as(path)
        elif encoding == "big_endian":
            ds.PixelData = ds.pixel_array.astype(">i2").tobytes()
            ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
            dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
        else:
            ds.compress(uid.RLELossless)
            ds.save_as(path)
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)
    assert ct.image.grid == small_phantom_patient.ct.grid


def test_files_without_preamble_are_read_and_junk_is_ignored(ct_copy, small_phantom_patient):
    for path in sorted(ct_copy.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        # A bare data set, as old systems write it: no preamble, no 'DICM', no meta group.
        ds.preamble = None
        del ds.file_meta
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert buf.getvalue()[:2] == b"\x08\x00"
        path.with_suffix("").write_bytes(buf.getvalue())
        path.unlink()
    (ct_copy / "notes").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))  # not DICOM, no suffix
    assert sniff(ct_copy / "CT.0001") == "raw"
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)


def sniff(path):
    from rtplan.io._dicom_common import sniff_dicom

    return sniff_dicom(path)


def test_sniffing_real_files():
    assert sniff(get_testdata_file("rtstruct.dcm")) == "raw"  # implicit VR, no preamble
    assert sniff(get_testdata_file("ExplVR_BigEndNoMeta.dcm")) == "raw"
    assert sniff(get_testdata_file("ExplVR_LitEndNoMeta.dcm")) == "raw"
    assert sniff(get_testdata_file("CT_small.dcm")) == "part10"
    assert sniff(get_testdata_file("rtplan.dump")) is None  # a text dump
    assert sniff(get_testdata_file("zipMR.gz")) is None


def test_localizers_and_secondary_captures_are_skipped(ct_copy, small_phantom_patient):
    src = sorted(ct_copy.glob("*.dcm"))[0]
    # A localizer in its own series, as scanners store the topogram.
    ds = pydicom.dcmread(src)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(ct_copy / "scout.dcm")
    # A dose-report screen capture with Modality CT (Secondary Capture SOP class).
    ds = pydicom.dcmread(src)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(ct_copy / "dose_report.dcm")
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)


def test_non_axial_image_inside_the_series_is_skipped_with_a_warning(
    ct_copy, small_phantom_patient
):
    ds = pydicom.dcmread(sorted(ct_copy.glob("*.dcm"))[0])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal, ImageType not LOCALIZER
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(ct_copy / "sagittal.dcm")
    with pytest.warns(DicomWarning, match=r"Skipped 1 image.*not axial.*sagittal\.dcm"):
        ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)


def test_only_enhanced_ct_is_refused_naming_the_sop_class(ct_copy, tmp_path):
    enhanced = "1.2.840.10008.5.1.4.1.1.2.1"
    ds = pydicom.dcmread(sorted(ct_copy.glob("*.dcm"))[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = enhanced
    ds.NumberOfFrames = 1
    only = tmp_path / "enhanced"
    only.mkdir()
    ds.save_as(only / "multiframe.dcm")
    with pytest.raises(
        SeriesError,
        match=r"Enhanced CT Image Storage \(1\.2\.840\.10008\.5\.1"
        r"\.4\.1\.1\.2\.1\).*multiframe\.dcm.*one file per",
    ):
        read_ct(only)
    ds.save_as(ct_copy / "multiframe.dcm")  # next to a regular series: skipped
    assert read_ct(ct_copy).image.shape == (12, 40, 40)


@pytest.mark.parametrize("keyword", ["RescaleIntercept", "RescaleSlope"])
def test_missing_rescale_is_refused(keyword, ct_copy):
    # Type 1 in the CT Image module (PS3.3 C.8.2.1): no default is guessed.
    rewrite(ct_copy, lambda ds, i: delattr(ds, keyword) if i == 4 else None)
    tag = {"RescaleIntercept": r"\(0028,1052\)", "RescaleSlope": r"\(0028,1053\)"}[keyword]
    with pytest.raises(DicomReadError, match=rf"CT\.0005\.dcm' lacks {tag} {keyword}.*Type 1"):
        read_ct(ct_copy)


def test_missing_slice_thickness_is_not_needed(ct_copy, small_phantom_patient):
    rewrite(ct_copy, lambda ds, i: delattr(ds, "SliceThickness"))
    ct = read_ct(ct_copy)
    assert ct.image.grid == small_phantom_patient.ct.grid


@pytest.mark.parametrize("signed", [False, True])
def test_12_bit_pixels_signed_and_unsigned(signed, ct_copy, small_phantom_patient):
    hu = small_phantom_patient.ct.array.astype(np.int32)

    def to_12_bit(ds, i):
        ds.BitsStored, ds.HighBit = 12, 11
        if signed:
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "0"
            # 12-bit two's complement with junk in the 4 unused high bits.
            stored = (hu[i] & 0x0FFF) | 0xA000
            ds.PixelData = stored.astype("<u2").tobytes()
        else:
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = "-1024"
            stored = (hu[i] + 1024) | 0xF000  # overlay bits set above bit 11
            ds.PixelData = stored.astype("<u2").tobytes()

    rewrite(ct_copy, to_12_bit)
    np.testing.assert_array_equal(read_ct(ct_copy).image.array, hu)


def test_non_square_matrix_and_pixels(tmp_path):
    base = make_phantom(
        "multitarget", pixel_spacing_mm=4.0, slice_spacing_mm=5.0, matrix_size=(30, 20), n_slices=4
    )
    grid = rtplan_grid(base.ct.grid.shape, (-58.0, -57.0, -7.5), (4.0, 6.0, 5.0))
    hu = np.full(grid.shape, -1000.0, np.float32)
    hu[2, 15, 3] = 500.0  # z index 2, row (y) 15, column (x) 3
    written = write_patient(
        dataclasses.replace(base, ct=Image(hu, grid), structures={}), tmp_path / "p"
    )
    first = pydicom.dcmread(written.ct_files[0])
    assert (first.Rows, first.Columns) == (20, 30)
    assert [float(v) for v in first.PixelSpacing] == [6.0, 4.0]  # (row, column) spacing
    ct = read_ct(written.ct_dir)
    assert ct.image.grid == grid
    assert tuple(np.argwhere(ct.image.array == 500.0)[0]) == (2, 15, 3)
    np.testing.assert_allclose(
        ct.image.grid.index_to_point((2, 15, 3)),
        (-58.0 + 3 * 4.0, -57.0 + 15 * 6.0, -7.5 + 2 * 5.0),
    )


def rtplan_grid(shape, origin, spacing):
    from rtplan import Grid

    return Grid(shape, origin, spacing)


def test_float_noise_and_long_decimals_in_positions(ct_copy, small_phantom_patient):
    rng = np.random.default_rng(7)
    noise = rng.uniform(-0.004, 0.004, size=12)

    def jitter(ds, i):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        # 20-character values: longer than DS allows (16), as some exporters write them.
        text = [f"{x + 1e-9:.15f}"[:20], f"{y - 1e-9:.15f}"[:20], f"{z + noise[i]:.15f}"[:20]]
        ds["ImagePositionPatient"] = pydicom.DataElement(0x00200032, "DS", "\\".join(text))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the over-long DS on write
        rewrite(ct_copy, jitter)
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)
    np.testing.assert_allclose(ct.image.grid.spacing_mm, (5.0, 5.0, 5.0), atol=1e-3)
    np.testing.assert_allclose(ct.image.grid.origin_mm, (-97.5, -97.5, -27.5), atol=5e-3)


def test_slice_off_the_uniform_grid_beyond_tolerance_is_refused(ct_copy):
    def shift(ds, i):
        if i == 5:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 0.3]  # 0.3 mm > min(0.1, 0.5) mm

    rewrite(ct_copy, shift)
    with pytest.raises(SeriesError, match=r"Non-uniform slice spacing.*0\.300 mm off"):
        read_ct(ct_copy)


def test_instance_numbers_and_file_names_reversed(ct_copy, small_phantom_patient):
    files = sorted(ct_copy.glob("*.dcm"))
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 100 - i  # descending while z ascends
        ds.save_as(ct_copy / f"IMG{len(files) - i:04d}.tmp")
        path.unlink()
    for path in ct_copy.glob("*.tmp"):
        path.rename(path.with_suffix(".dcm"))
    ct = read_ct(ct_copy)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)
    assert ct.sop_instance_uids == small_phantom_patient.ct_sop_instance_uids
    assert ct.files[0].name == "IMG0012.dcm"


def test_orientation_float_noise_accepted_five_degree_tilt_refused(ct_copy, small_phantom_patient):
    rewrite(
        ct_copy,
        lambda ds, i: setattr(
            ds,
            "ImageOrientationPatient",
            ["0.999999999999", "1e-6", "-1e-6", "0.000001", "0.9999999", "-0.000001"],
        ),
    )
    ct = read_ct(ct_copy)
    assert ct.image_orientation_patient == (1, 0, 0, 0, 1, 0)
    np.testing.assert_array_equal(ct.image.array, small_phantom_patient.ct.array)

    c, s = np.cos(np.deg2rad(5)), np.sin(np.deg2rad(5))
    rewrite(
        ct_copy,
        lambda ds, i: setattr(
            ds, "ImageOrientationPatient", ["1", "0", "0", "0", f"{c:.6f}", f"{-s:.6f}"]
        ),
    )
    with pytest.raises(SeriesError, match=r"gantry tilt of about 5\.0°"):
        read_ct(ct_copy)


def test_zero_byte_slice_is_skipped_and_the_gap_reported(ct_copy):
    victim = sorted(ct_copy.glob("*.dcm"))[5]
    victim.write_bytes(b"")
    with (
        pytest.warns(DicomWarning, match=r"empty \(0-byte\).*CT\.0006\.dcm"),
        pytest.raises(SeriesError, match="Missing slice"),
    ):
        read_ct(ct_copy)


def test_read_patient_recursive(tmp_path, small_phantom_dicom):
    import rtplan

    shutil.copytree(small_phantom_dicom.ct_dir, tmp_path / "study" / "series1")
    p = rtplan.read_patient(tmp_path / "study", small_phantom_dicom.rtstruct_path, recursive=True)
    assert p.ct.shape == (12, 40, 40) and "CentralTarget" in p.structures


def test_single_slice_spacing_falls_back_to_absolute_spacing_between_slices(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SliceThickness
    ds.SpacingBetweenSlices = "-2.5"  # negative, as some scanners write it
    ds.save_as(tmp_path / "one.dcm")
    assert read_ct(tmp_path).image.grid.spacing_mm[2] == 2.5
    del ds.SpacingBetweenSlices
    ds.save_as(tmp_path / "one.dcm")
    with pytest.raises(SeriesError, match=r"single CT slice without a positive \(0018,0050\)"):
        read_ct(tmp_path)


def test_real_malformed_files(tmp_path, ct_copy, small_phantom_patient):
    # pydicom's no_meta.dcm starts with a stray byte: no reader can parse it.
    shutil.copy(get_testdata_file("no_meta.dcm"), ct_copy / "no_meta.dcm")
    with pytest.raises(DicomReadError, match=r"no_meta\.dcm' is not a DICOM file"):
        read_ct(ct_copy)
    (ct_copy / "no_meta.dcm").rename(ct_copy / "no_meta")  # without a DICOM suffix: skipped
    np.testing.assert_array_equal(read_ct(ct_copy).image.array, small_phantom_patient.ct.array)
    # UN_sequence.dcm: file meta says CT Image Storage, the data set is a private stub.
    shutil.copy(get_testdata_file("UN_sequence.dcm"), ct_copy / "stub.dcm")
    with pytest.raises(
        DicomReadError,
        match=r"stub\.dcm' lacks the required element "
        r"\(0020,000E\) SeriesInstanceUID",
    ):
        read_ct(ct_copy)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), common for CT
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
        "JPEG2000.dcm",  # JPEG 2000
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
        "MR_small_RLE.dcm",  # RLE: pydicom decodes it itself
    ],
)
def test_pixel_decoder_check_on_real_compressed_files(name):
    from pydicom.pixels import get_decoder

    from rtplan.io._dicom_common import check_pixel_decoder, read_dataset

    path = get_testdata_file(name)
    ds = read_dataset(path, stop_before_pixels=True)
    ts = ds.file_meta.TransferSyntaxUID
    if get_decoder(ts).is_available:
        check_pixel_decoder(ds, path)  # nothing to say
    else:
        with pytest.raises(
            DicomReadError,
            match=rf"{name}': pixel data is compressed as "
            rf".*\({ts}\).*Install one of: ",
        ):
            check_pixel_decoder(ds, path)


def test_real_incomplete_series_reports_the_gap():
    # dicomdirtests/77654033/CT2: 4 slices of a 1.25 mm series, z = -99.48, 103.02, ...
    folder = DICOMDIR_TREE / "77654033"
    with pytest.raises(
        SeriesError,
        match=r"Missing slice.*gap of 202\.50 mm between slice "
        r"positions z = -99\.48 mm and z = 103\.02 mm, where "
        r"the slice spacing is 1\.25 mm \(about 161 slice",
    ):
        read_ct(folder, recursive=True)  # CR images in CR1..CR3 are skipped
