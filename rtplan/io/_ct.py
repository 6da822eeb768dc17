"""CT series reader: one axial CT series from a folder → :class:`rtplan.Image` of HU."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dose_engine import Grid

from .._image import Image
from .._patient import PATIENT_POSITIONS
from ..errors import DicomReadError, DicomWarning, InputError, SeriesError
from ._dicom_common import (
    floats,
    has_dicm_prefix,
    patient_study_dataset,
    read_dataset,
    require,
)

__all__ = ["CtSeries", "load_ct"]

logger = logging.getLogger("rtplan.io")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Direction cosines must be within this of ±1 / 0 to count as axial.
ORIENTATION_TOLERANCE = 1e-4
#: Positions and spacings agreeing within this (mm) are equal.
POSITION_TOLERANCE_MM = 0.01


@dataclass(frozen=True, eq=False)
class CtSeries:
    """A loaded CT series.

    Attributes
    ----------
    image : Image
        HU as float32, ``[z, y, x]``, flipped so that indices increase along +x, +y, +z
        (LPS) whatever (0020,0037) *ImageOrientationPatient* said.
    position : {"HFS", "FFS", "HFP", "FFP"}
        (0018,5100) *PatientPosition*.
    image_orientation_patient : (6,) tuple of float
        The series' (0020,0037) as stored (before flipping).
    frame_of_reference_uid, study_instance_uid, series_instance_uid : str
    sop_instance_uids : tuple of str
        Slice order (+z).
    files : tuple of pathlib.Path
        Slice order (+z).
    dicom_patient : pydicom.Dataset
        Patient and General Study module elements only.
    """

    image: Image
    position: str
    image_orientation_patient: tuple
    frame_of_reference_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple
    files: tuple
    dicom_patient: Any


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
    )


def _scan(folder: Path) -> list[tuple[Path, Dataset]]:
    """Read every DICOM file in ``folder`` (pixel data included, read once)."""
    found = []
    for path in _candidate_files(folder):
        is_dcm_name = path.suffix.lower() in (".dcm", ".dicom", ".ima")
        if not has_dicm_prefix(path):
            if is_dcm_name:
                ds = read_dataset(path)  # raises DicomReadError naming the file
            else:
                try:
                    ds = read_dataset(path)
                except DicomReadError:
                    logger.info("ignoring non-DICOM file %s", path.name)
                    continue
        else:
            ds = read_dataset(path)
        found.append((path, ds))
    return found


def _is_ct(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) == CT_IMAGE_STORAGE or ds.get("Modality", "") == "CT"


def _fmt(v) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (rows, columns) as an integer array; checks the length."""
    rows, cols = int(require(ds, "Rows", path)), int(require(ds, "Columns", path))
    bits = int(require(ds, "BitsAllocated", path))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if "PixelData" not in ds:
        raise DicomReadError(
            f"'{path}' has no (7FE0,0010) PixelData; the file is truncated or not an image."
        )
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(ds.pixel_array)
        except Exception as exc:
            raise DicomReadError(
                f"Cannot decode the compressed pixel data of '{path}' (transfer syntax {ts}): "
                f"{exc}. Install a pydicom pixel plugin (pylibjpeg/gdcm) or export uncompressed."
            ) from exc
    if bits not in (8, 16, 32):
        raise DicomReadError(
            f"'{path}': (0028,0100) BitsAllocated is {bits}; expected 8, 16 or 32."
        )
    raw = ds.PixelData
    need = rows * cols * bits // 8
    if len(raw) < need:
        raise DicomReadError(
            f"'{path}' is truncated: (7FE0,0010) PixelData holds {len(raw)} bytes, "
            f"{rows}x{cols} pixels of {bits} bits need {need}. Re-export the file."
        )
    endian = "<" if ds.is_little_endian in (True, None) else ">"
    dtype = np.dtype(f"{endian}{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(rows, cols)
    stored = int(ds.get("BitsStored", bits))
    if stored < bits:
        arr = arr.astype(np.int64)
        if signed:
            shift = 64 - stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << stored) - 1)
    return arr


