"""A thorax phantom for lung planning: the case of issue 12 built from analytic shapes.

Head-first supine, DICOM patient coordinates (LPS, mm): +x patient left, +y posterior,
+z superior; the isocentre region is near the origin.  Default CT: 500 mm field of view
(512 × 512 at 0.98 mm), 390 mm long (131 slices at 3 mm).

Tissues (painted in this order, each over what lies below it, with fractional occupancy):

========================  ===========  =====================================================
tissue                    HU           shape
========================  ===========  =====================================================
couch shell / foam core   +200 / −850  460 × 50 mm box, 2 mm shell, under the body (y 105-155)
body (subcutaneous fat)   −90          ellipse 340 × 230 mm cut flat at y = +105 (the back
                                       lying on the couch): 340 × 220 mm
muscle                    +30          the same shape 12 mm inside
ribs                      +500         7 mm band outside the thoracic cavity, 12 mm of
                                       every 25 mm along z, not at the spine or sternum
sternum                   +500         30 × 12 mm bar
lungs                     −820         D-shaped: ellipse (a 78, b 85 mm, centre x ±60,
                                       y −5) cut at x = ±22 mm; full size up to z = 0,
                                       tapering as an ellipsoid to the apex at z = 125,
                                       flat base (diaphragm) at z = −110; the left lung
                                       gives way to the heart
heart                     +40          ellipsoid, semi-axes (44, 38, 55) at (22, −45, −50)
oesophagus                +40          cylinder r 8 mm at (8, 28), z ≥ −140
trachea                   −1000        cylinder r 9 mm at (0, 10), z ≥ 45
vertebral body / arch     +400 / +600  disc r 16 at (0, 55); ring sector r 8-15 around the
                                       canal; spinous process
spinal canal / cord       +10 / +30    disc r 8 / r 5 at (0, 82)
GTV                       +40          sphere r 20 mm (33.5 cc) at (−50, 30, 20), in the
                                       right lung
========================  ===========  =====================================================

ROIs: ``GTV`` (type GTV), ``SpinalCord``, ``Lung_L``, ``Lung_R`` (the GTV cut out of it),
``Heart``, ``Esophagus`` (ORGAN), and ``Body`` (EXTERNAL) unless the caller leaves the
body contour out, as the clinical RT-STRUCT of issue 12 did.  The couch is a material
only (no ROI), as on a CT.

HU values are typical of 120 kVp CT (e.g. lung −850 … −700, fat −100 … −50, muscle
+10 … +40, cancellous / cortical bone +300 … +1000); the sizes are those of an adult.
"""

from __future__ import annotations

import numpy as np

from ._shapes import (
    Material,
    RoiSpec,
    annular_sector,
    ellipse,
    ellipse_cut,
    elliptic_band,
    rect,
    subtract_ellipse,
    union_ellipse,
    zrange,
)

__all__ = ["THORAX", "thorax_parts"]

#: Key dimensions (mm), used by the tests for the analytic volumes.
THORAX = {
    "body_ab": (170.0, 115.0),
    "back_y": 105.0,
    "fat_mm": 12.0,
    "length": 390.0,
    "lung_ab": (78.0, 85.0),
    "lung_cx": 60.0,
    "lung_cy": -5.0,
    "lung_medial_x": 22.0,
    "lung_base_z": -110.0,
    "lung_apex_z": 125.0,
    "heart_c": (22.0, -45.0, -50.0),
    "heart_abc": (44.0, 38.0, 55.0),
    "gtv_c": (-50.0, 30.0, 20.0),
    "gtv_r": 20.0,
    "cord_c": (0.0, 82.0),
    "cord_r": 5.0,
    "esophagus_c": (8.0, 28.0),
    "esophagus_r": 8.0,
    "couch": (-230.0, 105.0, 230.0, 155.0),
    "couch_shell_mm": 2.0,
    # thorax_breast: a left breast (ellipsoid on the chest) instead of the GTV
    "breast_c": (75.0, -103.0, -40.0),
    "breast_abc": (70.0, 50.0, 65.0),
    "skin_mm": 5.0,
}
_T = THORAX
# Thoracic cavity (inside the ribs): centre (0, -5), semi-axes 142 × 94 mm.
_CAVITY = (0.0, -5.0, 142.0, 94.0)


