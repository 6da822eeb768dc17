"""DICOM input as other planning systems and scanners write it, and malformed input.

Each test builds one variant with pydicom (helpers in ``_other_systems_build``) and
checks what rtplan reads against geometry computed independently: exact volumes of
rectangles whose edges lie on voxel boundaries, and a linear dose field sampled at the
positions PS3.3 C.7.6.2.1.1 and C.8.8.3.2 define for each pixel.
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from _other_systems_build import (
    add_roi,
    contour_item,
    copy_phantom,
    dose_field,
    edit,
    rect,
    write_dose_variant,
)
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate

from rtplan.errors import DicomReadError, DicomWarning, ReferenceMismatchError, SeriesError
from rtplan.io import read_ct, read_patient, read_rtdose

#: Phantom slice planes in ``small_phantom_dicom``: z = -27.5 ... 27.5 every 5 mm, pixel
#: centres every 5 mm from -97.5, so voxel edges lie on multiples of 5 mm.
SLAB_PLANES = (-7.5, -2.5, 2.5, 7.5)
BOX_CC = 4 * 5.0 * 40.0 * 30.0 / 1000.0  # 4 slabs of 5 mm × 40 × 30 mm²
HOLE_CC = 4 * 5.0 * 20.0 * 10.0 / 1000.0


@pytest.fixture
def phantom(small_phantom_dicom, tmp_path):
    return copy_phantom(small_phantom_dicom, tmp_path / "p")


def _box_items(z_order=SLAB_PLANES, hole: bool = False):
    items = [contour_item(rect(-20, -15, 20, 15, z)) for z in z_order]
    if hole:
        items += [contour_item(rect(-10, -5, 10, 5, z)[::-1]) for z in z_order]
    return items


# ------------------------------------------------------------------------------ CT


@pytest.mark.parametrize("position", ["FFS", "HFP", "FFP"])
def test_other_orientations_shuffled_slices_keep_the_geometry(position, phantom):
    """FFS/HFP/FFP orientations, files renamed at random and InstanceNumber scrambled:
    the box lands on the same voxels (exact volume), HU as stored."""
    iop = {"FFS": [-1, 0, 0, 0, 1, 0], "HFP": [-1, 0, 0, 0, -1, 0], "FFP": [1, 0, 0, 0, -1, 0]}
    files = sorted(phantom.ct_dir.glob("*.dcm"))
    rng = np.random.default_rng(3)
    order = rng.permutation(len(files))
    for f, k in zip(files, order, strict=True):
        ds = pydicom.dcmread(f)
        old = np.array([float(v) for v in ds.ImagePositionPatient])
        nx, ny = ds.Columns, ds.Rows
        dy, dx = (float(v) for v in ds.PixelSpacing)
        new_iop = iop[position]
        # First transmitted pixel moves to the other end of each flipped axis.
        x = old[0] if new_iop[0] > 0 else old[0] + (nx - 1) * dx
        y = old[1] if new_iop[4] > 0 else old[1] + (ny - 1) * dy
        plane = ds.pixel_array
        if new_iop[0] < 0:
            plane = plane[:, ::-1]
        if new_iop[4] < 0:
            plane = plane[::-1, :]
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.ImageOrientationPatient = new_iop
        ds.ImagePositionPatient = [f"{x:g}", f"{y:g}", f"{old[2]:g}"]
        ds.PatientPosition = position
        ds.InstanceNumber = int(k) + 1
        f.unlink()
        ds.save_as(phantom.ct_dir / f"IMG{k:05d}")
    edit(phantom.rs, lambda rs: add_roi(rs, 50, "Box", _box_items()))
    patient = read_patient(phantom.ct_dir, phantom.rs)
    assert patient.position == position
    assert patient.structure("Box").volume_cc(patient.grid) == pytest.approx(BOX_CC, rel=1e-9)
    grid = patient.grid
    assert grid.origin_mm == pytest.approx((-97.5, -97.5, -27.5))
    # The body (water, 0 HU) is centred: the centre voxel reads 0 HU, a corner -1000 HU.
    hu = patient.ct.array
    assert hu[6, 20, 20] == pytest.approx(0.0) and hu[0, 0, 0] == pytest.approx(-1000.0)


def test_mixed_folder_with_dicomdir_names_both_series(phantom, small_phantom_dicom):
    """Two CT series, an RT-STRUCT, a random file and a DICOMDIR in one folder."""
    first_uid = pydicom.dcmread(next(phantom.ct_dir.glob("*.dcm"))).SeriesInstanceUID
    second_uid = pydicom.uid.generate_uid()
    for f in sorted(small_phantom_dicom.ct_files):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = second_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(phantom.ct_dir / f"B{f.name}")
    (phantom.ct_dir / "notes.txt").write_text("scanned on CT2\n")
    (phantom.ct_dir / "RS.dcm").write_bytes(phantom.rs.read_bytes())
    dicomdir = get_testdata_file("DICOMDIR")  # a real media directory (pydicom's)
    shutil.copy(dicomdir, phantom.ct_dir / "DICOMDIR")
    with pytest.raises(SeriesError, match=rf"{first_uid}.*{second_uid}|{second_uid}.*{first_uid}"):
        read_ct(phantom.ct_dir)
    ct = read_ct(phantom.ct_dir, series_uid=second_uid)
    assert ct.series_instance_uid == second_uid and len(ct.files) == 12


# ------------------------------------------------------------------------ RT-STRUCT


def test_contours_in_arbitrary_z_order_without_image_references(phantom):
    """Contours listed in scrambled z order and without (3006,0016)
    ContourImageSequence (as several systems write them), a hole drawn as a second
    contour of the same ROI on the same plane (even-odd), trailing spaces in the name."""
    scrambled = (2.5, -7.5, 7.5, -2.5)

    def change(rs):
        add_roi(rs, 50, "Box  ", _box_items(scrambled))
        add_roi(rs, 51, "Ring ", _box_items(scrambled, hole=True))
        for roi in rs.ROIContourSequence:
            for item in roi.get("ContourSequence") or []:
                if "ContourImageSequence" in item:
                    del item.ContourImageSequence

    edit(phantom.rs, change)
    patient = read_patient(phantom.ct_dir, phantom.rs)
    grid = patient.grid
    assert patient.structure("Box").volume_cc(grid) == pytest.approx(BOX_CC, rel=1e-9)
    assert patient.structure("Ring").volume_cc(grid) == pytest.approx(BOX_CC - HOLE_CC, rel=1e-9)


def test_point_open_and_empty_rois_do_not_crash(phantom):
    def change(rs):
        add_roi(rs, 50, "Iso", [contour_item(np.array([[0.0, 0.0, 2.5]]), "POINT")])
        add_roi(rs, 51, "Wire", [contour_item(rect(-20, -15, 20, 15, 2.5)[:3], "OPEN_PLANAR")])
        add_roi(rs, 52, "Planned", None)
        add_roi(rs, 53, "Box", _box_items())

    edit(phantom.rs, change)
    with pytest.warns(DicomWarning) as record:
        patient = read_patient(phantom.ct_dir, phantom.rs)
    text = " ".join(str(w.message) for w in record)
    assert "OPEN_PLANAR contours of Wire ignored" in text
    assert "without contours" in text and "Planned" in text
    assert patient.structure("Iso").is_point
    assert patient.structure("Wire").volume_cc(patient.grid) == 0
    assert patient.structure("Box").volume_cc(patient.grid) == pytest.approx(BOX_CC, rel=1e-9)


def test_frame_of_reference_mismatch_names_file_element_and_both_uids(phantom):
    other = pydicom.uid.generate_uid()

    def change(rs):
        rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = other
        for roi in rs.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = other

    edit(phantom.rs, change)
    ct_for = pydicom.dcmread(next(phantom.ct_dir.glob("*.dcm"))).FrameOfReferenceUID
    with pytest.raises(
        ReferenceMismatchError,
        match=rf"RS\.dcm.*\(3006,0024\) ReferencedFrameOfReferenceUID {other}.*{ct_for}",
    ):
        read_patient(phantom.ct_dir, phantom.rs)


def test_other_patient_id_is_refused_without_printing_ids(phantom):
    edit(phantom.rs, lambda rs: setattr(rs, "PatientID", "SOMEONE-ELSE-42"))
    with pytest.raises(ReferenceMismatchError, match=r"RS\.dcm.*\(0010,0020\) PatientID") as exc:
        read_patient(phantom.ct_dir, phantom.rs)
    message = str(exc.value)
    assert "SOMEONE-ELSE-42" not in message and "RTPLAN-PHANTOM" not in message


def test_missing_patient_id_on_one_side_is_not_a_mismatch(phantom):
    edit(phantom.rs, lambda rs: delattr(rs, "PatientID"))
    patient = read_patient(phantom.ct_dir, phantom.rs)
    assert "Body" in patient.structures


# -------------------------------------------------------------------------- RT-DOSE


def _check_dose(path, *, shape_zyx=(4, 5, 6), rel=1e-5):
    dose, grid, _ = read_rtdose(path)
    assert dose.shape == tuple(shape_zyx)
    z, y, x = grid.zyx_axes_mm()
    pts = np.stack(np.meshgrid(x, y, z, indexing="ij"), axis=-1).transpose(2, 1, 0, 3)
    np.testing.assert_allclose(dose, dose_field(pts), rtol=rel, atol=2e-4)
    return dose, grid


@pytest.mark.parametrize("offsets", ["relative", "absolute"])
@pytest.mark.parametrize("bits", [16, 32])
def test_dose_offsets_forms_and_bit_depths(offsets, bits, tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, offsets=offsets, bits=bits, scaling=1e-3 if bits == 16 else 1e-6)
    _, grid = _check_dose(path)
    assert grid.origin_mm == pytest.approx((-10.0, -20.0, 30.0))
    assert grid.spacing_mm == pytest.approx((2.0, 3.0, 2.5))


@pytest.mark.parametrize(
    "iop", [(-1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0), (1, 0, 0, 0, -1, 0)], ids=str
)
def test_dose_grid_in_other_orientations(iop, tmp_path):
    """Flipped rows/columns; with (-1,0,0,0,1,0) and (1,0,0,0,-1,0) the frame normal is
    -z, so positive relative offsets step towards the feet."""
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, iop=iop)
    _check_dose(path)


def test_absolute_offsets_with_a_minus_z_normal_are_z_positions(tmp_path):
    """Absolute offsets are patient z, whatever the frame normal says."""
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, iop=(-1, 0, 0, 0, 1, 0), frame_step_mm=-2.5, offsets="absolute")
    ds = pydicom.dcmread(path)
    assert [float(v) for v in ds.GridFrameOffsetVector] == [30.0, 27.5, 25.0, 22.5]
    _check_dose(path)


def test_single_frame_dose(tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, shape_zyx=(1, 5, 6))
    _, grid = _check_dose(path, shape_zyx=(1, 5, 6))
    assert grid.spacing_mm[2] == pytest.approx(2.5)  # (0018,0050) SliceThickness


def test_single_frame_dose_without_thickness_is_refused(tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, shape_zyx=(1, 5, 6))
    edit(path, lambda ds: delattr(ds, "SliceThickness"))
    with pytest.raises(DicomReadError, match=r"RD\.dcm.*\(0018,0050\) SliceThickness"):
        read_rtdose(path)


def test_relative_dose_units_are_refused(tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path)
    edit(path, lambda ds: setattr(ds, "DoseUnits", "RELATIVE"))
    with pytest.raises(DicomReadError, match=r"RD\.dcm.*\(3004,0002\) DoseUnits.*RELATIVE"):
        read_rtdose(path)


def test_fraction_dose_is_read_as_stored_and_flagged(tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path, summation="FRACTION")
    with pytest.warns(DicomWarning, match=r"RD\.dcm.*\(3004,000A\) DoseSummationType.*FRACTION"):
        dose, grid, refs = read_rtdose(path)
    assert refs.dose_summation_type == "FRACTION"
    assert dose[0, 0, 0] == pytest.approx(float(dose_field(np.array(grid.origin_mm))), rel=1e-5)


def _non_numeric_scaling(ds):
    tag = pydicom.tag.Tag("DoseGridScaling")
    ds[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)  # as a broken exporter


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda ds: delattr(ds, "PixelData"), r"\(7FE0,0010\) PixelData"),
        (lambda ds: setattr(ds, "NumberOfFrames", 3), r"\(0028,0008\) NumberOfFrames"),
        (
            lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]),
            r"\(0020,0037\) ImageOrientationPatient",
        ),
        (
            lambda ds: setattr(ds, "GridFrameOffsetVector", ["0", "2.5", "6", "7.5"]),
            r"\(3004,000C\) GridFrameOffsetVector",
        ),
        (
            lambda ds: setattr(ds, "GridFrameOffsetVector", ["5", "7.5", "10", "12.5"]),
            r"\(3004,000C\) GridFrameOffsetVector",
        ),
        (lambda ds: setattr(ds, "PixelData", b"\0" * 10), r"\(7FE0,0010\) PixelData"),
        (_non_numeric_scaling, r"\(3004,000E\) DoseGridScaling"),
    ],
    ids=["no-pixels", "frames", "iop-5", "uneven", "offset-start", "short-pixels", "scaling"],
)
def test_malformed_dose_names_file_and_element(change, match, tmp_path):
    path = tmp_path / "RD.dcm"
    write_dose_variant(path)
    edit(path, change)
    with pytest.raises(DicomReadError, match=rf"RD\.dcm.*{match}"):
        read_rtdose(path)


def test_compressed_dose_without_plugin_names_the_package(tmp_path):
    path = tmp_path / "RD.dcm"
    ds = write_dose_variant(path, bits=16, scaling=1e-3)
    frame_bytes = len(ds.PixelData) // 4
    frames = [ds.PixelData[k * frame_bytes : (k + 1) * frame_bytes] for k in range(4)]
    ds.PixelData = encapsulate(frames)  # not real JPEG-LS: it must be refused before decoding
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLSLossless
    ds.save_as(path)
    with pytest.raises(DicomReadError, match=r"RD\.dcm.*JPEG-LS.*(pylibjpeg|gdcm|Install)"):
        read_rtdose(path)


def test_rle_compressed_multiframe_dose(tmp_path):
    """RLE Lossless is decoded by pydicom itself; every frame must land in place."""
    path = tmp_path / "RD.dcm"
    ds = write_dose_variant(path, bits=16, scaling=1e-3)
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(path)
    _check_dose(path)
