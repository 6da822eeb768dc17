"""DICOM RT-DOSE: write a dose distribution on a :class:`~dose_engine.Grid`, read one back.

The RT Dose IOD (PS3.3 A.18) as rtplan writes it: Patient and General Study copied from
the CT, a new RTDOSE series, the CT's Frame of Reference, General Equipment, an axial
multi-frame image (ImageOrientationPatient ``1,0,0,0,1,0``, one frame per dose-grid
slice, (3004,000C) *GridFrameOffsetVector* relative to the first frame), 32-bit
unsigned pixels scaled by (3004,000E) *DoseGridScaling* to Gy, and the RT Dose module
(C.8.8.3) with DoseUnits ``GY``, DoseType ``PHYSICAL``, DoseSummationType ``PLAN`` and
(300C,0002) *ReferencedRTPlanSequence* pointing at the plan.

https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.8.8.3.html
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dose_engine import Grid

from ..errors import DicomReadError, InputError
from ._dicom_common import read_dataset
from ._uids import RT_DOSE_STORAGE, RT_PLAN_STORAGE, base_dataset, write_dataset

__all__ = ["RtDoseReferences", "read_rtdose", "write_rtdose"]

log = logging.getLogger("rtplan.io")

_UINT32_MAX = np.iinfo(np.uint32).max


@dataclass(frozen=True)
class RtDoseReferences:
    """What an RT-DOSE file says about itself and the objects it belongs to.

    Attributes
    ----------
    sop_instance_uid : str
        (0008,0018) of the RT-DOSE.
    frame_of_reference_uid : str
        (0020,0052) *FrameOfReferenceUID*.
    study_instance_uid : str
        (0020,000D) *StudyInstanceUID*.
    referenced_plan_uid : str or None
        (0008,1155) inside (300C,0002) *ReferencedRTPlanSequence*, if present.
    dose_summation_type : str
        (3004,000A) *DoseSummationType*, e.g. ``"PLAN"``.
    dose_type : str
        (3004,0004) *DoseType*, e.g. ``"PHYSICAL"``.
    """

    sop_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    referenced_plan_uid: str | None
    dose_summation_type: str
    dose_type: str


def _ds_str(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``."""
    text = f"{value:.10g}"
    if len(text) > 16:
        text = f"{value:.8e}"
    return text


