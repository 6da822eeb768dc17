"""RT-DOSE writer and reader (rtplan.io._rtdose).

Independent checks: pymedphys's own RT-DOSE reader (``zyx_and_dose_from_dataset``)
must see the same dose at the same patient coordinates, and dciodvfy (dicom3tools)
must find no error in the written object.
"""

from __future__ import annotations

import copy
import subprocess
import types

import numpy as np
import pydicom
import pytest
from _dciodvfy import to_16bit_copy
from pydicom.dataset import Dataset

from dose_engine import Grid
from rtplan.errors import DicomReadError, InputError, OutputExistsError
from rtplan.io._rtdose import read_rtdose, write_rtdose
from rtplan.io._uids import new_uid


def fake_patient() -> types.SimpleNamespace:
    """The few attributes of rtplan.Patient the RT-DOSE writer uses."""
    dp = Dataset()
    dp.PatientName = "Phantom^Water"
    dp.PatientID = "PH-0001"
    dp.PatientBirthDate = ""
    dp.PatientSex = "O"
    dp.StudyDate = "20260101"
    dp.StudyTime = "120000"
    dp.ReferringPhysicianName = ""
    dp.StudyID = "1"
    dp.AccessionNumber = ""
    return types.SimpleNamespace(
        dicom_patient=dp, study_instance_uid=new_uid(), frame_of_reference_uid=new_uid()
    )


@pytest.fixture
def dose_case(tmp_path):
    grid = Grid((5, 7, 9), (-12.5, -30.0, 40.0), (2.5, 3.0, 4.0))
    rng = np.random.default_rng(7)
    dose = rng.random(grid.shape) * 60.0
    dose[0, 0, 0] = 0.0
    patient = fake_patient()
    plan_uid = new_uid()
    path = tmp_path / "RD.dcm"
    write_rtdose(path, dose, grid, patient, plan_sop_instance_uid=plan_uid)
    return types.SimpleNamespace(
        path=path, grid=grid, dose=dose, patient=patient, plan_uid=plan_uid
    )


def test_round_trip_values_grid_and_refs(dose_case):
    dose, grid, refs = read_rtdose(dose_case.path)
    assert grid == dose_case.grid
    ds = pydicom.dcmread(dose_case.path)
    scaling = float(ds.DoseGridScaling)
    # Quantisation: half a stored unit; max maps to 2**32-1.
    assert np.max(np.abs(dose - dose_case.dose)) <= 0.5 * scaling * 1.0001
    assert scaling == pytest.approx(dose_case.dose.max() / (2**32 - 1), rel=1e-8)
    assert int(ds.pixel_array.max()) >= 2**32 - 8  # the maximum uses the full 32 bits
    assert refs.referenced_plan_uid == dose_case.plan_uid
    assert refs.frame_of_reference_uid == dose_case.patient.frame_of_reference_uid
    assert refs.study_instance_uid == dose_case.patient.study_instance_uid
    assert (refs.dose_summation_type, refs.dose_type) == ("PLAN", "PHYSICAL")
    assert ds.BitsAllocated == 32 and ds.PixelRepresentation == 0
    assert ds.DoseUnits == "GY" and int(ds.NumberOfFrames) == 5


def test_pymedphys_reader_agrees_on_coordinates_and_dose(dose_case):
    from pymedphys._dicom.dose import zyx_and_dose_from_dataset

    ds = pydicom.dcmread(dose_case.path)
    (z, y, x), dose = zyx_and_dose_from_dataset(copy.deepcopy(ds))
    gz, gy, gx = dose_case.grid.zyx_axes_mm()
    np.testing.assert_allclose(x, gx, atol=1e-6)
    np.testing.assert_allclose(y, gy, atol=1e-6)
    np.testing.assert_allclose(z, gz, atol=1e-6)
    np.testing.assert_allclose(dose, dose_case.dose, atol=1e-6)


def test_reader_flips_a_head_first_prone_grid(dose_case, tmp_path):
    """An HFP-style RT-DOSE (IOP -1,0,0,0,-1,0) reads onto an increasing-axis grid."""
    ds = pydicom.dcmread(dose_case.path)
    g = dose_case.grid
    nz, ny, nx = g.shape
    flipped = dose_case.dose[:, ::-1, ::-1]
    (x0, y0, z0), (dx, dy, _dz) = g.origin_mm, g.spacing_mm
    ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
    ds.ImagePositionPatient = [x0 + (nx - 1) * dx, y0 + (ny - 1) * dy, z0]
    scaling = float(ds.DoseGridScaling)
    ds.PixelData = np.rint(flipped / scaling).astype("<u4").tobytes()
    path = tmp_path / "RD_hfp.dcm"
    ds.save_as(path)
    dose, grid, _ = read_rtdose(path)
    assert grid == g
    np.testing.assert_allclose(dose, dose_case.dose, atol=scaling)


