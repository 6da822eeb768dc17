"""The safety layer: plausibility refusals at protocol load, implicit goals, plan warnings
(normalisation cap, beam balance, failed implicit goals) and goals not evaluated."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rtplan.errors import ProtocolError
from rtplan.protocols import parse_protocol

BASE = {
    "name": "safety test",
    "prescription": {"total_dose_gy": 50.0, "fractions": 25, "target": "PTV"},
    "structures": {"PTV": {"role": "target"}, "Cord": {}},
    "goals": [{"structure": "PTV", "metric": "D95%", "min": 50.0, "priority": 1}],
}


def _with(**patch):
    return {**BASE, **patch}


def _goal(**g):
    return {"goals": [BASE["goals"][0], {"structure": "PTV", "priority": 1, **g}]}


# ----------------------------------------------------------------- plausibility (load)
@pytest.mark.parametrize(
    ("patch", "match"),
    [
        # the issue-13 example: a goal typed in cGy with a 50 Gy prescription
        (
            {"goals": [{"structure": "PTV", "metric": "D95%", "min": 5000, "priority": 1}]},
            r"goal 0 \(PTV D95% >= 5000 Gy\) asks for 5000 Gy, 10000 % .*typed in cGy",
        ),
        (_goal(metric="Dmax", max=200, unit="%"), r"goal 1 \(PTV Dmax <= 200 %\).* 200 %"),
        (_goal(metric="D2%", max=66.0), r"goal 1 \(PTV D2% <= 66 Gy\).* 132 %"),
        (
            {"goals": [BASE["goals"][0], {"structure": "Cord", "metric": "V7000Gy", "max": 5}]},
            r"goal 1 \(Cord V7000Gy <= 5 %\) asks for 7000 Gy",
        ),
        (
            {"prescription": {"total_dose_gy": 5000.0, "fractions": 25, "target": "PTV"}},
            r"total_dose_gy 5000 Gy is outside the plausible range 0.5-100 Gy",
        ),
        (
            {"prescription": {"total_dose_gy": 60.0, "fractions": 2, "target": "PTV"}},
            r"dose per fraction 30 Gy is outside the plausible range 0.5-25 Gy",
        ),
        (
            {"prescription": {"total_dose_gy": 2.0, "fractions": 10, "target": "PTV"}},
            r"dose per fraction 0.2 Gy is outside",
        ),
    ],
)
def test_implausible_prescriptions_and_goals_refused_at_load(patch, match):
    with pytest.raises(ProtocolError, match=match) as exc:
        parse_protocol(_with(**patch), source="rx.toml")
    assert str(exc.value).startswith("Protocol rx.toml: ")


def test_plausibility_limits_are_overridable_on_purpose():
    p = parse_protocol(
        _with(**_goal(metric="Dmax", max=140, unit="%"), safety={"allow_goal_above_rx_pct": 150})
    )
    assert p.goals[1].goal.level == 140
    # the edge is allowed: 130 % exactly
    parse_protocol(_with(**_goal(metric="Dmax", max=65.0)))
    sbrt = {"total_dose_gy": 34.0, "fractions": 1, "target": "PTV"}  # RTOG 0915 single fraction
    with pytest.raises(ProtocolError, match="max_dose_per_fraction_gy"):
        parse_protocol(_with(prescription=sbrt, goals=[]))
    p = parse_protocol(
        _with(prescription=sbrt, goals=[], safety={"max_dose_per_fraction_gy": 34.0})
    )
    assert p.prescription.dose_per_fraction_gy == 34.0


@pytest.mark.parametrize(
    ("safety", "match"),
    [
        ({"hotspot": 110}, r"\[safety\]: unknown key\(s\) \['hotspot'\]"),
        ({"hotspot_pct": "110"}, r"\[safety\] hotspot_pct: expected a number"),
        ({"implicit_target_limits": 1}, r"implicit_target_limits: expected true or false"),
        ({"beam_balance_min_beams": 0}, r"beam_balance_min_beams: expected an integer >= 1"),
        ({"transition_margin_mm": 0}, r"transition_margin_mm: expected a positive distance"),
        ({"target_max_pct": 95.0}, r"target_max_pct: expected >= 100 .* found 95.0"),
    ],
)
def test_malformed_safety_table_names_the_key(safety, match):
    with pytest.raises(ProtocolError, match=match):
        parse_protocol(_with(safety=safety), source="s.toml")


# -------------------------------------------------------------------------- levels
def test_levels_per_target_default_to_the_prescription():
    rx = {"total_dose_gy": 70.0, "fractions": 35, "target": "PTV70", "levels": {"PTV56": 56.0}}
    p = parse_protocol(_with(prescription=rx, structures={"PTV70": {"role": "target"}}, goals=[]))
    assert p.target_levels_gy == {"PTV70": 70.0, "PTV56": 56.0}
    assert p.structure("PTV56").role == "target"  # declared by its level
    assert parse_protocol(BASE).target_levels_gy == {"PTV": 50.0}


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ({"PTV56": 77.0}, r"PTV56: 77 Gy exceeds the prescription \(70 Gy to PTV70\)"),
        ({"PTV70": 66.0}, r"prescription target's level is total_dose_gy \(70 Gy\)"),
        ({"Cord": 20.0}, r"Cord: expected a target"),
        ({"PTV56": -5}, r"PTV56: expected a positive number"),
    ],
)
def test_bad_levels_refused(levels, match):
    rx = {"total_dose_gy": 70.0, "fractions": 35, "target": "PTV70", "levels": levels}
    structures = {"PTV70": {"role": "target"}, "Cord": {}}
    with pytest.raises(ProtocolError, match=match):
        parse_protocol(_with(prescription=rx, structures=structures, goals=[]), source="l.toml")


# ----------------------------------------------------------------- implicit goals
def _two_level():
    rx = {"total_dose_gy": 70.0, "fractions": 35, "target": "PTV70", "levels": {"PTV56": 56.0}}
    structures = {"PTV70": {"role": "target"}, "Cord": {}, "Body": {"role": "external"}}
    goals = [
        {"structure": "PTV70", "metric": "D95%", "min": 70.0, "priority": 1},
        {"structure": "PTV70", "metric": "D20%", "max": 77.0, "priority": 1},
        {"structure": "PTV56", "metric": "D95%", "min": 56.0, "priority": 1},
        {"structure": "Cord", "metric": "Dmax", "max": 45.0, "priority": 2},
    ]
    return parse_protocol(_with(prescription=rx, structures=structures, goals=goals))


def test_implicit_goals_floor_lower_level_maximum_and_hot_spot():
    from rtplan.safety import implicit_goals

    p = _two_level()
    goals = implicit_goals(
        p, ["PTV70", "PTV56", "Cord"], helpers=("zPTV56_low", "zRing"), body="Body"
    )
    texts = [g.text for g in goals]
    # floors at 90 % of each level; PTV70 has its own upper goal, PTV56 gets 107 % of 56
    # Gy on its part beyond the transition margin; the hot spot at 110 % of Rx
    assert texts == [
        "PTV70 D99% >= 63 Gy",
        "PTV56 D99% >= 50.4 Gy",
        "zPTV56_low D2% <= 59.92 Gy",
        "Body Dmax <= 110 %",
    ]
    assert all(g.label.startswith("implicit") and g.priority == 1 for g in goals)
    # with the gradient bands: the zone within the margin is held to 107 % of the highest
    # level reached there (the 60.7 Gy band alone would allow only 107 % of 60.7 Gy)
    bands = {"zPTV56_gradient_70Gy": 70.0, "zPTV56_gradient_60.6667Gy": 60.6667}
    helpers = ("zPTV56_low", "zPTV56_gradient", *bands)
    with_zone = implicit_goals(p, ["PTV70", "PTV56"], helpers=helpers, gradient_levels_gy=bands)
    (zone,) = [g for g in with_zone if g.structure == "zPTV56_gradient"]
    assert zone.text == "zPTV56_gradient D2% <= 74.9 Gy"
    assert zone.label == "implicit: gradient-zone maximum 107 % of 70 Gy"
    only_low = {"zPTV56_gradient_60.6667Gy": 60.6667}
    low_only = implicit_goals(
        p, ["PTV70", "PTV56"], helpers=(*helpers[:2], *only_low), gradient_levels_gy=only_low
    )
    (zone,) = [g for g in low_only if g.structure == "zPTV56_gradient"]
    assert zone.text == "zPTV56_gradient D2% <= 64.9134 Gy"  # 1.07 x 60.6667
    # switched off in the protocol: nothing implicit
    off = replace(p.safety, implicit_target_limits=False, target_floor_pct=0.0, hotspot_pct=0.0)
    assert implicit_goals(replace(p, safety=off), ["PTV70", "PTV56"], body="Body") == []


@pytest.mark.parametrize(
    ("goal", "implied"),
    [
        ({"metric": "D99%", "min": 12.5}, True),  # TG-119 multitarget: D99 >= 12.5 >= 11.25
        ({"metric": "D100%", "min": 12.0}, True),
        ({"metric": "Dmin", "min": 11.25}, True),
        ({"metric": "D99%", "min": 11.0}, False),  # weaker than the floor
        ({"metric": "D95%", "min": 12.5}, False),  # says nothing of the coldest 5 %
        ({"metric": "D99%", "min": 90.0, "unit": "%"}, True),  # 90 % of Rx = 11.25 Gy
    ],
)
def test_floor_left_out_only_when_a_goal_implies_it(goal, implied):
    from rtplan.safety import implicit_goals

    rx = {"total_dose_gy": 12.5, "fractions": 5, "target": "PTV"}
    goals = [{"structure": "PTV", "priority": 1, **goal}]
    p = parse_protocol(_with(prescription=rx, structures={"PTV": {"role": "target"}}, goals=goals))
    floors = [g for g in implicit_goals(p, ["PTV"]) if "floor" in g.label]
    # D99 >= the goal's level >= 90 % of 12.5 Gy when implied; otherwise the floor stays
    assert [g.text for g in floors] == ([] if implied else ["PTV D99% >= 11.25 Gy"])


def test_safety_terms_in_the_optimisation_levels():
    import optimizers as opt
    from rtplan.planning import build_levels

    p = _two_level()
    roles = {"PTV70": "target", "PTV56": "target", "Cord": "oar", "Body": "external"}
    bands = {"zPTV56_gradient_70Gy": 70.0, "zPTV56_gradient_60.6667Gy": 60.6667}
    helpers = ("zRing", "zRing_56Gy", "zPTV56_low", "zPTV56_gradient", *bands)
    helpers += ("zNormalTissue", "zBody")
    levels = build_levels(
        p,
        roles=roles,
        volumes_cc={"PTV70": 50.0, "PTV56": 80.0, "Cord": 5.0},
        helpers=helpers,
        ring_levels_gy={"zRing": 70.0, "zRing_56Gy": 56.0},
        gradient_levels_gy=bands,
    )
    first, last = levels[0].terms, levels[-1].terms
    by_label = {t.label: t for t in first}
    aim = p.optimization.target_aim
    floor = by_label["implicit: target floor 90 % of 56 Gy: PTV56 D99% >= 50.4 Gy"]
    # aimed inside the goal like the protocol's target goals
    assert type(floor) is opt.Underdose and floor.dose_gy == pytest.approx(50.4 * (1 + aim))
    assert floor.weight == pytest.approx(0.1 * p.optimization.target_weight / 70.0**2)
    pull = by_label["implicit level: zPTV56_low towards 56 Gy"]
    assert type(pull) is opt.Overdose and pull.dose_gy == pytest.approx(56.0 * (1 + aim))
    # each band of the gradient zone is capped at 107 % of its relaxed level
    grad = {t.structure: t.dose_gy for t in first if t.structure in bands}
    assert grad == {b: pytest.approx(1.07 * lv) for b, lv in bands.items()}
    band70 = by_label["implicit level: zPTV56_gradient_70Gy <= 74.9 Gy"]
    assert band70.weight == pytest.approx(10 * floor.weight)  # w_t, a target goal's weight
    hot = {t.structure: t.dose_gy for t in first if t.label.startswith("global hot spot")}
    assert set(hot) == {"PTV70", "PTV56", "Cord", "zRing", "zRing_56Gy", "zNormalTissue", "zBody"}
    assert list(hot.values()) == pytest.approx([77.0 * (1 - aim)] * 7)
    (body,) = [t for t in first if t.structure == "zBody"]
    assert body.weight == pytest.approx(1 / 70.0**2)
    rings = {t.structure: t.dose_gy for t in last if t.label.startswith("ring")}
    assert rings == {"zRing": pytest.approx(56.0), "zRing_56Gy": pytest.approx(0.8 * 56.0)}
    (alara,) = [t for t in last if t.label.startswith("ALARA")]
    assert type(alara) is opt.MeanDose and alara.structure == "Cord"
    assert alara.weight == pytest.approx(p.safety.alara_weight / 70.0)


def test_normal_tissue_objective_shells_and_caps_gh12():
    """The normal-tissue objective: shells 0-5-10-15-20-30 mm outside the targets (voxel
    centres, so each edge within a voxel of the analytic one), capped on the fall-off
    60 + 45 exp(-0.05 d) % of Rx at their inner edges (hand-computed), as overdose terms
    of the last level; their volumes around a sphere match the analytic shells."""
    import numpy as np

    import optimizers as opt
    from dose_engine import Grid
    from rtplan.planning import build_levels
    from rtplan.planning._helper_structures import nto_helpers
    from rtplan.safety import nto_bands

    cord = {"structure": "Cord", "metric": "Dmax", "max": 40.0, "priority": 2}
    p = parse_protocol(_with(goals=[*BASE["goals"], cord]))
    bands = nto_bands(p.safety)
    assert [(a, b) for _, a, b, _ in bands] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 30)]
    caps = [pct for *_, pct in bands]
    assert caps == pytest.approx([105.0, 95.046, 87.294, 81.256, 76.555], abs=1e-3)
    names = tuple(n for n, *_ in bands)
    levels = build_levels(
        p, roles={"PTV": "target", "Cord": "oar"}, volumes_cc={"PTV": 30.0}, helpers=names
    )
    nto = {t.structure: t for t in levels[-1].terms if t.label.startswith("normal-tissue")}
    assert {n: t.dose_gy for n, t in nto.items()} == pytest.approx(
        {n: pct / 100 * 50.0 for n, _, _, pct in bands}
    )
    assert all(
        type(t) is opt.Overdose and t.weight == pytest.approx(0.1 / 50.0**2) for t in nto.values()
    )
    assert len(levels) == 2
    assert not [t for t in levels[0].terms if t.label.startswith("normal-tissue")]

    spacing, radius = 2.0, 20.0
    n = int(2 * (radius + 34) / spacing)
    grid = Grid((n, n, n), (-(n - 1) / 2 * spacing + 0.3,) * 3, (spacing,) * 3)

    def ball(g):  # occupancy of the sphere on any grid (voxel centres)
        return (np.linalg.norm(g.voxel_centres_mm(), axis=-1) <= radius).astype(np.float32)

    shells = nto_helpers([ball], grid, np.ones(grid.shape), p.safety)
    assert list(shells) == list(names)

    def shell_cc(lo, hi):
        return 4 / 3 * np.pi * ((radius + hi) ** 3 - (radius + lo) ** 3) / 1e3

    for (name, a, b, _), h in zip(bands, shells.values(), strict=True):
        # voxel centres: each edge within one voxel inside the analytic sphere + margin
        assert shell_cc(a, b - spacing) <= h.volume_cc(grid) <= shell_cc(max(a - spacing, 0), b), (
            name
        )
    off = parse_protocol(_with(safety={"nto_weight": 0.0})).safety
    assert nto_bands(off) == [] and nto_helpers([], grid, np.ones(grid.shape), off) == {}


def test_nto_end_above_start_refused():
    with pytest.raises(
        ProtocolError, match=r"\[safety\] nto_end_pct: expected at most nto_start_pct"
    ):
        parse_protocol(_with(safety={"nto_start_pct": 50.0}))


# ------------------------------------------------------------------- plan warnings
def test_beam_balance_warning_needs_five_beams_and_one_dominant_beam():
    from rtplan.safety import beam_balance_warning

    s = parse_protocol(BASE).safety
    five = {"G000": 500.0, "G072": 50.0, "G144": 50.0, "G216": 50.0, "G288": 50.0}
    w = beam_balance_warning(five, s)
    assert w.code == "beam_balance"
    assert w.message.startswith("BEAM BALANCE: beam G000 carries 71 % of the plan's MU")
    assert beam_balance_warning({k: five[k] for k in list(five)[:4]}, s) is None
    assert beam_balance_warning(dict.fromkeys(five, 100.0), s) is None
    assert beam_balance_warning({**five, "G000": 133.0}, s) is None  # 39.9 %


def _norm_ctx(dose_gy):
    from types import SimpleNamespace

    import numpy as np

    from dose_engine import Grid

    grid = Grid(shape=(1, 1, 20), origin_mm=(0.0, 0.0, 0.0), spacing_mm=(2.0, 2.0, 2.0))
    dose = np.full((1, 1, 20), dose_gy, np.float32)
    dose[..., 10:] = 0.5 * dose_gy
    occ = {"A": np.zeros((1, 1, 20), np.float32)}
    occ["A"][..., :10] = 1
    proto = SimpleNamespace(prescription=SimpleNamespace(target="A"))
    return SimpleNamespace(dose=dose, dose_grid=grid, mapping={"A": "A"}, protocol=proto), occ


@pytest.mark.parametrize(
    ("dose_gy", "factor", "warned"),
    [
        (48.0, 50.0 / 48.0, False),  # +4.2 %: within the cap, exact coverage
        (40.0, 1.05, True),  # needs +25 %: scaled to the cap only, and flagged
        (60.0, 0.95, True),  # needs -17 %
    ],
)
def test_normalisation_is_capped_and_reports_coverage_before_and_after(dose_gy, factor, warned):
    from rtplan import parse_goal
    from rtplan.planning._plan import capped_normalization

    ctx, occ = _norm_ctx(dose_gy)
    goals = [parse_goal("A D95% >= 50 Gy")]
    f, record, warning = capped_normalization(ctx, goals, occ, 50.0, cap_pct=5.0)
    assert f == pytest.approx(factor, rel=1e-5)
    assert record["value_before"] == pytest.approx(dose_gy, rel=1e-6)
    assert record["value_after"] == pytest.approx(dose_gy * factor, rel=1e-5)
    assert record["needed"] == pytest.approx(50.0 / dose_gy, rel=1e-5)
    assert (warning is not None) == warned
    if warned:
        assert warning.code == "normalization_cap"
        assert "NORMALISATION CAPPED: meeting 'A D95% >= 50 Gy' needs the dose x" in warning.message


def test_failed_implicit_goal_becomes_a_warning_in_the_same_words():
    import numpy as np

    from dose_engine import Grid
    from rtplan.evaluation import evaluate_goals
    from rtplan.safety import implicit_goals, plan_warnings

    grid = Grid(shape=(10, 10, 10), origin_mm=(0.0, 0.0, 0.0), spacing_mm=(5.0, 5.0, 5.0))
    dose = np.full(grid.shape, 20.0, np.float32)
    body = np.ones(grid.shape, np.float32)
    dose[5, 5, 5] = 60.0  # one 0.125 cc voxel at 120 % of 50 Gy: D0.03cc is 60 Gy
    p = parse_protocol(BASE)
    goals = implicit_goals(p, [], body="Body")
    table = evaluate_goals(dose, {"Body": body}, goals, grid, prescription_gy=50.0)
    assert table[0].value == pytest.approx(120.0)
    (w,) = plan_warnings(table, beam_mu={}, settings=p.safety)
    assert w.message == (
        "SAFETY GOAL FAILED: Body Dmax <= 110 % (implicit: global hot spot) is 120 %."
    )
    dose[5, 5, 5] = 54.0
    table = evaluate_goals(dose, {"Body": body}, goals, grid, prescription_gy=50.0)
    assert plan_warnings(table, beam_mu={}, settings=p.safety) == []


# ------------------------------------------------------------ goals not evaluated
def test_goals_on_absent_structures_are_listed_not_dropped():
    import json

    import numpy as np

    from dose_engine import Grid
    from rtplan.evaluation import evaluate_goals
    from rtplan.report import plan_json

    data = _with(
        structures={"PTV": {"role": "target"}, "Parotid_L": {"required": False}},
        goals=[
            BASE["goals"][0],
            {"structure": "Parotid_L", "metric": "Dmean", "max": 26.0, "priority": 2},
        ],
    )
    p = parse_protocol(data)
    mapping = p.resolve_structures(["PTV"])
    (missing,) = p.goals_not_evaluated(mapping)
    assert missing[0].text == "Parotid_L Dmean <= 26 Gy"
    assert "not found in the patient" in missing[1]
    grid = Grid(shape=(1, 1, 4), origin_mm=(0.0, 0.0, 0.0), spacing_mm=(5.0, 5.0, 5.0))
    table = evaluate_goals(
        np.full(grid.shape, 51.0), {"PTV": np.ones(grid.shape)}, p.evaluation_goals(mapping), grid
    )
    table = replace(table, not_evaluated=tuple(p.goals_not_evaluated(mapping)))
    assert table.summary_line() == (
        "1/1 goals met, 1 not evaluated: Parotid_L Dmean <= 26 Gy (structure 'Parotid_L' "
        "not found in the patient (optional in the protocol))"
    )
    assert "[NOT EVALUATED] P2 Parotid_L Dmean <= 26 Gy" in repr(table)
    assert "NOT EVALUATED" in table._repr_html_()
    rec = json.loads(json.dumps(plan_json(goal_table=table)))
    assert [g["status"] for g in rec["goals"]] == ["pass", "not_evaluated"]
    assert rec["goals"][1]["value"] is None and "not found" in rec["goals"][1]["reason"]
    assert rec["goals_summary"]["n_goals"] == 1 and rec["goals_summary"]["n_not_evaluated"] == 1


# ------------------------------------------------------------------ deliverability
def test_deliverability_warning_names_the_first_violations_and_counts_the_rest():
    """Agility: at least 0.1 MU per control point with the beam on. Seven 0.05 MU segments
    in one fraction break it seven times; the warning names five (beam, control point,
    key) and counts two more; 0.1 MU segments are within the limit: no warning."""
    import re

    import numpy as np

    from dose_engine import Beam
    from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
    from rtplan.delivery import check_deliverability
    from rtplan.safety import deliverability_warning, plan_warnings

    m = load_machine("AgilityMLC160")
    leaves = np.tile([[-20.0], [20.0]], m.mlc.n_pairs)

    def plan(mu):
        segs = [Segment(leaves, {"Y": (-20.0, 20.0)}, mu, m.mlc.leaf_boundaries_mm)] * 7
        return DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), m, segs)], 1, 4.0, "PTV")

    d = check_deliverability(plan(0.05))
    w = deliverability_warning(d)
    assert w.code == "deliverability"
    assert w.message.startswith("MACHINE LIMIT VIOLATED: 7 violation(s) of the machine's limits: ")
    # control points 0, 2, ..., 12: the first of each segment's beam-on interval
    named = re.findall(
        r"beam 1 control point (\d+): [^;]*\[arc\.min_mu_per_control_point\]", w.message
    )
    assert named == ["0", "2", "4", "6", "8"]
    assert "and 2 more (plan.json 'deliverability' lists every one)" in w.message
    settings = parse_protocol(BASE).safety
    assert plan_warnings([], beam_mu={}, settings=settings, deliverability=d) == [w]
    assert deliverability_warning(check_deliverability(plan(0.1))) is None
