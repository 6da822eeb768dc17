"""Deliverability metrics and limit checks (rtplan.delivery._deliverability).

Independent checks: delivery times of arcs whose slowest axis is known by construction
(gantry, meterset at the maximum dose rate, leaves, a binned dose rate rounded down),
worked by hand from the machine files' limits; the modulation complexity score of
apertures whose LSV and AAV follow from McNiven et al. (2010) by hand; exact refusals
naming beam, control point and machine-file key.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dose_engine import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
from rtplan.delivery import ArcBeam, ControlPoint, check_deliverability, modulation_complexity
from rtplan.errors import MachineError, SegmentError

VARIAN = load_machine("VarianMLC120")
AGILITY = load_machine("AgilityMLC160")


def _leaves(machine, x1, x2, half_height=20.0):
    inside = np.abs(machine.mlc.leaf_centers_mm) < half_height
    return np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])


def _jaws(machine):
    return {k: v for k, v in (("X", (-60.0, 60.0)), ("Y", (-20.0, 20.0))) if k in machine.jaws}


def arc_beam(
    machine,
    *,
    n_cp=91,
    spacing_deg=2.0,
    mu_per_interval=1.0,
    shift_mm=0.0,
    start_deg=180.0,
    direction="CW",
    dose_rate=None,
    fractions=1,
):
    """An arc of a 40 x 40 mm aperture whose leaves shift by ``shift_mm`` back and forth
    between control points, ``mu_per_interval`` MU per fraction between control points."""
    sign = 1.0 if direction == "CW" else -1.0
    cps = [
        ControlPoint(
            (start_deg + sign * k * spacing_deg) % 360.0,
            _leaves(machine, -20.0 + shift_mm * (k % 2), 20.0 + shift_mm * (k % 2)),
            _jaws(machine),
            k / (n_cp - 1),
            dose_rate if k == 0 else None,
        )
        for k in range(n_cp)
    ]
    return ArcBeam(
        1,
        "arc",
        Beam(start_deg),
        machine,
        control_points=cps,
        meterset_mu=mu_per_interval * (n_cp - 1) * fractions,
        rotation_direction=direction,
    )


def _check(beam, fractions=1):
    return check_deliverability(DeliverablePlan([beam], fractions, 2.0, "PTV"))


@pytest.mark.parametrize(
    ("machine", "kw", "time_s", "leaf_speed"),
    [
        # 90 intervals of 2 degrees: the gantry at 6 deg/s takes 1/3 s each (1 MU needs 180
        # MU/min, below 600)
        (VARIAN, {"mu_per_interval": 1.0}, 30.0, 0.0),
        # 5 MU at 600 MU/min: 0.5 s each, slower than the gantry
        (VARIAN, {"mu_per_interval": 5.0}, 45.0, 0.0),
        # 10 mm of leaf travel at 25 mm/s: 0.4 s each
        (VARIAN, {"shift_mm": 10.0}, 36.0, 25.0),
        # the same on Agility's 35 mm/s leaves: the gantry's 1/3 s is slower; 2 MU would
        # need 360 MU/min, binned down to 300 MU/min: 0.4 s each
        (AGILITY, {"shift_mm": 10.0, "mu_per_interval": 2.0}, 36.0, 25.0),
        # counter-clockwise through 0 degrees, 4 fractions: per fraction as above
        (VARIAN, {"start_deg": 40.0, "direction": "CC", "fractions": 4}, 30.0, 0.0),
        # a DoseRateSet of 300 MU/min caps the rate: 5 MU take 1 s
        (VARIAN, {"mu_per_interval": 5.0, "dose_rate": 300.0}, 90.0, 0.0),
    ],
)
def test_arc_delivery_time_is_its_slowest_axis(machine, kw, time_s, leaf_speed):
    fractions = kw.get("fractions", 1)
    beam = arc_beam(machine, **kw)
    d = _check(beam, fractions)
    (b,) = d.beams
    assert b.is_arc and b.n_control_points == 91 and d.ok, d.violations
    assert b.delivery_time_s == pytest.approx(time_s, rel=1e-9)
    assert b.max_leaf_speed_mm_per_s == pytest.approx(leaf_speed, rel=1e-9)
    assert d.total_mu == pytest.approx(90 * kw.get("mu_per_interval", 1.0))
    assert b.mean_aperture_area_cm2 == pytest.approx(16.0)  # 40 x 40 mm
    if not kw.get("shift_mm"):
        assert b.mcs == 1.0  # one open rectangle all along
    assert beam.total_mu == pytest.approx(d.total_mu * fractions)
    assert pickle.loads(pickle.dumps(beam)).segments[3].total_mu == beam.segments[3].total_mu


def test_mcs_of_a_sliding_aperture_is_its_area_over_the_union():
    # the 40 mm aperture alternates between x in [-20, 20] and [-10, 30]: LSV 1, each
    # aperture 40 / 50 of the union (-20 to 30)
    (b,) = _check(arc_beam(VARIAN, shift_mm=10.0)).beams
    assert b.mcs == pytest.approx(0.8, rel=1e-12)


def test_mcs_by_hand():
    bounds = np.array([0.0, 5.0, 10.0, 15.0])
    rect = np.array([[[-20.0] * 3, [20.0] * 3]])
    assert modulation_complexity(rect, {}, np.array([1.0]), bounds) == 1.0
    # a full 40 mm rectangle (30 MU) and a 20 mm one on the same pairs (10 MU): AAV 1 and
    # 0.5, LSV 1: (30 + 0.5 x 10) / 40
    two = np.array([[[-20.0] * 3, [20.0] * 3], [[-10.0] * 3, [10.0] * 3]])
    assert modulation_complexity(two, {}, np.array([30.0, 10.0]), bounds) == pytest.approx(0.875)
    # a staircase: bank A at 0, 5, 10 (pos_max 10; (10 - 5) + (10 - 5) over 2 x 10 = 0.5),
    # bank B straight (1); one aperture: AAV 1
    stair = np.array([[[0.0, 5.0, 10.0], [20.0] * 3]])
    assert modulation_complexity(stair, {}, np.array([1.0]), bounds) == pytest.approx(0.5)
    # bank A at 0, 10, 10: (0 + 10) / (2 x 10) = 0.5; with the Y jaws on pairs 1 and 2 only,
    # both at 10: straight, 1
    step = np.array([[[0.0, 10.0, 10.0], [20.0] * 3]])
    assert modulation_complexity(step, {}, np.array([1.0]), bounds) == pytest.approx(0.5)
    jaw = {"Y": np.array([[5.0, 15.0]])}
    assert modulation_complexity(step, jaw, np.array([1.0]), bounds) == pytest.approx(1.0)
    closed = np.zeros((1, 2, 3))
    assert modulation_complexity(closed, {}, np.array([1.0]), bounds) == 0.0


def test_static_step_and_shoot_plan():
    segs = [
        Segment(_leaves(VARIAN, -20.0, 20.0), _jaws(VARIAN), 60.0, VARIAN.mlc.leaf_boundaries_mm),
        Segment(_leaves(VARIAN, -10.0, 10.0), _jaws(VARIAN), 20.0, VARIAN.mlc.leaf_boundaries_mm),
    ]
    d = check_deliverability(
        DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), VARIAN, segs)], 2, 4.0, "PTV")
    )
    (b,) = d.beams
    assert not b.is_arc and b.n_control_points == 4 and d.ok
    assert b.mu == pytest.approx(40.0) and d.total_mu == pytest.approx(40.0)
    # 30 MU and 10 MU at 600 MU/min, 10 mm of leaf travel in between at 25 mm/s
    assert b.delivery_time_s == pytest.approx(3.0 + 0.4 + 1.0)
    assert b.mcs == pytest.approx((30 * 1 + 10 * 0.5) / 40)
    assert b.mean_aperture_area_cm2 == pytest.approx((30 * 16 + 10 * 8) / 40)


def test_violations_name_beam_control_point_and_limit():
    # Agility: 0.15 MU over 2 degrees needs 27 MU/min, below its lowest step (37.5)
    d = _check(arc_beam(AGILITY, n_cp=4, mu_per_interval=0.15))
    assert not d.ok
    assert [(v.beam_number, v.control_point, v.limit) for v in d.violations] == [
        (1, k, "arc.dose_rate_steps_mu_per_min") for k in range(3)
    ]
    assert "the gantry would turn at 8.33 deg/s (limit 6)" in d.violations[0].message
    # below the minimum MU per control point (0.1) as well
    limits = {v.limit for v in _check(arc_beam(AGILITY, n_cp=3, mu_per_interval=0.05)).violations}
    assert limits == {"arc.min_mu_per_control_point", "arc.dose_rate_steps_mu_per_min"}
    # control points 5 degrees apart: outside [2, 4]
    d = _check(arc_beam(VARIAN, n_cp=3, spacing_deg=5.0))
    assert [(v.control_point, v.limit) for v in d.violations] == [
        (0, "arc.control_point_spacing_deg"),
        (1, "arc.control_point_spacing_deg"),
    ]
    assert str(d.violations[0]) == (
        "beam 1 control point 0: 5 degrees to the next control point, outside the spacing "
        "[2, 4] degrees of machine 'VarianMLC120'."
    )
    # a DoseRateSet that is not a step, or above the maximum
    (v,) = _check(arc_beam(AGILITY, n_cp=3, mu_per_interval=2.0, dose_rate=250.0)).violations
    assert (v.control_point, v.limit) == (0, "arc.dose_rate_steps_mu_per_min")
    (v,) = _check(arc_beam(VARIAN, n_cp=3, dose_rate=700.0)).violations
    assert (v.control_point, v.limit) == (0, "arc.max_dose_rate_mu_per_min")


def test_a_control_point_beyond_the_mlc_is_a_violation():
    beam = arc_beam(VARIAN, n_cp=4)
    cps = list(beam.control_points)
    wide = np.array(cps[2].leaf_positions_mm)
    wide[1, 30] = 250.0  # bank B leaf 31 beyond the MLC's 200 mm
    cps[2] = ControlPoint(
        cps[2].gantry_angle_deg, wide, cps[2].jaws_mm, cps[2].cumulative_meterset_weight
    )
    beam = ArcBeam(1, "arc", beam.beam, VARIAN, control_points=cps, meterset_mu=3.0)
    (v,) = _check(beam).violations
    assert (v.control_point, v.limit) == (2, "mlc") and "leaf B31" in v.message


def test_an_arc_on_a_machine_without_arc_limits_is_refused(tmp_path):
    text = (
        'name = "StaticOnly"\n[mlc]\nleaf_width_mm = 5.0\nn_leaf_pairs = 80\n'
        "first_boundary_mm = -200.0\nmin_leaf_gap_mm = 0.0\n"
        "leaf_position_range_mm = [-200.0, 200.0]\ninterdigitation = true\n"
        "[jaws.Y]\nposition_range_mm = [-200.0, 200.0]\nmax_overtravel_mm = 120.0\n"
    )
    (tmp_path / "static_only.toml").write_text(text)
    static_only = load_machine(tmp_path / "static_only.toml")
    with pytest.raises(
        MachineError,
        match=r"beam 1 \('arc', an arc\) needs the arc limits.*"
        r"static_only\.toml' has no `\[arc\]` table",
    ):
        _check(arc_beam(static_only, n_cp=3))
    seg = Segment(
        _leaves(static_only, -20, 20),
        {"Y": (-20.0, 20.0)},
        10.0,
        static_only.mlc.leaf_boundaries_mm,
    )
    (b,) = check_deliverability(
        DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), static_only, [seg])], 1, 2.0, "PTV")
    ).beams
    assert b.delivery_time_s is None and b.mcs == 1.0 and b.mu == 10.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"weights": [0.0, 0.6, 0.5, 1.0]},
            r"control point 2: \(300A,0134\) CumulativeMetersetWeight 0\.5 is below",
        ),
        (
            {"weights": [0.1, 0.2, 0.5, 1.0]},
            r"control point 0: CumulativeMetersetWeight is 0\.1; the first",
        ),
        (
            {"weights": [0.0, 0.2, 0.5, 0.9]},
            r"control point 3: the last CumulativeMetersetWeight is 0\.9",
        ),
        ({"direction": "NONE"}, r"control point 1: gantry angle 182 degrees differs"),
        ({"direction": "CCW"}, r"`rotation_direction` must be one of CW, CC, NONE"),
        (
            {"start": 90.0},
            r"control point 0: gantry angle 180 degrees but the beam's geometry is at 90",
        ),
        ({"pairs": 60}, r"control point 0: leaf positions have shape \(2, 60\); MLC 'Agility160'"),
    ],
)
def test_malformed_arcs_are_refused(change, match):
    weights = change.get("weights", [0.0, 1 / 3, 2 / 3, 1.0])
    leaves = np.zeros((2, change.get("pairs", 80)))
    cps = [
        ControlPoint(180.0 + 2 * k, leaves, {"Y": (-20.0, 20.0)}, w) for k, w in enumerate(weights)
    ]
    with pytest.raises(SegmentError, match=match):
        ArcBeam(
            1,
            "arc",
            Beam(change.get("start", 180.0)),
            AGILITY,
            control_points=cps,
            meterset_mu=10.0,
            rotation_direction=change.get("direction", "CW"),
        )
