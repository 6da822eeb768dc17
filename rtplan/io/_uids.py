"""UIDs and the DICOM modules every object rtplan writes shares.

New objects copy the Patient and General Study modules from the CT
(``patient.dicom_patient``), share the CT's Frame of Reference, and get a new series
and SOP instance.  See DICOM PS3.3 C.7.1.1 (Patient), C.7.2.1 (General Study),
C.7.4.1 (Frame of Reference), C.7.5.1 (General Equipment) and C.12.1 (SOP Common):
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/ps3.3.html
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .._internal.atomic import atomic_file
from .._internal.version import __version__

__all__ = ["character_set", "new_uid"]

log = logging.getLogger("rtplan.io")

#: (0008,0016) SOPClassUID values, PS3.4 B.5.
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Keywords of the Patient (C.7.1.1) and General Study (C.7.2.1) modules copied
#: from the CT when ``patient.dicom_patient`` lacks some of them.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def new_uid() -> str:
    """A new, globally unique DICOM UID (``pydicom.uid.generate_uid``)."""
    return str(generate_uid())


def character_set(patient) -> str:
    """(0008,0005) *SpecificCharacterSet* of every object rtplan writes for ``patient``.

    The CT's own character set when its Patient/Study elements declare one (they are copied
    as they are), else ``"ISO_IR 192"`` (UTF-8: any ROI or patient name can be written).
    """
    src = getattr(patient, "dicom_patient", None)
    if src is not None and "SpecificCharacterSet" in src and src.SpecificCharacterSet:
        return src.SpecificCharacterSet
    return "ISO_IR 192"


def base_dataset(
    patient,
    *,
    sop_class_uid: str,
    modality: str,
    series_description: str,
    series_number: int,
) -> Dataset:
    """A dataset holding SOP Common, Patient, General Study, series, frame and equipment.

    Parameters
    ----------
    patient : rtplan.Patient
        Supplies ``dicom_patient`` (Patient + General Study elements, copied as they are),
        ``study_instance_uid`` and ``frame_of_reference_uid``.
    sop_class_uid : str
        (0008,0016) *SOPClassUID*.
    modality : str
        (0008,0060) *Modality*, e.g. ``"RTPLAN"`` or ``"RTDOSE"``.
    series_description, series_number
        (0008,103E) *SeriesDescription* and (0020,0011) *SeriesNumber* of the new series.
    """
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = character_set(patient)
    src = getattr(patient, "dicom_patient", None)
    if src is not None:
        for elem in src:
            if elem.keyword in ("SpecificCharacterSet",):
                continue
            ds.add(elem)
    for kw in _TYPE2_PATIENT_STUDY:
        if kw not in ds:
            setattr(ds, kw, "")
    ds.StudyInstanceUID = patient.study_instance_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = new_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Modality = modality
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "rtplan"
    ds.ManufacturerModelName = "rtplan"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    return ds


def write_dataset(ds: Dataset, path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Write ``ds`` as a Part 10 file (explicit VR little endian), atomically.

    Raises
    ------
    rtplan.errors.OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"RTPLAN_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    log.info("wrote %s (%s)", path, ds.Modality)
    return path
