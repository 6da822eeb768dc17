"""Machine models (MLC geometry, jaws) and the Segment / DeliverableBeam contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rtplan
from rtplan import (
    DeliverableBeam,
    DeliverablePlan,
    Machine,
    MachineError,
    Segment,
    SegmentError,
    load_machine,
)
from rtplan.delivery._machine import JawModel, MLCModel


def test_shipped_machines_are_listed():
    assert set(rtplan.available_machines()) == {"AgilityMLC160", "VarianMLC120"}


def test_varian_millennium_geometry():
    m = load_machine("VarianMLC120")
    b = m.mlc.leaf_boundaries_mm
    widths = m.mlc.leaf_widths_mm
    assert m.mlc.n_pairs == 60 and b.shape == (61,)
    # 10 x 10 mm + 40 x 5 mm + 10 x 10 mm = 400 mm, symmetric about the axis.
    assert np.count_nonzero(widths == 10.0) == 20 and np.count_nonzero(widths == 5.0) == 40
    assert math.isclose(widths.sum(), 400.0) and b[0] == -200.0 and b[-1] == 200.0
    np.testing.assert_array_equal(b, -b[::-1])
    assert b[10] == -100.0 and b[50] == 100.0
    assert m.dicom_device_types() == ("ASYMX", "ASYMY", "MLCX")
    assert m.has_x_jaws and m.has_y_jaws and m.sad_mm == 1000.0 and m.nominal_energy_mv == 6.0
    assert m.mlc.max_leaf_travel_mm == 150.0


def test_agility_geometry():
    m = load_machine("AgilityMLC160")
    assert m.mlc.n_pairs == 80
    np.testing.assert_array_equal(m.mlc.leaf_widths_mm, np.full(80, 5.0))
    assert m.mlc.leaf_boundaries_mm[0] == -200.0 and m.mlc.leaf_boundaries_mm[-1] == 200.0
    assert m.dicom_device_types() == ("ASYMY", "MLCX")
    assert not m.has_x_jaws and m.mlc.interdigitation
    assert math.isinf(m.mlc.max_leaf_travel_mm)
    # bank A may reach +150 mm past the axis, bank B -150 mm.
    np.testing.assert_array_equal(m.mlc.bank_limits_mm(), [[-200, 150], [-150, 200]])


def test_load_by_file_stem_and_path(tmp_path):
    a = load_machine("varian_millennium120")
    src = rtplan.delivery._machine._machines_dir().joinpath("varian_millennium120.toml")
    p = tmp_path / "mine.toml"
    p.write_bytes(src.read_bytes())
    assert load_machine(p) == a


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (-200.0, 0),
        (-190.01, 0),
        (-190.0, 1),
        (-100.0, 10),
        (-0.1, 29),
        (0.0, 30),
        (4.99, 30),
        (199.9, 59),
        (200.0, -1),
        (-200.1, -1),
    ],
)
def test_leaf_pair_index_for_y(y, expected):
    m = load_machine("VarianMLC120")
    assert int(m.leaf_pair_index_for_y(y)) == expected


def _write(tmp_path, text):
    p = tmp_path / "bad_machine.toml"
    p.write_text(text)
    return p


GOOD = """
name = "Test"
[mlc]
leaf_width_mm = 5.0
n_leaf_pairs = 4
first_boundary_mm = -10.0
min_leaf_gap_mm = 0.5
leaf_position_range_mm = [-50.0, 50.0]
interdigitation = false
[jaws.Y]
position_range_mm = [-20.0, 20.0]
max_overtravel_mm = 5.0
"""


def test_user_machine_file(tmp_path):
    m = load_machine(_write(tmp_path, GOOD))
    np.testing.assert_array_equal(m.mlc.leaf_boundaries_mm, [-10, -5, 0, 5, 10])
    assert m.dicom_device_types() == ("ASYMY", "MLCX") and not m.mlc.interdigitation


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("leaf_width_mm = 5.0", "leaf_width_mm = 'five'"), r"`mlc\.leaf_width_mm` must be"),
        (("min_leaf_gap_mm = 0.5\n", ""), r"missing key `mlc\.min_leaf_gap_mm`"),
        (
            ("interdigitation = false", "interdigitation = 1"),
            r"`mlc\.interdigitation` must be bool",
        ),
        (("[-50.0, 50.0]", "[50.0, -50.0]"), r"leaf_position_range_mm"),
        (("[jaws.Y]", "[jaws.Z]"), r"unknown jaw table `jaws\.Z`"),
        (("leaf_width_mm = 5.0", "leaf_width_mm = -5.0"), r"must be > 0"),
        (('name = "Test"', "name = ["), r"not valid TOML"),
    ],
)
def test_malformed_machine_file_names_file_and_key(tmp_path, edit, match):
    p = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(MachineError, match=match) as info:
        load_machine(p)
    assert "bad_machine.toml" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_machine_lists_shipped():
    with pytest.raises(MachineError, match="AgilityMLC160"):
        load_machine("TrueBeamXYZ")
    with pytest.raises(MachineError, match="does not exist"):
        load_machine("/nonexistent/machine.toml")


# ------------------------------------------------------------------- Segment contract
@pytest.fixture
def varian():
    return load_machine("VarianMLC120")


def _segment(machine, a, b, jaws=None, mu=10.0):
    n = machine.mlc.n_pairs
    A = np.full(n, -5.25)
    B = np.full(n, -4.75)
    A[list(a)] = [v[0] for v in a.values()]
    B[list(a)] = [v[1] for v in a.values()]
    if jaws is None:
        jaws = {"Y": (-10.0, 5.0)}
        if machine.has_x_jaws:
            jaws["X"] = (-30.0, 40.0)
    return Segment(np.stack([A, B]), jaws, mu, machine.mlc.leaf_boundaries_mm)


def test_open_rectangles_clip_to_jaws(varian):
    # pairs 28 (y -10..-5), 29 (-5..0), 30 (0..5), 31 (5..10)
    seg = _segment(varian, {28: (-50.0, 10.0), 29: (0.0, 60.0), 31: (-20.0, 20.0)}, b=None)
    rect = seg.open_rectangles_mm(closed_gap_mm=varian.mlc.min_leaf_gap_mm)
    # pair 31 lies outside Y2 = 5; pair 30 is closed; X jaws clip -50 -> -30 and 60 -> 40
    np.testing.assert_array_equal(rect, [[-30.0, 10.0, -10.0, -5.0], [0.0, 40.0, -5.0, 0.0]])
    assert seg.open_area_mm2(closed_gap_mm=0.5) == pytest.approx(40 * 5 + 40 * 5)
    seg.validate(varian)


def _seg(machine, A, B, jaws=None):
    return Segment(
        np.stack([A, B]),
        jaws if jaws is not None else ({"X": (-10.0, 10.0), "Y": (-10.0, 10.0)}),
        1.0,
        machine.mlc.leaf_boundaries_mm,
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda A, B: (A.__setitem__(30, 210.0), B.__setitem__(30, 210.0)), "outside the range"),
        (lambda A, B: A.__setitem__(30, 6.0), "overlap"),
        (lambda A, B: B.__setitem__(30, 0.2), "below the minimum leaf gap"),
        (lambda A, B: (A.__setitem__(0, -160.0), B.__setitem__(0, -159.5)), "maximum leaf travel"),
    ],
)
def test_segment_validate_rejects(varian, change, match):
    n = varian.mlc.n_pairs
    A, B = np.zeros(n), np.zeros(n)
    A[30], B[30] = 0.0, 5.0
    change(A, B)
    with pytest.raises(SegmentError, match=match):
        _seg(varian, A, B).validate(varian, where="plan.dcm beam 1")


def test_segment_validate_accepts_closed_and_open(varian):
    n = varian.mlc.n_pairs
    A, B = np.zeros(n), np.zeros(n)  # fully closed pairs (A == B) are allowed
    A[30], B[30] = -5.0, 0.5  # exactly the minimum gap is allowed
    _seg(varian, A, B).validate(varian)


def test_segment_validate_jaws(varian):
    n = varian.mlc.n_pairs
    A, B = np.zeros(n), np.zeros(n)
    with pytest.raises(SegmentError, match=r"jaw X1 at 30\.000 mm is outside"):
        _seg(varian, A, B, {"X": (30.0, 40.0), "Y": (-10.0, 10.0)}).validate(varian)
    with pytest.raises(SegmentError, match="has jaws"):
        _seg(varian, A, B, {"Y": (-10.0, 10.0)}).validate(varian)
    with pytest.raises(SegmentError, match="Y1 must be"):
        _seg(varian, A, B, {"X": (-10.0, 10.0), "Y": (10.0, -10.0)}).validate(varian)


def test_interdigitation_check():
    mlc = MLCModel("t", np.arange(5) * 5.0, min_leaf_gap_mm=0.0, interdigitation=False)
    m = Machine("T", mlc, {"Y": JawModel("Y")})
    A = np.array([0.0, 20.0, 0.0, 0.0])
    B = np.array([10.0, 30.0, 10.0, 10.0])  # A of pair 1 (20) passes B of pair 0 (10)
    seg = Segment(np.stack([A, B]), {"Y": (0.0, 20.0)}, 1.0, mlc.leaf_boundaries_mm)
    with pytest.raises(SegmentError, match="interdigitation: leaf A of pair 1"):
        seg.validate(m)
    ok = Machine("T", MLCModel("t", np.arange(5) * 5.0, interdigitation=True), {"Y": JawModel("Y")})
    seg.validate(ok)


def test_segment_wrong_shape_and_mu(varian):
    with pytest.raises(SegmentError, match=r"shape \(2, 60\)"):
        Segment(np.zeros((2, 59)), {}, 1.0, varian.mlc.leaf_boundaries_mm)
    with pytest.raises(SegmentError, match="total_mu"):
        Segment(np.zeros((2, 60)), {}, -1.0, varian.mlc.leaf_boundaries_mm)
    seg = Segment(np.zeros((2, 60)), {"Y": (0, 1)}, 1.0, varian.mlc.leaf_boundaries_mm)
    with pytest.raises(SegmentError, match="leaf pairs"):
        seg.validate(load_machine("AgilityMLC160"))


def test_cumulative_meterset_weights(varian):
    from dose_engine import Beam

    segs = [_segment(varian, {30: (-5.0, 5.0)}, b=None, mu=mu) for mu in (10.0, 30.0, 60.0)]
    beam = DeliverableBeam(1, "G0", Beam(0.0), varian, segs)
    np.testing.assert_allclose(beam.cumulative_meterset_weights(), [0.0, 0.1, 0.1, 0.4, 0.4, 1.0])
    assert beam.total_mu == 100.0 and beam.per_fraction_mu(25) == 4.0
    plan = DeliverablePlan((beam,), fractions=25, total_dose_gy=50.0, target_name="PTV")
    assert plan.dose_per_fraction_gy == 2.0 and plan.total_mu == 100.0
    plan.validate()
    with pytest.raises(SegmentError, match="unique"):
        DeliverablePlan((beam, beam), fractions=25, total_dose_gy=50.0, target_name="PTV")
    with pytest.raises(SegmentError, match="> 0 MU"):
        DeliverableBeam(2, "G0", Beam(0.0), varian, [segs[0].with_mu(0.0)])


def test_machine_and_plan_pickle_round_trip(varian):
    """Plans travel between Dask workers: everything must pickle."""
    import pickle

    from dose_engine import Beam

    for name in rtplan.available_machines():
        m = load_machine(name)
        m2 = pickle.loads(pickle.dumps(m))
        assert m2 == m and dict(m2.jaws) == dict(m.jaws)
    seg = _segment(varian, {30: (-5.0, 5.0)}, b=None, mu=7.0)
    plan = DeliverablePlan(
        (DeliverableBeam(1, "G0", Beam(0.0), varian, [seg]),),
        fractions=2,
        total_dose_gy=4.0,
        target_name="PTV",
    )
    plan2 = pickle.loads(pickle.dumps(plan))
    s2 = plan2.beams[0].segments[0]
    np.testing.assert_array_equal(s2.leaf_positions_mm, seg.leaf_positions_mm)
    assert dict(s2.jaws_mm) == dict(seg.jaws_mm) and s2.total_mu == 7.0
    assert plan2.beams[0].machine == varian and plan2.total_mu == 7.0
