"""Morphological margins on voxel masks, in mm: exact to the voxel on anisotropic grids.

A margin is given per anatomical direction.  Growing a region ``A`` by the margin ``m``
is the dilation ``A ⊕ E`` by the **octant ellipsoid**

.. math:: E = \\{ d : \\sum_i (d_i / m_i(\\operatorname{sign} d_i))^2 \\le 1 \\},

i.e. along each axis the semi-axis on the positive side is the margin in that direction
and the one on the negative side the margin in the opposite direction: an ellipsoid whose
octants take the margins of their sides (3-D margin expansion with an ellipsoidal element
as in Stroom & Storchi, "Automatic calculation of three-dimensional margins around
treatment volumes in radiotherapy planning", Phys Med Biol 42, 1997).  With equal margins
it is the ball of radius ``m`` (a Euclidean margin); a box's faces move by exactly the
margin of their side (its edges and corners are rounded by the element).  Shrinking is
erosion by the same element (``complement(complement(A) ⊕ -E)``): each surface moves
inwards by the margin of its side.

The region is the set of evaluation-lattice voxels whose centre is inside, and a voxel is
in the grown region when its centre lies within ``E`` of such a centre.  So a box whose
faces lie on voxel faces grows by exactly the margin on each side (when the margin is a
multiple of the spacing).  On curved surfaces the nearest inside centre lies a fraction of
a voxel inside the true surface, so growing is biased low and shrinking high by about
``surface_area × h / 8`` (``h`` the lattice spacing), more for margins of a few lattice
steps that are not a whole number of them (measured on spheres, see
``tests/rtplan/structures/test_structures.py``); a finer lattice (``resolution_mm``) reduces it.

Two exact algorithms on that lattice:

- a **symmetric** margin (same on both sides of every axis, all non-zero) uses the
  Euclidean distance transform with scaled sampling
  (:func:`scipy.ndimage.distance_transform_edt`, ``sampling = spacing / margin``): a voxel is
  inside when its scaled distance to the region is ≤ 1;
- any other margin (different per side, or zero along an axis) uses a separable min-plus
  sweep: the scaled squared distance ``min_q Σ_i h_i(p_i - q_i)``, with
  ``h_i(t) = (t / m_i(sign t))²``, is minimised one axis at a time, which is exact because
  the cost is a sum of per-axis terms.  It costs ``Σ_i (m_i+ + m_i-) / s_i`` array passes.

The two agree voxel for voxel on symmetric margins (``tests/rtplan/structures/test_structures.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._internal.arguments import ARRAY, check_arguments
from ..errors import StructureError

__all__ = ["Margin", "dilate_mm", "erode_mm"]

#: Scaled distances up to 1 + this are inside (a face exactly ``margin`` away is kept).
_TOL = 1e-6
_DIRECTIONS = ("anterior", "posterior", "left", "right", "superior", "inferior")


@dataclass(frozen=True)
class Margin:
    """A margin in mm per anatomical direction (DICOM patient coordinates, LPS).

    Anterior is patient -y, posterior +y, right -x, left +x, inferior -z, superior +z,
    whatever the patient position on the couch.

    Parameters
    ----------
    anterior, posterior, left, right, superior, inferior : float, mm
        Non-negative.

    Examples
    --------
    >>> Margin.uniform(5.0)
    Margin(5 mm)
    >>> Margin(anterior=5, posterior=5, left=5, right=5, superior=7, inferior=7)
    Margin(anterior=5, posterior=5, left=5, right=5, superior=7, inferior=7 mm)
    """

    anterior: float = 0.0
    posterior: float = 0.0
    left: float = 0.0
    right: float = 0.0
    superior: float = 0.0
    inferior: float = 0.0

    def __post_init__(self) -> None:
        for d in _DIRECTIONS:
            v = getattr(self, d)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise StructureError(f"Margin `{d}` must be a number of mm; got {v!r}.")
            if v < 0:
                raise StructureError(
                    f"Margin `{d}` must be >= 0 mm; got {v!r} (use shrink() to move a surface "
                    "inwards)."
                )
            object.__setattr__(self, d, float(v))

    @classmethod
    def uniform(cls, margin_mm: float) -> Margin:
        """The same margin in every direction (a Euclidean margin)."""
        return cls(*([margin_mm] * 6))

    @classmethod
    def coerce(cls, value: float | Mapping[str, float] | Margin) -> Margin:
        """A :class:`Margin` from a number (uniform), a mapping of directions, or a Margin.

        Raises
        ------
        StructureError
            Unknown direction names (the accepted ones are listed) or bad values.
        """
        if isinstance(value, Margin):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(_DIRECTIONS))
            if unknown:
                raise StructureError(
                    f"Unknown margin direction(s) {unknown}; accepted: {list(_DIRECTIONS)}."
                )
            return cls(**{k: value[k] for k in value})
        return cls.uniform(value)

    @property
    def is_uniform(self) -> bool:
        """True when every direction has the same margin."""
        return len({getattr(self, d) for d in _DIRECTIONS}) == 1

    @property
    def is_zero(self) -> bool:
        """True when every direction is 0 mm."""
        return all(getattr(self, d) == 0 for d in _DIRECTIONS)

    def plus_minus_xyz(self) -> tuple[tuple[float, float], ...]:
        """``((+x, -x), (+y, -y), (+z, -z))`` margins in mm (left/right, posterior/anterior,
        superior/inferior)."""
        return (
            (self.left, self.right),
            (self.posterior, self.anterior),
            (self.superior, self.inferior),
        )

    def reflected(self) -> Margin:
        """The margin with every direction swapped with its opposite (``-E``)."""
        return Margin(
            anterior=self.posterior,
            posterior=self.anterior,
            left=self.right,
            right=self.left,
            superior=self.inferior,
            inferior=self.superior,
        )

    def pad_voxels(self, spacing_mm) -> tuple[int, int, int]:
        """Voxels ``(z, y, x)`` a region can grow by: ``ceil(max side / spacing) + 1``."""
        pm = self.plus_minus_xyz()
        dx, dy, dz = (float(s) for s in spacing_mm)
        return tuple(
            int(math.ceil(max(pm[a]) / s - 1e-9)) + 1 for a, s in ((2, dz), (1, dy), (0, dx))
        )

    def __repr__(self) -> str:
        if self.is_uniform:
            return f"Margin({self.anterior:g} mm)"
        body = ", ".join(f"{d}={getattr(self, d):g}" for d in _DIRECTIONS)
        return f"Margin({body} mm)"


def _sweep(mask: np.ndarray, margin: Margin, spacing_mm) -> np.ndarray:
    """Scaled squared distance from each voxel centre to the nearest centre in ``mask``
    (≤ 1 inside the grown region), by separable min-plus passes along x, y, z."""
    inf = np.float32(np.inf)
    cost = np.where(mask, np.float32(0), inf).astype(np.float32)
    dx, dy, dz = (float(s) for s in spacing_mm)
    pm = margin.plus_minus_xyz()
    for axis, (plus, minus), s in ((2, pm[0], dx), (1, pm[1], dy), (0, pm[2], dz)):
        k_plus = int(math.floor(plus / s + 1e-9))
        k_minus = int(math.floor(minus / s + 1e-9))
        if k_plus == 0 and k_minus == 0:
            continue
        out = cost.copy()
        n = cost.shape[axis]
        for k in range(-k_minus, k_plus + 1):
            if k == 0 or abs(k) >= n:
                continue
            m = plus if k > 0 else minus
            c = np.float32((k * s / m) ** 2)
            # out(p) = min(out(p), cost(p - k) + c)
            dst = [slice(None)] * 3
            src = [slice(None)] * 3
            if k > 0:
                dst[axis], src[axis] = slice(k, None), slice(0, n - k)
            else:
                dst[axis], src[axis] = slice(0, n + k), slice(-k, None)
            view = out[tuple(dst)]
            np.minimum(view, cost[tuple(src)] + c, out=view)
        cost = out
    return cost


def _symmetric(margin: Margin) -> bool:
    return all(p == m and p > 0 for p, m in margin.plus_minus_xyz())


@check_arguments(mask=ARRAY, margin="rtplan.structures._margins:Margin", spacing_mm=ARRAY)
def dilate_mm(mask: np.ndarray, margin: Margin, spacing_mm, *, method: str = "auto") -> np.ndarray:
    """Grow a boolean ``(nz, ny, nx)`` mask by ``margin`` (see the module docstring).

    Parameters
    ----------
    mask : (nz, ny, nx) ndarray of bool
        Voxels outside the array count as outside the region; give enough padding.
    margin : Margin
    spacing_mm : (3,) tuple of float, mm
        ``(dx, dy, dz)`` of the grid.

    Returns
    -------
    method : {"auto", "edt", "sweep"}
        ``"auto"``: the distance transform for symmetric margins, the sweep otherwise.

    Returns
    -------
    (nz, ny, nx) ndarray of bool
        Voxels whose centre lies within the margin's octant ellipsoid of a centre of
        ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise StructureError(f"`mask` must be a 3-D (nz, ny, nx) array; got shape {mask.shape}.")
    if method not in ("auto", "edt", "sweep"):
        raise StructureError(f"`method` must be 'auto', 'edt' or 'sweep'; got {method!r}.")
    if margin.is_zero or not mask.any():
        return mask.copy()
    if method == "edt" or (method == "auto" and _symmetric(margin)):
        if not _symmetric(margin):
            raise StructureError("method='edt' needs the same non-zero margin on both sides.")
        dx, dy, dz = (float(s) for s in spacing_mm)
        (mx, _), (my, _), (mz, _) = margin.plus_minus_xyz()
        dist = ndimage.distance_transform_edt(~mask, sampling=(dz / mz, dy / my, dx / mx))
        return dist <= 1.0 + _TOL
    return _sweep(mask, margin, spacing_mm) <= 1.0 + _TOL


@check_arguments(mask=ARRAY, margin="rtplan.structures._margins:Margin", spacing_mm=ARRAY)
def erode_mm(mask: np.ndarray, margin: Margin, spacing_mm, *, method: str = "auto") -> np.ndarray:
    """Shrink a boolean mask: every surface moves inwards by the margin of its side.

    Voxels outside the array count as outside the region (so a region touching the array
    border is eroded from there too).
    """
    mask = np.asarray(mask, dtype=bool)
    if margin.is_zero or not mask.any():
        return mask.copy()
    pad = margin.pad_voxels(spacing_mm)
    padded = np.pad(~mask, [(p, p) for p in pad], constant_values=True)
    grown = dilate_mm(padded, margin.reflected(), spacing_mm, method=method)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))
    return ~grown[inner]
