"""Build a phantom :class:`~rtplan.Patient` in memory."""

from __future__ import annotations

import datetime
import logging

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dose_engine import Grid

from .._internal.arguments import TEXT, check_arguments
from ..errors import InputError
from ..patient._image import Image
from ..patient._patient import PATIENT_POSITIONS, Patient
from ..structures._rasterize import polygon_occupancy
from ..structures._structure import Structure
from ._geometry import PHANTOM_NAMES, phantom_spec

__all__ = ["make_phantom"]

logger = logging.getLogger("rtplan.phantoms")

#: UID root used by pydicom.uid.generate_uid (pydicom's own root, 1.2.826.0.1.3680043.8.498.).
HU_AIR = -1000.0


def _check_positive(name: str, value) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise InputError(f"`{name}` must be a positive number; got {value!r}.")


@check_arguments(name=TEXT)
def make_phantom(
    name: str,
    *,
    pixel_spacing_mm: float = 2.5,
    slice_spacing_mm: float = 2.5,
    matrix_size: int | tuple[int, int] | None = None,
    n_slices: int | None = None,
    position: str = "HFS",
    body_contour: bool = True,
) -> Patient:
    """Build one of the TG-119 test phantoms, a water box or a thorax in memory.

    The TG-119 bodies are water (0 HU) in air (-1000 HU); the thorax has fat, muscle,
    lungs, heart, bone and a couch (:mod:`rtplan.phantoms._thorax`).  Each tissue is
    painted over the ones below it weighted by its fractional occupancy, so partial-volume
    voxels get the occupancy-weighted HU (rounded to integers, as stored in DICOM).
    Structures are analytic polygons on every CT slice plane.

    Parameters
    ----------
    name : {"cshape", "multitarget", "prostate", "head_neck", "two_level", "water_box", \
"thorax"}
        TG-119 geometry (structure names as in ``tg119_goals.toml``), a 300 mm water
        cube (``water_box``) or a thorax with a GTV in the right lung (``thorax``: ``GTV``,
        ``SpinalCord``, ``Lung_L``, ``Lung_R``, ``Heart``, ``Esophagus``; 512 × 512 × 131
        at 0.98 × 0.98 × 3 mm when called with ``pixel_spacing_mm=500/512,
        slice_spacing_mm=3``).  Every phantom has a ``Body`` of type EXTERNAL unless
        ``body_contour=False``.
    pixel_spacing_mm : float, optional
        In-plane voxel size (dx = dy), mm.  Default 2.5.
    slice_spacing_mm : float, optional
        Slice spacing, mm.  Default 2.5.
    matrix_size : int or (nx, ny), optional
        Columns and rows; default: enough to hold the body with a 20 mm margin.
    n_slices : int, optional
        Number of slices; default: the phantom's length (odd count, one slice at z = 0).
    position : {"HFS", "FFS", "HFP", "FFP"}, optional
        Recorded (0018,5100) *PatientPosition*.  The geometry is in patient coordinates
        and does not change with it.
    body_contour : bool, optional
        Include the ``Body`` ROI (default).  ``False`` leaves it out of the structure set
        (the CT is unchanged), as in clinical RT-STRUCTs without an EXTERNAL contour:
        planning then derives ``"BODY (rtplan)"`` from the CT.

    Returns
    -------
    Patient
        Grid centred on the origin (LPS mm), fresh UIDs, a synthetic patient.

    Raises
    ------
    InputError
        Unknown ``name`` (the message lists the choices) or non-positive sizes.

    Examples
    --------
    >>> from rtplan.phantoms import make_phantom
    >>> p = make_phantom("cshape")
    >>> list(p.structures)
    ['Body', 'PTV', 'Core']
    >>> round(p.structure("Core").volume_cc(p.ct.grid), 1)   # pi * 1.0**2 * 10 cm
    31.4
    """
    if name not in PHANTOM_NAMES:
        raise InputError(f"Unknown phantom {name!r}; choose one of {', '.join(PHANTOM_NAMES)}.")
    if position not in PATIENT_POSITIONS:
        raise InputError(
            f"`position` must be one of {', '.join(PATIENT_POSITIONS)}; got {position!r}."
        )
    _check_positive("pixel_spacing_mm", pixel_spacing_mm)
    _check_positive("slice_spacing_mm", slice_spacing_mm)
    spec = phantom_spec(name)
    length_mm, fov = spec.length_mm, spec.fov_xy_mm
    dxy, dz = float(pixel_spacing_mm), float(slice_spacing_mm)
    if matrix_size is None:
        nx, ny = (int(np.ceil(f / dxy)) for f in fov)
    else:
        nx, ny = np.broadcast_to(np.asarray(matrix_size, dtype=int), (2,)).tolist()
        if nx < 1 or ny < 1:
            raise InputError(f"`matrix_size` must be positive; got {matrix_size!r}.")
    if n_slices is None:
        nz = 2 * int(round(length_mm / 2 / dz)) + 1
    else:
        nz = int(n_slices)
        if nz < 1:
            raise InputError(f"`n_slices` must be positive; got {n_slices!r}.")
    origin = (-(nx - 1) * dxy / 2, -(ny - 1) * dxy / 2, -(nz - 1) * dz / 2)
    grid = Grid((nz, ny, nx), origin, (dxy, dxy, dz))
    z_axis, _, _ = grid.zyx_axes_mm()

    hu = np.full(grid.shape, HU_AIR, dtype=np.float32)
    for k, z in enumerate(z_axis):
        for material in spec.materials:
            polys = material.polygons_at(float(z))
            if polys:
                occ = polygon_occupancy(
                    polys, x0_mm=origin[0], dx_mm=dxy, nx=nx, y0_mm=origin[1], dy_mm=dxy, ny=ny
                )
                hu[k] += (np.float32(material.hu) - hu[k]) * occ
    hu = np.round(hu).astype(np.float32)

    structures: dict[str, Structure] = {}
    roi_specs = [spec.body, *spec.rois] if body_contour else list(spec.rois)
    for number, roi in enumerate(roi_specs, start=1):
        contours = []
        for z in z_axis:
            for poly in roi.polygons_at(float(z)):
                contours.append(np.column_stack([poly, np.full(len(poly), z)]))
        if not contours:
            logger.info("phantom %s: ROI %s lies outside the CT slices", name, roi.name)
        structures[roi.name] = Structure(
            name=roi.name,
            number=number,
            roi_type=roi.roi_type,
            color_rgb=roi.color_rgb,
            contours=contours,
        )

    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    dp = Dataset()
    dp.PatientName = f"{spec.family}^{name}"
    dp.PatientID = f"RTPLAN-PHANTOM-{name.upper()}"
    dp.PatientBirthDate = ""
    dp.PatientSex = "O"
    dp.PatientIdentityRemoved = "YES"
    dp.DeidentificationMethod = "Synthetic phantom generated by rtplan.phantoms; no patient data"
    dp.StudyInstanceUID = study_uid
    dp.StudyDate = today
    dp.StudyTime = "120000"
    dp.ReferringPhysicianName = ""
    dp.StudyID = "PHANTOM"
    dp.AccessionNumber = ""
    dp.StudyDescription = f"rtplan {spec.family} phantom {name}"
    return Patient(
        ct=Image(hu, grid),
        structures=structures,
        position=position,
        frame_of_reference_uid=for_uid,
        study_instance_uid=study_uid,
        ct_series_instance_uid=series_uid,
        ct_sop_instance_uids=tuple(generate_uid() for _ in range(nz)),
        structure_set_uid=None,
        dicom_patient=dp,
    )
