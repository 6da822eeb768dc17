"""``read_patient``: CT series + RT-STRUCT → :class:`rtplan.Patient`."""

from __future__ import annotations

import os
import warnings

import numpy as np

from .._internal.arguments import path_argument
from ..errors import DicomWarning, ReferenceMismatchError
from ..patient._patient import Patient
from ._ct import CtSeries, read_ct
from ._rtstruct import StructureSet, read_structure_set

__all__ = ["combine", "read_patient"]


def read_patient(
    ct_dir: str | os.PathLike,
    rtstruct_path: str | os.PathLike | None = None,
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    hu_limits: tuple[float, float] | None = None,
) -> Patient:
    """Load a CT series and its RT Structure Set.

    Parameters
    ----------
    ct_dir : path
        Folder with the CT slices (other files and modalities are ignored).
    rtstruct_path : path, optional
        The RT-STRUCT file; without it the patient has no structures.
    series_uid : str, optional
        (0020,000E) of the CT series to use when the folder holds several.
    recursive : bool, optional
        Also search the subfolders of ``ct_dir`` for CT slices (default False).
    hu_limits : (2,) tuple of float, HU, optional
        Physical CT-number range; see :func:`rtplan.io.read_ct` (default: -1100 .. 20000
        HU or ``RTPLAN_LIMIT_HU_MIN`` / ``RTPLAN_LIMIT_HU_MAX``).

    Returns
    -------
    Patient

    Raises
    ------
    SeriesError, DicomReadError
        See :func:`rtplan.io.read_ct` and :func:`rtplan.io.read_structure_set`.
    ReferenceMismatchError
        The RT-STRUCT's frame of reference ((3006,0024) *ReferencedFrameOfReferenceUID*)
        differs from the CT's (0020,0052) *FrameOfReferenceUID* (the file, the element and
        both UIDs are named), or its (0010,0020) *PatientID* differs from the CT's (both
        present; the IDs are not printed), or the IDs agree but (0010,0030)
        *PatientBirthDate* differs (both present; a birth date does not change, so one ID
        names two people).
    TypeError
        ``ct_dir`` or ``rtstruct_path`` is not a path.

    Warns
    -----
    DicomWarning
        The frames of reference match but the RT-STRUCT refers to another CT series
        (re-exported or cropped CT): both series UIDs are named and loading goes on.
        Contour planes that lie outside the CT's z range (they cannot be rasterised) or
        between its slices (beyond 10 % of the slice spacing): the ROIs and z values are
        named.  The PatientIDs agree but (0010,0010) *PatientName* differs (compared
        without case, spaces and trailing ``^``; names are corrected and re-entered, so
        this warns; values not shown).  Plus the warnings of :func:`~rtplan.io.read_ct` and
        :func:`~rtplan.io.read_structure_set`.
    """
    if rtstruct_path is not None:
        path_argument(rtstruct_path, "rtstruct_path")
    ct = read_ct(ct_dir, series_uid=series_uid, recursive=recursive, hu_limits=hu_limits)
    ss = read_structure_set(rtstruct_path) if rtstruct_path is not None else None
    return combine(ct, ss, stacklevel=3)


def combine(ct: CtSeries, ss: StructureSet | None, *, stacklevel: int = 2) -> Patient:
    """A :class:`Patient` from a loaded CT and structure set, checking their references.

    See :func:`read_patient` for the checks (raises/warns the same).
    """
    ct_dir = ct.files[0].parent if ct.files else "?"
    structures: dict = {}
    ss_uid = None
    if ss is not None:
        rtstruct_path = ss.path
        _check_same_frame_and_patient(ct, ss, ct_dir, stacklevel=stacklevel + 1)
        if ss.referenced_series_uids and ct.series_instance_uid not in ss.referenced_series_uids:
            warnings.warn(
                f"RT-STRUCT '{os.fspath(rtstruct_path)}' refers to CT series "
                f"{', '.join(ss.referenced_series_uids)} but the CT loaded is series "
                f"{ct.series_instance_uid}; the frame of reference "
                f"{ct.frame_of_reference_uid} matches, so the contours are used as they are.",
                DicomWarning,
                stacklevel=stacklevel,
            )
        structures = ss.structures
        ss_uid = ss.sop_instance_uid
        _check_contour_planes(ct, ss, stacklevel=stacklevel + 1)
    return Patient(
        ct=ct.image,
        structures=structures,
        position=ct.position,
        frame_of_reference_uid=ct.frame_of_reference_uid,
        study_instance_uid=ct.study_instance_uid,
        ct_series_instance_uid=ct.series_instance_uid,
        ct_sop_instance_uids=ct.sop_instance_uids,
        structure_set_uid=ss_uid,
        dicom_patient=ct.dicom_patient,
    )


