"""Analytic polygon primitives of the procedural phantoms (LPS mm, one axial plane).

Every phantom structure and material is a set of closed polygons per slice built from
these, so it round-trips through RT-STRUCT unchanged and rasterises with fractional
occupancy (:func:`rtplan.structures._rasterize.polygon_occupancy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "VERTEX_SPACING_MM",
    "Material",
    "RoiSpec",
    "annular_sector",
    "cut_by_ellipse",
    "ellipse",
    "ellipse_cut",
    "elliptic_band",
    "rect",
    "subtract_ellipse",
    "union_ellipse",
    "zrange",
]

#: Target polygon resolution: one vertex per this many mm of perimeter.
VERTEX_SPACING_MM = 1.0


def _n_vertices(perimeter_mm: float) -> int:
    return int(np.clip(np.ceil(perimeter_mm / VERTEX_SPACING_MM), 48, 1440))


def ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Counter-clockwise polygon approximating an ellipse, (n, 2) mm.

    Vertices lie on the ellipse; the polygon's area is smaller than the ellipse's by a
    relative ``(2π²/3)/n²`` (< 0.1 % for the vertex counts used here).
    """
    perim = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    t = np.linspace(0.0, 2 * np.pi, _n_vertices(perim), endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def annular_sector(
    cx: float, cy: float, r_in: float, r_out: float, centre_deg: float, span_deg: float
) -> np.ndarray:
    """Polygon of the ring sector ``r_in <= r <= r_out`` over ``span_deg`` about ``centre_deg``.

    Angles are measured in the x-y plane from +x towards +y (LPS: from patient left
    towards posterior).
    """
    t0 = np.deg2rad(centre_deg - span_deg / 2)
    t1 = np.deg2rad(centre_deg + span_deg / 2)
    n_out = _n_vertices(r_out * (t1 - t0))
    n_in = _n_vertices(r_in * (t1 - t0))
    to = np.linspace(t0, t1, n_out)
    ti = np.linspace(t1, t0, n_in)
    outer = np.column_stack([cx + r_out * np.cos(to), cy + r_out * np.sin(to)])
    inner = np.column_stack([cx + r_in * np.cos(ti), cy + r_in * np.sin(ti)])
    return np.concatenate([outer, inner])


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle polygon, (4, 2) mm."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def cut_by_ellipse(centre_xy, polygon: np.ndarray, a: float, b: float) -> np.ndarray:
    """Pull the vertices of a polygon that is star-shaped about ``centre_xy`` back along
    their rays until they leave the ellipse ``(x/a)² + (y/b)² < 1`` (centred at the
    origin): the part of the polygon that the ellipse covers is removed, so the two
    regions abut without overlapping.  ``centre_xy`` must lie outside the ellipse.
    """
    c = np.asarray(centre_xy, dtype=float)
    d = polygon - c
    # |(c + t d) / (a, b)|² = 1  →  A t² + B t + C = 0
    A = (d[:, 0] / a) ** 2 + (d[:, 1] / b) ** 2
    B = 2 * (c[0] * d[:, 0] / a**2 + c[1] * d[:, 1] / b**2)
    C = (c[0] / a) ** 2 + (c[1] / b) ** 2 - 1.0
    disc = B * B - 4 * A * C
    t = np.ones(len(d))
    hit = disc > 0
    t_enter = np.full(len(d), np.inf)
    t_enter[hit] = (-B[hit] - np.sqrt(disc[hit])) / (2 * A[hit])
    cut = hit & (t_enter > 0) & (t_enter < 1)
    t[cut] = t_enter[cut]
    return c + t[:, None] * d


@dataclass(frozen=True)
class RoiSpec:
    """One phantom ROI: polygons for a slice at ``z_mm`` (empty list where absent)."""

    name: str
    roi_type: str
    color_rgb: tuple[int, int, int]
    polygons_at: Callable[[float], list[np.ndarray]]


@dataclass(frozen=True)
class Material:
    """One tissue of a phantom CT: ``hu`` painted over what lies below it (the materials
    of a phantom are painted in order, each weighted by its fractional occupancy) inside
    the polygons of a slice at ``z_mm``."""

    name: str
    hu: float
    polygons_at: Callable[[float], list[np.ndarray]]


def zrange(lo: float, hi: float, fn: Callable[[float], list[np.ndarray]]):
    """Restrict ``fn`` to slices with ``lo <= z < hi`` (half-open, so stacked parts abut)."""

    def at(z: float) -> list[np.ndarray]:
        return fn(z) if lo - 1e-6 <= z < hi - 1e-6 else []

    return at


def ellipse_cut(
    cx: float, cy: float, a: float, b: float, *, axis: str, cut_mm: float, keep: str
) -> np.ndarray:
    """Polygon of the part of an ellipse on one side of a line ``x = cut_mm`` or
    ``y = cut_mm`` (counter-clockwise; the straight side has one vertex per
    :data:`VERTEX_SPACING_MM`).

    Parameters
    ----------
    cx, cy, a, b : float, mm
        Centre and semi-axes along x and y.
    axis : {"x", "y"}
        The coordinate the cut line fixes.
    cut_mm : float, mm
    keep : {"below", "above"}
        Keep the part where the coordinate is ``<= cut_mm`` or ``>= cut_mm``.

    Returns
    -------
    (n, 2) ndarray of float, mm
        Empty ``(0, 2)`` when nothing is kept; the whole ellipse when the line misses it.

    Notes
    -----
    The area kept is ``a b (π − acos u + u √(1 − u²))`` with ``u`` the cut's normalised
    signed distance from the centre towards the kept side's far end (``u = (cut − c)/r``
    for ``keep="below"``, ``(c − cut)/r`` for ``"above"``).
    """
    centre, r = (cx, a) if axis == "x" else (cy, b)
    u = (cut_mm - centre) / r if keep == "below" else (centre - cut_mm) / r
    if u >= 1.0:
        return ellipse(cx, cy, a, b)
    if u <= -1.0:
        return np.zeros((0, 2))
    # Parametric angles (x = cx + a cos t, y = cy + b sin t) of the kept arc, increasing.
    if axis == "x":
        h = np.arccos(u)  # keep cos t <= u (below) or cos t >= -u (above)
        t0, t1 = (h, 2 * np.pi - h) if keep == "below" else (np.pi + h, 3 * np.pi - h)
    else:
        h = np.arcsin(u)  # keep sin t <= u (below) or sin t >= -u (above)
        t0, t1 = (np.pi - h, 2 * np.pi + h) if keep == "below" else (-h, np.pi + h)
    perim = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    t = np.linspace(t0, t1, max(_n_vertices(perim * (t1 - t0) / (2 * np.pi)), 8))
    arc = np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])
    chord_mm = float(np.hypot(*(arc[0] - arc[-1])))
    n_chord = int(np.ceil(chord_mm / VERTEX_SPACING_MM))
    s = np.linspace(0.0, 1.0, n_chord + 1)[1:-1, None]
    chord = arc[-1] + s * (arc[0] - arc[-1])
    return np.concatenate([arc, chord])


