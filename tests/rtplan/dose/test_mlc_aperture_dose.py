"""MLC and jaw physics in the aperture dose (rtplan.dose.aperture_dose) on water.

Analytic expectations: a closed bank inside the jaws transmits the leaf transmission
(raised by the interleaf leakage in the tongue-and-groove bands); a sliding gap's lateral
dose integral grows by DLG / gap; beyond the jaws the dose is the jaw transmission times
the dose of the leaves' opening; a commissioned beam model's [mlc] replaces the machine's;
behind an MLC opening, wider jaws raise the output by the model's collimator-scatter ratio.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from dose_engine import Beam, BeamModel, Grid, MLCParameters, field_dose, load_beam_model
from rtplan import DeliverableBeam, Segment, load_machine
from rtplan.dose import aperture_dose, resolve_mlc_parameters

MACHINE = load_machine("VarianMLC120")
CT = Grid((41, 61, 81), (-100.0, 1.25, -50.0), spacing_mm=(2.5, 2.5, 2.5))  # water y ≥ 0
WATER = np.ones(CT.shape, np.float32)
#: A line along BLD x (patient x at gantry 0) at 50 mm depth, 1 mm steps.
LINE_X = Grid((1, 1, 241), (-120.0, 50.0, 0.0), spacing_mm=(1.0, 1.0, 1.0))
AXIS = Grid((1, 1, 1), (0.0, 50.0, 0.0), spacing_mm=(1.0, 1.0, 1.0))


def beam_of(a_mm, b_mm, jaws_mm, mu=100.0, machine=MACHINE):
    n = machine.mlc.n_pairs
    leaves = np.stack([np.full(n, a_mm, float), np.full(n, b_mm, float)])
    seg = Segment(leaves, jaws_mm, mu, machine.mlc.leaf_boundaries_mm)
    return DeliverableBeam(1, "G0", Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0)), machine, (seg,))


def dose(dbeam, grid, params=None, model=None):
    return np.asarray(aperture_dose(dbeam, WATER, CT, grid, model, mlc_parameters=params))


JAWS_10 = {"X": (-50.0, 50.0), "Y": (-50.0, 50.0)}


def test_closed_bank_transmits_the_commissioned_fraction():
    p = MLCParameters(
        transmission=0.015, dosimetric_leaf_gap_mm=1.6, tongue_and_groove_mm=1.0,
        jaw_transmission=0.003,
    )  # fmt: skip
    open_gy = dose(beam_of(-150.0, 150.0, JAWS_10), AXIS, MLCParameters())
    closed_gy = dose(beam_of(150.0, 150.0, JAWS_10), AXIS, p)  # closed under jaw X2
    # beyond the jaws the leaves' transmission times the jaws' adds < 0.2 % of it
    assert float(closed_gy[0, 0, 0] / open_gy[0, 0, 0]) == pytest.approx(0.015, rel=0.003)


def test_sliding_gap_integral_grows_by_dlg_over_gap():
    gap = beam_of(-5.0, 5.0, JAWS_10)
    ideal = dose(gap, LINE_X, MLCParameters())
    rounded = dose(gap, LINE_X, MLCParameters(dosimetric_leaf_gap_mm=1.6))
    # (the head scatter of the jaws, the same for both gaps, changes the ratio by < 0.1 %)
    ratio = float(rounded.sum() / ideal.sum())
    assert ratio == pytest.approx(1 + 1.6 / 10.0, rel=0.002)


def test_jaw_transmission_beyond_the_jaws():
    leaves_open = beam_of(-150.0, 150.0, {"X": (-20.0, 20.0), "Y": (-20.0, 20.0)})
    p = MLCParameters(jaw_transmission=0.003)
    with_jaws = dose(leaves_open, LINE_X, p)[0, 0]
    ideal = dose(leaves_open, LINE_X, MLCParameters())[0, 0]
    # the same leaves with the jaws out of the way (the fluence the jaws transmit)
    wide = dose(beam_of(-150.0, 150.0, {"X": (-200.0, 200.0), "Y": (-200.0, 200.0)}), LINE_X,
                MLCParameters())[0, 0]  # fmt: skip
    x = LINE_X.zyx_axes_mm()[2]
    far = np.abs(x) >= 80.0  # 60 mm beyond the jaws: the jaws' own field adds < 1 %
    np.testing.assert_allclose((with_jaws - ideal)[far] / wide[far], 0.003, rtol=0.05)


def test_commissioned_model_overrides_the_machine():
    base = load_beam_model()
    mlc = {"transmission": 0.02, "dosimetric_leaf_gap_mm": 1.2, "applied_to_dose": True}
    model = BeamModel({**base.parameters, "mlc": mlc})
    p = resolve_mlc_parameters(MACHINE, model)
    m = MACHINE.dosimetry
    assert (p.transmission, p.dosimetric_leaf_gap_mm) == (0.02, 1.2)
    assert (p.interleaf_leakage, p.tongue_and_groove_mm, p.jaw_transmission) == (
        m.interleaf_leakage,
        m.tongue_and_groove_mm,
        m.jaw_transmission,
    )
    assert resolve_mlc_parameters(MACHINE, base) == m
    closed = beam_of(150.0, 150.0, JAWS_10)
    by_model = dose(closed, AXIS, model=model)  # resolved from the machine and the model
    np.testing.assert_array_equal(by_model, dose(closed, AXIS, p))
    assert float(by_model[0, 0, 0]) > 1.1 * float(dose(closed, AXIS)[0, 0, 0])


def _sc_open(model, half_x_mm, half_y_mm):
    """In-air output (collimator scatter) of an open field centred on the axis: the model's
    focal and head-scatter Gaussians integrated over it (TG-74's S_c, up to a constant)."""
    p = model.parameters
    wh = p["head_scatter_weight"]
    total = 0.0
    for share, (sx, sy) in ((1 - wh, p["source_sigma_mm"]), (wh, p["head_scatter_sigma_mm"])):
        total += share * erf(half_x_mm / (np.sqrt(2) * sx)) * erf(half_y_mm / (np.sqrt(2) * sy))
    return total


def test_head_scatter_follows_the_jaws_not_the_mlc():
    """A 50 x 50 mm MLC opening behind 100 x 100 and 200 x 200 mm jaws: the wider jaws let
    more head scatter through, by the model's S_c ratio of those open fields; the phantom
    scatter (the MLC opening) is the same."""
    model = load_beam_model()
    ideal = MLCParameters()
    centre = np.abs(MACHINE.mlc.leaf_centers_mm) < 25.0
    a, b = np.where(centre, -25.0, 0.0), np.where(centre, 25.0, 0.0)

    def segment(jaw_mm):
        jaws = {"X": (-jaw_mm, jaw_mm), "Y": (-jaw_mm, jaw_mm)}
        seg = Segment(np.stack([a, b]), jaws, 100.0, MACHINE.mlc.leaf_boundaries_mm)
        return DeliverableBeam(1, "G0", Beam(0.0), MACHINE, (seg,))

    d10 = dose(segment(50.0), AXIS, ideal, model)[0, 0, 0]
    d20 = dose(segment(100.0), AXIS, ideal, model)[0, 0, 0]
    # the focal source seen through the 50 mm opening is the same: equal to 1e-6
    expected = _sc_open(model, 100.0, 100.0) / _sc_open(model, 50.0, 50.0)
    assert expected > 1.02  # the shipped model's S_c(20 x 20) / S_c(10 x 10)
    assert float(d20 / d10) == pytest.approx(expected, rel=1e-4)
    # jaws on the MLC opening: the open 50 x 50 field, exactly the model's aperture dose
    d5 = dose(segment(25.0), AXIS, ideal, model)[0, 0, 0]
    open5 = field_dose(WATER, CT, AXIS, Beam(0.0), [-25.0, 25.0, -25.0, 25.0], 100.0, model)
    assert float(d5) == pytest.approx(float(open5[0, 0, 0]), rel=1e-6)
    assert float(d10 / d5) == pytest.approx(
        _sc_open(model, 50.0, 50.0) / _sc_open(model, 25.0, 25.0), rel=1e-4
    )
