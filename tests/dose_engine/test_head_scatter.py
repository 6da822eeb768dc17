"""The extra-focal source seen through the jaws and the MLC, each at its own height.

Reference: rays traced from a fine grid of source points to the calculation point through
each collimator's physical opening at its distance from the source (no projection formula,
no erf); ``collimator_scatter_scale`` of a one-cell opening (sampled at its centre) gives
back the visible share it used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from dose_engine import MLCParameters, collimator_scatter_scale, load_beam_model
from dose_engine.errors import InvalidGeometryError

MODEL = load_beam_model()
SAD = MODEL.sad_mm
#: Varian-style (Y jaws above X jaws above the MLC) and Agility-style (MLC above the Y
#: diaphragms, no X jaws) distances from the source, mm.
VARIAN = MLCParameters(source_to_y_jaws_mm=319.0, source_to_x_jaws_mm=406.0, source_to_mlc_mm=509.0)
AGILITY = MLCParameters(source_to_mlc_mm=345.0, source_to_y_jaws_mm=435.0)
BOUNDS = np.arange(-200.0, 200.1, 5.0)  # 80 pairs of 5 mm
ROW = 40  # the pair between y = 0 and 5 mm


def _ray_traced_share(point_mm, openings, sigma_source_mm):
    """Share of a 1-D Gaussian source (width in the source plane) seen from ``point_mm``
    (isocentre plane) through every ``((e1, e2), z_mm)`` opening: edges projected to the
    isocentre plane, the device ``z_mm`` from the source."""
    # a source point farther out than this cannot see past a device (loose bound)
    reach = min((max(abs(e1), abs(e2)) + abs(point_mm)) * z / (SAD - z) for (e1, e2), z in openings)
    s = np.linspace(-1.1 * reach, 1.1 * reach, 2_000_001)
    w = (
        np.exp(-0.5 * (s / sigma_source_mm) ** 2)
        * (s[1] - s[0])
        / (math.sqrt(2 * math.pi) * sigma_source_mm)
    )
    seen = np.ones(s.shape, bool)
    for (e1, e2), z in openings:
        at = s + (point_mm - s) * z / SAD  # where the ray crosses the device
        seen &= (e1 * z / SAD <= at) & (at <= e2 * z / SAD)
    return float(w[seen].sum())


def _in_air(point, rect, sigma):
    """The model's fluence of one rectangle at a point (unit 2-D Gaussian of widths sigma)."""
    fx = erf((rect[1] - point[0]) / (math.sqrt(2) * sigma[0])) - erf(
        (rect[0] - point[0]) / (math.sqrt(2) * sigma[0]))  # fmt: skip
    fy = erf((rect[3] - point[1]) / (math.sqrt(2) * sigma[1])) - erf(
        (rect[2] - point[1]) / (math.sqrt(2) * sigma[1]))  # fmt: skip
    return 0.25 * fx * fy


def _seen_by_scale(leaves_x, jaws, params):
    """The visible share of the extra-focal source that ``collimator_scatter_scale`` used
    for a one-cell opening (pair ROW open between ``leaves_x``), recovered from ``s``."""
    n = BOUNDS.size - 1
    leaves = np.zeros((2, n))
    leaves[:, ROW] = leaves_x
    jx, jy = jaws.get("X", (-np.inf, np.inf)), jaws.get("Y", (-np.inf, np.inf))
    x1, x2 = max(leaves_x[0], jx[0]), min(leaves_x[1], jx[1])
    y1, y2 = max(BOUNDS[ROW], jy[0]), min(BOUNDS[ROW + 1], jy[1])
    rect = np.array([x1, x2, y1, y2])
    assert x2 - x1 <= 10.0  # one sample, at the centre
    s = collimator_scatter_scale(MODEL, rect[None], [1.0], leaves, BOUNDS, jaws, params)
    p = MODEL.parameters
    wh = p["head_scatter_weight"]
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    focal = (1 - wh) * _in_air(centre, rect, p["source_sigma_mm"])
    head = wh * _in_air(centre, rect, p["head_scatter_sigma_mm"])
    return centre, (s * (focal + head) - focal) / wh


