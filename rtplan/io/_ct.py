"""CT series reader: one axial CT series from a folder → :class:`rtplan.Image` of HU."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info

from dose_engine import Grid
from dose_engine._limits import check_limit

from .._internal.arguments import path_argument
from .._internal.messages import quote
from ..errors import DicomReadError, DicomWarning, InputError, SeriesError
from ..patient._image import Image
from ..patient._patient import PATIENT_POSITIONS
from ._dicom_common import (
    floats,
    int_or,
    patient_study_dataset,
    read_dataset,
    require,
    sniff_dicom,
    sop_class_uid,
    stored_pixels,
    tag_str,
)

__all__ = ["HU_LIMITS", "HU_LIMIT_VARIABLES", "CtSeries", "current_hu_limits", "read_ct"]

logger = logging.getLogger("rtplan.io")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Direction cosines must be within this of ±1 / 0 to count as axial.
ORIENTATION_TOLERANCE = 1e-4
#: Positions and spacings agreeing within this (mm) are equal.
POSITION_TOLERANCE_MM = 0.01
#: Slices may sit up to min(this, 10 % of the spacing) off a uniform grid (mm).
SLICE_POSITION_TOLERANCE_MM = 0.1
#: Physical CT numbers (HU): below air (minus noise) or above dense metal on an extended
#: scale means the pixel data was decoded wrongly.  Overridable with ``hu_limits=``, or
#: with the environment variables in :data:`HU_LIMIT_VARIABLES` (CLI: ``--limit hu_min=``).
HU_LIMITS = (-1100.0, 20000.0)
#: Environment variables overriding the low and high end of :data:`HU_LIMITS`.
HU_LIMIT_VARIABLES = ("RTPLAN_LIMIT_HU_MIN", "RTPLAN_LIMIT_HU_MAX")


def current_hu_limits() -> tuple[float, float]:
    """:data:`HU_LIMITS`, each end replaced by its variable of :data:`HU_LIMIT_VARIABLES`
    when set (``RTPLAN_LIMIT_HU_MAX=30000``)."""
    ends = []
    for var, default in zip(HU_LIMIT_VARIABLES, HU_LIMITS, strict=True):
        text = os.environ.get(var, "").strip()
        try:
            ends.append(float(text) if text else default)
        except ValueError:
            raise InputError(f"{var}={quote(text, 60)} is not a number of HU.") from None
    lo, hi = ends
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(
            f"{HU_LIMIT_VARIABLES[0]} / {HU_LIMIT_VARIABLES[1]} give {lo:g} .. {hi:g} HU; "
            "they must be finite with low < high."
        )
    return lo, hi


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


#: Enhanced (multi-frame) CT SOP classes: recognised so that they are refused clearly.
MULTIFRAME_CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: File name endings that announce DICOM: such a file that is not DICOM is an error.
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")


def _candidate_files(folder: Path, recursive: bool) -> list[Path]:
    """Regular, non-hidden files of ``folder`` (and of its non-hidden subfolders)."""
    if not recursive:
        subdirs = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if subdirs:
            logger.info(
                "%s: subfolders not searched (recursive=False): %s",
                folder,
                ", ".join(sorted(subdirs)),
            )
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith("."))
    return sorted(p for p in found if p.is_file())


def _sop_name(uid: str) -> str:
    name = pydicom.uid.UID(uid).name if uid else "no SOP class"
    return name if name != uid else f"SOP class {uid}"


@dataclass
class _Scan:
    """What a folder holds: CT slices (read in full) and a census of everything else."""

    cts: list = field(default_factory=list)  # (path, Dataset)
    localizers: list = field(default_factory=list)  # paths
    multiframe: list = field(default_factory=list)  # (path, sop class uid, series uid)
    others: dict = field(default_factory=dict)  # description -> count
    empty: list = field(default_factory=list)  # paths of zero-byte files
    n_files: int = 0


def _scan(folder: Path, recursive: bool = False) -> _Scan:
    """Classify every file of ``folder``; only CT Image Storage objects are read in full.

    Other objects (RT-STRUCT, RT-PLAN, RT-DOSE, DICOMDIR, secondary captures, MR, ...)
    are recognised from their file meta information without reading their data.
    """
    out = _Scan()
    for path in _candidate_files(folder, recursive):
        out.n_files += 1
        kind = sniff_dicom(path)
        if kind == "empty":
            out.empty.append(path)
            continue
        if kind is None:
            if path.suffix.lower() in DICOM_SUFFIXES:
                read_dataset(path)  # raises DicomReadError naming the file
            logger.info("ignoring non-DICOM file %s", path.name)
            out.others["non-DICOM file"] = out.others.get("non-DICOM file", 0) + 1
            continue
        sop = ""
        if kind == "part10":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    meta = read_file_meta_info(path)
                sop = str(meta.get("MediaStorageSOPClassUID", "") or "")
            except Exception:  # unreadable meta: the full read below names the problem
                sop = ""
        if sop and sop != CT_IMAGE_STORAGE and sop not in MULTIFRAME_CT_SOP_CLASSES:
            desc = _sop_name(sop)
            out.others[desc] = out.others.get(desc, 0) + 1
            continue
        ds = read_dataset(path, stop_before_pixels=sop in MULTIFRAME_CT_SOP_CLASSES)
        sop = sop_class_uid(ds)
        if sop in MULTIFRAME_CT_SOP_CLASSES:
            out.multiframe.append((path, sop, str(ds.get("SeriesInstanceUID", ""))))
            continue
        if sop != CT_IMAGE_STORAGE:
            desc = _sop_name(sop)
            if ds.get("Modality"):
                desc += f" (Modality {ds.Modality})"
            out.others[desc] = out.others.get(desc, 0) + 1
            continue
        image_type = [str(v).strip().upper() for v in _as_list(ds.get("ImageType"))]
        if "LOCALIZER" in image_type:
            out.localizers.append(path)
            continue
        n_frames = int_or(ds.get("NumberOfFrames"), 1)
        if n_frames > 1:
            raise SeriesError(
                f"'{path}' is a CT Image Storage object with (0028,0008) NumberOfFrames "
                f"{n_frames}; multi-frame CT is not supported. Export one file per slice."
            )
        out.cts.append((path, ds))
    return out


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _fmt(v) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _axial(iop: np.ndarray) -> bool:
    rounded = np.round(iop)
    return bool(
        np.all(np.abs(iop - rounded) < ORIENTATION_TOLERANCE)
        and abs(rounded[0]) == 1
        and abs(rounded[4]) == 1
        and not np.any(rounded[[1, 2, 3, 5]])
    )


def _orientation(ds: Dataset, p: Path) -> np.ndarray:
    iop = floats(ds, "ImageOrientationPatient", p)
    if iop.shape != (6,):
        raise DicomReadError(
            f"'{p}': (0020,0037) ImageOrientationPatient must hold 6 numbers; found "
            f"{iop.size}. Re-export the CT with its geometry."
        )
    return iop


def _not_axial_message(p: Path, iop: np.ndarray) -> str:
    row, col = iop[:3], iop[3:]
    detail = ""
    if abs(abs(row[0]) - 1) < ORIENTATION_TOLERANCE and abs(col[1]) > 0.5:
        tilt = float(np.degrees(np.arctan2(abs(col[2]), abs(col[1]))))
        detail = f" (a gantry tilt of about {tilt:.1f}°)"
    return (
        f"'{p}': (0020,0037) ImageOrientationPatient is "
        f"{tuple(round(float(v), 5) for v in iop)}, which is not axial{detail}; only "
        f"(±1,0,0,0,±1,0) within {ORIENTATION_TOLERANCE:g} is supported. Reformat the "
        "series to axial slices."
    )


def read_ct(
    ct_dir: str | os.PathLike,
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    hu_limits: tuple[float, float] | None = None,
) -> CtSeries:
    """Load one axial CT series from a folder.

    The folder may hold other things, which are skipped: hidden files (names starting
    with "."), zero-byte files (a :class:`DicomWarning` names them), non-DICOM files
    without a DICOM suffix, DICOMDIR, RT-STRUCT / RT-PLAN / RT-DOSE, secondary captures,
    other modalities, and CT localizer (scout) images ((0008,0008) *ImageType* value
    LOCALIZER).  Only CT Image Storage (1.2.840.10008.5.1.4.1.1.2) objects are used.
    Files without the 128-byte preamble are read when they start like a DICOM data set.
    Implicit and explicit VR little endian, explicit VR big endian, deflated, RLE and (with
    the pydicom plugins installed) JPEG / JPEG-LS / JPEG 2000 transfer syntaxes are read.

    The slices are sorted by position along +z ((0020,0013) *InstanceNumber* and file
    names are ignored), rescaled with (0028,1053) *RescaleSlope* / (0028,1052)
    *RescaleIntercept* to HU, and flipped so the grid increases along +x, +y, +z (LPS);
    the patient position is kept separately.

    Parameters
    ----------
    ct_dir : path
        Folder holding the CT slices (one file per slice).
    series_uid : str, optional
        (0020,000E) *SeriesInstanceUID* to load when the folder holds several CT series.
        Without it, a folder with several series is refused unless exactly one of them
        is axial (the others, e.g. a scout series, are then skipped).
    recursive : bool, optional
        Also search subfolders (default False: subfolders are ignored).

        .. versionadded:: 0.1
    hu_limits : (2,) tuple of float, HU, optional
        Physical range of CT numbers; default :data:`HU_LIMITS`, -1100 .. 20000 HU, or
        what ``RTPLAN_LIMIT_HU_MIN`` / ``RTPLAN_LIMIT_HU_MAX`` say (the CLI's
        ``--limit hu_min=... --limit hu_max=...``).
        A pixel outside it means the file is decoded wrongly (signed data flagged
        unsigned, a wrong rescale, overflow) and stops the load; pixels below the lower
        limit are accepted in slices that declare (0028,0120) *PixelPaddingValue*.

    Returns
    -------
    CtSeries

    Raises
    ------
    DicomReadError
        A file with a DICOM suffix that is not DICOM, a truncated file, a missing required
        element (including (0028,1052) *RescaleIntercept* and (0028,1053) *RescaleSlope*,
        which are Type 1 in the CT Image module, PS3.3 C.8.2.1: no default is assumed), or
        compressed pixel data no installed plugin can decode (the message names the
        transfer syntax and what to install).  Pixel data the header misdescribes:
        (0028,1053) *RescaleSlope* not positive or either rescale value not finite;
        a (7FE0,0010) length that (0028,0100) *BitsAllocated*, Rows and Columns do not
        account for (trailing zero padding aside); (0028,0103) *PixelRepresentation* not
        0/1; (0028,0102) *HighBit* not BitsStored - 1; any pixel outside ``hu_limits``
        (file, value, row and column named).
    dose_engine.ResourceLimitError
        Rows × Columns × slices above ``RTPLAN_LIMIT_IMAGE_VOXELS`` (checked from the
        headers before the volume is allocated).
    TypeError, ValueError
        ``ct_dir`` is not a path; ``hu_limits`` is not two finite numbers low < high.
    SeriesError
        No CT in the folder (the message lists what was found); only multi-frame Enhanced
        CT objects (named by SOP class); several series and no ``series_uid``; oblique or
        gantry-tilted slices; unequal pixel spacing or matrix size; duplicated slice
        positions; a missing slice (the message gives the gap in mm and the positions
        around it) or otherwise non-uniform slice spacing; an unsupported patient position;
        slices with different (0010,0020) *PatientID* (the IDs are not printed).

    Warns
    -----
    DicomWarning
        Zero-byte files skipped; images of the series with a non-axial orientation skipped
        (scouts stored in the axial series); duplicated files (same SOPInstanceUID)
        skipped; no (0018,5100) *PatientPosition* (HFS assumed).

    Notes
    -----
    Tolerances: direction cosines within 1e-4 of (±1,0,0,0,±1,0) count as axial; slice
    positions within min(0.1 mm, 10 % of the slice spacing) of a uniform grid are
    accepted (float noise, rounded (0020,0032) *ImagePositionPatient*); in-plane
    positions may differ by 0.05 mm between slices.
    """
    hu_limits = _check_hu_limits(hu_limits)
    folder = path_argument(ct_dir, "ct_dir")
    if folder.is_file():
        raise InputError(f"CT path '{folder}' is a file; pass the folder that holds the CT slices.")
    if not folder.is_dir():
        raise InputError(f"CT folder '{folder}' does not exist or is not a folder.")
    scan = _scan(folder, recursive)
    if scan.empty:
        warnings.warn(
            f"Skipped {len(scan.empty)} empty (0-byte) file(s) in '{folder}': "
            + ", ".join(p.name for p in scan.empty[:5])
            + (" ..." if len(scan.empty) > 5 else "")
            + ".",
            DicomWarning,
            stacklevel=2,
        )
    if scan.localizers:
        logger.info("%s: %d CT localizer (scout) image(s) skipped", folder, len(scan.localizers))
    cts = scan.cts
    mf_series = {uid for _, _, uid in scan.multiframe}
    if (
        series_uid is not None
        and series_uid in mf_series
        and not any(str(ds.get("SeriesInstanceUID", "")) == series_uid for _, ds in cts)
    ):
        _refuse_multiframe(folder, [m for m in scan.multiframe if m[2] == series_uid])
    if not cts:
        if scan.multiframe:
            _refuse_multiframe(folder, scan.multiframe)
        found = dict(scan.others)
        if scan.localizers:
            found["CT localizer (scout) image"] = len(scan.localizers)
        if scan.empty:
            found["empty file"] = len(scan.empty)
        listing = "; ".join(f"{n} x {d}" for d, n in found.items()) or "no files"
        hint = ""
        if not recursive and any(p.is_dir() for p in folder.iterdir()):
            hint = " Subfolders were not searched; pass recursive=True to search them."
        raise SeriesError(
            f"No CT image found in '{folder}' (found: {listing}); expected one file per "
            f"axial CT slice, SOP class CT Image Storage ({CT_IMAGE_STORAGE}).{hint}"
        )
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for p, ds in cts:
        uid = str(require(ds, "SeriesInstanceUID", p))
        by_series.setdefault(uid, []).append((p, ds))

    def listing() -> str:
        parts = []
        for u, v in by_series.items():
            if _series_is_axial(v):
                kind = "axial"
            elif all(floats(ds, "ImageOrientationPatient", p).size == 0 for p, ds in v):
                kind = "no (0020,0037) ImageOrientationPatient"
            else:
                kind = "not axial"
            parts.append(f"{u} ({len(v)} slices, {kind})")
        return "; ".join(parts)

    if series_uid is not None:
        if series_uid not in by_series:
            raise SeriesError(f"CT series {series_uid} is not in '{folder}'; found: {listing()}")
        slices = by_series[series_uid]
    elif len(by_series) > 1:
        axial = [u for u, v in by_series.items() if _series_is_axial(v)]
        if len(axial) != 1:
            raise SeriesError(
                f"'{folder}' mixes {len(by_series)} CT series: {listing()}. Pass "
                "series_uid=... (CLI: --series-uid) to choose one, or separate them."
            )
        logger.info(
            "%s: using the only axial CT series %s; skipped %s",
            folder,
            axial[0],
            ", ".join(u for u in by_series if u != axial[0]),
        )
        slices = by_series[axial[0]]
    else:
        slices = next(iter(by_series.values()))
    return _assemble(folder, _dedupe(folder, slices), hu_limits)


def _rescale(ds: Dataset, p: Path) -> tuple[float, float]:
    """(0028,1053) *RescaleSlope* and (0028,1052) *RescaleIntercept*, checked."""
    values = []
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        v = floats(ds, keyword, p)
        if v.size == 0:
            raise DicomReadError(
                f"'{p}' lacks {tag_str(keyword)}, which is Type 1 in the CT Image module "
                "(PS3.3 C.8.2.1); without it the stored values cannot be turned into HU "
                "and no default is assumed. Re-export the CT with (0028,1052) "
                "RescaleIntercept and (0028,1053) RescaleSlope."
            )
        if v.size != 1 or not np.isfinite(v[0]):
            raise DicomReadError(
                f"'{p}': {tag_str(keyword)} is {quote(v.tolist())}; expected one finite number."
            )
        values.append(float(v[0]))
    slope, intercept = values
    if not slope > 0:
        raise DicomReadError(
            f"'{p}': (0028,1053) RescaleSlope is {slope:g}; a CT's slope must be positive "
            "(a zero or negative slope inverts or erases the CT numbers)."
        )
    return slope, intercept


def _slice_hu(ds: Dataset, p: Path, hu_limits: tuple[float, float]) -> np.ndarray:
    """One slice's HU (float64), refused when outside ``hu_limits``.

    Pixels below the lower limit are accepted when the slice declares (0028,0120)
    *PixelPaddingValue*: scanners pad outside the reconstruction circle below air
    (e.g. -3024 HU), and lossy compression smears that padding; the density table
    clamps it to air.
    """
    slope, intercept = _rescale(ds, p)
    stored = stored_pixels(ds, p)[0]
    with np.errstate(over="ignore", invalid="ignore"):
        hu = stored.astype(np.float64) * slope + intercept
    lo, hi = hu_limits
    bad = ~np.isfinite(hu) | (hu > hi)
    if "PixelPaddingValue" not in ds:
        bad |= hu < lo
    if np.any(bad):
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DicomReadError(
            f"'{p}': (7FE0,0010) PixelData rescaled by (0028,1053) RescaleSlope {slope:g} and "
            f"(0028,1052) RescaleIntercept {intercept:g} gives {hu[r, c]:g} HU (stored value "
            f"{int(stored[r, c])} at row {r}, column {c}; {int(bad.sum())} pixel(s) outside "
            f"{lo:g} .. {hi:g} HU). A CT holds {lo:g} .. {hi:g} HU; check (0028,0103) "
            "PixelRepresentation, (0028,0100) BitsAllocated and the rescale, or accept a "
            "wider range on purpose: `hu_limits=`, rtplan --limit hu_min=/hu_max= or "
            "RTPLAN_LIMIT_HU_MIN/MAX."
        )
    return hu


def _same_patient(folder: Path, slices: list[tuple[Path, Dataset]]) -> None:
    """Refuse slices of different patients ((0010,0020) *PatientID*; values not shown)."""
    ids: dict[str, Path] = {}
    for p, ds in slices:
        ids.setdefault(str(ds.get("PatientID", "") or "").strip(), p)
    if len(ids) > 1:
        files = sorted(p.name for p in ids.values())
        raise SeriesError(
            f"The CT slices in '{folder}' belong to {len(ids)} different patients by "
            f"(0010,0020) PatientID (values not shown; e.g. '{files[0]}' and '{files[1]}'). "
            "One series holds one patient: separate the files."
        )


def _series_is_axial(slices: list[tuple[Path, Dataset]]) -> bool:
    """True when most images of the series are axial (cheap check, no errors)."""
    n_axial = 0
    for p, ds in slices:
        iop = floats(ds, "ImageOrientationPatient", p)
        n_axial += iop.shape == (6,) and _axial(iop)
    return n_axial > len(slices) / 2


def _refuse_multiframe(folder: Path, items: list) -> None:
    sops = sorted({sop for _, sop, _ in items})
    names = ", ".join(f"{MULTIFRAME_CT_SOP_CLASSES[s]} ({s})" for s in sops)
    raise SeriesError(
        f"'{folder}' holds {len(items)} multi-frame CT object(s) ({names}, e.g. "
        f"'{items[0][0].name}'), which rtplan cannot read yet. Export the CT as single-frame "
        f"CT Image Storage ({CT_IMAGE_STORAGE}), one file per slice."
    )


def _dedupe(folder: Path, slices: list[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    """Drop files repeating a (0008,0018) SOPInstanceUID already seen (copied files)."""
    seen: dict[str, Path] = {}
    out, dropped = [], []
    for p, ds in slices:
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid and uid in seen:
            dropped.append((p, seen[uid]))
            continue
        if uid:
            seen[uid] = p
        out.append((p, ds))
    if dropped:
        warnings.warn(
            f"{len(dropped)} file(s) in '{folder}' repeat the (0008,0018) SOPInstanceUID of "
            f"another slice and were skipped (e.g. '{dropped[0][0].name}' repeats "
            f"'{dropped[0][1].name}').",
            DicomWarning,
            stacklevel=3,
        )
    return out


def _check_hu_limits(hu_limits) -> tuple[float, float]:
    if hu_limits is None:
        return current_hu_limits()
    try:
        lo, hi = (float(v) for v in hu_limits)
    except (TypeError, ValueError):
        raise TypeError(
            f"`hu_limits` must be two numbers (low, high) in HU; got {quote(hu_limits)}."
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"`hu_limits` must be finite with low < high; got ({lo:g}, {hi:g}).")
    return lo, hi


def _assemble(
    folder: Path, slices: list[tuple[Path, Dataset]], hu_limits: tuple[float, float]
) -> CtSeries:
    # --- orientation: axial only, identical in every slice; non-axial images of an
    #     otherwise axial series (scouts stored in the series) are skipped with a warning
    iops = [_orientation(ds, p) for p, ds in slices]
    axial = [_axial(iop) for iop in iops]
    if not any(axial):
        raise SeriesError(_not_axial_message(slices[0][0], iops[0]))
    if not all(axial):
        skipped = [(p, iop) for (p, _), iop, a in zip(slices, iops, axial, strict=True) if not a]
        if len(skipped) >= len(slices) / 2:
            raise SeriesError(_not_axial_message(*skipped[0]))
        warnings.warn(
            f"Skipped {len(skipped)} image(s) of the CT series in '{folder}' whose (0020,0037) "
            f"ImageOrientationPatient is not axial (scout or reformatted images?), e.g. "
            f"'{skipped[0][0].name}' with {tuple(round(float(v), 4) for v in skipped[0][1])}.",
            DicomWarning,
            stacklevel=3,
        )
        slices = [sl for sl, a in zip(slices, axial, strict=True) if a]
        iops = [iop for iop, a in zip(iops, axial, strict=True) if a]
    iop0 = None
    for (p, _), iop in zip(slices, iops, strict=True):
        rounded = np.round(iop)
        if iop0 is None:
            iop0 = rounded
        elif np.any(rounded != iop0):
            raise SeriesError(
                f"'{p}': (0020,0037) ImageOrientationPatient {tuple(rounded)} differs from the "
                f"rest of the series {tuple(iop0)}; a series must have one orientation."
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
        nominal = float(np.median(dzs))
        gaps = np.flatnonzero(dzs > min(nominal, float(np.min(dzs))) * 1.5)
        if gaps.size:
            i = int(gaps[0])
            step = float(np.median(dzs[dzs <= np.min(dzs) * 1.5]))
            n_missing = int(round(dzs[i] / step)) - 1
            raise SeriesError(
                f"Missing slice in '{folder}': a gap of {dzs[i]:.2f} mm between slice "
                f"positions z = {_fmt(float(z[i]))} mm and z = {_fmt(float(z[i + 1]))} mm, "
                f"where the slice spacing is {step:.2f} mm (about {n_missing} slice(s) "
                "missing). Re-export the complete series."
            )
        # Uniformity: every slice within tolerance of the line through the end slices.
        mean_dz = (z[-1] - z[0]) / (len(z) - 1)
        residual = np.abs(z - (z[0] + mean_dz * np.arange(len(z))))
        tolerance = min(SLICE_POSITION_TOLERANCE_MM, 0.1 * mean_dz)
        if residual.max() > tolerance:
            i = int(np.argmax(np.abs(dzs - nominal)))
            raise SeriesError(
                f"Non-uniform slice spacing in '{folder}': {dzs[i]:.3f} mm between z = "
                f"{_fmt(float(z[i]))} and {_fmt(float(z[i + 1]))} mm, {nominal:.3f} mm "
                f"elsewhere (a slice is {residual.max():.3f} mm off a uniform grid; "
                f"tolerance {tolerance:.3f} mm); resample the series to uniform spacing."
            )
        dz = float(np.mean(dzs))
    else:
        # One slice: its nominal thickness is the voxel depth; (0018,0088)
        # SpacingBetweenSlices (sometimes negative, e.g. GE) is the fallback.
        thick = floats(first, "SliceThickness", first_p)
        if thick.size == 0 or not thick[0] > 0:
            thick = np.abs(floats(first, "SpacingBetweenSlices", first_p))
        if thick.size == 0 or not thick[0] > 0:
            raise SeriesError(
                f"'{folder}' holds a single CT slice without a positive (0018,0050) "
                "SliceThickness or (0018,0088) SpacingBetweenSlices; cannot infer the slice "
                "spacing."
            )
        dz = float(thick[0])

    # --- one patient per series (the IDs are never printed)
    _same_patient(folder, slices)

    # --- pixel data → HU, slice by slice, each checked against the physical range
    check_limit(
        "image_voxels",
        float(len(slices)) * rows * cols,
        f"The CT in '{folder}' ({len(slices)} slices of (0028,0010) Rows {rows} × "
        f"(0028,0011) Columns {cols}, {4 * len(slices) * rows * cols / 2**30:.3g} GiB)",
    )
    hu = np.empty((len(slices), rows, cols), dtype=np.float32)
    for i, (p, ds) in enumerate(slices):
        hu[i] = _slice_hu(ds, p, hu_limits)

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
                f"The CT slices in '{folder}' disagree on {tag_str(keyword)}: {sorted(values)}; a "
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
            DicomWarning,
            stacklevel=3,
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
        sop_instance_uids=tuple(str(require(ds, "SOPInstanceUID", p)) for p, ds in slices),
        files=tuple(p for p, _ in slices),
        dicom_patient=patient_study_dataset(first),
    )
