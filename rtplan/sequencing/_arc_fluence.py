"""Fluence delivered by control points whose leaves move linearly with the meterset.

One job: integrate, exactly, the meterset each beamlet cell receives between two control
points of an arc or dynamic MLC beam.  Between control points ``k`` and ``k + 1`` every
leaf moves linearly with the cumulative meterset (DICOM PS3.3 C.8.8.14: positions are
interpolated linearly between control points), so a point ``x`` under leaf pair ``p`` is
open for the fraction of the interval during which ``A_p(s) < x < B_p(s)``,
``s ∈ [0, 1]``.  The cell average of that fraction is
``∫_0^1 overlap([A(s), B(s)], [x_l, x_r]) ds / (x_r − x_l)``, whose integrand is piecewise
linear in ``s`` with kinks only where a leaf crosses a cell edge or the leaves meet, so the
trapezoid rule on those kinks is exact.  Leaf transmission, the rounded leaf ends and
tongue-and-groove are not included (geometric fluence, as
:func:`rtplan.sequencing.fluence_from_segments` for static segments).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._internal.arguments import ARRAY, NUMBER, check_arguments, sequence_of
from ..delivery._arc import ControlPoint
from ..errors import SequencingError

__all__ = ["control_point_fluence"]


def _mean_overlap(a0, a1, b0, b1, xl, xr) -> np.ndarray:
    """Mean over ``s ∈ [0, 1]`` of the overlap of ``[A(s), B(s)]`` with ``[xl, xr]``, mm.

    ``a0, a1, b0, b1`` are ``(n_pairs, 1)``, ``xl, xr`` ``(1, n_cols)``; returns
    ``(n_pairs, n_cols)``.
    """
    da, db = a1 - a0, b1 - b0
    shape = np.broadcast_shapes(a0.shape, xl.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = [
            (xl - a0) / da,
            (xr - a0) / da,
            (xl - b0) / db,
            (xr - b0) / db,
            np.broadcast_to((a0 - b0) / (db - da), shape),
        ]
    s = np.stack(
        [np.zeros(shape), np.ones(shape)]
        + [np.broadcast_to(np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0), shape) for c in cand],
        axis=-1,
    )
    s = np.sort(np.clip(s, 0.0, 1.0), axis=-1)
    a = a0[..., None] + s * da[..., None]
    b = b0[..., None] + s * db[..., None]
    ov = np.clip(np.minimum(b, xr[..., None]) - np.maximum(a, xl[..., None]), 0.0, None)
    return np.sum(0.5 * (ov[..., 1:] + ov[..., :-1]) * np.diff(s, axis=-1), axis=-1)


@check_arguments(
    control_points=sequence_of("rtplan.delivery._arc:ControlPoint"),
    meterset_mu=NUMBER,
    leaf_boundaries_mm=ARRAY,
    x_edges_mm=ARRAY,
    y_edges_mm=ARRAY,
)
def control_point_fluence(
    control_points: Sequence[ControlPoint],
    meterset_mu: float,
    leaf_boundaries_mm,
    x_edges_mm,
    y_edges_mm,
) -> np.ndarray:
    """Meterset each beamlet cell receives in each interval between control points.

    Parameters
    ----------
    control_points : sequence of ControlPoint
        Leaves ``(2, n_pairs)``; jaws must not move during an interval with the beam on.
    meterset_mu : float, MU
        Meterset of the beam (the weights are fractions of it).
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm
        The MLC's leaf-pair boundaries along BLD y.
    x_edges_mm, y_edges_mm : 1-D arrays of float, mm
        Cell edges of the map (BLD, isocentre plane), columns along x, rows along y.

    Returns
    -------
    (n_control_points - 1, n_rows, n_cols) ndarray of float, MU
        Geometric fluence (cell average) of each interval, in the unit of ``meterset_mu``.

    Raises
    ------
    SequencingError
        Jaws that move while the beam is on.
    """
    xe = np.asarray(x_edges_mm, dtype=float)
    ye = np.asarray(y_edges_mm, dtype=float)
    lb = np.asarray(leaf_boundaries_mm, dtype=float)
    widths = np.diff(xe)
    out = np.zeros((len(control_points) - 1, ye.size - 1, xe.size - 1))
    for k in range(len(control_points) - 1):
        c0, c1 = control_points[k], control_points[k + 1]
        dmu = meterset_mu * (c1.cumulative_meterset_weight - c0.cumulative_meterset_weight)
        if dmu <= 0:
            continue
        if dict(c0.jaws_mm) != dict(c1.jaws_mm):
            raise SequencingError(
                f"control points {k} and {k + 1}: jaws move while the beam is on; "
                "control_point_fluence integrates moving leaves under static jaws only."
            )
        xl, xr = xe[:-1], xe[1:]
        if "X" in c0.jaws_mm:
            x1, x2 = c0.jaws_mm["X"]
            xl, xr = np.clip(xl, x1, x2), np.clip(xr, x1, x2)
        y_lo, y_hi = lb[:-1], lb[1:]
        if "Y" in c0.jaws_mm:
            y1, y2 = c0.jaws_mm["Y"]
            y_lo, y_hi = np.clip(y_lo, y1, y2), np.clip(y_hi, y1, y2)
        # share of each row (height) under each pair, inside the Y jaws: (n_rows, n_pairs)
        y_share = (
            np.clip(
                np.minimum(ye[1:, None], y_hi[None, :]) - np.maximum(ye[:-1, None], y_lo[None, :]),
                0.0,
                None,
            )
            / np.diff(ye)[:, None]
        )
        pairs = np.flatnonzero(y_share.sum(axis=0) > 0)
        if pairs.size == 0:
            continue
        (a0, b0), (a1, b1) = c0.leaf_positions_mm[:, pairs], c1.leaf_positions_mm[:, pairs]
        ov = _mean_overlap(
            a0[:, None], a1[:, None], b0[:, None], b1[:, None], xl[None, :], xr[None, :]
        )
        out[k] = dmu * (y_share[:, pairs] @ (ov / widths[None, :]))
    return out