def test_no_overwrite_without_force(dose_case):
    before = dose_case.path.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists.*--force"):
        write_rtdose(
            dose_case.path,
            dose_case.dose,
            dose_case.grid,
            dose_case.patient,
            plan_sop_instance_uid=dose_case.plan_uid,
        )
    assert dose_case.path.read_bytes() == before
    write_rtdose(
        dose_case.path,
        2 * dose_case.dose,
        dose_case.grid,
        dose_case.patient,
        plan_sop_instance_uid=dose_case.plan_uid,
        overwrite=True,
    )
    dose, _, _ = read_rtdose(dose_case.path)
    assert dose.max() == pytest.approx(2 * dose_case.dose.max(), rel=1e-8)


@pytest.mark.parametrize(
    ("dose", "match"),
    [
        (np.zeros((5, 7, 8)), r"shape \(5, 7, 8\).*\(5, 7, 9\)"),
        (-np.ones((5, 7, 9)), "non-negative"),
        (np.full((5, 7, 9), np.nan), "finite"),
    ],
)
def test_bad_dose_refused_and_nothing_written(dose_case, tmp_path, dose, match):
    out = tmp_path / "bad.dcm"
    with pytest.raises(InputError, match=match):
        write_rtdose(out, dose, dose_case.grid, dose_case.patient, plan_sop_instance_uid="1.2.3")
    assert not out.exists()
    assert list(tmp_path.glob(".bad.dcm*")) == []


def test_reader_refuses_non_dose_and_oblique(dose_case, tmp_path):
    ds = pydicom.dcmread(dose_case.path)
    ds.ImageOrientationPatient = [0.866, 0.5, 0, -0.5, 0.866, 0]
    ds.save_as(tmp_path / "oblique.dcm")
    with pytest.raises(DicomReadError, match=r"\(0020,0037\).*axial"):
        read_rtdose(tmp_path / "oblique.dcm")
    ds = pydicom.dcmread(dose_case.path)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(DicomReadError, match="SOPClassUID.*RT Dose Storage"):
        read_rtdose(tmp_path / "ct.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(DicomReadError, match="is not a DICOM file"):
        read_rtdose(tmp_path / "junk.dcm")


def test_tissue_heterogeneity_correction_written_or_refused(dose_case, tmp_path):
    """(3004,0014) TissueHeterogeneityCorrection: an enumerated value (PS3.3 C.8.8.3) is
    written; anything else is refused and nothing is written."""
    path = tmp_path / "RD_image.dcm"
    write_rtdose(
        path,
        dose_case.dose,
        dose_case.grid,
        dose_case.patient,
        plan_sop_instance_uid=dose_case.plan_uid,
        tissue_heterogeneity_correction="IMAGE",
    )
    assert pydicom.dcmread(path).TissueHeterogeneityCorrection == "IMAGE"
    assert "TissueHeterogeneityCorrection" not in pydicom.dcmread(dose_case.path)
    bad = tmp_path / "RD_bad.dcm"
    with pytest.raises(InputError, match="`tissue_heterogeneity_correction` must be one of"):
        write_rtdose(
            bad,
            dose_case.dose,
            dose_case.grid,
            dose_case.patient,
            plan_sop_instance_uid=dose_case.plan_uid,
            tissue_heterogeneity_correction="image",
        )
    assert not bad.exists()


def test_dciodvfy_finds_no_error(dose_case, tmp_path):
    path16 = to_16bit_copy(dose_case.path, tmp_path / "RD16.dcm")
    run = subprocess.run(["dciodvfy", str(path16)], capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    assert "RTDose" in out
    assert "Error" not in out, out
    assert "Warning" not in out, out
    # The 16-bit copy holds the same dose to 2**-16 of the maximum.
    d16 = pydicom.dcmread(path16)
    np.testing.assert_allclose(
        d16.pixel_array * float(d16.DoseGridScaling),
        dose_case.dose,
        atol=dose_case.dose.max() * 2.0**-15,
    )