@pytest.mark.parametrize(
    ("leaves_x", "jaws"),
    [
        ((-5.0, 5.0), {"X": (-100.0, 100.0), "Y": (-100.0, 100.0)}),  # slit under wide jaws
        ((10.0, 18.0), {"X": (-50.0, 20.0), "Y": (-3.0, 60.0)}),  # jaws close to the leaves
        ((-4.0, 4.0), {"X": (-2.0, 30.0), "Y": (1.0, 4.0)}),  # jaws inside the opening
    ],
)
def test_varian_head_scatter_is_what_the_rays_pass(leaves_x, jaws):
    (cx, cy), seen = _seen_by_scale(leaves_x, jaws, VARIAN)
    sx, sy = MODEL.parameters["head_scatter_sigma_mm"]
    # the fitted widths belong to the uppermost device along each axis (the jaws)
    zx, zy, zm = VARIAN.source_to_x_jaws_mm, VARIAN.source_to_y_jaws_mm, VARIAN.source_to_mlc_mm
    along_x = _ray_traced_share(cx, [(jaws["X"], zx), (leaves_x, zm)], sx * zx / (SAD - zx))
    row = (BOUNDS[ROW], BOUNDS[ROW + 1])
    along_y = _ray_traced_share(cy, [(jaws["Y"], zy), (row, zm)], sy * zy / (SAD - zy))
    assert seen == pytest.approx(along_x * along_y, rel=1e-5)


def test_agility_leaves_above_the_diaphragms_shield_more():
    leaves_x, jaws = (-4.0, 4.0), {"Y": (-10.0, 3.0)}
    (cx, cy), seen = _seen_by_scale(leaves_x, jaws, AGILITY)
    sx, sy = MODEL.parameters["head_scatter_sigma_mm"]
    zm, zy = AGILITY.source_to_mlc_mm, AGILITY.source_to_y_jaws_mm
    # no X jaws: the leaves collimate x; along y the leaves are the uppermost device
    along_x = _ray_traced_share(cx, [(leaves_x, zm)], sx * zm / (SAD - zm))
    row = (BOUNDS[ROW], BOUNDS[ROW + 1])
    along_y = _ray_traced_share(cy, [(jaws["Y"], zy), (row, zm)], sy * zm / (SAD - zm))
    assert seen == pytest.approx(along_x * along_y, rel=1e-5)


def test_without_heights_the_head_scatter_follows_the_opening():
    # every device at one height: the opening itself, with the jaws' cut
    leaves_x, jaws = (-5.0, 5.0), {"X": (-100.0, 100.0), "Y": (-100.0, 100.0)}
    centre, seen = _seen_by_scale(leaves_x, jaws, MLCParameters())
    rect = (-5.0, 5.0, BOUNDS[ROW], BOUNDS[ROW + 1])
    assert seen == pytest.approx(_in_air(centre, rect, MODEL.parameters["head_scatter_sigma_mm"]))


def test_a_device_beyond_the_isocentre_is_refused():
    bad = MLCParameters(source_to_mlc_mm=509.0, source_to_x_jaws_mm=406.0,
                        source_to_y_jaws_mm=319.0, source="test")  # fmt: skip
    model = type(MODEL)({**MODEL.parameters, "sad_mm": 450.0})
    leaves = np.zeros((2, BOUNDS.size - 1))
    leaves[:, ROW] = (-5.0, 5.0)
    rect = [[-5.0, 5.0, 0.0, 5.0]]
    jaws = {"X": (-50.0, 50.0), "Y": (-50.0, 50.0)}
    with pytest.raises(InvalidGeometryError, match=r"MLC parameters \(test\): the MLC device"):
        collimator_scatter_scale(model, rect, [1.0], leaves, BOUNDS, jaws, bad)