def elliptic_band(
    cx: float,
    cy: float,
    inner_ab: tuple[float, float],
    outer_ab: tuple[float, float],
    t0_deg: float,
    t1_deg: float,
) -> np.ndarray:
    """Polygon between two concentric ellipses over the parametric angles
    ``t0_deg .. t1_deg`` (x = cx + a cos t, y = cy + b sin t; t from +x towards +y)."""
    t0, t1 = np.deg2rad(t0_deg), np.deg2rad(t1_deg)
    (ai, bi), (ao, bo) = inner_ab, outer_ab
    to = np.linspace(t0, t1, _n_vertices(max(ao, bo) * (t1 - t0)))
    ti = np.linspace(t1, t0, _n_vertices(max(ai, bi) * (t1 - t0)))
    outer = np.column_stack([cx + ao * np.cos(to), cy + bo * np.sin(to)])
    inner = np.column_stack([cx + ai * np.cos(ti), cy + bi * np.sin(ti)])
    return np.concatenate([outer, inner])


def subtract_ellipse(polygon: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """A counter-clockwise polygon less the ellipse ``((x-cx)/a)² + ((y-cy)/b)² < 1``
    (see :func:`_reroute`)."""
    return _reroute(polygon, cx, cy, a, b, clockwise=True)


def union_ellipse(polygon: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """A counter-clockwise polygon joined with the ellipse ``((x-cx)/a)² + ((y-cy)/b)² < 1``
    whose centre lies outside it and whose boundary it crosses (see :func:`_reroute`)."""
    return _reroute(polygon, cx, cy, a, b, clockwise=False)


def _reroute(polygon, cx, cy, a, b, *, clockwise: bool) -> np.ndarray:
    """Replace each run of ``polygon``'s vertices inside the ellipse by the ellipse's
    boundary between the exact points where the polygon's edges cross it: walked
    clockwise (the boundary of a hole: the difference) or counter-clockwise (the outer
    boundary: the union), one vertex per :data:`VERTEX_SPACING_MM`.

    Exact for the convex shapes of the phantoms whose vertices are dense (an ellipse
    slipping between two vertices is not seen); the difference abuts the ellipse without
    overlapping it beyond chord slivers.
    """
    p = np.asarray(polygon, dtype=float)
    q = (p - (cx, cy)) / (a, b)
    inside = np.einsum("ij,ij->i", q, q) < 1.0
    if not inside.any():
        return p
    if inside.all():
        return np.zeros((0, 2)) if clockwise else ellipse(cx, cy, a, b)
    start = int(np.argmin(inside))  # walk from a vertex outside the ellipse
    p, q, inside = (np.roll(v, -start, axis=0) for v in (p, q, inside))
    n = len(p)

    def crossing(i: int, j: int) -> np.ndarray:
        """Where the edge from vertex i (outside) to j (inside), or back, crosses the
        unit circle (in the ellipse's normalised coordinates)."""
        d = q[j] - q[i]
        A, B, C = d @ d, 2 * q[i] @ d, q[i] @ q[i] - 1.0
        root = np.sqrt(max(B * B - 4 * A * C, 0.0))
        s = (-B - root) / (2 * A) if C > 0 else (-B + root) / (2 * A)
        return q[i] + np.clip(s, 0.0, 1.0) * d

    out: list[np.ndarray] = []
    i = 0
    while i < n:
        if not inside[i]:
            out.append(p[i])
            i += 1
            continue
        j = i
        while j < n and inside[j]:
            j += 1
        q_in, q_out = crossing(i - 1, i), crossing(j % n, j - 1)
        t0 = np.arctan2(q_in[1], q_in[0])
        t1 = np.arctan2(q_out[1], q_out[0])
        if clockwise and t1 > t0:
            t1 -= 2 * np.pi
        if not clockwise and t1 < t0:
            t1 += 2 * np.pi
        arc_mm = abs(t1 - t0) * max(a, b)
        t = np.linspace(t0, t1, max(int(np.ceil(arc_mm / VERTEX_SPACING_MM)), 2) + 1)
        out.extend(np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)]))
        i = j
    return np.asarray(out)
