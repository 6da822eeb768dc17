r"""Head scatter collimated by the jaws, phantom scatter by the MLC opening.

The beam model's in-air fluence of an aperture ``A`` is a focal part (weight ``1 - w_h``,
Gaussian source ``σ_src``) and an extra-focal head-scatter part (``w_h``, broad Gaussian
``σ_h``), both integrated over ``A`` (:mod:`dose_engine._model`).  For an open field the
jaws are the aperture and this is the collimator-scatter factor ``S_c`` the model was
fitted to.  Under an MLC inside wider jaws the extra-focal photons that reach the patient
are those the jaws let through: ``S_c`` follows the jaw opening ``J``, while the phantom
scatter follows the MLC opening (the ``S_c(jaws) × S_p(MLC field)`` factorisation of hand
and second-check MU calculations; Zhu TC et al. 2009, AAPM TG-74, Med Phys 36:5261,
doi:10.1118/1.3227367).  The focal source stays occluded by the MLC (the output of small
MLC openings falls as the source is hidden).  The segment's meterset is scaled by

.. math::

   s = \frac{(1 - w_h)\, G_{σ_{src}}(A; c) + w_h\, G_{σ_h}(J; c)}
            {(1 - w_h)\, G_{σ_{src}}(A; c) + w_h\, G_{σ_h}(A; c)},

with ``G_σ(X; c)`` the integral of a unit 2-D Gaussian of widths ``σ = (σ_x, σ_y)`` over the
(weighted) rectangles of ``X`` seen from ``c``, the centroid of the segment's open area:
the in-air output at ``c`` then has the head scatter of the jaws.  ``s = 1`` when the MLC
does not cut into the jaw opening (every open-field measurement the model was fitted to),
above 1 when it does.  The extra fluence keeps the aperture's shape; how far the MLC itself
shields the extra-focal source (it does, less sharply than assumed here, for narrow
openings) is not modelled.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from ._arguments import ARRAY, check_arguments
from ._model import BeamModel

__all__ = ["collimator_scatter_scale"]

#: A rectangle counts as open (for the centroid) from this fluence weight on.
OPEN_WEIGHT = 0.5


@check_arguments(
    model="dose_engine._model:BeamModel", rectangles_mm=ARRAY, weights=ARRAY, jaws_mm=ARRAY
)
def collimator_scatter_scale(
    model: BeamModel, rectangles_mm, weights, jaws_mm: tuple[float, float, float, float]
) -> float:
    """Meterset scale that makes a segment's head scatter follow its jaws (module docstring).

    Parameters
    ----------
    model : BeamModel
    rectangles_mm : (n, 4) array_like, mm
        The segment's fluence ``[x1, x2, y1, y2]`` (isocentre plane, BLD).
    weights : (n,) array_like
        Fluence per MU of each rectangle (:func:`dose_engine.aperture_fluence`).
    jaws_mm : (x1, x2, y1, y2), mm
        The opening that collimates the head scatter (the jaws; the MLC's reach along an
        axis without jaws).

    Returns
    -------
    float
        ``s`` of the module docstring; 1 for a segment with no open rectangle, or whose
        open area's centroid is out of reach of the source and head-scatter Gaussians.
    """
    rects = np.asarray(rectangles_mm, dtype=float).reshape(-1, 4)
    w = np.asarray(weights, dtype=float).ravel()
    is_open = w >= OPEN_WEIGHT
    if not is_open.any():
        return 1.0
    area = (rects[is_open, 1] - rects[is_open, 0]) * (rects[is_open, 3] - rects[is_open, 2])
    cx = float(np.sum(area * (rects[is_open, 0] + rects[is_open, 1])) / (2 * area.sum()))
    cy = float(np.sum(area * (rects[is_open, 2] + rects[is_open, 3])) / (2 * area.sum()))
    p = model.parameters
    wh = float(p["head_scatter_weight"])
    focal = (1.0 - wh) * _gaussian_integral(rects, w, cx, cy, p["source_sigma_mm"])
    sigma_h = p["head_scatter_sigma_mm"]
    jaws = np.asarray(jaws_mm, dtype=float).reshape(1, 4)
    head_jaws = wh * _gaussian_integral(jaws, np.ones(1), cx, cy, sigma_h)
    head_aperture = wh * _gaussian_integral(rects, w, cx, cy, sigma_h)
    if not focal + head_aperture > 0:
        # the open area's centroid lies in a closed region farther from every opening than
        # the model's source and head-scatter widths reach (e.g. two narrow openings far
        # apart): the in-air output there is not defined, so the meterset is not scaled
        return 1.0
    return (focal + head_jaws) / (focal + head_aperture)


def _gaussian_integral(rects: np.ndarray, weights: np.ndarray, cx: float, cy: float, sigma):
    """``Σ w ∫_rect N(x; c, σ)``: a unit 2-D Gaussian centred on ``(cx, cy)``."""
    sx, sy = (float(v) for v in np.broadcast_to(np.asarray(sigma, dtype=float), (2,)))
    kx, ky = 1.0 / (math.sqrt(2.0) * sx), 1.0 / (math.sqrt(2.0) * sy)
    fx = erf((rects[:, 1] - cx) * kx) - erf((rects[:, 0] - cx) * kx)
    fy = erf((rects[:, 3] - cy) * ky) - erf((rects[:, 2] - cy) * ky)
    return float(np.sum(weights * 0.25 * fx * fy))
