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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dose_engine import Grid

from .._internal.arguments import path_argument, require_instance
from ..errors import DicomReadError, DicomWarning, InputError
from ._dicom_common import floats, int_or, read_dataset, require, stored_pixels
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
    patient_id : str
        (0010,0020) *PatientID* ("" when absent); for comparisons only, never printed
        (left out of ``repr``).
    """

    sop_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    referenced_plan_uid: str | None
    dose_summation_type: str
    dose_type: str
    patient_id: str = field(default="", repr=False)


#: (3004,0014) *TissueHeterogeneityCorrection* enumerated values (PS3.3 C.8.8.3).
TISSUE_HETEROGENEITY_CORRECTIONS = ("IMAGE", "ROI_OVERRIDE", "WATER")


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
    tissue_heterogeneity_correction: str | None = None,
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
    tissue_heterogeneity_correction : {"IMAGE", "ROI_OVERRIDE", "WATER"}, optional
        (3004,0014) *TissueHeterogeneityCorrection* (PS3.3 C.8.8.3, type 3): ``"IMAGE"``
        when the dose was computed on the CT's densities (both of rtplan's engines),
        ``"WATER"`` for an all-water calculation; ``None`` leaves it out.

        .. versionadded:: 0.1.0
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
    path_argument(path, "path")
    require_instance(grid, "grid", Grid, "a dose_engine.Grid")
    if not hasattr(patient, "frame_of_reference_uid"):
        raise TypeError(
            f"`patient` must be an rtplan.Patient (rtplan.read_patient); got "
            f"{type(patient).__name__}."
        )
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

    if tissue_heterogeneity_correction not in (None, *TISSUE_HETEROGENEITY_CORRECTIONS):
        raise InputError(
            "`tissue_heterogeneity_correction` must be one of "
            f"{', '.join(TISSUE_HETEROGENEITY_CORRECTIONS)} or None; got "
            f"{tissue_heterogeneity_correction!r}."
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
    if tissue_heterogeneity_correction is not None:
        ds.TissueHeterogeneityCorrection = tissue_heterogeneity_correction
    if plan_sop_instance_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = plan_sop_instance_uid
        ds.ReferencedRTPlanSequence = [ref]
    ds.PixelData = pixels.tobytes()
    write_dataset(ds, path, overwrite=overwrite)
    log.info("RT-DOSE: grid %s, max %.4g Gy, scaling %.4g Gy", grid.shape, max_gy, scaling)
    return ds


#: (3004,000A) DoseSummationType values whose dose is the whole course of treatment
#: (PS3.3 C.8.8.3.1); any other (FRACTION, BEAM, ...) is read as stored, with a warning.
COURSE_SUMMATION_TYPES = ("PLAN", "MULTI_PLAN")
#: Direction cosines within this of (±1,0,0,0,±1,0) count as axial.
ORIENTATION_TOLERANCE = 1e-4
#: Frame positions agreeing within this (mm) are equal.
FRAME_TOLERANCE_MM = 1e-3


def _dose_orientation(ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of an axial dose grid, each (3,)."""
    require(ds, "ImageOrientationPatient", path, what="RT-DOSE")
    iop = floats(ds, "ImageOrientationPatient", path)
    if iop.shape != (6,):
        raise DicomReadError(
            f"{path}: (0020,0037) ImageOrientationPatient holds {iop.size} values; expected 6."
        )
    row_dir, col_dir = iop[:3], iop[3:]
    if not (
        np.allclose(np.abs(row_dir), [1, 0, 0], atol=ORIENTATION_TOLERANCE)
        and np.allclose(np.abs(col_dir), [0, 1, 0], atol=ORIENTATION_TOLERANCE)
    ):
        raise DicomReadError(
            f"{path}: (0020,0037) ImageOrientationPatient is {iop.tolist()}; only axial dose "
            "grids (±1,0,0,0,±1,0) are supported."
        )
    return np.round(row_dir), np.round(col_dir)


