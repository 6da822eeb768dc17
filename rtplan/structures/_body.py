"""Body outline from the CT when the RT-STRUCT has no EXTERNAL contour.

Steps, on the CT grid (:func:`body_outline_mask`):

1. **threshold** ``HU > threshold_hu`` (default −350 HU: soft tissue, bone and the
   patient's skin are above it; air (−1000), lung (−900 … −600) and couch foam
   (≈ −900 … −700) are below);
2. **opening** in each axial slice with a disc of ``opening_mm`` (default 5 mm): erodes
   everything thinner than ``2 × opening_mm`` — the carbon-fibre shells of a couch top and
   immobilisation masks (a few mm), thin tubing — so that the couch no longer touches the
   patient;
3. **largest 3-D connected component** (6-connectivity) of the opened mask: the patient;
   the couch, detached by step 2, and noise outside are dropped;
4. **fill holes**: closing by 1 voxel in-plane, then
   :func:`scipy.ndimage.binary_fill_holes` in each axial slice (lungs, airways, bowel gas:
   every cavity enclosed in the slice) and then in 3-D (cavities closed only through
   neighbouring slices);
5. **restore the surface** the opening rounded off: voxels of step 1 within ``opening_mm``
   (in-plane) of the filled body are added back and holes filled again without closing
   (thin features of the patient, e.g. the nose, come back; the couch stays out except
   for its shell within ``opening_mm`` of the skin where it touches).

:func:`body_outline` traces it on every CT slice and returns an EXTERNAL
:class:`~rtplan.Structure` (``"BODY (rtplan)"``), used like a drawn body contour.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from .._patient import Structure
from ..errors import StructureError
from ._contours import contours_from_occupancy

__all__ = ["BODY_OUTLINE_NAME", "body_outline", "body_outline_mask"]

logger = logging.getLogger("rtplan.structures")

#: Name of the generated outline ROI.
BODY_OUTLINE_NAME = "BODY (rtplan)"
#: Default threshold, HU.
BODY_THRESHOLD_HU = -350.0
#: Default in-plane opening radius, mm.
BODY_OPENING_MM = 5.0


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
    opened = raw
    if opening_mm > 0:
        opened = _disc_op(
            _disc_op(raw, opening_mm, spacing_mm, grow=False), opening_mm, spacing_mm, grow=True
        )
        if not opened.any():  # a body thinner than the opening: keep the raw mask
            opened = raw
    labels, n = ndimage.label(opened)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = labels == int(np.argmax(sizes))
    else:
        body = labels > 0
    body = _fill(ndimage.binary_closing(body, structure=np.ones((1, 3, 3), bool)) | body)
    if opening_mm > 0:
        body = _fill(body | (_disc_op(body, opening_mm, spacing_mm, grow=True) & raw))
    return body


def _fill(mask: np.ndarray) -> np.ndarray:
    """Holes filled in each axial slice, then in 3-D."""
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return ndimage.binary_fill_holes(out)


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
