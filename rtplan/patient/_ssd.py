"""Source-to-surface distance by ray casting through the patient.

(300A,0130) *SourceToSurfaceDistance* of an RT-PLAN control point is the distance along
the central axis from the source to the patient's skin.  rtplan finds the skin as the
0.5 level of the Body/EXTERNAL structure's occupancy when the patient has one (so a
couch or immobilisation device in the CT is ignored), otherwise as the −500 HU level of
the CT (half-way between air and water), interpolated linearly between voxel centres.
"""

from __future__ import annotations

import logging

import numpy as np

from .._internal.arguments import check_arguments
from ..errors import InputError

__all__ = ["ssd_mm"]

log = logging.getLogger("rtplan.ssd")

#: HU level taken as the skin when no EXTERNAL structure exists.
SKIN_HU = -500.0


def _external_structure(patient):
    structures = getattr(patient, "structures", {}) or {}
    for s in structures.values():
        if str(getattr(s, "roi_type", "")).upper() == "EXTERNAL":
            return s
    for name in ("BODY", "EXTERNAL", "SKIN", "OUTLINE"):
        for key, s in structures.items():
            if key.upper() == name:
                return s
    return None


@check_arguments(beam="dose_engine._beam:Beam", patient="rtplan.patient._patient:Patient")
def ssd_mm(beam, patient, *, step_mm: float = 0.5, use_external: bool = True) -> float:
    """Source-to-surface distance of ``beam``'s central axis, in mm.

    Parameters
    ----------
    beam : dose_engine.Beam
        IEC 61217 beam; its ``source_position_mm`` and ``beam_axis`` (LPS) define the ray.
    patient : rtplan.Patient
        CT (HU on an axis-aligned grid) and structures.
    step_mm : float, optional
        Sampling step along the ray; the crossing is then interpolated linearly.
    use_external : bool, optional
        Use the EXTERNAL (or "Body") structure when present; otherwise the CT's −500 HU
        level is the surface.

    Returns
    -------
    float
        Distance in mm from the source to the first crossing of the skin.

    Raises
    ------
    rtplan.errors.InputError
        If the central axis never enters the patient inside the CT.
    """
    from scipy.ndimage import map_coordinates

    grid = patient.ct.grid
    ext = _external_structure(patient) if use_external else None
    if ext is not None:
        field = np.asarray(ext.occupancy(grid), dtype=np.float32)
        level, what = 0.5, f"structure '{ext.name}'"
    else:
        field = np.asarray(patient.ct.array, dtype=np.float32)
        level, what = SKIN_HU, f"CT {SKIN_HU:g} HU level"
    src = np.asarray(beam.source_position_mm, dtype=float)
    axis = np.asarray(beam.beam_axis, dtype=float)
    # Parametrise where the ray crosses the CT box, then sample inside it.
    lo = np.array([e[0] for e in grid.extent_mm])
    hi = np.array([e[1] for e in grid.extent_mm])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - src) / axis
        t2 = (hi - src) / axis
    tmin = np.where(axis != 0, np.minimum(t1, t2), -np.inf)
    tmax = np.where(axis != 0, np.maximum(t1, t2), np.inf)
    inside = np.all((axis != 0) | ((src >= lo) & (src <= hi)))
    t_enter, t_exit = max(float(np.max(tmin)), 0.0), float(np.min(tmax))
    if not inside or t_exit <= t_enter:
        raise InputError(
            f"The central axis of {beam!r} does not cross the CT (extent {grid.extent_mm} mm); "
            "check the isocentre and the gantry/couch angles."
        )
    t = np.arange(t_enter, t_exit + step_mm, step_mm)
    pts = src + t[:, None] * axis
    idx = grid.point_to_index(pts).T  # (3, n) in (z, y, x)
    values = map_coordinates(field, idx, order=1, mode="nearest")
    above = np.nonzero(values >= level)[0]
    if above.size == 0:
        raise InputError(
            f"The central axis of {beam!r} never reaches the skin ({what}) inside the CT; "
            "check the isocentre."
        )
    k = int(above[0])
    if k == 0:
        return float(t[0])
    v0, v1 = float(values[k - 1]), float(values[k])
    frac = (level - v0) / (v1 - v0) if v1 != v0 else 0.0
    ssd = float(t[k - 1] + frac * (t[k] - t[k - 1]))
    log.debug("SSD %.1f mm for %r (%s)", ssd, beam, what)
    return ssd