def _check_same_frame_and_patient(
    ct: CtSeries, ss: StructureSet, ct_dir, *, stacklevel: int = 2
) -> None:
    """Refuse a structure set drawn on another frame of reference or another patient.

    Patient IDs are compared only when both objects carry one, and never printed.
    """
    if ss.frame_of_reference_uid != ct.frame_of_reference_uid:
        raise ReferenceMismatchError(
            f"'{ss.path}': {ss.frame_of_reference_element} "
            f"{ss.frame_of_reference_uid or '(none)'} does not match the frame of reference "
            f"of the CT in '{ct_dir}', (0020,0052) FrameOfReferenceUID "
            f"{ct.frame_of_reference_uid}; the contours would land in the wrong place. Use "
            "the structure set drawn on this CT."
        )
    ct_patient = str(ct.dicom_patient.get("PatientID", "") or "").strip()
    if ss.patient_id and ct_patient and ss.patient_id != ct_patient:
        raise ReferenceMismatchError(
            f"'{ss.path}': (0010,0020) PatientID differs from that of the CT in '{ct_dir}' "
            "(values not shown); the structure set belongs to another patient, and rtplan "
            "does not guess across patients. Use the structure set drawn on this CT."
        )
    if not (ss.patient_id and ct_patient):
        return
    ct_birth = str(ct.dicom_patient.get("PatientBirthDate", "") or "").strip()
    if ss.patient_birth_date and ct_birth and ss.patient_birth_date != ct_birth:
        raise ReferenceMismatchError(
            f"'{ss.path}': (0010,0020) PatientID matches the CT in '{ct_dir}' but (0010,0030) "
            "PatientBirthDate differs (values not shown): one ID names two people. Check the "
            "patient's identity before planning."
        )
    ct_name = _name_key(ct.dicom_patient.get("PatientName", ""))
    ss_name = _name_key(ss.patient_name)
    if ss_name and ct_name and ss_name != ct_name:
        warnings.warn(
            f"'{ss.path}': (0010,0020) PatientID matches the CT in '{ct_dir}' but (0010,0010) "
            "PatientName differs (values not shown); check that the structure set belongs to "
            "this patient.",
            DicomWarning,
            stacklevel=stacklevel,
        )


def _name_key(name) -> str:
    """A person name compared without case, spaces or empty trailing components."""
    return "".join(str(name or "").split()).upper().rstrip("^=")


#: Contour planes within this fraction of the slice spacing of a CT slice lie "on" it.
PLANE_MATCH_FRACTION = 0.1


def _check_contour_planes(ct: CtSeries, ss: StructureSet, *, stacklevel: int) -> None:
    """Warn about contour planes off the CT's slices or outside its z range."""
    z_axis = ct.image.grid.zyx_axes_mm()[0]
    dz = float(ct.image.grid.spacing_mm[2])
    lo, hi = z_axis[0] - 0.5 * dz, z_axis[-1] + 0.5 * dz
    tol = max(0.01, PLANE_MATCH_FRACTION * dz)
    outside, between = [], []
    for s in ss.structures.values():
        if not s.contours:
            continue
        planes = s.z_planes_mm
        dist = np.min(np.abs(planes[:, None] - z_axis[None, :]), axis=1)
        out = planes[(planes < lo - 1e-6) | (planes > hi + 1e-6)]
        off = planes[(planes >= lo - 1e-6) & (planes <= hi + 1e-6) & (dist > tol)]
        zs = ", ".join(f"{v:.2f}" for v in out[:3]) + (" ..." if len(out) > 3 else "")
        if len(out):
            whole = " (all of it)" if len(out) == len(planes) else ""
            outside.append(f"'{s.name}'{whole} at z = {zs} mm")
        if len(off):
            d = float(dist[np.isin(planes, off)].max())
            zs = ", ".join(f"{v:.2f}" for v in off[:3]) + (" ..." if len(off) > 3 else "")
            between.append(f"'{s.name}' at z = {zs} mm (up to {d:.2f} mm from a slice)")
    name = os.fspath(ss.path.name)
    if outside:
        warnings.warn(
            f"RT-STRUCT '{name}': contours lie outside the CT's z range "
            f"({z_axis[0]:.2f} .. {z_axis[-1]:.2f} mm, slices every {dz:g} mm) and are "
            f"ignored: {'; '.join(outside)}. Was the structure set drawn on a longer CT?",
            DicomWarning,
            stacklevel=stacklevel,
        )
    if between:
        warnings.warn(
            f"RT-STRUCT '{name}': contour planes do not lie on a CT slice (slices every "
            f"{dz:g} mm from z = {z_axis[0]:.2f} mm; tolerance {tol:.2f} mm): "
            f"{'; '.join(between)}. Each slice uses the nearest contour plane.",
            DicomWarning,
            stacklevel=stacklevel,
        )
