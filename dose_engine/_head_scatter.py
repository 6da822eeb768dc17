r"""Head scatter through the jaws and the MLC, each seen from its own height.

The beam model's in-air fluence of an aperture ``A`` is a focal part (weight ``1 - w_h``,
Gaussian source ``σ_src``) and an extra-focal head-scatter part (``w_h``, broad Gaussian
``σ_h``), both integrated over ``A`` in the isocentre plane (:mod:`dose_engine._model`).
For an open field this is the collimator-scatter factor ``S_c`` the model was fitted to.
Under an MLC the extra-focal source is seen from a point through **both** the jaws and
the leaves, and the two sit at different distances from the source: each projects onto
the source plane with its own scale (Ahnesjö A 1994, "Analytic modeling of photon scatter
from flattening filters in photon therapy beams", Med Phys 21:1227, doi:10.1118/1.597205;
Jaffray DA et al. 1993, Med Phys 20:1417, doi:10.1118/1.597106).  An edge at ``e``
(isocentre plane) of a device at distance ``z`` from the source hides, from a point at
``x``, the source beyond ``z / (SAD - z) (e - x)``.  Along each axis ``σ_h`` is that of the
uppermost device collimating the commissioned open fields along it (Varian: the X and Y
jaws above the MLC; Agility: the leaves, above the Y diaphragms and without X jaws); a
device at ``z`` then cuts the source, in the units of ``σ_h``, at ``k (e - x)`` with

.. math::

   k = \frac{z / (\mathrm{SAD} - z)}{z_{ref} / (\mathrm{SAD} - z_{ref})} \ge 1 .

A lower device sees more of the source through the same projected opening: a Varian MLC
slit of width ``g`` under wide jaws shows the source over ``k g``, not the jaws' whole
view.  The visible fraction of the extra-focal source from a point ``c`` is

.. math::

   V(c) = (1 - t) \sum_i G_{σ_h}(P_J ∩ P_{O_i}; c) + t\, G_{σ_h}(P_J ∩ P_Φ; c),

with ``P_J`` the projected jaw opening, ``P_{O_i}`` that of leaf pair ``i`` (tips moved
back by ``DLG / 2``), ``P_Φ`` the MLC's whole reach (leaf transmission ``t``), and
``G_σ(R; c)`` the integral of a unit 2-D Gaussian over the rectangle ``R``: one product of
``erf`` differences per leaf pair (the intersection of two rectangles is a rectangle).  The
segment's meterset is scaled so that its in-air output summed over its open area (the
centres ``c`` of a grid of cells at most :data:`SAMPLE_MM` wide, where the segment's fluence
is at least :data:`OPEN_WEIGHT`) has this head scatter:

.. math::

   s = \frac{\sum_c (1 - w_h)\, G_{σ_{src}}(A; c) + w_h V(c)}
            {\sum_c (1 - w_h)\, G_{σ_{src}}(A; c) + w_h\, G_{σ_h}(A; c)} .

``s = 1`` for a segment whose leaves are on or behind the jaws (every open field the model
was fitted to); for an MLC opening inside wider jaws ``s > 1`` by the source the lower
leaves uncover, bounded by the jaws' view.  The extra fluence keeps the aperture's shape
(the model's ``σ_h`` blur), while through a lower MLC the true extra-focal fluence has
sharper edges (width ``σ_h / k``): one scale per segment is right on average over its open
area, a little low at its centre and high at its edges (docs/commissioning.md gives the
sizes).  Without the heights (``None`` in :class:`dose_engine.MLCParameters`) every device
is taken at one height (``k = 1``): the head scatter then follows the MLC opening.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.special import erf

from ._arguments import ARRAY, check_arguments
from ._mlc_fluence import MLCParameters
from ._model import BeamModel
from .errors import InvalidGeometryError

__all__ = ["collimator_scatter_scale"]

#: A cell of the open area is one where the segment's fluence per MU is at least this.
OPEN_WEIGHT = 0.5
#: Largest cell of the grid on which the in-air output is sampled over the open area, mm.
SAMPLE_MM = 10.0


@check_arguments(
    model="dose_engine._model:BeamModel",
    rectangles_mm=ARRAY,
    weights=ARRAY,
    leaf_positions_mm=ARRAY,
    leaf_boundaries_mm=ARRAY,
    jaws_mm=Mapping,
    parameters="dose_engine._mlc_fluence:MLCParameters",
)
def collimator_scatter_scale(
    model: BeamModel,
    rectangles_mm,
    weights,
    leaf_positions_mm,
    leaf_boundaries_mm,
    jaws_mm: Mapping,
    parameters: MLCParameters,
    *,
    reach_x_mm: tuple[float, float] = (-200.0, 200.0),
) -> float:
    """Meterset scale that gives a segment the head scatter its jaws and MLC let through.

    Parameters
    ----------
    model : BeamModel
    rectangles_mm : (n, 4) array_like, mm
        The segment's fluence ``[x1, x2, y1, y2]`` (isocentre plane, BLD).
    weights : (n,) array_like
        Fluence per MU of each rectangle (:func:`dose_engine.aperture_fluence`).
    leaf_positions_mm : (2, n_pairs) array_like, mm
        Bank A (−x) and bank B (+x) leaf tips.
    leaf_boundaries_mm : (n_pairs + 1,) array_like, mm
        Leaf-pair boundaries along y, increasing.
    jaws_mm : mapping of str to (float, float), mm
        ``{"X": (x1, x2), "Y": (y1, y2)}``; a missing jaw does not collimate.
    parameters : MLCParameters
        Leaf transmission, dosimetric leaf gap and the devices' distances from the source.
    reach_x_mm : (float, float), mm, keyword-only
        Extent of the leaves along x.

    Returns
    -------
    float
        ``s`` of the module docstring; 1 for a segment with no open rectangle, or whose
        open area is out of reach of the source and head-scatter Gaussians.

    Raises
    ------
    InvalidGeometryError
        A device at or beyond the source-axis distance.
    """
    rects = np.asarray(rectangles_mm, dtype=float).reshape(-1, 4)
    w = np.asarray(weights, dtype=float).ravel()
    gx, gy, area = _sample_grid(rects, w)
    if not area.any():
        return 1.0
    p = model.parameters
    wh = float(p["head_scatter_weight"])
    sigma_h = p["head_scatter_sigma_mm"]
    focal = (1.0 - wh) * _weighted_sum(
        _gaussian_integral(rects, w, gx, gy, p["source_sigma_mm"]), area
    )
    head_aperture = wh * _weighted_sum(_gaussian_integral(rects, w, gx, gy, sigma_h), area)
    if not focal + head_aperture > 0:
        return 1.0
    leaves = np.asarray(leaf_positions_mm, dtype=float)
    bounds = np.asarray(leaf_boundaries_mm, dtype=float).ravel()
    rx0, rx1 = (float(v) for v in reach_x_mm)
    half_gap = 0.5 * parameters.dosimetric_leaf_gap_mm
    a = np.clip(leaves[0] - half_gap, rx0, rx1)
    b = np.clip(leaves[1] + half_gap, rx0, rx1)
    k_mlc, k_jaw = source_plane_scales(parameters, model.sad_mm, set(jaws_mm))
    # the open pairs, then the whole reach (under the leaves, transmission t)
    mlc_x = np.stack([np.append(a, rx0), np.append(b, rx1)], axis=-1)
    mlc_y = np.stack([np.append(bounds[:-1], bounds[0]), np.append(bounds[1:], bounds[-1])], -1)
    inf = math.inf
    jaw_x = np.array(jaws_mm.get("X", (-inf, inf)), dtype=float)
    jaw_y = np.array(jaws_mm.get("Y", (-inf, inf)), dtype=float)
    t = parameters.transmission
    share = np.append(np.full(a.size, 1.0 - t), t)
    sx, sy = _pair(sigma_h)
    fx = _visible(mlc_x, jaw_x, gx[:, None], k_mlc[0], k_jaw[0], sx)  # (nx, pairs + 1)
    fy = _visible(mlc_y, jaw_y, gy[:, None], k_mlc[1], k_jaw[1], sy)  # (ny, pairs + 1)
    head_seen = wh * _weighted_sum((fx[:, None, :] * fy[None, :, :]) @ share, area)
    return float((focal + head_seen) / (focal + head_aperture))


def source_plane_scales(
    parameters: MLCParameters, sad_mm: float, jaws: set[str]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``k`` of the module docstring for the MLC and the jaws, along x and y.

    Parameters
    ----------
    parameters : MLCParameters
        Its ``source_to_mlc_mm`` / ``_x_jaws_mm`` / ``_y_jaws_mm``.
    sad_mm : float, mm
    jaws : set of str
        The jaws the segment has (``"X"``, ``"Y"``).

    Returns
    -------
    (k_mlc_x, k_mlc_y), (k_jaw_x, k_jaw_y)
        All 1 when a height is unknown (``None``).
    """
    heights = {
        "MLC": parameters.source_to_mlc_mm,
        "X": parameters.source_to_x_jaws_mm if "X" in jaws else None,
        "Y": parameters.source_to_y_jaws_mm if "Y" in jaws else None,
    }
    if heights["MLC"] is None or any(heights[j] is None for j in jaws & {"X", "Y"}):
        return (1.0, 1.0), (1.0, 1.0)
    view = {}
    for key, z in heights.items():
        if z is None:
            continue
        if not 0.0 < z < sad_mm:
            raise InvalidGeometryError(
                f"MLC parameters ({parameters.source or 'given'}): the {key} device at {z:g} mm "
                f"from the source is not between the source and the isocentre ({sad_mm:g} mm)."
            )
        view[key] = z / (sad_mm - z)
    ref_x = min(view["MLC"], view.get("X", math.inf))
    ref_y = min(view["MLC"], view.get("Y", math.inf))
    k_mlc = (view["MLC"] / ref_x, view["MLC"] / ref_y)
    k_jaw = (view.get("X", ref_x) / ref_x, view.get("Y", ref_y) / ref_y)
    return k_mlc, k_jaw


