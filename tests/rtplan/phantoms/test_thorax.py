"""The thorax phantom (issue 12): geometry against analytic volumes, tissues, the body
outline derived without an EXTERNAL contour (couch out, lungs in) and the shipped lung
protocol's derived structures on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import trapezoid  # numpy.trapezoid needs numpy >= 2.0 (floor 1.x)

from rtplan.phantoms import make_phantom
from rtplan.phantoms._thorax import THORAX as T
from rtplan.protocols import apply_derived, load_protocol
from rtplan.structures import BODY_OUTLINE_NAME, body_outline_mask

NAMES = ["GTV", "SpinalCord", "Lung_L", "Lung_R", "Heart", "Esophagus"]
PIXEL_MM, SLICE_MM = 2.0, 3.0


@pytest.fixture(scope="module")
def thorax():
    return make_phantom("thorax", pixel_spacing_mm=PIXEL_MM, slice_spacing_mm=SLICE_MM)


@pytest.fixture(scope="module")
def thorax_no_body():
    return make_phantom(
        "thorax", pixel_spacing_mm=PIXEL_MM, slice_spacing_mm=SLICE_MM, body_contour=False
    )


def _segment_area_mm2(a, b, u):
    """Area of the part of an ellipse (semi-axes a, b) on one side of a chord at
    normalised distance u (ellipse_cut's docstring)."""
    u = np.clip(u, -1.0, 1.0)
    return a * b * (np.pi - np.arccos(u) + u * np.sqrt(1.0 - u * u))


def _lung_r_area_mm2(z):
    """Analytic cross-section (mm²) of the right lung without the GTV at z."""
    if not (T["lung_base_z"] <= z < T["lung_apex_z"]):
        return 0.0
    s = np.sqrt(1.0 - (max(z, 0.0) / T["lung_apex_z"]) ** 2)
    if s <= 0.05:
        return 0.0
    a, b = T["lung_ab"][0] * s, T["lung_ab"][1] * s
    u = (T["lung_cx"] - T["lung_medial_x"]) / a  # keep x <= -22 of an ellipse at x = -60
    return _segment_area_mm2(a, b, u)


def test_names_types_and_matrix_of_the_issue_12_case():
    p = make_phantom("thorax", pixel_spacing_mm=500 / 512, slice_spacing_mm=3.0, n_slices=3)
    assert p.ct.grid.shape == (3, 512, 512)
    assert p.ct.grid.spacing_mm == pytest.approx((500 / 512, 500 / 512, 3.0))
    assert list(p.structures) == ["Body", *NAMES]
    types = {n: s.roi_type for n, s in p.structures.items()}
    assert types == {"Body": "EXTERNAL", "GTV": "GTV", **{n: "ORGAN" for n in NAMES[1:]}}
    assert len({s.color_rgb for s in p.structures.values()}) == len(p.structures)
    q = make_phantom("thorax", pixel_spacing_mm=10.0, slice_spacing_mm=10.0, body_contour=False)
    assert list(q.structures) == NAMES  # no EXTERNAL, as the clinical RT-STRUCT of issue 12
    assert [s.number for s in q.structures.values()] == list(range(1, len(NAMES) + 1))
    # the default length is the issue's ~130 slices at 3 mm
    default = make_phantom("thorax", pixel_spacing_mm=20.0, slice_spacing_mm=3.0)
    assert default.ct.grid.shape[0] == 131


def test_volumes_match_the_analytic_shapes(thorax):
    g = thorax.ct.grid
    z = g.zyx_axes_mm()[0]
    length_cm = g.shape[0] * SLICE_MM / 10
    # GTV: a sphere of r 20 mm (33.5 cc); the slice stack is a midpoint rule in z.
    gtv = thorax.structure("GTV")
    assert gtv.volume_cc(g) == pytest.approx(4 / 3 * np.pi * 2.0**3, rel=0.01)
    assert gtv.centroid_mm(g) == pytest.approx(T["gtv_c"], abs=0.3)
    # Cord and oesophagus: cylinders.
    assert thorax.structure("SpinalCord").volume_cc(g) == pytest.approx(
        np.pi * 0.5**2 * length_cm, rel=0.01
    )
    # Body: the ellipse 340 x 230 mm cut flat at the back (y = +105 mm).
    a, b = T["body_ab"]
    body_cm2 = _segment_area_mm2(a, b, T["back_y"] / b) / 100
    assert thorax.structure("Body").volume_cc(g) == pytest.approx(body_cm2 * length_cm, rel=2e-3)
    # Right lung: the D-shaped ellipse segment on every slice, minus the GTV (a hole).
    lung_r = thorax.structure("Lung_R").volume_cc(g)
    stack_cc = sum(_lung_r_area_mm2(float(zk)) for zk in z) * SLICE_MM / 1000
    assert lung_r == pytest.approx(stack_cc - gtv.volume_cc(g), rel=3e-3)
    # ... and the continuous solid it samples (flat base at -110, ellipsoidal apex at 125)
    zz = np.linspace(T["lung_base_z"], T["lung_apex_z"], 20001)
    solid_cc = trapezoid([_lung_r_area_mm2(v) for v in zz[:-1]] + [0.0], zz) / 1000
    assert stack_cc == pytest.approx(solid_cc, rel=0.02)
    assert 2000 < lung_r < 3500  # an adult lung
    # Left lung: the same solid less the heart where they meet (between the two bounds).
    lung_l = thorax.structure("Lung_L").volume_cc(g)
    heart = thorax.structure("Heart").volume_cc(g)
    assert stack_cc - heart < lung_l < stack_cc
    assert heart == pytest.approx(4 / 3 * np.pi * np.prod(T["heart_abc"]) / 1000, rel=0.02)


def test_structures_do_not_overlap_and_lie_inside_the_body(thorax):
    g = thorax.ct.grid
    occ = {n: thorax.structure(n).occupancy(g) for n in NAMES}
    total = sum(occ.values())
    assert total.max() <= 1.0 + 0.01  # abutting shapes share chord slivers only
    body = thorax.structure("Body").occupancy(g)
    for n in NAMES:
        assert np.all(occ[n] <= body + 1e-6), n
    c = {n: thorax.structure(n).centroid_mm(g) for n in NAMES}
    assert c["Lung_L"][0] > 40 and c["Lung_R"][0] < -40  # patient left = +x
    assert c["GTV"][0] < 0  # in the right lung
    assert c["Heart"][1] < c["Esophagus"][1] < c["SpinalCord"][1]  # anterior to posterior


def test_tissue_numbers(thorax):
    g = thorax.ct.grid
    hu = thorax.ct.array
    inside = {n: thorax.structure(n).occupancy(g) >= 1.0 for n in NAMES}
    lung = inside["Lung_L"] | inside["Lung_R"]
    assert np.all(hu[lung] == -820)
    assert np.all(hu[inside["GTV"]] == 40)
    assert np.all(hu[inside["SpinalCord"]] == 30)
    z, y, x = g.zyx_axes_mm()
    # Couch: 2 mm carbon shell (+200 HU) around foam (-850 HU) below the back.
    foam = (y > T["couch"][1] + 4) & (y < T["couch"][3] - 4)
    assert np.all(hu[:, foam][:, :, np.abs(x) < 200] == -850)
    assert np.all(hu[:, (y > T["couch"][3] + 2)] == -1000)  # air under the couch
    # Bone in the vertebral arch (posterior of the cord), fat under the skin.
    k = int(np.argmin(np.abs(z)))
    row = int(np.argmin(np.abs(y - (T["cord_c"][1] + 11))))
    col = int(np.argmin(np.abs(x)))
    assert hu[k, row, col] == 600
    assert hu[k, int(np.argmin(np.abs(y + 109))), col] == -90
    assert hu.min() == -1000 and hu.max() == 600


def test_body_outline_keeps_the_lungs_and_drops_the_couch_gh12(thorax, thorax_no_body):
    """Without an EXTERNAL contour the body is found in the CT: HU > -350 alone would drop
    the lungs (issue 12: 91 %) and a threshold below the foam would take the couch."""
    g = thorax.ct.grid
    assert not any(s.roi_type == "EXTERNAL" for s in thorax_no_body.structures.values())
    mask = body_outline_mask(thorax_no_body.ct.array, g.spacing_mm)
    vox_cc = g.voxel_volume_cc
    for n in ("Lung_L", "Lung_R", "GTV", "Heart", "SpinalCord"):
        occ = thorax.structure(n).occupancy(g)
        assert (occ * mask).sum() / occ.sum() == pytest.approx(1.0, abs=1e-9), n
    body = thorax.structure("Body").occupancy(g)
    assert mask.sum() * vox_cc == pytest.approx(body.sum() * vox_cc, rel=0.01)
    _, y, _ = g.zyx_axes_mm()
    shell_y = T["couch"][1] + T["couch_shell_mm"]
    # The foam (and everything beyond the shell under the back) stays out; only the 2 mm
    # shell touching the skin may join (docs/protocols.md, "Body outline").
    assert not mask[:, y > shell_y + PIXEL_MM / 2, :].any()
    strip_cc = mask[:, y > T["back_y"] + PIXEL_MM / 2, :].sum() * vox_cc
    assert strip_cc < 0.01 * body.sum() * vox_cc
    # The threshold alone (HU > -350) drops the lungs: the failure the outline prevents.
    lungs = thorax.structure("Lung_R").occupancy(g) >= 1.0
    assert not (thorax_no_body.ct.array > -350)[lungs].any()


def test_protocol_derived_structures_on_the_thorax(thorax_no_body):
    protocol = load_protocol("lung_60gy_30fx")
    p = apply_derived(thorax_no_body, protocol)
    g = p.ct.grid
    # PTV = (GTV + 5 mm) + 5 mm = a sphere of r 30 mm.
    assert p.structure("CTV").volume_cc(g) == pytest.approx(4 / 3 * np.pi * 2.5**3, rel=0.02)
    assert p.structure("PTV").volume_cc(g) == pytest.approx(4 / 3 * np.pi * 3.0**3, rel=0.02)
    lungs = p.structure("Lung_L").occupancy(g) + p.structure("Lung_R").occupancy(g)
    ptv = p.structure("PTV").occupancy(g)
    expected_cc = np.clip(lungs - ptv, 0, 1).sum() * g.voxel_volume_cc
    assert p.structure("Lungs-PTV").volume_cc(g) == pytest.approx(expected_cc, rel=0.01)
    assert BODY_OUTLINE_NAME not in p.structures  # planning adds it (test_thorax_plan)


def _inside_breast(x, y, z, inset_mm=0.0):
    """Analytic breast (the ellipsoid of THORAX["breast_*"] shrunk by ``inset_mm``)."""
    (cx, cy, cz), (a, b, c) = T["breast_c"], (v - inset_mm for v in T["breast_abc"])
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 < 1.0


@pytest.mark.slow
def test_breast_variant_against_the_analytic_solids():
    """thorax_breast: the CTV is the breast ellipsoid 5 mm under the skin, in front of the
    chest (outside its ellipse); the body is the chest joined with the breast.  Checked
    against the inequalities sampled on a 0.25 mm lattice, slice by slice."""
    dz = 4.0
    p = make_phantom("thorax_breast", pixel_spacing_mm=2.5, slice_spacing_mm=dz, n_slices=45)
    g = p.ct.grid
    assert list(p.structures) == ["Body", "CTV_Breast_L", *NAMES[1:]]
    assert p.structure("CTV_Breast_L").roi_type == "CTV"
    a, b = T["body_ab"]
    h = 0.25
    xs = np.arange(0.0, 160.0, h) + h / 2
    ys = np.arange(-170.0, -40.0, h) + h / 2
    xx, yy = np.meshgrid(xs, ys)
    chest = (xx / a) ** 2 + (yy / b) ** 2 < 1.0
    ctv_mm3 = breast_out_mm3 = 0.0
    for zk in g.zyx_axes_mm()[0]:
        ctv_mm3 += np.count_nonzero(_inside_breast(xx, yy, zk, T["skin_mm"]) & ~chest)
        breast_out_mm3 += np.count_nonzero(_inside_breast(xx, yy, zk) & ~chest)
    ctv_mm3 *= h * h * dz
    breast_out_mm3 *= h * h * dz
    assert p.structure("CTV_Breast_L").volume_cc(g) == pytest.approx(ctv_mm3 / 1000, rel=0.01)
    length_cm = g.shape[0] * dz / 10
    chest_cc = _segment_area_mm2(a, b, T["back_y"] / b) / 100 * length_cm
    assert p.structure("Body").volume_cc(g) == pytest.approx(
        chest_cc + breast_out_mm3 / 1000, rel=2e-3
    )
    # The shipped breast protocol: PTV = CTV + 10 mm, 5 mm under the skin, out of the lung.
    q = apply_derived(p, load_protocol("breast_left_40gy_15fx"))
    ptv = q.structure("PTV_Breast_L").occupancy(g)
    ctv = q.structure("CTV_Breast_L").occupancy(g)
    assert ptv.sum() > 1.3 * ctv.sum()
    skin = q.structure("zSkin5").occupancy(g)
    # The PTV covers the CTV except where the CTV (an ellipsoid inset by 5 mm along its
    # axes) comes within 5 mm of the skin
    covered = np.clip(ctv - skin, 0.0, None).sum()
    assert 0.99 * covered <= np.minimum(ptv, ctv).sum() <= ctv.sum()
    assert covered > 0.9 * ctv.sum()
    for name in ("Lung_L", "zSkin5"):  # overlap beyond the shared boundary voxels
        overlap = np.clip(ptv + q.structure(name).occupancy(g) - 1.0, 0.0, None)
        assert overlap.sum() < 0.01 * ptv.sum(), name
