"""Procedural test geometries (TG-119, a water box, a thorax), as contours on CT slice
planes.

All geometry is in DICOM patient coordinates (LPS, mm) of a head-first-supine patient
centred on the origin: +x patient left, +y posterior, +z superior.  Every structure is a
set of analytic polygons per slice, so it round-trips through RT-STRUCT unchanged.

Reference: G. A. Ezzell et al., "IMRT commissioning: multiple institution planning and
dosimetry comparisons, a report from AAPM Task Group 119", Med. Phys. 36(11):5359-5373
(2009), doi:10.1118/1.3238104.  Shapes follow the summary in
``tg119_goals.toml``; sizes are the report's nominal values.  The TG-119 phantoms are
water (0 HU) in air; the thorax (:mod:`rtplan.phantoms._thorax`) has tissues and a couch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shapes import Material, RoiSpec, annular_sector, cut_by_ellipse, ellipse, rect, zrange
from ._thorax import thorax_parts

__all__ = ["PHANTOM_NAMES", "PhantomSpec", "RoiSpec", "phantom_spec"]

#: Body: elliptic cylinder 300 mm wide (x) × 200 mm antero-posterior (y), water.
BODY_WIDTH_MM = 300.0
BODY_DEPTH_MM = 200.0
#: water_box: 300 mm cube.
BOX_SIDE_MM = 300.0


def _body_ellipse(z: float) -> list[np.ndarray]:
    return [ellipse(0.0, 0.0, BODY_WIDTH_MM / 2, BODY_DEPTH_MM / 2)]


def _cshape() -> tuple[float, list[RoiSpec]]:
    # C opens anteriorly (-y): the arc is centred on the posterior direction (+y, 90°).
    ptv = annular_sector(0.0, 0.0, 15.0, 37.0, centre_deg=90.0, span_deg=200.0)
    core = ellipse(0.0, 0.0, 10.0, 10.0)
    return 200.0, [
        RoiSpec("PTV", "PTV", (255, 0, 0), zrange(-40, 40, lambda z: [ptv])),
        RoiSpec("Core", "ORGAN", (0, 160, 255), zrange(-50, 50, lambda z: [core])),
    ]


def _multitarget() -> tuple[float, list[RoiSpec]]:
    disc = ellipse(0.0, 0.0, 20.0, 20.0)
    return 220.0, [
        RoiSpec("CentralTarget", "PTV", (255, 0, 0), zrange(-20, 20, lambda z: [disc])),
        RoiSpec("SuperiorTarget", "PTV", (255, 160, 0), zrange(20, 60, lambda z: [disc])),
        RoiSpec("InferiorTarget", "PTV", (255, 0, 160), zrange(-60, -20, lambda z: [disc])),
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
        RoiSpec("Rectum", "ORGAN", (150, 75, 0), zrange(-40, 40, rectum)),
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
        RoiSpec("PTV", "PTV", (255, 0, 0), zrange(-40, 40, lambda z: [ptv])),
        RoiSpec("Cord", "ORGAN", (0, 255, 0), zrange(-70, 70, lambda z: [cord])),
        RoiSpec("ParotidLeft", "ORGAN", (0, 0, 255), zrange(0, 40, lambda z: [left])),
        RoiSpec("ParotidRight", "ORGAN", (0, 255, 255), zrange(0, 40, lambda z: [right])),
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
        RoiSpec("PTV70", "PTV", (255, 0, 0), zrange(-20, 20, lambda z: [boost])),
        RoiSpec("PTV56", "PTV", (255, 160, 0), ptv56),
        RoiSpec("Cord", "ORGAN", (0, 255, 0), zrange(-70, 70, lambda z: [cord])),
        RoiSpec(
            "ParotidLeft", "ORGAN", (0, 0, 255), zrange(20, 50, lambda z: [ellipse(55, 5, 15, 15)])
        ),
        RoiSpec(
            "ParotidRight",
            "ORGAN",
            (0, 255, 255),
            zrange(20, 50, lambda z: [ellipse(-55, 5, 15, 15)]),
        ),
    ]


def _water_box() -> tuple[float, list[RoiSpec]]:
    return BOX_SIDE_MM, []


@dataclass(frozen=True)
class PhantomSpec:
    """Everything :func:`rtplan.phantoms.make_phantom` needs to build one phantom.

    Parameters
    ----------
    length_mm : float
        Default CT length along z, mm.
    body : RoiSpec
        The EXTERNAL contour.
    rois : list of RoiSpec
        The other ROIs, in RT-STRUCT order.
    fov_xy_mm : (2,) tuple of float, mm
        Default field of view (x, y).
    materials : list of Material
        Tissues painted in order over air (-1000 HU).
    family : str
        Shown in the synthetic patient's name and study description.
    body_part : str
        (0018,0015) *BodyPartExamined*.
    """

    length_mm: float
    body: RoiSpec
    rois: list
    fov_xy_mm: tuple[float, float]
    materials: list
    family: str = "TG119"
    body_part: str = "ABDOMEN"


_BUILDERS = {
    "cshape": _cshape,
    "multitarget": _multitarget,
    "prostate": _prostate,
    "head_neck": _head_neck,
    "two_level": _two_level,
    "water_box": _water_box,
}
PHANTOM_NAMES: tuple[str, ...] = (*_BUILDERS, "thorax", "thorax_breast")


def phantom_spec(name: str) -> PhantomSpec:
    """The :class:`PhantomSpec` of the phantom called ``name``."""
    if name in ("thorax", "thorax_breast"):
        breast = name == "thorax_breast"
        length, body, rois, materials = thorax_parts(breast_left=breast)
        # CHEST for both: BREAST, a paired part, would need (0020,0060) Laterality
        return PhantomSpec(length, body, rois, (500.0, 500.0), materials, "THORAX", "CHEST")
    length, rois = _BUILDERS[name]()
    if name == "water_box":
        h = BOX_SIDE_MM / 2
        body = RoiSpec(
            "Body", "EXTERNAL", (0, 128, 0), zrange(-h, h + 1e-3, lambda z: [rect(-h, -h, h, h)])
        )
        fov = (BOX_SIDE_MM + 40.0, BOX_SIDE_MM + 40.0)
    else:
        body = RoiSpec("Body", "EXTERNAL", (0, 128, 0), _body_ellipse)
        fov = (BODY_WIDTH_MM + 40.0, BODY_DEPTH_MM + 40.0)
    body_part = {"prostate": "PELVIS", "head_neck": "NECK"}.get(name, "ABDOMEN")
    water = Material("water", 0.0, body.polygons_at)
    return PhantomSpec(length, body, rois, fov, [water], "TG119", body_part)
