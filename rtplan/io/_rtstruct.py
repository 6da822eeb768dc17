"""RT Structure Set reader → :class:`rtplan.Structure` objects."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dose_engine import Grid

from .._patient import Structure
from .._rasterize import group_planes, plane_spacing_mm
from ..errors import DicomReadError, DicomWarning, InputError, StructureError
from ._dicom_common import floats, read_dataset

__all__ = ["StructureSet", "load_structure_set"]

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
        (3006,0010) > (0020,0052) of the first referenced frame of reference.
    referenced_series_uids : tuple of str
        (0020,000E) of the image series the structure set was drawn on.
    sop_instance_uid, study_instance_uid : str
    path : pathlib.Path
    empty_rois : tuple of str
        Names of ROIs with no contour data (reported by a :class:`DicomWarning`).
    """

    structures: dict
    frame_of_reference_uid: str
    referenced_series_uids: tuple
    sop_instance_uid: str
    study_instance_uid: str
    path: Path
    empty_rois: tuple = ()

    def contour_grid(self, *, pixel_spacing_mm: float = 1.0, margin_mm: float = 5.0) -> Grid:
        """A grid covering every contour, for use when no CT is at hand.

        Slices sit on the contour planes (their median spacing); warns with a
        :class:`DicomWarning` because volumes then depend on this assumed grid.
        """
        warnings.warn(
            f"RT-STRUCT '{self.path.name}' was loaded without its CT (series "
            f"{', '.join(self.referenced_series_uids) or 'unknown'}); volumes are computed on "
            f"a {pixel_spacing_mm} mm grid laid on the contour planes instead of the CT grid.",
            DicomWarning, stacklevel=2,
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


def load_structure_set(path: str | os.PathLike) -> StructureSet:
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
        Not DICOM, truncated, not an RT Structure Set, or a required element missing.
    StructureError
        A CLOSED_PLANAR contour with fewer than 3 points or points off its plane; the
        message names the ROI and the contour (index in its (3006,0040) ContourSequence).

    Warns
    -----
    DicomWarning
        For ROIs without any contour data (they are kept, with no contours), and for
        OPEN_PLANAR / OPEN_NONPLANAR contours (ignored: they enclose no volume).
    """
    path = Path(path)
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


def _parse(ds: Dataset, path: Path) -> StructureSet:
    ref_for = ds.get("ReferencedFrameOfReferenceSequence") or []
    for_uid = ""
    series_uids: list[str] = []
    for item in ref_for:
        for_uid = for_uid or str(item.get("FrameOfReferenceUID", ""))
        for study in item.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uid = str(series.get("SeriesInstanceUID", ""))
                if uid and uid not in series_uids:
                    series_uids.append(uid)
    roi_seq = ds.get("StructureSetROISequence")
    if roi_seq is None:
        raise DicomReadError(
            f"'{path}' lacks (3006,0020) StructureSetROISequence; it defines no ROIs."
        )
    names: dict[int, str] = {}
    for item in roi_seq:
        number = _int(item.get("ROINumber"))
        if number is None:
            raise DicomReadError(f"'{path}': an ROI in (3006,0020) has no (3006,0022) ROINumber.")
        names[number] = str(item.get("ROIName", f"ROI {number}"))
        roi_for = str(item.get("ReferencedFrameOfReferenceUID", ""))
        for_uid = for_uid or roi_for
        if roi_for and for_uid and roi_for != for_uid:
            raise DicomReadError(
                f"'{path}': ROI '{names[number]}' refers to frame of reference {roi_for} but "
                f"the structure set to {for_uid}; mixed frames are not supported."
            )
    types: dict[int, str] = {}
    for obs in ds.get("RTROIObservationsSequence") or []:
        ref = _int(obs.get("ReferencedROINumber"))
        if ref is not None:
            types[ref] = str(obs.get("RTROIInterpretedType", "") or "")
    contours: dict[int, list[np.ndarray]] = {n: [] for n in names}
    points: dict[int, list[np.ndarray]] = {n: [] for n in names}
    colors: dict[int, tuple[int, int, int] | None] = {}
    open_rois: list[str] = []
    for roi in ds.get("ROIContourSequence") or []:
        number = _int(roi.get("ReferencedROINumber"))
        if number not in names:
            logger.info("%s: ROIContourSequence item for unknown ROI %s ignored", path.name, number)
            continue
        name = names[number]
        color = roi.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            colors[number] = tuple(int(c) for c in color)
        for ci, item in enumerate(roi.get("ContourSequence") or []):
            kind = str(item.get("ContourGeometricType", "CLOSED_PLANAR"))
            data = floats(item, "ContourData", path)
            if data.size % 3:
                raise StructureError(
                    f"'{path}': ROI '{name}' (number {number}), contour {ci}: (3006,0050) "
                    f"ContourData holds {data.size} values, not a multiple of 3 (x, y, z)."
                )
            pts = data.reshape(-1, 3)
            if kind == "POINT":
                points[number].append(pts)
            elif kind == "CLOSED_PLANAR":
                if len(pts) < 3:
                    raise StructureError(
                        f"'{path}': ROI '{name}' (number {number}), contour {ci} has "
                        f"{len(pts)} point(s); a CLOSED_PLANAR contour needs at least 3. "
                        "Delete or redraw this contour."
                    )
                if np.ptp(pts[:, 2]) > 0.01:
                    raise StructureError(
                        f"'{path}': ROI '{name}' (number {number}), contour {ci} is not on "
                        f"one axial plane (z from {pts[:, 2].min():.2f} to "
                        f"{pts[:, 2].max():.2f} mm); only axial contours are supported."
                    )
                contours[number].append(pts)
            else:
                if name not in open_rois:
                    open_rois.append(name)
    if open_rois:
        warnings.warn(
            f"RT-STRUCT '{path.name}': open contours of {', '.join(open_rois)} ignored "
            "(only CLOSED_PLANAR contours enclose a volume).",
            DicomWarning, stacklevel=3,
        )
    structures: dict[str, Structure] = {}
    empty: list[str] = []
    for number, name in names.items():
        pts = np.concatenate(points[number]) if points[number] else np.zeros((0, 3))
        s = Structure(
            name=name, number=number, roi_type=types.get(number, ""),
            color_rgb=colors.get(number), contours=contours[number], points_mm=pts,
        )
        if s.is_empty:
            empty.append(name)
        if name in structures:
            raise StructureError(
                f"'{path}': two ROIs are named {name!r} (numbers {structures[name].number} and "
                f"{number}); ROI names must be unique. Rename one."
            )
        structures[name] = s
    if empty:
        warnings.warn(
            f"RT-STRUCT '{path.name}': ROI(s) without contours: {', '.join(empty)}; they are "
            "kept but have zero volume.",
            DicomWarning, stacklevel=3,
        )
    logger.info("loaded RT-STRUCT %s: %d ROIs", path.name, len(structures))
    return StructureSet(
        structures=structures,
        frame_of_reference_uid=for_uid,
        referenced_series_uids=tuple(series_uids),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        path=path,
        empty_rois=tuple(empty),
    )