def _sample_grid(rects: np.ndarray, weights: np.ndarray):
    """Cell centres ``gx`` ``(nx,)``, ``gy`` ``(ny,)`` (mm) of a grid of cells at most
    :data:`SAMPLE_MM` wide over the open rectangles' bounding box, and each cell's open area
    ``(nx, ny)`` (mm²; 0 where the fluence at its centre is below :data:`OPEN_WEIGHT`).  An
    opening the grid misses (narrow ones far apart) is sampled at its rectangles' centres."""
    is_open = weights >= OPEN_WEIGHT
    if not is_open.any():
        return np.zeros(1), np.zeros(1), np.zeros((1, 1))
    o = rects[is_open]
    (x1, y1), (x2, y2) = o[:, [0, 2]].min(axis=0), o[:, [1, 3]].max(axis=0)
    nx = max(1, math.ceil((x2 - x1) / SAMPLE_MM))
    ny = max(1, math.ceil((y2 - y1) / SAMPLE_MM))
    gx = x1 + (np.arange(nx) + 0.5) * (x2 - x1) / nx
    gy = y1 + (np.arange(ny) + 0.5) * (y2 - y1) / ny
    inside_x = (rects[:, 0] <= gx[:, None]) & (gx[:, None] < rects[:, 1])  # (nx, n)
    inside_y = (rects[:, 2] <= gy[:, None]) & (gy[:, None] < rects[:, 3])  # (ny, n)
    fluence = (inside_x[:, None, :] & inside_y[None, :, :]) @ weights
    area = np.where(fluence >= OPEN_WEIGHT, (x2 - x1) * (y2 - y1) / (nx * ny), 0.0)
    if area.any():
        return gx, gy, area
    cx, cy = o[:, :2].mean(axis=1), o[:, 2:].mean(axis=1)
    return cx, cy, np.diag((o[:, 1] - o[:, 0]) * (o[:, 3] - o[:, 2]))


