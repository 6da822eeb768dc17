"""Write a :class:`~rtplan.Patient` as a DICOM CT series + RT Structure Set.

Used for the phantoms; the objects follow the CT Image IOD (PS3.3 A.3) and the
RT Structure Set IOD (PS3.3 A.19) and pass dicom3tools' ``dciodvfy`` without errors.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .._internal.arguments import PATH, check_arguments
from .._internal.atomic import atomic_directory
from .._internal.version import __version__
from ..errors import InputError
from ..patient._patient import Patient
from ._raw_ds import raw_ds_element, raw_item
from ._uids import character_set

__all__ = ["WrittenPatient", "write_patient"]

logger = logging.getLogger("rtplan.phantoms")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

#: (0020,0037) written for each patient position so that the stored image is what a
#: scanner would produce (first row/column cosines).  Readers flip back to +x, +y.
ORIENTATION_FOR_POSITION = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}
CT_DIRNAME = "CT"
RTSTRUCT_FILENAME = "RS.dcm"
_RESCALE_INTERCEPT = -1024.0


@dataclass(frozen=True)
class WrittenPatient:
    """Paths of a written CT + RT-STRUCT.

    Attributes
    ----------
    out_dir : pathlib.Path
    ct_dir : pathlib.Path
        One file per slice, ``CT.0001.dcm`` ... in +z order.
    ct_files : tuple of pathlib.Path
    rtstruct_path : pathlib.Path
    """

    out_dir: Path
    ct_dir: Path
    ct_files: tuple
    rtstruct_path: Path


def _ds_str(v: float) -> str:
    """A DS value (≤ 16 characters)."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        s = f"{v:.10g}"
    return s


_CONTOUR_DATA = Tag(0x3006, 0x0050)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"RTPLAN_{__version__}"[:16]
    return meta


def _common(
    ds: Dataset, patient: Patient, now: datetime.datetime, *, model_name: str = "rtplan.phantoms"
) -> None:
    for elem in patient.dicom_patient:
        ds[elem.tag] = elem
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    ):
        if kw not in ds:
            setattr(ds, kw, "")
    ds.StudyInstanceUID = patient.study_instance_uid
    ds.SpecificCharacterSet = character_set(patient)
    ds.Manufacturer = "rtplan"
    ds.ManufacturerModelName = model_name
    ds.SoftwareVersions = __version__
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")


