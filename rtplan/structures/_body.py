"""Body outline from the CT when the RT-STRUCT has no EXTERNAL contour.

Steps, on the CT grid (:func:`body_outline_mask`):

1. **threshold** ``HU > threshold_hu`` (default −350 HU: soft tissue, bone and the
   patient's skin are above it; air (−1000), lung (−900 … −600) and couch foam
   (≈ −900 … −700) are below);
2. **opening** in each axial slice with a disc of ``opening_mm`` (default 5 mm), on the
   mask subsampled in-plane to about ``COARSE_MM`` (2 mm; enough to tell the patient from
   the couch, the surface comes from the full-resolution mask in step 5): erodes
   everything thinner than ``2 × opening_mm`` — the carbon-fibre shells of a couch top and
   immobilisation masks (a few mm), thin tubing — so that the couch no longer touches the
   patient;
3. **largest 3-D connected component** (6-connectivity) of the opened mask: the patient;
   the couch, detached by step 2, and noise outside are dropped;
4. **fill holes** of the component (taken back to full resolution and to the mask of
   step 1): closing by 1 voxel in-plane, then every background region not connected to
   the edge of its axial slice (lungs, airways, bowel gas) is filled, then every one not
   connected to the edge of the volume (cavities closed only through neighbouring
   slices), by labelling the background (:func:`scipy.ndimage.label`);
5. **restore the surface** the opening rounded off: voxels of step 1 within
   ``opening_mm`` (in-plane, plus one coarse pixel) of the component are added back and
   holes filled again without closing
   (thin features of the patient, e.g. the nose, come back; the couch stays out except
   for its shell within ``opening_mm`` of the skin where it touches).

:func:`body_outline` traces it on every CT slice and returns an EXTERNAL
:class:`~rtplan.Structure` (``"BODY (rtplan)"``), used like a drawn body contour.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from .._internal.arguments import ARRAY, check_arguments
from ..errors import StructureError
from ._contours import contours_from_occupancy
from ._structure import Structure

__all__ = [
    "BODY_OUTLINE_NAME",
    "body_grid",
    "body_outline",
    "body_outline_mask",
    "body_structure",
]

logger = logging.getLogger("rtplan.structures")

#: Name of the generated outline ROI.
BODY_OUTLINE_NAME = "BODY (rtplan)"
#: Default threshold, HU.
BODY_THRESHOLD_HU = -350.0
#: Default in-plane opening radius, mm.
BODY_OPENING_MM = 5.0
#: In-plane spacing (mm) at which the patient is told from the couch (steps 2-3).
COARSE_MM = 2.0


def _disc_op(mask: np.ndarray, radius_mm: float, spacing_mm, *, grow: bool) -> np.ndarray:
    """Per-slice dilation (``grow``) or erosion by a disc of ``radius_mm`` (in-plane)."""
    dx, dy, _ = (float(s) for s in spacing_mm)
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        plane = mask[k] if not grow else ~mask[k]
        if not plane.any():
            out[k] = mask[k]
            continue
        d = ndimage.distance_transform_edt(plane, sampling=(dy, dx))
        out[k] = d <= radius_mm if grow else d > radius_mm
    return out


def body_outline_mask(
    hu: np.ndarray,
    spacing_mm,
    *,
    threshold_hu: float = BODY_THRESHOLD_HU,
    opening_mm: float = BODY_OPENING_MM,
) -> np.ndarray:
    """Boolean body mask of a CT (see the module docstring for the steps).

    Parameters
    ----------
    hu : (nz, ny, nx) ndarray
        CT in HU, rows along +y (posterior), columns along +x.
    spacing_mm : (3,) tuple of float, mm
        ``(dx, dy, dz)``.
    threshold_hu : float, HU
    opening_mm : float, mm
        Radius of the in-plane opening that detaches the couch (0: none).

    Returns
    -------
    (nz, ny, nx) ndarray of bool

    Raises
    ------
    StructureError
        No voxel is above the threshold.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise StructureError(f"`hu` must be a 3-D (nz, ny, nx) array; got shape {hu.shape}.")
    raw = hu > threshold_hu
    if not raw.any():
        raise StructureError(
            f"No CT voxel is above {threshold_hu:g} HU: cannot find the body outline. Check "
            "the CT's rescale (HU) or draw an EXTERNAL contour."
        )
    # Steps 2-3 find the patient on a grid of about COARSE_MM in-plane (enough to tell the
    # patient from the couch; the surface is taken from the full-resolution mask after).
    dx, dy, dz = (float(v) for v in spacing_mm)
    f = max(1, int(round(COARSE_MM / min(dx, dy))))
    small = raw[:, ::f, ::f]
    small_spacing = (dx * f, dy * f, dz)
    opened = small
    if opening_mm > 0:
        opened = _disc_op(
            _disc_op(small, opening_mm, small_spacing, grow=False),
            opening_mm,
            small_spacing,
            grow=True,
        )
        if not opened.any():  # a body thinner than the opening: keep the raw mask
            opened = small
    labels, n = ndimage.label(opened)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        component = labels == int(np.argmax(sizes))
    else:
        component = labels > 0

    def full(m: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(m, f, axis=1), f, axis=2)[:, : raw.shape[1], : raw.shape[2]]

    reach = opening_mm + f * max(dx, dy) if opening_mm > 0 else f * max(dx, dy)
    zone = full(_disc_op(component, reach, small_spacing, grow=True))
    # Steps 4-5 on the box of the zone only (+1 voxel, so holes are told from outside).
    rows = np.flatnonzero(zone.any(axis=(0, 2)))
    cols = np.flatnonzero(zone.any(axis=(0, 1)))
    box = (
        slice(None),
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(cols[0] - 1, 0), cols[-1] + 2),
    )
    raw_b, zone_b = raw[box], zone[box]
    core = full(component)[box] & raw_b
    body = _fill(ndimage.binary_closing(core, structure=np.ones((1, 3, 3), bool)) | core)
    if opening_mm > 0:
        body = _fill(body | (zone_b & raw_b))
    out = np.zeros_like(raw)
    out[box] = body
    return out