def _weighted_sum(values: np.ndarray, area: np.ndarray) -> float:
    """``Σ values · area`` over the cells ``(nx, ny)``."""
    return float(np.sum(values * area))


def _visible(mlc, jaw, at, k_mlc: float, k_jaw: float, sigma: float) -> np.ndarray:
    """Visible share ``(m, n)`` of a unit 1-D Gaussian (width ``sigma``) from the points
    ``at`` ``(m, 1)`` through each interval of ``mlc`` ``(n, 2)`` intersected with ``jaw``
    ``(2,)``, each projected with its scale ``k``; 0 where they do not overlap."""
    lo = np.maximum(k_mlc * (mlc[:, 0] - at), k_jaw * (jaw[0] - at))
    hi = np.minimum(k_mlc * (mlc[:, 1] - at), k_jaw * (jaw[1] - at))
    k = 1.0 / (math.sqrt(2.0) * sigma)
    return 0.5 * np.maximum(erf(hi * k) - erf(lo * k), 0.0)


def _pair(sigma) -> tuple[float, float]:
    sx, sy = (float(v) for v in np.broadcast_to(np.asarray(sigma, dtype=float), (2,)))
    return sx, sy


def _gaussian_integral(rects: np.ndarray, weights: np.ndarray, gx, gy, sigma) -> np.ndarray:
    """``Σ w ∫_rect N(x; p, σ)`` ``(nx, ny)``: a unit 2-D Gaussian centred on each grid
    point ``p = (gx[i], gy[j])``."""
    sx, sy = _pair(sigma)
    kx, ky = 1.0 / (math.sqrt(2.0) * sx), 1.0 / (math.sqrt(2.0) * sy)
    x, y = gx[:, None], gy[:, None]
    fx = erf((rects[:, 1] - x) * kx) - erf((rects[:, 0] - x) * kx)  # (nx, n)
    fy = erf((rects[:, 3] - y) * ky) - erf((rects[:, 2] - y) * ky)  # (ny, n)
    return 0.25 * (fx[:, None, :] * fy[None, :, :]) @ weights