def _frame_z_mm(ds: Dataset, path: Path, ipp_z: float, normal_z: float, n_frames: int):
    """Patient z of each frame, mm, from (3004,000C) *GridFrameOffsetVector*.

    Relative form (first offset 0): frame k lies ``offset[k]`` along the frame normal
    from (0020,0032) *ImagePositionPatient*.  Absolute form (first offset equal to the
    ImagePositionPatient z): the offsets are patient z (PS3.3 C.8.8.3.2).
    """
    offsets = floats(ds, "GridFrameOffsetVector", path)
    if offsets.size == 0:
        require(ds, "GridFrameOffsetVector", path, what="RT-DOSE with several frames")
    if offsets.size != n_frames:
        raise DicomReadError(
            f"{path}: (3004,000C) GridFrameOffsetVector has {offsets.size} values for "
            f"(0028,0008) NumberOfFrames {n_frames}."
        )
    if abs(offsets[0]) <= FRAME_TOLERANCE_MM:
        return ipp_z + offsets * normal_z
    if abs(offsets[0] - ipp_z) <= FRAME_TOLERANCE_MM:
        return offsets
    raise DicomReadError(
        f"{path}: (3004,000C) GridFrameOffsetVector starts at {offsets[0]:g} mm; expected 0 "
        f"(relative) or the (0020,0032) ImagePositionPatient z {ipp_z:g} mm (absolute)."
    )


def _uniform_step_mm(z: np.ndarray, path: Path) -> float:
    """The signed, equal step between frame positions ``z``; refuses unequal steps."""
    steps = np.diff(z)
    if np.any(np.abs(steps) < FRAME_TOLERANCE_MM) or np.ptp(steps) > FRAME_TOLERANCE_MM * max(
        abs(steps[0]), 1.0
    ):
        raise DicomReadError(
            f"{path}: (3004,000C) GridFrameOffsetVector is not equally spaced "
            f"(steps {np.unique(np.round(steps, 4)).tolist()} mm); resample the dose first."
        )
    return float(steps[0])


def _single_frame_thickness_mm(ds: Dataset, path: Path) -> float:
    """Depth of a one-frame dose grid: (0018,0050) *SliceThickness*, which must be > 0."""
    thick = floats(ds, "SliceThickness", path)
    if thick.size == 0 or not thick[0] > 0:
        raise DicomReadError(
            f"{path}: a single-frame RT-DOSE needs a positive (0018,0050) SliceThickness for "
            f"its voxel depth; found {thick.tolist() or 'none'}. Re-export the dose with it."
        )
    return float(thick[0])


def _dose_grid_scaling(ds: Dataset, path: Path) -> float:
    """(3004,000E) *DoseGridScaling*, Gy per stored value: present, finite and > 0."""
    value = floats(ds, "DoseGridScaling", path)
    if value.shape != (1,) or not (np.isfinite(value[0]) and value[0] > 0):
        raise DicomReadError(
            f"{path}: (3004,000E) DoseGridScaling is {value.tolist() or 'missing'}; expected "
            "one positive number (Gy per stored value)."
        )
    return float(value[0])


def _warn_partial_summation(summation: str, path: Path) -> None:
    if summation not in COURSE_SUMMATION_TYPES:
        warnings.warn(
            f"{path}: (3004,000A) DoseSummationType is {summation or '(missing)'!r}, not "
            "PLAN: the dose is read as stored, which is not the whole course of treatment. "
            "Scale it (e.g. by the number of fractions) before comparing it with goals for "
            "the total dose.",
            DicomWarning,
            stacklevel=3,
        )


