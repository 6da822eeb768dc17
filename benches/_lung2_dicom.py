"""The pyradiomics ``lung2`` chest CT as a DICOM CT series + RT-STRUCT written by rtplan.

``lung2`` is a real patient's chest CT (512 × 512 × 61, 0.627 × 0.627 × 5 mm, LPS, HU)
and one tumour label image, both NRRD (gzip).  :func:`write_lung2` reads them with the
minimal NRRD reader below (axis-aligned LPS volumes only; no pynrrd needed), contours the
label as ``GTV`` with :func:`rtplan.structures.contours_from_occupancy` (marching squares,
the 0.5 iso-line of the label between voxel centres, one axial slice at a time, on the
CT's own slices) and writes both with :func:`rtplan.io.write_patient`: a de-identified
patient with new UIDs, ``BodyPartExamined`` CHEST, position HFS (NRRD records none; the
pyradiomics data are supine head-first chest CTs).  No organ is contoured: there is none
in the source.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dose_engine import Grid
from rtplan.io import write_patient
from rtplan.patient import Image, Patient
from rtplan.structures import Structure, contours_from_occupancy

_TYPES = {"short": "i2", "int16": "i2", "ushort": "u2", "uchar": "u1", "int": "i4", "float": "f4"}


def read_nrrd(path: Path) -> tuple[np.ndarray, Grid]:
    """An axis-aligned 3-D NRRD volume: ``[z, y, x]`` array and its LPS grid (mm)."""
    raw = path.read_bytes()
    head, sep, data = raw.partition(b"\n\n")
    if not sep or not head.startswith(b"NRRD"):
        raise ValueError(f"{path}: not a NRRD file with an attached header")
    h = {}
    for line in head.decode("ascii").splitlines()[1:]:
        if not line.startswith("#"):
            key, _, value = line.partition(":")
            h[key.strip()] = value.strip().lstrip("=")
    if h.get("space") != "left-posterior-superior" or h.get("dimension") != "3":
        raise ValueError(f"{path}: only 3-D LPS volumes are read (space {h.get('space')!r})")
    nx, ny, nz = (int(v) for v in h["sizes"].split())
    vectors = [
        [float(x) for x in v.split(",")] for v in re.findall(r"\(([^)]*)\)", h["space directions"])
    ]
    directions = np.array(vectors)
    if (
        not np.allclose(directions, np.diag(np.diag(directions)))
        or (np.diag(directions) <= 0).any()
    ):
        raise ValueError(f"{path}: space directions {vectors} are not +x, +y, +z")
    origin = tuple(float(v) for v in h["space origin"].strip("()").split(","))
    endian = "<" if h.get("endian", "little") == "little" else ">"
    payload = gzip.decompress(data) if h["encoding"] in ("gzip", "gz") else data
    if h["encoding"] not in ("gzip", "gz", "raw"):
        raise ValueError(f"{path}: encoding {h['encoding']!r} not read")
    array = np.frombuffer(payload, dtype=endian + _TYPES[h["type"]]).reshape(nz, ny, nx)
    return array, Grid((nz, ny, nx), origin, tuple(np.diag(directions)))


def lung2_patient(image: Path, label: Path) -> Patient:
    """The CT (HU, float32) and the label contoured as ``GTV`` (RTROIInterpretedType GTV)."""
    hu, grid = read_nrrd(image)
    mask, label_grid = read_nrrd(label)
    if label_grid.shape != grid.shape or not np.allclose(label_grid.origin_mm, grid.origin_mm):
        raise ValueError(f"{label} is not on the grid of {image}")
    gtv = Structure(
        name="GTV",
        number=1,
        roi_type="GTV",
        color_rgb=(255, 0, 0),
        contours=contours_from_occupancy((mask > 0).astype(np.float32), grid),
    )
    dp = Dataset()
    dp.PatientName = "Anonymous^lung2"
    dp.PatientID = "PYRADIOMICS-LUNG2"
    dp.PatientBirthDate = ""
    dp.PatientSex = "O"
    dp.PatientIdentityRemoved = "YES"
    dp.DeidentificationMethod = "pyradiomics 3.1.0 test data lung2 (NRRD); no identifiers"
    dp.StudyInstanceUID = generate_uid()
    dp.StudyDate = "20000101"
    dp.StudyTime = "120000"
    dp.ReferringPhysicianName = ""
    dp.StudyID = "LUNG2"
    dp.AccessionNumber = ""
    dp.StudyDescription = "pyradiomics lung2 chest CT"
    return Patient(
        ct=Image(hu.astype(np.float32), grid),
        structures={"GTV": gtv},
        position="HFS",
        frame_of_reference_uid=generate_uid(),
        study_instance_uid=dp.StudyInstanceUID,
        ct_series_instance_uid=generate_uid(),
        ct_sop_instance_uids=tuple(generate_uid() for _ in range(grid.shape[0])),
        structure_set_uid=None,
        dicom_patient=dp,
    )


def write_lung2(image: Path, label: Path, out_dir: Path):
    """Write ``lung2`` as ``out_dir/CT/`` + ``out_dir/RS.dcm``; the WrittenPatient and
    the label's volume (cc, voxel count × voxel volume)."""
    patient = lung2_patient(image, label)
    mask, grid = read_nrrd(label)
    written = write_patient(patient, out_dir, overwrite=True, body_part_examined="CHEST")
    return written, float((mask > 0).sum() * grid.voxel_volume_cc)
