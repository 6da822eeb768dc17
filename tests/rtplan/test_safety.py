"""The safety layer: plausibility refusals at protocol load, implicit goals, plan warnings
(normalisation cap, beam balance, failed implicit goals) and goals not evaluated."""

from __future__ import annotations

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
