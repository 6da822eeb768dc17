"""The beamlets PortPy's own pipeline optimises: those in the beam's-eye view of the target.

PortPy stores every beamlet of a beam's field, but its influence matrix keeps only the
beamlets near the target (``portpy.photon.InfluenceMatrix``, margin
``opt_beamlets_PTV_margin_mm`` = 3 mm). Its rule, described from its documented behaviour
(this module shares no code with PortPy, whose licence forbids copying):

1. each outline of the target in the beam's-eye view (``BEV_structure_contour_points``,
   polygons of ``(x, y)`` mm in the isocentre plane) is grown by the margin; a beamlet is
   marked when its centre lies strictly inside the grown outline but not inside or on the
   outline itself (PortPy keeps the outline as a hole of the grown polygon), or, with a
   margin of 0, strictly inside the outline;
2. in each row of beamlets (one leaf pair: one ``y``), every beamlet from the first marked
   to the last marked one is kept (an MLC opening is one interval per leaf pair).

With a margin at least as wide as a beamlet the band of step 1 catches a beamlet on each
side of every row that crosses the outline, so step 2 keeps the whole interior.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PORTPY_BEAMLET_MARGIN_MM", "portpy_beamlet_selection"]

#: PortPy's default margin around the target's beam's-eye-view outline, mm.
PORTPY_BEAMLET_MARGIN_MM = 3.0

#: Distance below which a centre counts as on an outline, mm.
_ON_OUTLINE_MM = 1e-9


def portpy_beamlet_selection(
    x_mm: np.ndarray, y_mm: np.ndarray, outlines: Sequence[np.ndarray], margin_mm: float
) -> np.ndarray:
    """Which beamlets PortPy's pipeline keeps (module docstring).

    Parameters
    ----------
    x_mm, y_mm : (n,) ndarray of float, mm
        Beamlet centres in the isocentre plane (beam's-eye view).
    outlines : sequence of (m, 2) ndarray of float, mm
        The target's outlines in the same plane, closed implicitly.
    margin_mm : float, mm
        Margin around the outlines (>= 0).

    Returns
    -------
    (n,) ndarray of bool
        ``True`` for the beamlets kept.
    """
    x = np.asarray(x_mm, dtype=np.float64)
    y = np.asarray(y_mm, dtype=np.float64)
    marked = np.zeros(x.size, dtype=bool)
    for outline in outlines:
        poly = np.asarray(outline, dtype=np.float64).reshape(-1, 2)
        if poly.shape[0] < 3:
            continue
        dist = _distance_to_outline(x, y, poly)
        inside = _inside(x, y, poly)
        if margin_mm > 0:
            marked |= (dist < margin_mm) & ~inside & (dist > _ON_OUTLINE_MM)
        else:
            marked |= inside & (dist > _ON_OUTLINE_MM)
    keep = np.zeros_like(marked)
    for row_y in np.unique(y[marked]):
        row = y == row_y
        xs = x[row & marked]
        keep |= row & (x >= xs.min()) & (x <= xs.max())
    return keep


def _inside(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: points strictly inside the polygon (boundary points: either)."""
    inside = np.zeros(x.size, dtype=bool)
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    for x0, y0, x1, y1 in zip(xa, ya, xb, yb, strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def _distance_to_outline(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance from each point to the polygon's edges, mm."""
    a = poly
    b = np.roll(poly, -1, axis=0)
    ab = b - a
    length2 = np.maximum((ab**2).sum(axis=1), 1e-300)
    px = x[:, None] - a[None, :, 0]
    py = y[:, None] - a[None, :, 1]
    t = np.clip((px * ab[None, :, 0] + py * ab[None, :, 1]) / length2[None, :], 0.0, 1.0)
    dx = px - t * ab[None, :, 0]
    dy = py - t * ab[None, :, 1]
    return np.sqrt(dx**2 + dy**2).min(axis=1)