def write_rtdose(
    path: str | os.PathLike,
    dose_gy,
    grid: Grid,
    patient,
    *,
    plan_sop_instance_uid: str | None,
    dose_summation_type: str = "PLAN",
    series_description: str = "rtplan dose",
    comment: str = "",
    overwrite: bool = False,
) -> Dataset:
    """Write ``dose_gy`` on ``grid`` as a DICOM RT-DOSE file.

    Parameters
    ----------
    path : path-like
        Output file; written atomically.
    dose_gy : (Z, Y, X) array_like of float, Gy
        Dose at the voxel centres of ``grid`` (the total plan dose, all fractions,
        unless ``dose_summation_type`` says otherwise). Must be finite and ≥ 0.
    grid : dose_engine.Grid
        Axis-aligned dose grid in DICOM patient coordinates (LPS, mm); columns, rows and
        slices increase along +x, +y, +z.
    patient : rtplan.Patient
        Supplies the Patient/General Study elements, StudyInstanceUID and
        FrameOfReferenceUID of the CT.
    plan_sop_instance_uid : str or None
        SOPInstanceUID of the RT-PLAN this dose belongs to, written to (300C,0002)
        *ReferencedRTPlanSequence* (required by DICOM when the summation type is PLAN).
    dose_summation_type : {"PLAN", "FRACTION", "BEAM"}
        (3004,000A) *DoseSummationType*.
    series_description : str
        (0008,103E).
    comment : str
        (3004,0006) *DoseComment* (LO: cut to 64 characters).
    overwrite : bool
        Replace an existing ``path`` (the CLI's ``--force``).

    Returns
    -------
    pydicom.Dataset
        The dataset written.

    Raises
    ------
    rtplan.errors.InputError
        If the dose array does not match the grid, is negative or not finite.
    rtplan.errors.OutputExistsError
        If ``path`` exists and ``overwrite`` is false.

    Notes
    -----
    Pixels are (0028,0100) *BitsAllocated* 32, unsigned; the stored value times
    (3004,000E) *DoseGridScaling* is the dose in Gy, with the maximum dose mapped to
    ``2**32 - 1`` (relative quantisation ≈ 2.3e-10).
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    if dose.ndim != 3 or tuple(dose.shape) != tuple(grid.shape):
        raise InputError(
            f"`dose_gy` has shape {dose.shape} but `grid` describes {tuple(grid.shape)} voxels "
            "(nz, ny, nx); compute the dose on the same grid."
        )
    finite = np.isfinite(dose)
    if not np.all(finite) or dose.min() < 0:
        low = float(dose[finite].min()) if finite.any() else float("nan")
        raise InputError(
            f"`dose_gy` must be finite and non-negative; found min {low:.4g} Gy "
            f"and {int(np.sum(~finite))} non-finite voxels."
        )
    summation = str(dose_summation_type).upper()
    if summation not in ("PLAN", "FRACTION", "BEAM"):
        raise InputError(
            "`dose_summation_type` must be 'PLAN', 'FRACTION' or 'BEAM'; got "
            f"{dose_summation_type!r}."
        )
    if summation == "PLAN" and not plan_sop_instance_uid:
        raise InputError(
            "`plan_sop_instance_uid` is required for a PLAN dose: DICOM needs (300C,0002) "
            "ReferencedRTPlanSequence; pass the RT-PLAN's SOPInstanceUID."
        )

    max_gy = float(dose.max())
    # The scaling is stored as a DS string: quantise with the value that is stored,
    # rounded up so that the maximum still fits in 32 bits.
    scaling_text = _ds_str(max_gy / _UINT32_MAX * (1 + 1e-9)) if max_gy > 0 else "1"
    scaling = float(scaling_text)
    pixels = np.rint(dose / scaling).clip(0, _UINT32_MAX).astype("<u4")

    ds = base_dataset(
        patient,
        sop_class_uid=RT_DOSE_STORAGE,
        modality="RTDOSE",
        series_description=series_description,
        series_number=902,
    )
    nz, ny, nx = grid.shape
    (x0, y0, z0), (dx, dy, dz) = grid.origin_mm, grid.spacing_mm
    # Image Plane (C.7.6.2) / Multi-frame (C.7.6.6) / Image Pixel (C.7.6.3).
    ds.ImagePositionPatient = [_ds_str(x0), _ds_str(y0), _ds_str(z0)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]  # row spacing, column spacing
    ds.SliceThickness = _ds_str(dz)
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.GridFrameOffsetVector = [_ds_str(k * dz) for k in range(nz)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    # RT Dose (C.8.8.3).
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseGridScaling = scaling_text
    if comment:
        ds.DoseComment = comment[:64]  # LO: at most 64 characters
    if plan_sop_instance_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = plan_sop_instance_uid
        ds.ReferencedRTPlanSequence = [ref]
    ds.PixelData = pixels.tobytes()
    write_dataset(ds, path, overwrite=overwrite)
    log.info("RT-DOSE: grid %s, max %.4g Gy, scaling %.4g Gy", grid.shape, max_gy, scaling)
    return ds


def _require(ds: Dataset, keyword: str, tag: str, path: Path):
    if keyword not in ds or ds[keyword].value in (None, ""):
        raise DicomReadError(f"{path}: RT-DOSE lacks {tag} {keyword}, which is required.")
    return ds[keyword].value


def read_rtdose(path: str | os.PathLike) -> tuple[np.ndarray, Grid, RtDoseReferences]:
    """Read a DICOM RT-DOSE file into a dose array on an axis-aligned grid.

    Parameters
    ----------
    path : path-like
        An RT-DOSE file (any system): axial, ImageOrientationPatient ``(±1,0,0,0,±1,0)``,
        (3004,000C) *GridFrameOffsetVector* equally spaced, DoseUnits GY.

    Returns
    -------
    dose_gy : (Z, Y, X) ndarray of float64, Gy
        Stored value × (3004,000E) *DoseGridScaling*, flipped so that columns, rows and
        slices increase along patient +x, +y, +z.
    grid : dose_engine.Grid
        The grid of ``dose_gy`` (origin = centre of voxel ``[0, 0, 0]``).
    refs : RtDoseReferences
        UIDs and summation type of the file.

    Raises
    ------
    rtplan.errors.DicomReadError
        If the file is not an RT-DOSE, lacks a required element, is oblique, has
        unequal frame offsets or dose units other than GY.
    """
    path = Path(path)
    ds = read_dataset(path, what="RT-DOSE")
    if ds.get("SOPClassUID", "") != RT_DOSE_STORAGE:
        raise DicomReadError(
            f"{path}: (0008,0016) SOPClassUID is {ds.get('SOPClassUID', 'missing')!s}, "
            f"expected RT Dose Storage {RT_DOSE_STORAGE}."
        )
    units = str(_require(ds, "DoseUnits", "(3004,0002)", path)).upper()
    if units != "GY":
        raise DicomReadError(
            f"{path}: (3004,0002) DoseUnits is {units!r}; only absolute dose in GY is supported."
        )
    iop = np.asarray(_require(ds, "ImageOrientationPatient", "(0020,0037)", path), float)
    row_dir, col_dir = iop[:3], iop[3:]
    if not (
        np.allclose(np.abs(row_dir), [1, 0, 0], atol=1e-4)
        and np.allclose(np.abs(col_dir), [0, 1, 0], atol=1e-4)
    ):
        raise DicomReadError(
            f"{path}: (0020,0037) ImageOrientationPatient is {iop.tolist()}; only axial dose "
            "grids (±1,0,0,0,±1,0) are supported."
        )
    ipp = np.asarray(_require(ds, "ImagePositionPatient", "(0020,0032)", path), float)
    dy, dx = (float(v) for v in _require(ds, "PixelSpacing", "(0028,0030)", path))
    arr = ds.pixel_array.astype(np.float64)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.shape[0] != nframes:
        raise DicomReadError(f"{path}: pixel data has {arr.shape[0]} frames, expected {nframes}.")
    if nframes > 1:
        offsets = np.asarray(_require(ds, "GridFrameOffsetVector", "(3004,000C)", path), float)
        if offsets.size != nframes:
            raise DicomReadError(
                f"{path}: (3004,000C) GridFrameOffsetVector has {offsets.size} values for "
                f"{nframes} frames."
            )
        steps = np.diff(offsets)
        if abs(offsets[0]) > 1e-3 and abs(offsets[0] - ipp[2]) > 1e-3:
            raise DicomReadError(
                f"{path}: (3004,000C) GridFrameOffsetVector starts at {offsets[0]} mm; expected 0 "
                "(relative) or the ImagePositionPatient z (absolute)."
            )
        if abs(offsets[0]) > 1e-3:
            offsets = offsets - offsets[0]
        if np.any(np.abs(steps) < 1e-6) or np.ptp(steps) > 1e-3 * max(abs(steps[0]), 1.0):
            raise DicomReadError(
                f"{path}: (3004,000C) GridFrameOffsetVector is not equally spaced "
                f"(steps {np.unique(np.round(steps, 4)).tolist()} mm); resample the dose first."
            )
        dz_signed = float(steps[0]) * float(np.sign(np.cross(row_dir, col_dir)[2]))
    else:
        dz_signed = float(ds.get("SliceThickness", 1.0) or 1.0)
    scaling = float(ds.get("DoseGridScaling", 1.0) or 1.0)
    dose = arr * scaling
    # Flip axes so that indices increase along +x, +y, +z.
    nz, ny, nx = dose.shape
    origin = ipp.copy()
    if row_dir[0] < 0:
        dose = dose[:, :, ::-1]
        origin[0] = ipp[0] - (nx - 1) * dx
    if col_dir[1] < 0:
        dose = dose[:, ::-1, :]
        origin[1] = ipp[1] - (ny - 1) * dy
    if dz_signed < 0:
        dose = dose[::-1]
        origin[2] = ipp[2] + (nz - 1) * dz_signed
    grid = Grid((nz, ny, nx), tuple(origin), (dx, dy, abs(dz_signed)))
    plan_uid = None
    if "ReferencedRTPlanSequence" in ds and len(ds.ReferencedRTPlanSequence):
        plan_uid = str(ds.ReferencedRTPlanSequence[0].get("ReferencedSOPInstanceUID", "")) or None
    refs = RtDoseReferences(
        sop_instance_uid=str(ds.SOPInstanceUID),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        referenced_plan_uid=plan_uid,
        dose_summation_type=str(ds.get("DoseSummationType", "")),
        dose_type=str(ds.get("DoseType", "")),
    )
    return np.ascontiguousarray(dose), grid, refs
