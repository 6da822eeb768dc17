"""Builders for DICOM objects as other planning systems write them (test helpers).

Everything here writes files with pydicom directly, from a phantom written by
:func:`rtplan.io.write_patient` or from an RT-DOSE written by
:func:`rtplan.io.write_rtdose`; nothing calls rtplan's readers, so the tests compare the
readers against geometry computed independently here.
"""

from __future__ import annotations

import shutil
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dose_engine import Grid
from rtplan.io import write_rtdose
from rtplan.io._uids import new_uid


def copy_phantom(written, dst: Path) -> types.SimpleNamespace:
    """Copy a written phantom (``CT/`` + ``RS.dcm``) to ``dst``; returns its paths."""
    shutil.copytree(written.ct_dir.parent, dst)
    return types.SimpleNamespace(ct_dir=dst / "CT", rs=dst / "RS.dcm")


def edit(path: Path, fn: Callable[[Dataset], None]) -> None:
    """Read ``path``, let ``fn`` change the dataset in place, write it back."""
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def rect(x0: float, y0: float, x1: float, y1: float, z: float) -> np.ndarray:
    """A rectangle on the plane ``z`` as (4, 3) points, mm."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)


def contour_item(pts: np.ndarray, kind: str = "CLOSED_PLANAR") -> Dataset:
    item = Dataset()
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(pts)
    item.ContourData = [f"{v:.4f}" for v in np.asarray(pts).ravel()]
    return item


def add_roi(rs: Dataset, number: int, name: str, items: list[Dataset] | None) -> None:
    """Append ROI ``number`` called ``name`` with contour ``items`` (None: no
    (3006,0040) ContourSequence at all) to an RT-STRUCT dataset."""
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "MANUAL"
    rs.StructureSetROISequence.append(roi)
    rc = Dataset()
    rc.ReferencedROINumber = number
    rc.ROIDisplayColor = [0, 255, 0]
    if items is not None:
        rc.ContourSequence = Sequence(items)
    rs.ROIContourSequence.append(rc)
    obs = Dataset()
    obs.ObservationNumber = 100 + number
    obs.ReferencedROINumber = number
    obs.RTROIInterpretedType = "ORGAN"
    obs.ROIInterpreter = ""
    rs.RTROIObservationsSequence.append(obs)


# --------------------------------------------------------------------------- RT-DOSE


def dose_field(points_mm: np.ndarray) -> np.ndarray:
    """The test dose, Gy, at (..., 3) LPS points: linear, so each axis is recognisable."""
    x, y, z = points_mm[..., 0], points_mm[..., 1], points_mm[..., 2]
    return 20.0 + 0.1 * x + 0.2 * y + 0.3 * z


def template_dose(path: Path) -> Dataset:
    """An RT-DOSE written by rtplan (metadata to build variants from)."""
    patient = types.SimpleNamespace(
        dicom_patient=Dataset(), study_instance_uid=new_uid(), frame_of_reference_uid=new_uid()
    )
    grid = Grid((2, 2, 2), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    write_rtdose(path, np.ones(grid.shape), grid, patient, plan_sop_instance_uid=new_uid())
    return pydicom.dcmread(path)


def write_dose_variant(
    path: Path,
    *,
    shape_zyx: tuple[int, int, int] = (4, 5, 6),
    ipp: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    spacing_rc: tuple[float, float] = (3.0, 2.0),
    frame_step_mm: float = 2.5,
    iop: tuple[int, ...] = (1, 0, 0, 0, 1, 0),
    offsets: str = "relative",
    bits: int = 32,
    scaling: float = 1e-4,
    summation: str = "PLAN",
    n_frames_element: bool = True,
) -> Dataset:
    """Write an RT-DOSE whose pixel (frame k, row r, column c) holds
    :func:`dose_field` at the position PS3.3 C.7.6.2.1.1 / C.8.8.3.2 define for it:
    ``IPP + c·Δc·row_dir + r·Δr·col_dir + offset_k·normal`` (``"relative"`` offsets) or
    ``(x, y) of IPP + ...`` at ``z = offset_k`` (``"absolute"``).
    """
    ds = template_dose(path)
    nz, ny, nx = shape_zyx
    row_dir, col_dir = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    dr, dc = spacing_rc
    rel = np.arange(nz) * frame_step_mm
    c, r = np.meshgrid(np.arange(nx), np.arange(ny))
    in_plane = np.asarray(ipp) + (c * dc)[..., None] * row_dir + (r * dr)[..., None] * col_dir
    frames = []
    for k in range(nz):
        if offsets == "relative":
            pts = in_plane + rel[k] * normal
        else:  # the offsets are patient z, whatever the normal
            pts = in_plane.copy()
            pts[..., 2] = ipp[2] + rel[k]
        frames.append(dose_field(pts))
    dose = np.stack(frames)
    stored = np.rint(dose / scaling)
    ds.PixelRepresentation = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    assert stored.max() < 2**bits
    ds.PixelData = stored.astype(f"<u{bits // 8}").tobytes()
    ds.Rows, ds.Columns = ny, nx
    if n_frames_element:
        ds.NumberOfFrames = nz
    else:
        del ds.NumberOfFrames
    ds.ImagePositionPatient = [f"{v:g}" for v in ipp]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = [f"{dr:g}", f"{dc:g}"]
    ds.SliceThickness = f"{abs(frame_step_mm):g}"
    first = 0.0 if offsets == "relative" else ipp[2]
    ds.GridFrameOffsetVector = [f"{first + v:g}" for v in rel]
    ds.DoseGridScaling = f"{scaling:g}"
    ds.DoseSummationType = summation
    ds.save_as(path)
    return ds
