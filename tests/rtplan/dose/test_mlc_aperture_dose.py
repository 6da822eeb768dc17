"""MLC and jaw physics in the aperture dose (rtplan.dose.aperture_dose) on water.

Analytic expectations: a closed bank inside the jaws transmits the leaf transmission
(raised by the interleaf leakage in the tongue-and-groove bands); a sliding gap's lateral
dose integral grows by DLG / gap; beyond the jaws the dose is the jaw transmission times
the dose of the leaves' opening; a commissioned beam model's [mlc] replaces the machine's;
leaves on or behind the jaws give the open jaw field; two MLC half fields add up to the open
field on the axis (the extra-focal source seen through the jaws and the lower leaves).
"""

from __future__ import annotations

import numpy as np
import pytest

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


#: The machine's collimator heights, no other MLC effect: the head-scatter geometry alone.
HEIGHTS = MLCParameters(
    source_to_mlc_mm=MACHINE.dosimetry.source_to_mlc_mm,
    source_to_x_jaws_mm=MACHINE.dosimetry.source_to_x_jaws_mm,
    source_to_y_jaws_mm=MACHINE.dosimetry.source_to_y_jaws_mm,
)


@pytest.mark.parametrize("jaw_mm", [25.0, 50.0])
def test_leaves_at_or_behind_the_jaws_give_the_open_jaw_field(jaw_mm):
    """The commissioned open fields: the leaves (lower than the jaws) on or behind the jaw
    edges hide none of the extra-focal source the jaws show: the model's open-field dose."""
    model = load_beam_model()
    jaws = {"X": (-jaw_mm, jaw_mm), "Y": (-jaw_mm, jaw_mm)}
    field = [-jaw_mm, jaw_mm, -jaw_mm, jaw_mm]
    open_gy = field_dose(WATER, CT, AXIS, Beam(0.0), field, 100.0, model)[0, 0, 0]
    for leaf_mm in (jaw_mm, jaw_mm + 30.0):
        gy = dose(beam_of(-leaf_mm, leaf_mm, jaws), AXIS, HEIGHTS, model)[0, 0, 0]
        assert float(gy) == pytest.approx(float(open_gy), rel=1e-6)


@pytest.mark.parametrize("jaw_mm", [25.0, 50.0])
def test_abutting_half_fields_sum_to_the_open_field(jaw_mm):
    """Two MLC half fields under the same jaws, meeting on the axis: what each shows of the
    focal and extra-focal sources there adds up to the open field's."""
    model = load_beam_model()
    jaws = {"X": (-jaw_mm, jaw_mm), "Y": (-jaw_mm, jaw_mm)}
    behind = jaw_mm + 10.0
    halves = [
        dose(beam_of(a, b, jaws), AXIS, HEIGHTS, model) for a, b in ((-behind, 0.0), (0.0, behind))
    ]
    open_gy = dose(beam_of(-behind, behind, jaws), AXIS, HEIGHTS, model)
    # (1.0014 and 1.0047; 1.0053 and 1.0185 when the jaws' whole view was given to each)
    total = halves[0] + halves[1]
    assert float(total[0, 0, 0]) == pytest.approx(float(open_gy[0, 0, 0]), rel=0.005)
