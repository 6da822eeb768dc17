"""Procedural TG-119 test geometries, as contours on CT slice planes.

All geometry is in DICOM patient coordinates (LPS, mm) of a head-first-supine patient
centred on the origin: +x patient left, +y posterior, +z superior.  Every structure is a
set of analytic polygons per slice, so it round-trips through RT-STRUCT unchanged.

Reference: G. A. Ezzell et al., "IMRT commissioning: multiple institution planning and
dosimetry comparisons, a report from AAPM Task Group 119", Med. Phys. 36(11):5359-5373
(2009), doi:10.1118/1.3238104.  Shapes follow the summary in
``tg119_goals.toml``; sizes are the report's nominal values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["PHANTOM_NAMES", "RoiSpec", "phantom_spec"]

#: Body: elliptic cylinder 300 mm wide (x) × 200 mm antero-posterior (y), water.
BODY_WIDTH_MM = 300.0
BODY_DEPTH_MM = 200.0
#: water_box: 300 mm cube.
BOX_SIDE_MM = 300.0
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


def _zrange(lo: float, hi: float, fn: Callable[[float], list[np.ndarray]]):
    """Restrict ``fn`` to slices with ``lo <= z < hi`` (half-open, so stacked parts abut)."""

    def at(z: float) -> list[np.ndarray]:
        return fn(z) if lo - 1e-6 <= z < hi - 1e-6 else []

    return at


def _body_ellipse(z: float) -> list[np.ndarray]:
    return [ellipse(0.0, 0.0, BODY_WIDTH_MM / 2, BODY_DEPTH_MM / 2)]


def _cshape() -> tuple[float, list[RoiSpec]]:
    # C opens anteriorly (-y): the arc is centred on the posterior direction (+y, 90°).
    ptv = annular_sector(0.0, 0.0, 15.0, 37.0, centre_deg=90.0, span_deg=200.0)
    core = ellipse(0.0, 0.0, 10.0, 10.0)
    return 200.0, [
        RoiSpec("PTV", "PTV", (255, 0, 0), _zrange(-40, 40, lambda z: [ptv])),
        RoiSpec("Core", "ORGAN", (0, 160, 255), _zrange(-50, 50, lambda z: [core])),
    ]


def _multitarget() -> tuple[float, list[RoiSpec]]:
    disc = ellipse(0.0, 0.0, 20.0, 20.0)
    return 220.0, [
        RoiSpec("CentralTarget", "PTV", (255, 0, 0), _zrange(-20, 20, lambda z: [disc])),
        RoiSpec("SuperiorTarget", "PTV", (255, 160, 0), _zrange(20, 60, lambda z: [disc])),
        RoiSpec("InferiorTarget", "PTV", (255, 0, 160), _zrange(-60, -20, lambda z: [disc])),
    ]


# prostate: PTV ellipsoid (semi-axes x 30, y 22, z 28 mm) at the origin.
_PTV_AXES = (30.0, 22.0, 28.0)


def _ptv_section(z: float) -> tuple[float, float] | None:
    ax, ay, az = _PTV_AXES
    f = 1.0 - (z / az) ** 2
    if f <= 1e-4:
        return None
    return ax * np.sqrt(f), ay * np.sqrt(f)


def _prostate() -> tuple[float, list[RoiSpec]]:
    def ptv(z):
        s = _ptv_section(z)
        return [ellipse(0.0, 0.0, *s)] if s else []

    def rectum(z):  # cylinder r 13 mm, posterior, cut where it would overlap the PTV
        c = (0.0, _PTV_AXES[1] + 13.0 - 4.0)
        poly = ellipse(c[0], c[1], 13.0, 13.0)
        s = _ptv_section(z)
        return [cut_by_ellipse(c, poly, *s) if s else poly]

    def bladder(z):  # sphere r 28 mm, superior and anterior, cut by the PTV
        c3 = (0.0, -28.0, 36.0)
        r2 = 28.0**2 - (z - c3[2]) ** 2
        if r2 <= 1.0:
            return []
        poly = ellipse(c3[0], c3[1], np.sqrt(r2), np.sqrt(r2))
        s = _ptv_section(z)
        return [cut_by_ellipse(c3[:2], poly, *s) if s else poly]

    return 200.0, [
        RoiSpec("PTV", "PTV", (255, 0, 0), ptv),
        RoiSpec("Rectum", "ORGAN", (150, 75, 0), _zrange(-40, 40, rectum)),
        RoiSpec("Bladder", "ORGAN", (255, 255, 0), bladder),
    ]


def _head_neck() -> tuple[float, list[RoiSpec]]:
    cord_c = (0.0, 30.0)
    cord = ellipse(*cord_c, 7.0, 7.0)
    # Horseshoe anterior to the cord (centred on -y, 270°), 15 mm gap to the cord.
    ptv = annular_sector(*cord_c, 7.0 + 15.0, 52.0, centre_deg=270.0, span_deg=220.0)
    left = ellipse(70.0, 5.0, 15.0, 15.0)  # patient left = +x
    right = ellipse(-70.0, 5.0, 15.0, 15.0)
    return 200.0, [
        RoiSpec("PTV", "PTV", (255, 0, 0), _zrange(-40, 40, lambda z: [ptv])),
        RoiSpec("Cord", "ORGAN", (0, 255, 0), _zrange(-70, 70, lambda z: [cord])),
        RoiSpec("ParotidLeft", "ORGAN", (0, 0, 255), _zrange(0, 40, lambda z: [left])),
        RoiSpec("ParotidRight", "ORGAN", (0, 255, 255), _zrange(0, 40, lambda z: [right])),
    ]


def _two_level() -> tuple[float, list[RoiSpec]]:
    """Two dose levels, head-and-neck-like (not from TG-119): a 70 Gy boost cylinder
    (r 20 mm, 40 mm long) between two 56 Gy elective cylinders (r 30 mm, 30 mm long each,
    abutting it), the cord 8 mm behind the elective targets and two parotids 10 mm beside
    the superior one."""
    boost = ellipse(0.0, 0.0, 20.0, 20.0)
    elective = ellipse(0.0, 0.0, 30.0, 30.0)
    cord = ellipse(0.0, 45.0, 7.0, 7.0)

    def ptv56(z):
        return [elective] if (-50 - 1e-6 <= z < -20 - 1e-6) or (20 - 1e-6 <= z < 50 - 1e-6) else []

    return 200.0, [
        RoiSpec("PTV70", "PTV", (255, 0, 0), _zrange(-20, 20, lambda z: [boost])),
        RoiSpec("PTV56", "PTV", (255, 160, 0), ptv56),
        RoiSpec("Cord", "ORGAN", (0, 255, 0), _zrange(-70, 70, lambda z: [cord])),
        RoiSpec(
            "ParotidLeft", "ORGAN", (0, 0, 255), _zrange(20, 50, lambda z: [ellipse(55, 5, 15, 15)])
        ),
        RoiSpec(
            "ParotidRight",
            "ORGAN",
            (0, 255, 255),
            _zrange(20, 50, lambda z: [ellipse(-55, 5, 15, 15)]),
        ),
    ]


def _water_box() -> tuple[float, list[RoiSpec]]:
    return BOX_SIDE_MM, []


_BUILDERS = {
    "cshape": _cshape,
    "multitarget": _multitarget,
    "prostate": _prostate,
    "head_neck": _head_neck,
    "two_level": _two_level,
    "water_box": _water_box,
}
PHANTOM_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def phantom_spec(name: str):
    """``(length_mm, body, rois, fov_xy_mm)`` of the phantom called ``name``."""
    length, rois = _BUILDERS[name]()
    if name == "water_box":
        h = BOX_SIDE_MM / 2
        body = RoiSpec(
            "Body", "EXTERNAL", (0, 128, 0), _zrange(-h, h + 1e-3, lambda z: [rect(-h, -h, h, h)])
        )
        fov = (BOX_SIDE_MM + 40.0, BOX_SIDE_MM + 40.0)
    else:
        body = RoiSpec("Body", "EXTERNAL", (0, 128, 0), _body_ellipse)
        fov = (BODY_WIDTH_MM + 40.0, BODY_DEPTH_MM + 40.0)
    return length, body, rois, fov