def read_rtdose(path: str | os.PathLike) -> tuple[np.ndarray, Grid, RtDoseReferences]:
    """Read a DICOM RT-DOSE file into a dose array on an axis-aligned grid.

    Parameters
    ----------
    path : path-like
        An RT-DOSE file (any system): axial, (0020,0037) *ImageOrientationPatient*
        ``(±1,0,0,0,±1,0)``, frames equally spaced, (3004,0002) *DoseUnits* GY.

    Returns
    -------
    dose_gy : (Z, Y, X) ndarray of float64, Gy
        Stored value × (3004,000E) *DoseGridScaling*, flipped so that columns, rows and
        slices increase along patient +x, +y, +z.  The dose is returned as stored, whatever
        its (3004,000A) *DoseSummationType*.
    grid : dose_engine.Grid
        The grid of ``dose_gy`` (origin = centre of voxel ``[0, 0, 0]``).
    refs : RtDoseReferences
        UIDs and summation type of the file.

    Raises
    ------
    rtplan.errors.DicomReadError
        The file is not an RT-DOSE; a required element is missing; the grid is oblique;
        (3004,000C) *GridFrameOffsetVector* is neither relative (first value 0) nor
        absolute (first value = ImagePositionPatient z), unequally spaced or of the wrong
        length; a single frame without a positive (0018,0050) *SliceThickness*; dose units
        other than GY (e.g. RELATIVE); a missing or non-positive DoseGridScaling; pixel
        data that is short, absent or compressed with no decoder installed (the message
        names the package).  Every message names the file and the element.

    Warns
    -----
    DicomWarning
        (3004,000A) *DoseSummationType* other than PLAN or MULTI_PLAN (e.g. FRACTION,
        BEAM): the dose is not the whole course of treatment.

    Notes
    -----
    Pixel values may be 16 or 32 bits, signed or unsigned, in any transfer syntax pydicom
    can decode.  With the relative offset form the frames step along the frame normal
    (row × column direction), so ``(-1,0,0,0,1,0)`` (feet first) frames with positive
    offsets step towards -z; absolute offsets are patient z whatever the orientation.
    """
    path = path_argument(path, "path")
    ds = read_dataset(path, what="RT-DOSE")
    if ds.get("SOPClassUID", "") != RT_DOSE_STORAGE:
        raise DicomReadError(
            f"{path}: (0008,0016) SOPClassUID is {ds.get('SOPClassUID', 'missing')!s}, "
            f"expected RT Dose Storage {RT_DOSE_STORAGE}."
        )
    units = str(require(ds, "DoseUnits", path, what="RT-DOSE")).strip().upper()
    if units != "GY":
        raise DicomReadError(
            f"{path}: (3004,0002) DoseUnits is {units!r}; only absolute dose in GY is "
            "supported. Export the dose in Gy from the planning system."
        )
    row_dir, col_dir = _dose_orientation(ds, path)
    require(ds, "ImagePositionPatient", path, what="RT-DOSE")
    ipp = floats(ds, "ImagePositionPatient", path)
    if ipp.shape != (3,):
        raise DicomReadError(
            f"{path}: (0020,0032) ImagePositionPatient holds {ipp.size} values; expected 3."
        )
    spacing = floats(ds, "PixelSpacing", path)
    if spacing.shape != (2,) or np.any(spacing <= 0):
        raise DicomReadError(
            f"{path}: (0028,0030) PixelSpacing must be two positive numbers; found "
            f"{spacing.tolist()}."
        )
    dy, dx = (float(v) for v in spacing)
    nframes = int_or(ds.get("NumberOfFrames"), 1)
    if nframes < 1:
        raise DicomReadError(f"{path}: (0028,0008) NumberOfFrames is {nframes}; expected ≥ 1.")
    arr = stored_pixels(ds, path, n_frames=nframes).astype(np.float64)
    if nframes > 1:
        normal_z = float(np.cross(row_dir, col_dir)[2])
        z = _frame_z_mm(ds, path, float(ipp[2]), normal_z, nframes)
        dz_signed = _uniform_step_mm(z, path)
    else:
        z = np.array([ipp[2]])
        dz_signed = _single_frame_thickness_mm(ds, path)
    dose = arr * _dose_grid_scaling(ds, path)
    dose_type = str(ds.get("DoseType", "") or "").strip().upper()
    if dose_type != "ERROR" and arr.size and float(arr.min()) < 0:
        k = int(np.argmin(arr))
        raise DicomReadError(
            f"{path}: (7FE0,0010) PixelData holds {int((arr < 0).sum())} negative value(s) "
            f"(minimum {float(dose.flat[k]):.4g} Gy, frame {k // (arr.shape[1] * arr.shape[2])}); "
            f"a dose cannot be negative ((3004,0004) DoseType is {dose_type or '(missing)'}, "
            "not ERROR)."
        )
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
    origin[2] = float(np.min(z))
    grid = Grid((nz, ny, nx), tuple(origin), (dx, dy, abs(dz_signed)))
    summation = str(ds.get("DoseSummationType", "") or "").strip().upper()
    _warn_partial_summation(summation, path)
    plan_uid = None
    if "ReferencedRTPlanSequence" in ds and len(ds.ReferencedRTPlanSequence):
        plan_uid = str(ds.ReferencedRTPlanSequence[0].get("ReferencedSOPInstanceUID", "")) or None
    refs = RtDoseReferences(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        referenced_plan_uid=plan_uid,
        dose_summation_type=summation,
        dose_type=str(ds.get("DoseType", "")),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
    )
    return np.ascontiguousarray(dose), grid, refs