def _ct_slices(patient: Patient, now: datetime.datetime, body_part_examined: str):
    """Yield ``(filename, FileDataset)`` for each CT slice, +z order."""
    grid = patient.ct.grid
    nz, ny, nx = grid.shape
    (x0, y0, _), (dx, dy, dz) = grid.origin_mm, grid.spacing_mm
    z_axis = grid.zyx_axes_mm()[0]
    iop = ORIENTATION_FOR_POSITION[patient.position]
    # First transmitted pixel (row 0, column 0) in patient coordinates.
    ipp_x = x0 if iop[0] > 0 else x0 + (nx - 1) * dx
    ipp_y = y0 if iop[4] > 0 else y0 + (ny - 1) * dy
    hu = np.asarray(patient.ct.array)
    series_uid = patient.ct_series_instance_uid
    for k in range(nz):
        sop_uid = patient.ct_sop_instance_uids[k]
        ds = pydicom.FileDataset(
            "", Dataset(), file_meta=_file_meta(CT_IMAGE_STORAGE, sop_uid), preamble=b"\0" * 128
        )
        _common(ds, patient, now)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = "rtplan phantom CT"
        # (0018,0015): an unpaired body part, so (0020,0060) Laterality is absent.
        ds.BodyPartExamined = body_part_examined
        ds.FrameOfReferenceUID = patient.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = patient.position
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImageOrientationPatient = [int(v) for v in iop]
        z = float(z_axis[k])
        ds.ImagePositionPatient = [_ds_str(ipp_x), _ds_str(ipp_y), _ds_str(z)]
        ds.SliceLocation = _ds_str(z)
        ds.SliceThickness = _ds_str(dz)
        ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]  # (row spacing, column spacing)
        ds.KVP = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = _ds_str(_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        plane = hu[k]
        if iop[0] < 0:
            plane = plane[:, ::-1]
        if iop[4] < 0:
            plane = plane[::-1, :]
        stored = np.clip(np.round(plane - _RESCALE_INTERCEPT), -32768, 32767).astype("<i2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds["PixelData"].VR = "OW"
        yield f"CT.{k + 1:04d}.dcm", ds


def _rtstruct(
    patient: Patient,
    now: datetime.datetime,
    *,
    sop_uid: str | None = None,
    label: str = "PHANTOM",
    set_name: str = "rtplan phantom",
    description: str = "rtplan phantom structures",
    model_name: str = "rtplan.phantoms",
    automatic: frozenset = frozenset(),
) -> Dataset:
    """The RT Structure Set of ``patient.structures`` (contours as they are).

    ``sop_uid`` defaults to the patient's structure set UID (or a new one); the series UID
    is always new.  ROIs named in ``automatic`` get (3006,0036) *ROIGenerationAlgorithm*
    AUTOMATIC, the others MANUAL.
    """
    sop_uid = sop_uid or patient.structure_set_uid or generate_uid()
    ds = pydicom.FileDataset(
        "",
        Dataset(),
        file_meta=_file_meta(RT_STRUCTURE_SET_STORAGE, sop_uid),
        preamble=b"\0" * 128,
    )
    _common(ds, patient, now, model_name=model_name)
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 2
    ds.SeriesDescription = description
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid  # Frame of Reference module
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label
    ds.StructureSetName = set_name
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    z_axis = patient.ct.grid.zyx_axes_mm()[0]
    dz = patient.ct.grid.spacing_mm[2]

    def image_ref(uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uid
        return item

    series = Dataset()
    series.SeriesInstanceUID = patient.ct_series_instance_uid
    series.ContourImageSequence = Sequence([image_ref(u) for u in patient.ct_sop_instance_uids])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    study.ReferencedSOPInstanceUID = patient.study_instance_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = patient.frame_of_reference_uid
    ref_for.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_for])

    roi_items, contour_items, obs_items = [], [], []
    for obs_number, s in enumerate(patient.structures.values(), start=1):
        roi = Dataset()
        roi.ROINumber = s.number
        roi.ReferencedFrameOfReferenceUID = patient.frame_of_reference_uid
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC" if s.name in automatic else "MANUAL"
        roi_items.append(roi)

        rc = Dataset()
        rc.ROIDisplayColor = list(s.color_rgb or (255, 255, 255))
        rc.ReferencedROINumber = s.number
        seq = []
        for c in s.contours:
            item = raw_item()
            k = int(np.argmin(np.abs(z_axis - c[0, 2])))
            if abs(z_axis[k] - c[0, 2]) <= 0.5 * dz:
                item.ContourImageSequence = Sequence([image_ref(patient.ct_sop_instance_uids[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(c)
            item[_CONTOUR_DATA] = raw_ds_element(
                _CONTOUR_DATA, (_ds_str(float(v)) for v in np.round(c.ravel(), 4))
            )
            seq.append(item)
        for p in s.points_mm:
            item = Dataset()
            item.ContourGeometricType = "POINT"
            item.NumberOfContourPoints = 1
            item.ContourData = [_ds_str(v) for v in p]
            seq.append(item)
        if seq:
            rc.ContourSequence = Sequence(seq)
        contour_items.append(rc)

        obs = Dataset()
        obs.ObservationNumber = obs_number
        obs.ReferencedROINumber = s.number
        obs.RTROIInterpretedType = s.roi_type
        obs.ROIInterpreter = ""
        obs_items.append(obs)
    ds.StructureSetROISequence = Sequence(roi_items)
    ds.ROIContourSequence = Sequence(contour_items)
    ds.RTROIObservationsSequence = Sequence(obs_items)
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


@check_arguments(patient="rtplan.patient._patient:Patient", out_dir=PATH)
def write_patient(
    patient: Patient,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    body_part_examined: str = "ABDOMEN",
) -> WrittenPatient:
    """Write ``patient`` as ``out_dir/CT/CT.0001.dcm ...`` and ``out_dir/RS.dcm``.

    Written atomically: the folder is built under a temporary name and renamed into
    place, so a failure leaves nothing behind.

    Parameters
    ----------
    patient : Patient
        CT in HU (stored as int16 with (0028,1052) RescaleIntercept -1024) and structures.
    out_dir : path
        Folder to create.
    overwrite : bool, optional
        Replace an existing ``out_dir`` (default: refuse).
    body_part_examined : str, optional
        (0018,0015) *BodyPartExamined* of the CT (an unpaired part, e.g. "ABDOMEN",
        "PELVIS", "NECK", so that (0020,0060) *Laterality* may be absent).

    Returns
    -------
    WrittenPatient

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and ``overwrite`` is false.
    InputError
        Unsupported patient position.
    """
    if patient.position not in ORIENTATION_FOR_POSITION:
        raise InputError(
            f"Cannot write patient position {patient.position!r}; supported: "
            f"{', '.join(ORIENTATION_FOR_POSITION)}."
        )
    now = datetime.datetime.now()
    out_dir = Path(out_dir)
    names = []
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        ct_dir = tmp / CT_DIRNAME
        ct_dir.mkdir()
        for fname, ds in _ct_slices(patient, now, body_part_examined):
            ds.save_as(ct_dir / fname, enforce_file_format=True)
            names.append(fname)
        _rtstruct(patient, now).save_as(tmp / RTSTRUCT_FILENAME, enforce_file_format=True)
    logger.info("wrote %d CT slices and %s to %s", len(names), RTSTRUCT_FILENAME, out_dir)
    return WrittenPatient(
        out_dir=out_dir,
        ct_dir=out_dir / CT_DIRNAME,
        ct_files=tuple(out_dir / CT_DIRNAME / n for n in names),
        rtstruct_path=out_dir / RTSTRUCT_FILENAME,
    )
