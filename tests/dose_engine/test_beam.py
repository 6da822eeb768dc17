"""IEC 61217 beam geometry: a table of source positions and BEV axes, each row by hand.

Hand derivation (see dose_engine/_beam.py): IEC fixed f: +Zf up, +Yf towards the gantry,
+Xf right of an observer facing the gantry.  Gantry g = Ry(G) about +Yf, so the source,
on +Zg, sits at SAD (sin G, 0, cos G)_f and BLD X = Xg = (cos G, 0, -sin G)_f, BLD Y = +Yf.
Collimator C rotates BLD about +Zg: Xb = cos C Xg + sin C Yg, Yb = -sin C Xg + cos C Yg.
Couch S rotates the table about +Zf: table components = Rz(S)^T (fixed components).
LPS from table components: HFS (Xt, -Zt, Yt); FFS (-Xt, -Zt, -Yt); HFP (-Xt, Zt, Yt);
FFP (Xt, Zt, -Yt).  SAD = 1000 mm, isocentre at the origin unless stated.
"""

import numpy as np
import pytest

from dose_engine import Beam, InvalidGeometryError, equispaced_coplanar_beams, isocenter_at_centroid

S = 1000.0
# (position, gantry, collimator, couch, source LPS, BLD x LPS, BLD y LPS)
TABLE = [
    # HFS g0: source (0,0,S)_f -> LPS (0,-S,0) anterior; Xb = Xf -> +x; Yb = Yf -> +z.
    ("HFS", 0, 0, 0, (0, -S, 0), (1, 0, 0), (0, 0, 1)),
    # HFS g90: source (S,0,0)_f -> +x (patient left); Xb = (0,0,-1)_f -> -(-Zt) = +y.
    ("HFS", 90, 0, 0, (S, 0, 0), (0, 1, 0), (0, 0, 1)),
    # HFS g180: source (0,0,-S)_f -> +y (posterior); Xb = (-1,0,0)_f -> -x.
    ("HFS", 180, 0, 0, (0, S, 0), (-1, 0, 0), (0, 0, 1)),
    # HFS g270: source (-S,0,0)_f -> -x (patient right); Xb = (0,0,1)_f -> -y.
    ("HFS", 270, 0, 0, (-S, 0, 0), (0, -1, 0), (0, 0, 1)),
    # FFS g0: (0,0,S)_f -> y = -Zt = -S (anterior); Xb = Xf -> x = -Xt = -1; Yb -> z = -Yt.
    ("FFS", 0, 0, 0, (0, -S, 0), (-1, 0, 0), (0, 0, -1)),
    # FFS g90: (S,0,0)_f -> x = -S (patient right); Xb = (0,0,-1)_f -> y = +1.
    ("FFS", 90, 0, 0, (-S, 0, 0), (0, 1, 0), (0, 0, -1)),
    # FFS g180: (0,0,-S)_f -> y = +S; Xb = (-1,0,0)_f -> x = +1.
    ("FFS", 180, 0, 0, (0, S, 0), (1, 0, 0), (0, 0, -1)),
    # FFS g270: (-S,0,0)_f -> x = +S; Xb = (0,0,1)_f -> y = -1.
    ("FFS", 270, 0, 0, (S, 0, 0), (0, -1, 0), (0, 0, -1)),
    # HFP g0: (0,0,S)_f -> y = +Zt = +S (posterior, patient prone); Xb -> x = -1; Yb -> z = +1.
    ("HFP", 0, 0, 0, (0, S, 0), (-1, 0, 0), (0, 0, 1)),
    # HFP g90: (S,0,0)_f -> x = -S; Xb = (0,0,-1)_f -> y = -1.
    ("HFP", 90, 0, 0, (-S, 0, 0), (0, -1, 0), (0, 0, 1)),
    # HFP g180: (0,0,-S)_f -> y = -S; Xb = (-1,0,0)_f -> x = +1.
    ("HFP", 180, 0, 0, (0, -S, 0), (1, 0, 0), (0, 0, 1)),
    # HFP g270: (-S,0,0)_f -> x = +S; Xb = (0,0,1)_f -> y = +1.
    ("HFP", 270, 0, 0, (S, 0, 0), (0, 1, 0), (0, 0, 1)),
    # FFP g0: (0,0,S)_f -> y = +S; Xb -> x = +1; Yb = Yf -> z = -Yt = -1.
    ("FFP", 0, 0, 0, (0, S, 0), (1, 0, 0), (0, 0, -1)),
    # FFP g90: (S,0,0)_f -> x = +S; Xb = (0,0,-1)_f -> y = Zt = -1.
    ("FFP", 90, 0, 0, (S, 0, 0), (0, -1, 0), (0, 0, -1)),
    # FFP g180: (0,0,-S)_f -> y = -S; Xb = (-1,0,0)_f -> x = -1.
    ("FFP", 180, 0, 0, (0, -S, 0), (-1, 0, 0), (0, 0, -1)),
    # FFP g270: (-S,0,0)_f -> x = -S; Xb = (0,0,1)_f -> y = +1.
    ("FFP", 270, 0, 0, (-S, 0, 0), (0, 1, 0), (0, 0, -1)),
    # HFS g0 collimator 90: Xb = Yg = Yf -> +z; Yb = -Xg = -Xf -> -x.  Source unchanged.
    ("HFS", 0, 90, 0, (0, -S, 0), (0, 0, 1), (-1, 0, 0)),
    # HFS g0 couch 90: Rz(90)^T Xf = (0,-1,0)_t -> z = -1; Rz(90)^T Yf = (1,0,0)_t -> x = +1.
    ("HFS", 0, 0, 90, (0, -S, 0), (0, 0, -1), (1, 0, 0)),
    # HFS g90 couch 90: source (S,0,0)_f -> (0,-S,0)_t -> z = -S (inferior: the head turned
    # towards -Xf); Xb = (0,0,-1)_f -> (0,0,-1)_t -> y = +1; Yb = Yf -> (1,0,0)_t -> x = +1.
    ("HFS", 90, 0, 90, (0, 0, -S), (0, 1, 0), (1, 0, 0)),
]