def load_ct(ct_dir: str | os.PathLike, *, series_uid: str | None = None) -> CtSeries:
    """Load one axial CT series from a folder.

    Non-DICOM files (no ``DICM`` header, no ``.dcm`` suffix) and other modalities
    (RT-STRUCT, RT-PLAN, ...) are ignored.  The slices are sorted along +z, rescaled with
    (0028,1053) *RescaleSlope* / (0028,1052) *RescaleIntercept* to HU, and flipped so the
    grid increases along +x, +y, +z (LPS); the patient position is kept separately.

    Parameters
    ----------
    ct_dir : path
        Folder holding the CT slices (one file per slice).
    series_uid : str, optional
        (0020,000E) *SeriesInstanceUID* to load when the folder holds several CT series.

    Returns
    -------
    CtSeries

    Raises
    ------
    DicomReadError
        A ``.dcm`` file that is not DICOM, a truncated file, or a missing required element.
    SeriesError
        No CT in the folder; several series and no ``series_uid``; oblique or gantry-tilted
        slices; unequal pixel spacing or matrix size; duplicated slice positions; a
        missing slice (the message gives the gap in mm and the positions around it) or
        otherwise non-uniform slice spacing; an unsupported patient position.
    """
    folder = Path(ct_dir)
    if not folder.is_dir():
        raise InputError(f"CT folder '{folder}' does not exist or is not a folder.")
    scanned = _scan(folder)
    cts = [(p, ds) for p, ds in scanned if _is_ct(ds)]
    if not cts:
        raise SeriesError(
            f"No CT image found in '{folder}' ({len(scanned)} DICOM file(s) of other "
            "modalities); expected one file per CT slice (Modality CT)."
        )
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for p, ds in cts:
        uid = str(require(ds, "SeriesInstanceUID", p))
        by_series.setdefault(uid, []).append((p, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise SeriesError(
                f"CT series {series_uid} is not in '{folder}'; found: "
                + "; ".join(f"{u} ({len(v)} slices)" for u, v in by_series.items())
            )
        slices = by_series[series_uid]
    elif len(by_series) > 1:
        raise SeriesError(
            f"'{folder}' mixes {len(by_series)} CT series: "
            + "; ".join(f"{u} ({len(v)} slices)" for u, v in by_series.items())
            + ". Pass series_uid=... (CLI: --series-uid) to choose one, or separate them."
        )
    else:
        slices = next(iter(by_series.values()))
    return _assemble(folder, slices)


def _assemble(folder: Path, slices: list[tuple[Path, Dataset]]) -> CtSeries:
    # --- orientation: axial only, identical in every slice
    iops = np.array([floats(ds, "ImageOrientationPatient", p) for p, ds in slices], dtype=object)
    iop0 = None
    for (p, _), iop in zip(slices, iops, strict=True):
        iop = np.asarray(iop, dtype=float)
        if iop.shape != (6,):
            raise DicomReadError(
                f"'{p}': (0020,0037) ImageOrientationPatient must hold 6 numbers; found "
                f"{iop.size}."
            )
        rounded = np.round(iop)
        axial = (
            np.all(np.abs(iop - rounded) < ORIENTATION_TOLERANCE)
            and abs(rounded[0]) == 1 and abs(rounded[4]) == 1
            and not np.any(rounded[[1, 2, 3, 5]])
        )
        if not axial:
            raise SeriesError(
                f"'{p}': (0020,0037) ImageOrientationPatient is "
                f"{tuple(round(float(v), 5) for v in iop)}, which is not axial; only "
                "(±1,0,0,0,±1,0) is supported. Reformat the series to axial slices."
            )
        if iop0 is None:
            iop0 = rounded
        elif np.any(rounded != iop0):
            raise SeriesError(
                f"'{p}': ImageOrientationPatient {tuple(rounded)} differs from the rest of "
                f"the series {tuple(iop0)}; a series must have one orientation."
            )
    rx, cy = float(iop0[0]), float(iop0[4])

    # --- matrix size and pixel spacing identical
    first_p, first = slices[0]
    rows, cols = int(require(first, "Rows", first_p)), int(require(first, "Columns", first_p))
    spacing0 = floats(first, "PixelSpacing", first_p)
    if spacing0.shape != (2,) or np.any(spacing0 <= 0):
        raise DicomReadError(
            f"'{first_p}': (0028,0030) PixelSpacing must be two positive numbers; found "
            f"{spacing0.tolist()}."
        )
    positions = np.empty((len(slices), 3))
    for i, (p, ds) in enumerate(slices):
        r, c = int(require(ds, "Rows", p)), int(require(ds, "Columns", p))
        if (r, c) != (rows, cols):
            raise SeriesError(
                f"'{p}' is {r}x{c} pixels but '{first_p.name}' is {rows}x{cols}; all slices "
                "of a series must have the same matrix size."
            )
        sp = floats(ds, "PixelSpacing", p)
        if sp.shape != (2,) or np.any(np.abs(sp - spacing0) > 1e-4):
            raise SeriesError(
                f"'{p}' has (0028,0030) PixelSpacing {sp.tolist()} but '{first_p.name}' has "
                f"{spacing0.tolist()}; all slices must have the same pixel spacing."
            )
        ipp = floats(ds, "ImagePositionPatient", p)
        if ipp.shape != (3,):
            raise DicomReadError(
                f"'{p}' lacks a valid (0020,0032) ImagePositionPatient (found {ipp.tolist()})."
            )
        positions[i] = ipp

    # --- sort along the slice normal (z for axial slices) and check the positions
    order = np.argsort(positions[:, 2], kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    xy_dev = np.abs(positions[:, :2] - positions[0, :2]).max(axis=0)
    if np.any(xy_dev > 0.05):
        raise SeriesError(
            f"The slices of '{folder}' do not line up along z: ImagePositionPatient x/y vary by "
            f"up to ({xy_dev[0]:.2f}, {xy_dev[1]:.2f}) mm. This looks like a gantry-tilted "
            "or sheared series, which is not supported; resample it to axial slices."
        )
    z = positions[:, 2]
    if len(z) > 1:
        dzs = np.diff(z)
        dup = np.flatnonzero(dzs < POSITION_TOLERANCE_MM)
        if dup.size:
            i = int(dup[0])
            raise SeriesError(
                f"Duplicated slice position z = {_fmt(float(z[i]))} mm in '{folder}': "
                f"'{slices[i][0].name}' and '{slices[i + 1][0].name}'. Remove the duplicate."
            )
        nominal = float(np.min(dzs))
        gaps = np.flatnonzero(dzs > nominal * 1.5)
        if gaps.size:
            i = int(gaps[0])
            n_missing = int(round(dzs[i] / nominal)) - 1
            raise SeriesError(
                f"Missing slice in '{folder}': a gap of {dzs[i]:.2f} mm between slice "
                f"positions z = {_fmt(float(z[i]))} mm and z = {_fmt(float(z[i + 1]))} mm, "
                f"where the slice spacing is {nominal:.2f} mm (about {n_missing} slice(s) "
                "missing). Re-export the complete series."
            )
        if np.ptp(dzs) > max(POSITION_TOLERANCE_MM, 0.001 * nominal):
            i = int(np.argmax(np.abs(dzs - nominal)))
            raise SeriesError(
                f"Non-uniform slice spacing in '{folder}': {dzs[i]:.3f} mm between z = "
                f"{_fmt(float(z[i]))} and {_fmt(float(z[i + 1]))} mm, {nominal:.3f} mm "
                "elsewhere; resample the series to uniform spacing."
            )
        dz = float(np.mean(dzs))
    else:
        thick = floats(first, "SpacingBetweenSlices", first_p)
        if thick.size == 0:
            thick = floats(first, "SliceThickness", first_p)
        if thick.size == 0 or thick[0] <= 0:
            raise SeriesError(
                f"'{folder}' holds a single CT slice without (0018,0050) SliceThickness; "
                "cannot infer the slice spacing."
            )
        dz = float(thick[0])

    # --- pixel data → HU (vectorised)
    stored = np.empty((len(slices), rows, cols), dtype=np.float32)
    slopes = np.ones(len(slices), dtype=np.float32)
    intercepts = np.zeros(len(slices), dtype=np.float32)
    for i, (p, ds) in enumerate(slices):
        stored[i] = _pixels(ds, p)
        s = floats(ds, "RescaleSlope", p)
        b = floats(ds, "RescaleIntercept", p)
        slopes[i] = s[0] if s.size else 1.0
        intercepts[i] = b[0] if b.size else 0.0
    if np.all(slopes == 1.0):
        hu = stored
    else:
        hu = stored
        hu *= slopes[:, None, None]
    if np.any(intercepts != 0):
        hu += intercepts[:, None, None]

    # --- flip to +x, +y increasing; origin = centre of voxel [0,0,0]
    dy, dx = float(spacing0[0]), float(spacing0[1])  # (row spacing, column spacing)
    x0, y0 = positions[0, 0], positions[0, 1]
    if rx < 0:
        hu = hu[:, :, ::-1]
        x0 = x0 - (cols - 1) * dx
    if cy < 0:
        hu = hu[:, ::-1, :]
        y0 = y0 - (rows - 1) * dy
    hu = np.ascontiguousarray(hu)
    grid = Grid((len(slices), rows, cols), (x0, y0, float(z[0])), (dx, dy, dz))

    # --- identity and consistency of the series
    def same(keyword: str) -> str:
        values = {str(ds.get(keyword, "")) for _, ds in slices}
        if len(values) > 1:
            raise SeriesError(
                f"The CT slices in '{folder}' disagree on {keyword}: {sorted(values)}; a "
                "series must have one value."
            )
        return values.pop()

    for_uid = same("FrameOfReferenceUID")
    if not for_uid:
        raise DicomReadError(
            f"'{first_p}' lacks (0020,0052) FrameOfReferenceUID; re-export the CT with it."
        )
    position = same("PatientPosition")
    if not position:
        warnings.warn(
            f"CT series in '{folder}' has no (0018,5100) PatientPosition; assuming HFS.",
            DicomWarning, stacklevel=3,
        )
        position = "HFS"
    if position not in PATIENT_POSITIONS:
        raise SeriesError(
            f"CT series in '{folder}': (0018,5100) PatientPosition is {position!r}; supported: "
            f"{', '.join(PATIENT_POSITIONS)}."
        )
    logger.info(
        "loaded CT %s: %d slices, %s, %s", same("SeriesInstanceUID"), len(slices), grid, position
    )
    return CtSeries(
        image=Image(hu, grid),
        position=position,
        image_orientation_patient=tuple(float(v) for v in iop0),
        frame_of_reference_uid=for_uid,
        study_instance_uid=same("StudyInstanceUID"),
        series_instance_uid=same("SeriesInstanceUID"),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for _, ds in slices),
        files=tuple(p for p, _ in slices),
        dicom_patient=patient_study_dataset(first),
    )
