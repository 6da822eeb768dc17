"""Arc limits of the machine models (``[arc]`` of a machine file, rtplan.delivery._arc_limits).

Checked against the values the shipped files state (issue 17: 6 deg/s gantry, leaf speed
25 mm/s Millennium-style and 35 mm/s Agility-style) and against exact refusals: a malformed
``[arc]`` table names the file and the key; a file without ``[arc]`` loads for static beams
and is refused for arcs with the file named.
"""

from __future__ import annotations

import pickle

import pytest

from rtplan import load_machine
from rtplan.delivery import ArcLimits
from rtplan.errors import MachineError

STATIC_ONLY = """
name = "StaticOnly"
[mlc]
leaf_width_mm = 5.0
n_leaf_pairs = 4
first_boundary_mm = -10.0
min_leaf_gap_mm = 0.5
leaf_position_range_mm = [-50.0, 50.0]
interdigitation = true
[jaws.Y]
position_range_mm = [-20.0, 20.0]
max_overtravel_mm = 5.0
"""

ARC = """
[arc]
gantry_speed_deg_per_s = 4.8
max_dose_rate_mu_per_min = 400.0
dose_rate_steps_mu_per_min = [100.0, 400.0]
continuous_dose_rate = false
leaf_speed_mm_per_s = 20.0
min_mu_per_control_point = 0.2
control_point_spacing_deg = [1.0, 5.0]
collimator_angle_deg = 45.0
"""


def _file(tmp_path, text):
    p = tmp_path / "my_linac.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("name", "leaf_speed", "steps", "continuous", "min_rate", "coll"),
    [
        ("VarianMLC120", 25.0, (100.0, 200.0, 300.0, 400.0, 500.0, 600.0), True, 0.0, 30.0),
        ("AgilityMLC160", 35.0, (37.5, 75.0, 150.0, 300.0, 600.0), False, 37.5, 10.0),
    ],
)
def test_shipped_machines_carry_their_arc_limits(
    name, leaf_speed, steps, continuous, min_rate, coll
):
    m = load_machine(name)
    arc = m.require_arc_limits()
    assert arc.gantry_speed_deg_per_s == 6.0 and arc.max_dose_rate_mu_per_min == 600.0
    assert arc.leaf_speed_mm_per_s == leaf_speed and arc.dose_rate_steps_mu_per_min == steps
    assert arc.continuous_dose_rate is continuous and arc.min_dose_rate_mu_per_min == min_rate
    assert arc.control_point_spacing_deg == (2.0, 4.0) and arc.collimator_angle_deg == coll
    assert pickle.loads(pickle.dumps(m)) == m


def test_a_user_file_with_arc_limits(tmp_path):
    arc = load_machine(_file(tmp_path, STATIC_ONLY + ARC)).require_arc_limits()
    assert arc == ArcLimits(4.8, 400.0, (100.0, 400.0), False, 20.0, 0.2, (1.0, 5.0), 45.0)


def test_a_file_without_arc_limits_is_static_only(tmp_path):
    m = load_machine(_file(tmp_path, STATIC_ONLY))
    assert m.arc is None and m.mlc.n_pairs == 4  # loads for static beams
    with pytest.raises(
        MachineError,
        match=r"beam 3 \(an arc\) needs the arc limits of the machine, but machine file "
        r"'.*my_linac\.toml' has no `\[arc\]` table \(missing key `arc\.gantry_speed_deg_per_s`\)",
    ):
        m.require_arc_limits("beam 3 (an arc)")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("leaf_speed_mm_per_s = 20.0\n", ""), r"missing key `arc\.leaf_speed_mm_per_s`"),
        (
            ("leaf_speed_mm_per_s = 20.0", "leaf_speed_mm_per_s = 0"),
            r"`arc\.leaf_speed_mm_per_s` must be a finite number > 0",
        ),
        (
            ("[100.0, 400.0]", "[400.0, 100.0]"),
            r"`arc\.dose_rate_steps_mu_per_min` must be positive, increasing",
        ),
        (("[100.0, 400.0]", "[100.0, 300.0]"), r"end at `arc\.max_dose_rate_mu_per_min` \(400\)"),
        (("[1.0, 5.0]", "[5.0, 1.0]"), r"`arc\.control_point_spacing_deg` must be \[min, max\]"),
        (("[1.0, 5.0]", "[1.0]"), r"`arc\.control_point_spacing_deg` must be 2 numbers"),
        (
            ("continuous_dose_rate = false", "continuous_dose_rate = 0"),
            r"`arc\.continuous_dose_rate` must be true or false",
        ),
        (
            ("collimator_angle_deg = 45.0", "collimator_angle_deg = 360.0"),
            r"`arc\.collimator_angle_deg` must be in \[0, 360\)",
        ),
        (("gantry_speed_deg_per_s", "gantry_speed"), r"unknown key\(s\) `arc\.gantry_speed`"),
        (
            ("min_mu_per_control_point = 0.2", "min_mu_per_control_point = -1"),
            r"`arc\.min_mu_per_control_point` must be ≥ 0",
        ),
    ],
)
def test_malformed_arc_limits_name_file_and_key(tmp_path, edit, match):
    with pytest.raises(MachineError, match=match) as info:
        load_machine(_file(tmp_path, STATIC_ONLY + ARC.replace(*edit)))
    assert "my_linac.toml" in str(info.value)
