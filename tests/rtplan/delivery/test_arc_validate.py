"""ArcBeam.validate checks the control points, not the apertures sampled between them.

A leaf pair opening from closed (A == B) to a 10 mm gap over one interval (while another,
closed pair crosses 40 mm, so that the interval is sampled 20 times) passes through
gaps below the Millennium 120's 0.5 mm minimum, as the machine moves it; the sampled
apertures hold such gaps, the control points do not (the TG-119 prostate arc plan was
refused on export for this).  A control point with a 0.2 mm gap is still refused, named.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine._beam import Beam
from rtplan import load_machine
from rtplan.delivery import ArcBeam, ControlPoint
from rtplan.errors import SegmentError

VARIAN = load_machine("VarianMLC120")


def _arc(second_gap_mm: float) -> ArcBeam:
    n = VARIAN.mlc.n_pairs
    closed = np.zeros((2, n))
    opened = np.zeros((2, n))
    opened[0, 30], opened[1, 30] = -0.5 * second_gap_mm, 0.5 * second_gap_mm
    opened[:, 10] = 40.0  # a closed pair crossing 40 mm: 20 samples of 2 mm travel
    jaws = {"X": (-50.0, 50.0), "Y": (-30.0, 30.0)}
    cps = [ControlPoint(0.0, closed, jaws, 0.0), ControlPoint(2.0, opened, jaws, 1.0)]
    return ArcBeam(
        1, "a", Beam(0.0), VARIAN, control_points=cps, meterset_mu=2.0, rotation_direction="CW"
    )


def test_a_pair_opening_from_closed_is_valid():
    arc = _arc(10.0)
    gaps = [float(np.diff(s.leaf_positions_mm[:, 30])[0]) for s in arc.segments]
    assert min(gaps) < VARIAN.mlc.min_leaf_gap_mm  # a sampled aperture holds such a gap
    arc.validate(where="plan")


def test_a_control_point_below_the_minimum_gap_is_refused():
    with pytest.raises(SegmentError, match=r"plan beam 1 control point 1: leaf pair 30 .*0\.200"):
        _arc(0.2).validate(where="plan")
