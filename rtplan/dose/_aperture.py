"""Dose from MLC apertures: the one segment → rectangles → dose path of rtplan.

Every open leaf-pair gap of a segment, clipped by the jaws
(:meth:`rtplan.DeliverableBeam.segment_rectangles_mm`), is a rectangle in the isocentre
plane (IEC BLD coordinates, mm) delivering its segment's meterset; identical rectangles of
a beam are merged (dose is linear in MU) and :func:`dose_engine.field_dose` sums them on
the dose grid.  The final dose of planning, the second check of a read RT-PLAN
(:func:`rtplan.compute_plan_dose`) and the sequencing benches all take this path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dose_engine import field_dose

from .._internal.arguments import ARRAY, check_arguments, sequence_of

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Grid

    from ..delivery import DeliverableBeam

__all__ = ["aperture_dose", "beam_rectangles_mm", "merge_rectangles", "plan_aperture_dose"]


def merge_rectangles(rectangles_mm, mu) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical rectangles, summing their meterset.

    Dose is linear in meterset, so a leaf-pair opening that recurs in several segments
    of a beam (common after sweep sequencing: typically 2–3 times fewer rectangles) is
    computed once with the summed MU.

    Parameters
    ----------
    rectangles_mm : (n, 4) ndarray, mm
        ``[x1, x2, y1, y2]`` in IEC BLD coordinates at the isocentre plane.
    mu : (n,) ndarray, MU

    Returns
    -------
    rectangles_mm : (m, 4) ndarray, mm
        Unique rectangles (equal to 1e-6 mm), m ≤ n.
    mu : (m,) ndarray, MU
        Summed meterset of each.
    """
    rects = np.asarray(rectangles_mm, dtype=float)
    unique, inverse = np.unique(np.round(rects, 6), axis=0, return_inverse=True)
    summed = np.bincount(
        inverse.ravel(), weights=np.asarray(mu, dtype=float), minlength=unique.shape[0]
    )
    return unique, summed


def beam_rectangles_mm(dbeam: DeliverableBeam) -> tuple[np.ndarray, np.ndarray]:
    """The open rectangles of every segment of ``dbeam`` with their meterset, merged.

    Returns
    -------
    rectangles_mm : (n, 4) ndarray, mm
        ``[x1, x2, y1, y2]`` in IEC BLD coordinates at the isocentre plane; ``n = 0`` when
        no segment with meterset opens anything.
    mu : (n,) ndarray, MU
        Meterset of each (summed over the segments that open it).
    """
    rects, mus = [], []
    for k, seg in enumerate(dbeam.segments):
        r = dbeam.segment_rectangles_mm(k)
        if r.size and seg.total_mu > 0:
            rects.append(r)
            mus.append(np.full(len(r), seg.total_mu))
    if not rects:
        return np.zeros((0, 4)), np.zeros(0)
    return merge_rectangles(np.concatenate(rects), np.concatenate(mus))


@check_arguments(
    dbeam="rtplan.delivery._deliverable:DeliverableBeam",
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
)
def aperture_dose(
    dbeam: DeliverableBeam,
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    model: Any = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
) -> np.ndarray:
    """Dose of a sequenced beam computed from its apertures (not from the fluence map).

    The rectangles of :func:`beam_rectangles_mm` (every open leaf-pair gap clipped by the
    jaws, carrying its segment's MU; identical ones merged) go into one
    ``dose_engine.field_dose`` call (the pencil-beam dose is additive).

    Parameters
    ----------
    dbeam : DeliverableBeam
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Relative electron density.
    ct_grid, dose_grid : dose_engine.Grid
    model : dose_engine BeamModel, optional
        Default: the dose engine's shipped 6 MV model.
    backend : {"numpy", "cupy"}, keyword-only
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional, keyword-only

    Returns
    -------
    (nz, ny, nx) array of float32, Gy
        Total dose over all fractions (segment MU are totals), on the backend's device.

    Raises
    ------
    dose_engine.errors.InvalidGeometryError
        The dose engine refuses the beam (e.g. an isocentre outside the CT).
    """
    rectangles_mm, mu = beam_rectangles_mm(dbeam)
    if mu.size == 0:
        return np.zeros(dose_grid.shape, dtype=np.float32)
    return field_dose(
        density,
        ct_grid,
        dose_grid,
        dbeam.beam,
        rectangles_mm,
        mu,
        model,
        backend=backend,
        voxel_mask=voxel_mask,
    )


@check_arguments(
    dbeams=sequence_of("rtplan.delivery._deliverable:DeliverableBeam"),
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
)
def plan_aperture_dose(
    dbeams: Sequence[DeliverableBeam],
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    model: Any = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
) -> np.ndarray:
    """Sum of :func:`aperture_dose` over beams, Gy (total over all fractions)."""
    total = None
    for b in dbeams:
        d = aperture_dose(
            b, density, ct_grid, dose_grid, model, backend=backend, voxel_mask=voxel_mask
        )
        total = d if total is None else total + d
    if total is None:
        return np.zeros(dose_grid.shape, dtype=np.float32)
    return total