@pytest.mark.parametrize(("pos", "gantry", "coll", "couch", "src", "bx", "by"), TABLE)
def test_iec61217_table(pos, gantry, coll, couch, src, bx, by):
    b = Beam(gantry, collimator_angle_deg=coll, couch_angle_deg=couch, patient_position=pos)
    np.testing.assert_allclose(b.source_position_mm, src, atol=1e-9)
    np.testing.assert_allclose(b.bld_x_axis, bx, atol=1e-12)
    np.testing.assert_allclose(b.bld_y_axis, by, atol=1e-12)
    np.testing.assert_allclose(b.beam_axis, -np.asarray(src) / S, atol=1e-12)
    # right-handed BLD frame: Xb x Yb = Zb = towards the source
    np.testing.assert_allclose(np.cross(b.bld_x_axis, b.bld_y_axis), -b.beam_axis, atol=1e-12)


def test_isocentre_offsets_the_source():
    b = Beam(90, isocenter_mm=(10.0, -20.0, 30.0), sad_mm=800)
    np.testing.assert_allclose(b.source_position_mm, (810.0, -20.0, 30.0))


def test_fan_coordinates_divergence():
    b = Beam(0)
    # a point 10 mm left of the axis, 100 mm beyond the isocentre: iso-plane u = 10 * 1000/1100
    u, v, z = b.to_fan_coordinates(np.array([[10.0, 100.0, 5.0]]))
    np.testing.assert_allclose([u[0], v[0], z[0]], [10 * 1000 / 1100, 5 * 1000 / 1100, 1100])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"gantry_angle_deg": 360.0}, "gantry_angle_deg"),
        ({"gantry_angle_deg": -1.0}, "gantry_angle_deg"),
        ({"gantry_angle_deg": 0, "collimator_angle_deg": float("nan")}, "collimator_angle_deg"),
        ({"gantry_angle_deg": 0, "patient_position": "HFDL"}, "HFS, FFS, HFP, FFP"),
        ({"gantry_angle_deg": 0, "sad_mm": 0}, "sad_mm"),
        ({"gantry_angle_deg": 0, "isocenter_mm": (0, 0)}, "isocenter_mm"),
    ],
)
def test_bad_beams(kw, match):
    with pytest.raises(InvalidGeometryError, match=match):
        Beam(**kw)


def test_equispaced_and_centroid():
    beams = equispaced_coplanar_beams(9, isocenter_mm=(1, 2, 3))
    assert [b.gantry_angle_deg for b in beams] == pytest.approx([40.0 * k for k in range(9)])
    assert isocenter_at_centroid(np.array([[0, 0, 0], [2, 4, 6.0]])) == (1.0, 2.0, 3.0)
