"""The beam model follows field size from 3 × 3 to 40 × 40 cm² (issue 15).

A synthetic clinic (:mod:`exponential_kernel_clinic`: exponential pencil kernels of
Ahnesjö et al. 1992, an independent model whose phantom scatter keeps growing to 40 × 40
cm²) is commissioned from PDDs of 3 × 3, 5 × 5, 10 × 10, 30 × 30 and 40 × 40 cm², profiles
of 5 × 5, 10 × 10 and 30 × 30 cm² and its output factors; the 20 × 20 cm² PDD and output
factor are held out.  The fitted model must reproduce every field's depth dose beyond dmax
within 2 % (local), the held-out rise of PDD(10 cm) from 10 × 10 to 20 × 20 within 1 point
and the output factors within 1 %.  The single-Gaussian scatter kernel of earlier versions
(``long_range_scatter=False``), fitted to the same data, cannot: it misses the held-out
20 × 20 cm² depth dose by more than 2 %.  (Slow: two fits, about 5 CPU minutes.)

A flattening-filter-free beam (the shipped model with a central peak instead of a dip) is
fitted too: the horn's dip must come out negative and the profile right at an unfitted depth.
"""

from __future__ import annotations

import copy
import dataclasses

import exponential_kernel_clinic as clinic
import numpy as np
import pytest

from dose_engine import BeamModel, fit_beam_model, load_beam_model
from dose_engine._fit import _dose
from dose_engine._scan import MeasuredScan

FIT_FIELDS_MM = [(30.0, 30.0), (50.0, 50.0), (100.0, 100.0), (300.0, 300.0), (400.0, 400.0)]
PROFILE_FIELDS_MM = [(50.0, 50.0), (100.0, 100.0), (300.0, 300.0)]
PROFILE_DEPTHS_MM = (50.0, 200.0)
HELD_OUT_MM = (200.0, 200.0)
ALL_FIELDS_MM = sorted(FIT_FIELDS_MM + [HELD_OUT_MM])
DEPTHS_MM = np.arange(0.0, 300.1, 2.0)


@pytest.fixture(scope="module")
def data():
    return clinic.measured_data(FIT_FIELDS_MM, PROFILE_FIELDS_MM, PROFILE_DEPTHS_MM)


@pytest.fixture(scope="module")
def fitted(data):
    return BeamModel(fit_beam_model(data))


@pytest.fixture(scope="module")
def single_gaussian(data):
    return BeamModel(fit_beam_model(data, long_range_scatter=False))


def _pdd(model_or_none, field):
    if model_or_none is None:
        dose = clinic.dose(field, DEPTHS_MM)
    else:
        dose = _dose(model_or_none, clinic.SSD_MM, field, DEPTHS_MM, 0.0)
    return 100.0 * dose / dose.max()


def _pdd10_rise(model_or_none) -> float:
    at = int(np.flatnonzero(DEPTHS_MM == 100.0)[0])
    return float(_pdd(model_or_none, HELD_OUT_MM)[at] - _pdd(model_or_none, (100.0, 100.0))[at])


def _output_factor(model, field) -> float:
    ref = _dose(model, clinic.SSD_MM, (100.0, 100.0), 100.0, 0.0)
    return float(_dose(model, clinic.SSD_MM, field, 100.0, 0.0) / ref)


def _pdd_miss_pct(model, field) -> float:
    """Largest local difference of the model's depth dose beyond dmax, %."""
    meas = _pdd(None, field)
    calc = _pdd(model, field)
    beyond = DEPTHS_MM >= DEPTHS_MM[np.argmax(meas)]
    return float(np.max(np.abs(calc[beyond] / meas[beyond] - 1.0)) * 100.0)


@pytest.mark.slow
@pytest.mark.parametrize("field", ALL_FIELDS_MM, ids=lambda f: f"{f[0]:g}")
def test_depth_dose_beyond_dmax_within_2_percent(fitted, field):
    assert _pdd_miss_pct(fitted, field) < 2.0, field


@pytest.mark.slow
def test_held_out_20x20_pdd10_rise(fitted):
    expected = _pdd10_rise(None)
    assert expected > 2.0  # the reference machine's scatter keeps growing
    assert _pdd10_rise(fitted) == pytest.approx(expected, abs=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("field", ALL_FIELDS_MM, ids=lambda f: f"{f[0]:g}")
def test_output_factors_within_1_percent(fitted, field):
    expected = clinic.output_factors([field])[field]
    assert _output_factor(fitted, field) == pytest.approx(expected, rel=0.01)


@pytest.mark.slow
def test_single_gaussian_scatter_cannot_follow_field_size(single_gaussian):
    """The old kernel, fitted to the same scans, misses the held-out 20 × 20 cm² depth dose
    by more than 2 % beyond dmax (4.5 % when measured, against 1.1 % for the new one)."""
    assert _pdd_miss_pct(single_gaussian, HELD_OUT_MM) > 2.0


# ------------------------------------------------------------ flattening-filter free
FFF_HORN = {"dip": -0.3, "sigma_mm": 150.0}  # a peaked fluence: 30 % above the shoulder


def _fff_data():
    """Scans of the shipped model with a peaked (negative-dip) fluence."""
    params = copy.deepcopy(load_beam_model().parameters)
    params["horn"] = dict(FFF_HORN)
    model = BeamModel(params)
    depth = np.arange(0.5, 300.1, 2.0)
    fields = [(50.0, 50.0), (100.0, 100.0), (200.0, 200.0)]
    scans = [
        MeasuredScan("PDD", f[0], 1000.0, None, depth, _dose(model, 1000.0, f, depth, 0.0), f[1])
        for f in fields
    ]
    x = np.arange(-140.0, 140.1, 2.0)
    for dp in (50.0, 200.0):
        val = _dose(model, 1000.0, (200.0, 200.0), dp, x)
        scans.append(MeasuredScan("CROSSPLANE_PROFILE", 200.0, 1000.0, dp, x, val, 200.0))
    ref = _dose(model, 1000.0, (100.0, 100.0), 100.0, 0.0)
    of = {f: float(_dose(model, 1000.0, f, 100.0, 0.0) / ref) for f in fields}
    data = clinic.measured_data([], [], ())
    return model, dataclasses.replace(data, scans=tuple(scans), output_factors=of)


@pytest.mark.slow
def test_fff_peaked_profile_is_fitted():
    truth, data = _fff_data()
    fitted = BeamModel(fit_beam_model(data))
    assert fitted.horn[0] < -0.1  # the fit reached a peaked fluence
    x = np.arange(-90.0, 90.1, 2.0)  # inside the 80 % of the field, at an unfitted depth
    want = _dose(truth, 1000.0, (200.0, 200.0), 100.0, x)
    got = _dose(fitted, 1000.0, (200.0, 200.0), 100.0, x)
    assert np.max(np.abs(got / got[45] - want / want[45])) < 0.01