#: 4-connectivity within an axial slice, none across slices.
_IN_PLANE = np.array([[[0, 0, 0]] * 3, [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0]] * 3], bool)


def _holes(mask: np.ndarray, structure: np.ndarray | None, faces: tuple[int, ...]) -> np.ndarray:
    """Background components of ``mask`` that touch no array face along ``faces``."""
    labels, n = ndimage.label(~mask, structure=structure)
    if n == 0:
        return np.zeros_like(mask)
    outside = np.zeros(n + 1, bool)
    for axis in faces:
        for end in (0, -1):
            outside[np.unique(np.take(labels, end, axis=axis))] = True
    outside[0] = True  # label 0 is the mask itself
    return ~outside[labels]


def _fill(mask: np.ndarray) -> np.ndarray:
    """Holes filled in each axial slice, then in 3-D (by labelling the background, O(N))."""
    filled = mask | _holes(mask, _IN_PLANE, (1, 2))
    return filled | _holes(filled, None, (0, 1, 2))


@check_arguments(patient="rtplan.patient._patient:Patient")
def body_outline(
    patient,
    *,
    name: str = BODY_OUTLINE_NAME,
    threshold_hu: float = BODY_THRESHOLD_HU,
    opening_mm: float = BODY_OPENING_MM,
) -> Structure:
    """The body outline of ``patient``'s CT as an EXTERNAL structure with contours on every
    CT slice (see the module docstring).

    Parameters
    ----------
    patient : rtplan.Patient
    name : str
        ROI name (default ``"BODY (rtplan)"``).
    threshold_hu, opening_mm : float
        See :func:`body_outline_mask`.

    Returns
    -------
    Structure
        ``roi_type="EXTERNAL"``, numbered after the patient's ROIs.
    """
    grid = patient.ct.grid
    mask = body_outline_mask(
        patient.ct.array, grid.spacing_mm, threshold_hu=threshold_hu, opening_mm=opening_mm
    )
    number = max((int(s.number) for s in patient.structures.values()), default=0) + 1
    contours = contours_from_occupancy(mask.astype(np.float32), grid)
    logger.info(
        "body outline: %d voxels above %g HU after filling, %d contours",
        int(mask.sum()),
        threshold_hu,
        len(contours),
    )
    return Structure(
        name=name, number=number, roi_type="EXTERNAL", color_rgb=(0, 128, 0), contours=contours
    )


@check_arguments(patient="rtplan.patient._patient:Patient")
def body_structure(patient) -> Structure:
    """The patient's first non-empty EXTERNAL ROI, else :func:`body_outline` of its CT."""
    for s in patient.structures.values():
        if str(s.roi_type).upper() == "EXTERNAL" and not s.is_empty:
            return s
    return body_outline(patient)


@check_arguments(
    ct_grid="dose_engine._grid:Grid",
    body="rtplan.structures._structure:Structure",
    spacing_mm=ARRAY,
)
def body_grid(ct_grid, body: Structure, spacing_mm):
    """The CT grid at ``spacing_mm`` cropped to the box of ``body`` plus one dose voxel.

    Parameters
    ----------
    ct_grid : dose_engine.Grid
    body : Structure
        The body (EXTERNAL ROI or outline); the whole CT when it has no extent.
    spacing_mm : float or (3,) tuple of float, mm

    Returns
    -------
    dose_engine.Grid
    """
    grid = ct_grid.with_spacing(spacing_mm)
    box = body.bounding_box
    if box is None:
        return grid
    pad = np.asarray(grid.spacing_mm)
    cropped, _ = grid.crop_to_box(np.asarray(box[0]) - pad, np.asarray(box[1]) + pad)
    return cropped