def _lung_scale(z: float) -> float:
    """In-plane scale of the lungs at ``z`` (0 outside them)."""
    if not (_T["lung_base_z"] - 1e-6 <= z < _T["lung_apex_z"] - 1e-6):
        return 0.0
    return float(np.sqrt(1.0 - (max(z, 0.0) / _T["lung_apex_z"]) ** 2))


def _heart_section(z: float) -> tuple[float, float] | None:
    cx, cy, cz = _T["heart_c"]
    a, b, c = _T["heart_abc"]
    f = 1.0 - ((z - cz) / c) ** 2
    return None if f <= 1e-4 else (a * np.sqrt(f), b * np.sqrt(f))


def _gtv_radius(z: float) -> float | None:
    r2 = _T["gtv_r"] ** 2 - (z - _T["gtv_c"][2]) ** 2
    return None if r2 <= 1e-2 else float(np.sqrt(r2))


def _lung(side: int, z: float, *, gtv: bool = True) -> list[np.ndarray]:
    """Lung polygons at ``z``; ``side`` +1 = left (+x), −1 = right; ``gtv``: the right
    lung has the GTV as a hole."""
    s = _lung_scale(z)
    if s <= 0.05:
        return []
    a, b = _T["lung_ab"]
    cx, cy = side * _T["lung_cx"], _T["lung_cy"]
    keep = "above" if side > 0 else "below"
    poly = ellipse_cut(cx, cy, a * s, b * s, axis="x", cut_mm=side * _T["lung_medial_x"], keep=keep)
    if side > 0:  # the left lung gives way to the heart
        h = _heart_section(z)
        if h is not None:
            poly = subtract_ellipse(poly, *_T["heart_c"][:2], *h)
        return [poly]
    out = [poly]
    r = _gtv_radius(z) if gtv else None
    if r is not None:  # the GTV is not lung: a hole (even-odd)
        out.append(ellipse(*_T["gtv_c"][:2], r, r))
    return out


def _heart(z: float) -> list[np.ndarray]:
    h = _heart_section(z)
    return [] if h is None else [ellipse(*_T["heart_c"][:2], *h)]


def _gtv(z: float) -> list[np.ndarray]:
    r = _gtv_radius(z)
    return [] if r is None else [ellipse(*_T["gtv_c"][:2], r, r)]


def _chest(z: float) -> np.ndarray:
    a, b = _T["body_ab"]
    return ellipse_cut(0.0, 0.0, a, b, axis="y", cut_mm=_T["back_y"], keep="below")


def _body(z: float) -> list[np.ndarray]:
    return [_chest(z)]


def _breast_section(z: float, inset_mm: float = 0.0) -> tuple[float, float] | None:
    """In-plane semi-axes of the left breast at ``z`` shrunk by ``inset_mm``, or None."""
    a, b, c = (v - inset_mm for v in _T["breast_abc"])
    f = 1.0 - ((z - _T["breast_c"][2]) / c) ** 2
    return None if f <= 1e-3 else (a * np.sqrt(f), b * np.sqrt(f))


def _body_with_breast(z: float) -> list[np.ndarray]:
    h = _breast_section(z)
    chest = _chest(z)
    return [chest if h is None else union_ellipse(chest, *_T["breast_c"][:2], *h)]


def _breast_ctv(z: float) -> list[np.ndarray]:
    """Breast tissue in front of the chest wall, 5 mm under the skin."""
    h = _breast_section(z, _T["skin_mm"])
    if h is None:
        return []
    a, b = _T["body_ab"]
    poly = subtract_ellipse(ellipse(*_T["breast_c"][:2], *h), 0.0, 0.0, a, b)
    return [poly] if len(poly) else []


def _muscle(z: float) -> list[np.ndarray]:
    a, b = _T["body_ab"]
    f = _T["fat_mm"]
    return [ellipse_cut(0.0, 0.0, a - f, b - f, axis="y", cut_mm=_T["back_y"] - f, keep="below")]


