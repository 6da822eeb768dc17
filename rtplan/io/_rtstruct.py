"""RT Structure Set reader → :class:`rtplan.Structure` objects."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dose_engine import Grid

from .._internal.arguments import path_argument
from ..errors import DicomReadError, DicomWarning, InputError, StructureError
from ..structures._rasterize import PLANE_TOLERANCE_MM, group_planes, plane_spacing_mm
from ..structures._structure import Structure
from ._dicom_common import floats, read_dataset, tag_str

__all__ = ["StructureSet", "read_structure_set"]

logger = logging.getLogger("rtplan.io")

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True, eq=False)
class StructureSet:
    """A loaded RT Structure Set (without its CT).

    Attributes
    ----------
    structures : dict of str to Structure
        In (3006,0020) *StructureSetROISequence* order.
    frame_of_reference_uid : str
        The frame the ROIs are drawn in: their common (3006,0024)
        *ReferencedFrameOfReferenceUID*, else the first (3006,0010)
        *ReferencedFrameOfReferenceSequence* > (0020,0052) *FrameOfReferenceUID*.
    referenced_series_uids : tuple of str
        (0020,000E) of the image series the structure set was drawn on; empty when the
        file omits (3006,0012) *RTReferencedStudySequence* (several planning systems do).
    sop_instance_uid, study_instance_uid : str
    path : pathlib.Path
    empty_rois : tuple of str
        Names of ROIs with no contour data (reported by a :class:`DicomWarning`).
    referenced_frame_of_reference_uids : tuple of str
        Every (0020,0052) listed in (3006,0010), in file order.
    frame_of_reference_element : str
        The element :attr:`frame_of_reference_uid` was taken from, as
        ``"(gggg,eeee) Keyword"`` (named in mismatch errors).
    patient_id : str
        (0010,0020) *PatientID* ("" when absent); compared with the CT's, never printed
        (left out of ``repr``).
    patient_name, patient_birth_date : str
        (0010,0010) *PatientName* and (0010,0030) *PatientBirthDate* ("" when absent);
        compared with the CT's when the IDs agree, never printed.
    """

    structures: dict
    frame_of_reference_uid: str
    referenced_series_uids: tuple
    sop_instance_uid: str
    study_instance_uid: str
    path: Path
    empty_rois: tuple = ()
    referenced_frame_of_reference_uids: tuple = ()
    frame_of_reference_element: str = "(3006,0024) ReferencedFrameOfReferenceUID"
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    patient_birth_date: str = field(default="", repr=False)

    def contour_grid(self, *, pixel_spacing_mm: float = 1.0, margin_mm: float = 5.0) -> Grid:
        """A grid covering every contour, for use when no CT is at hand.

        Slices sit on the contour planes (their median spacing); warns with a
        :class:`DicomWarning` because volumes then depend on this assumed grid.
        """
        warnings.warn(
            f"RT-STRUCT '{self.path.name}' was loaded without its CT (series "
            f"{', '.join(self.referenced_series_uids) or 'unknown'}); volumes are computed on "
            f"a {pixel_spacing_mm} mm grid laid on the contour planes instead of the CT grid.",
            DicomWarning,
            stacklevel=2,
        )
        pts = [c for s in self.structures.values() for c in s.contours]
        if not pts:
            raise StructureError(f"RT-STRUCT '{self.path}' has no closed contours to grid.")
        allp = np.concatenate(pts)
        planes, _ = group_planes(np.array([c[0, 2] for c in pts]))
        dz = plane_spacing_mm(planes) or pixel_spacing_mm
        lo = allp.min(axis=0) - margin_mm
        hi = allp.max(axis=0) + margin_mm
        nx = int(np.ceil((hi[0] - lo[0]) / pixel_spacing_mm)) + 1
        ny = int(np.ceil((hi[1] - lo[1]) / pixel_spacing_mm)) + 1
        nz = int(round((planes[-1] - planes[0]) / dz)) + 1
        spacing = (pixel_spacing_mm, pixel_spacing_mm, dz)
        return Grid((nz, ny, nx), (lo[0], lo[1], planes[0]), spacing)


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def read_structure_set(path: str | os.PathLike) -> StructureSet:
    """Read an RT Structure Set.

    Parameters
    ----------
    path : path
        The RT-STRUCT file.

    Returns
    -------
    StructureSet

    Raises
    ------
    DicomReadError
        Not DICOM, truncated, not an RT Structure Set, a required element missing, two
        ROIs with one (3006,0022) *ROINumber*, ROIs on several frames of reference, or no
        frame of reference at all.
    StructureError
        A closed contour with fewer than 3 distinct points or points off its plane;
        (3006,0050) *ContourData* whose length is not a multiple of 3 or disagrees with
        (3006,0046) *NumberOfContourPoints*; a (3006,0039) *ROIContourSequence* item whose
        (3006,0084) *ReferencedROINumber* is not in (3006,0020)
        *StructureSetROISequence* (both named).  Contour messages name the ROI and the
        contour (index in its (3006,0040) *ContourSequence*).

    Warns
    -----
    DicomWarning
        For ROIs without any contour data (they are kept, with no contours); for
        OPEN_PLANAR / OPEN_NONPLANAR contours and unknown geometric types (ignored: they
        enclose no volume); for ROI names used more than once.

    Notes
    -----
    - CLOSED_PLANAR and CLOSEDPLANAR_XOR (DICOM 2020) contours are both kept; the
      contours of one plane are combined by the even-odd rule (a contour inside another
      is a hole), which is exactly the XOR the newer type prescribes.
    - A closing point that repeats the first point is dropped.
    - Duplicate ROI names are not guessed between: every ROI sharing a name is keyed
      (and named) ``"<name> [ROI <number>]"``, so asking for the bare name fails and
      lists the candidates.  An empty (3006,0026) *ROIName* becomes ``"ROI <number>"``.
    - (3006,0012) *RTReferencedStudySequence* is optional here: without it
      :attr:`StructureSet.referenced_series_uids` is empty and only the frame of
      reference is checked against the CT.
    - Names are decoded with (0008,0005) *SpecificCharacterSet* (e.g. ISO_IR 100,
      ISO_IR 192); when the file declares none but a name holds valid UTF-8 bytes, they
      are read as UTF-8 (else as pydicom's default).
    """
    path = path_argument(path, "path")
    if path.is_dir():
        raise InputError(
            f"RT-STRUCT path '{path}' is a folder; pass the RT Structure Set file itself."
        )
    if not path.is_file():
        raise InputError(f"RT-STRUCT file '{path}' does not exist.")
    ds = read_dataset(path, what="RT-STRUCT")
    if ds.get("Modality", "") != "RTSTRUCT" and str(ds.get("SOPClassUID", "")) != (
        RT_STRUCTURE_SET_STORAGE
    ):
        raise DicomReadError(
            f"'{path}' is not an RT Structure Set: Modality is {ds.get('Modality', '')!r} "
            f"(SOP Class {ds.get('SOPClassUID', '')}); expected RTSTRUCT."
        )
    try:
        return _parse(ds, path)
    except (InputError, DicomWarning):
        raise
    except Exception as exc:  # truncated or malformed sequences surface on access
        raise DicomReadError(
            f"Cannot parse RT-STRUCT '{path}': it is truncated or malformed "
            f"({type(exc).__name__}: {exc}). Re-export the file."
        ) from exc


def _roi_name(item: Dataset, undeclared_charset: bool, path: Path) -> str:
    """(3006,0026) *ROIName*; UTF-8 bytes in a file that declares no character set are
    decoded as UTF-8 (several planning systems write them so), not as mojibake."""
    if undeclared_charset and _ROI_NAME in item:
        elem = item.get_item(_ROI_NAME)
        raw = elem.value if isinstance(elem, RawDataElement) else None
        if isinstance(raw, bytes) and any(b > 0x7F for b in raw):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                logger.info(
                    "%s: ROI name bytes decoded as UTF-8 ((0008,0005) "
                    "SpecificCharacterSet is absent)",
                    path.name,
                )
                return text
    return str(item.get("ROIName", "") or "")


_ROI_NAME = Tag(0x3006, 0x0026)

#: (3006,0042) ContourGeometricType values that enclose a volume.  CLOSEDPLANAR_XOR
#: (added to PS3.3 C.8.8.6 in 2020) combines the contours of a plane by exclusive or, which
#: is the even-odd rule rtplan applies to every closed contour of a plane anyway.
CLOSED_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
OPEN_TYPES = ("OPEN_PLANAR", "OPEN_NONPLANAR")


def _frame_of_reference(ds: Dataset, roi_fors: list[str], seq_fors: list[str]) -> tuple[str, str]:
    """The structure set's frame of reference UID and the element it was read from.

    The ROIs' own (3006,0024) decide; else the first (3006,0010) item's (0020,0052); else
    the Frame of Reference module's (0020,0052).  ("", "") when none is present.
    """
    if roi_fors:
        return roi_fors[0], tag_str("ReferencedFrameOfReferenceUID")
    if seq_fors:
        return seq_fors[0], (
            f"{tag_str('ReferencedFrameOfReferenceSequence')} > {tag_str('FrameOfReferenceUID')}"
        )
    uid = str(ds.get("FrameOfReferenceUID", "") or "")
    return (uid, tag_str("FrameOfReferenceUID")) if uid else ("", "")


def _parse(ds: Dataset, path: Path) -> StructureSet:
    ref_for = ds.get("ReferencedFrameOfReferenceSequence") or []
    seq_fors: list[str] = []
    series_uids: list[str] = []
    for item in ref_for:
        uid = str(item.get("FrameOfReferenceUID", "") or "")
        if uid and uid not in seq_fors:
            seq_fors.append(uid)
        for study in item.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uid = str(series.get("SeriesInstanceUID", "") or "")
                if uid and uid not in series_uids:
                    series_uids.append(uid)
    roi_seq = ds.get("StructureSetROISequence")
    if roi_seq is None:
        raise DicomReadError(
            f"'{path}' lacks (3006,0020) StructureSetROISequence; it defines no ROIs."
        )
    names: dict[int, str] = {}
    roi_fors: dict[int, str] = {}
    charset = ds.get("SpecificCharacterSet")
    undeclared_charset = not charset or str(charset).strip() in ("", "ISO_IR 6")
    for i, item in enumerate(roi_seq):
        number = _int(item.get("ROINumber"))
        if number is None:
            raise DicomReadError(
                f"'{path}': item {i} of (3006,0020) StructureSetROISequence has no valid "
                "(3006,0022) ROINumber."
            )
        if number in names:
            raise DicomReadError(
                f"'{path}': (3006,0022) ROINumber {number} is used by two ROIs "
                f"({names[number]!r} and {str(item.get('ROIName', '') or '')!r}); ROI "
                "numbers must be unique."
            )
        name = _roi_name(item, undeclared_charset, path).strip(" \0\t\r\n")
        if not name:
            name = f"ROI {number}"
            logger.info(
                "%s: ROI number %d has an empty (3006,0026) ROIName; called %r",
                path.name,
                number,
                name,
            )
        names[number] = name
        roi_fors[number] = str(item.get("ReferencedFrameOfReferenceUID", "") or "")
    # The ROIs' own (3006,0024) decide the frame; the (3006,0010) sequence may list more
    # frames (e.g. a registered MR) in any order.
    distinct = sorted({u for u in roi_fors.values() if u})
    if len(distinct) > 1:
        by_for = {u: [names[n] for n, f in roi_fors.items() if f == u] for u in distinct}
        raise DicomReadError(
            f"'{path}': the ROIs refer to {len(distinct)} frames of reference ("
            + "; ".join(f"{u}: {', '.join(map(repr, v[:3]))}" for u, v in by_for.items())
            + "); structures on several frames of reference are not supported."
        )
    for_uid, for_element = _frame_of_reference(ds, distinct, seq_fors)
    if not for_uid:
        raise DicomReadError(
            f"'{path}' names no frame of reference: (3006,0010) "
            "ReferencedFrameOfReferenceSequence > (0020,0052) FrameOfReferenceUID and "
            "(3006,0024) ReferencedFrameOfReferenceUID are absent, so the contours cannot "
            "be placed on a CT. Re-export the structure set with them."
        )
    types: dict[int, str] = {}
    for obs in ds.get("RTROIObservationsSequence") or []:
        ref = _int(obs.get("ReferencedROINumber"))
        if ref is not None and ref in names:
            types[ref] = str(obs.get("RTROIInterpretedType", "") or "").strip()
    contours: dict[int, list[np.ndarray]] = {n: [] for n in names}
    points: dict[int, list[np.ndarray]] = {n: [] for n in names}
    colors: dict[int, tuple[int, int, int] | None] = {}
    skipped: dict[str, list[str]] = {}  # geometric type -> ROI names
    for ri, roi in enumerate(ds.get("ROIContourSequence") or []):
        number = _int(roi.get("ReferencedROINumber"))
        if number not in names:
            raise StructureError(
                f"'{path}': item {ri} of (3006,0039) ROIContourSequence refers to (3006,0084) "
                f"ReferencedROINumber {roi.get('ReferencedROINumber')}, which is not in "
                f"(3006,0020) StructureSetROISequence (ROI numbers "
                f"{', '.join(str(n) for n in names) or 'none'}). Re-export the structure set."
            )
        name = names[number]
        color = roi.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            try:
                colors[number] = tuple(int(c) for c in color)
            except (TypeError, ValueError):
                pass
        for ci, item in enumerate(roi.get("ContourSequence") or []):
            where = f"'{path}': ROI '{name}' (number {number}), contour {ci}"
            kind = str(item.get("ContourGeometricType", "") or "CLOSED_PLANAR").strip().upper()
            data = floats(item, "ContourData", path)
            if data.size % 3:
                raise StructureError(
                    f"{where}: (3006,0050) ContourData holds {data.size} values, not a "
                    "multiple of 3 (x, y, z). The file is corrupt; re-export it."
                )
            pts = data.reshape(-1, 3)
            declared = _int(item.get("NumberOfContourPoints"))
            if declared is not None and declared != len(pts):
                raise StructureError(
                    f"{where}: (3006,0046) NumberOfContourPoints is {declared} but (3006,0050) "
                    f"ContourData holds {len(pts)} points. The file is corrupt; re-export it."
                )
            if not np.all(np.isfinite(pts)):
                raise StructureError(f"{where}: (3006,0050) ContourData holds NaN or infinity.")
            if kind == "POINT":
                points[number].append(pts)
            elif kind in CLOSED_TYPES:
                if len(pts) > 3 and np.all(np.abs(pts[-1] - pts[0]) < 1e-6):
                    pts = pts[:-1]  # the closing point repeated explicitly
                if len(pts) < 3:
                    raise StructureError(
                        f"{where} has {len(pts)} point(s) (not counting a repeated closing "
                        f"point); a {kind} contour needs at least 3. Delete or redraw this "
                        "contour."
                    )
                if np.ptp(pts[:, 2]) > PLANE_TOLERANCE_MM:
                    raise StructureError(
                        f"{where} is not on one axial plane (z from {pts[:, 2].min():.2f} to "
                        f"{pts[:, 2].max():.2f} mm); only axial contours are supported."
                    )
                contours[number].append(pts)
            else:
                skipped.setdefault(kind, [])
                if name not in skipped[kind]:
                    skipped[kind].append(name)
    for kind, rois in skipped.items():
        why = (
            "open contours enclose no volume"
            if kind in OPEN_TYPES
            else f"unknown (3006,0042) ContourGeometricType; known: "
            f"{', '.join(CLOSED_TYPES + OPEN_TYPES + ('POINT',))}"
        )
        warnings.warn(
            f"RT-STRUCT '{path.name}': {kind} contours of {', '.join(rois)} ignored ({why}).",
            DicomWarning,
            stacklevel=3,
        )
    structures: dict[str, Structure] = {}
    empty: list[str] = []
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    duplicated = sorted(n for n, c in counts.items() if c > 1)
    for number, name in names.items():
        if counts[name] > 1 or name in structures:
            name = f"{name} [ROI {number}]"
        pts = np.concatenate(points[number]) if points[number] else np.zeros((0, 3))
        s = Structure(
            name=name,
            number=number,
            roi_type=types.get(number, ""),
            color_rgb=colors.get(number),
            contours=contours[number],
            points_mm=pts,
        )
        if s.is_empty:
            empty.append(name)
        structures[name] = s
    if duplicated:
        warnings.warn(
            f"RT-STRUCT '{path.name}': several ROIs share the (3006,0026) ROIName "
            + ", ".join(repr(n) for n in duplicated)
            + "; each is kept under its name followed by its ROI number, e.g. "
            f"{next(k for k in structures if k.startswith(duplicated[0] + ' [ROI'))!r}. "
            "Rename them in the planning system to use them by name.",
            DicomWarning,
            stacklevel=3,
        )
    if empty:
        warnings.warn(
            f"RT-STRUCT '{path.name}': ROI(s) without contours: {', '.join(empty)}; they are "
            "kept but have zero volume.",
            DicomWarning,
            stacklevel=3,
        )
    logger.info("loaded RT-STRUCT %s: %d ROIs", path.name, len(structures))
    return StructureSet(
        structures=structures,
        frame_of_reference_uid=for_uid,
        referenced_series_uids=tuple(series_uids),
        referenced_frame_of_reference_uids=tuple(seq_fors),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        path=path,
        empty_rois=tuple(empty),
        frame_of_reference_element=for_element,
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        patient_name=str(ds.get("PatientName", "") or "").strip(),
        patient_birth_date=str(ds.get("PatientBirthDate", "") or "").strip(),
    )