def _ribs(z: float) -> list[np.ndarray]:
    if not (-120.0 <= z < 130.0) or (z + 200.0) % 25.0 >= 12.0:
        return []
    cx, cy, a, b = _CAVITY
    inner, outer = (a, b), (a + 7.0, b + 7.0)
    # Parametric angles from +x (left) towards +y (posterior): not over the spine (90°)
    # nor the sternum (270°).
    return [
        elliptic_band(cx, cy, inner, outer, -60.0, 65.0),
        elliptic_band(cx, cy, inner, outer, 115.0, 240.0),
    ]


def _vertebra(z: float) -> list[np.ndarray]:
    cx, cy = _T["cord_c"]
    return [
        annular_sector(cx, cy, 8.0, 15.0, centre_deg=90.0, span_deg=240.0),
        rect(-4.0, cy + 13.0, 4.0, cy + 19.0),  # spinous process
    ]


def _disc(c, r):
    poly = ellipse(c[0], c[1], r, r)
    return lambda z: [poly]


def _couch_parts():
    x0, y0, x1, y1 = _T["couch"]
    t = _T["couch_shell_mm"]
    shell = rect(x0, y0, x1, y1)
    foam = rect(x0 + t, y0 + t, x1 - t, y1 - t)
    return (lambda z: [shell]), (lambda z: [foam])


def thorax_parts(
    *, breast_left: bool = False
) -> tuple[float, RoiSpec, list[RoiSpec], list[Material]]:
    """``(length_mm, body, rois, materials)`` of the thorax phantom (see the module
    docstring); ``breast_left``: the ``thorax_breast`` variant (a left breast and its
    ``CTV_Breast_L`` instead of the lung tumour)."""
    shell, foam = _couch_parts()
    body_at = _body_with_breast if breast_left else _body
    materials = [
        Material("couch shell", 200.0, shell),
        Material("couch foam", -850.0, foam),
        Material("fat", -90.0, body_at),
        Material("muscle", 30.0, _muscle),
        Material("rib", 500.0, _ribs),
        Material("sternum", 500.0, zrange(-60.0, 110.0, lambda z: [rect(-15, -102, 15, -90)])),
        Material("lung", -820.0, lambda z: _lung(+1, z) + _lung(-1, z, gtv=not breast_left)[:1]),
        Material("heart", 40.0, _heart),
        Material("oesophagus", 40.0, zrange(-140.0, 1e9, _disc(_T["esophagus_c"], 8.0))),
        Material("trachea", -1000.0, zrange(45.0, 1e9, _disc((0.0, 10.0), 9.0))),
        Material("vertebral body", 400.0, _disc((0.0, 55.0), 16.0)),
        Material("vertebral arch", 600.0, _vertebra),
        Material("spinal canal", 10.0, _disc(_T["cord_c"], 8.0)),
        Material("cord", 30.0, _disc(_T["cord_c"], _T["cord_r"])),
    ]
    if breast_left:
        materials.append(Material("fibroglandular breast", -30.0, _breast_ctv))
        first = [RoiSpec("CTV_Breast_L", "CTV", (255, 0, 0), _breast_ctv)]
    else:
        materials.append(Material("tumour", 40.0, _gtv))
        first = [RoiSpec("GTV", "GTV", (255, 0, 0), _gtv)]
    rois = [
        *first,
        RoiSpec("SpinalCord", "ORGAN", (255, 255, 0), _disc(_T["cord_c"], _T["cord_r"])),
        RoiSpec("Lung_L", "ORGAN", (0, 128, 255), lambda z: _lung(+1, z)),
        RoiSpec("Lung_R", "ORGAN", (255, 128, 255), lambda z: _lung(-1, z, gtv=not breast_left)),
        RoiSpec("Heart", "ORGAN", (200, 0, 100), _heart),
        RoiSpec(
            "Esophagus", "ORGAN", (150, 90, 0), zrange(-140.0, 1e9, _disc(_T["esophagus_c"], 8.0))
        ),
    ]
    body = RoiSpec("Body", "EXTERNAL", (0, 128, 0), body_at)
    return _T["length"], body, rois, materials
