"""The electron-contamination term of the pencil-beam model (issue 15, build-up).

``D_e = N (SAD/z)^2 w_e exp(-d/λ_e) P(σ_e)`` (``dose_engine._model``): checked against the
formula evaluated independently (float64 scipy erf), for additivity over beamlets, for the
file checks, and — the fit (slow) — against a synthetic clinic whose truth has a known
contamination and against the measured pymedphys 6 MV depth doses.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.special import erf

from dose_engine import BeamModel, load_beam_model
from dose_engine._fit import _dose, fit_6mv_model, fit_beam_model, water_point_geometry
from dose_engine._model import rectangle_dose
from dose_engine.errors import BeamModelError

CONTAMINATION = {"weight": 0.15, "depth_mm": 4.0, "sigma_mm": 50.0}


def _with(contamination) -> BeamModel:
    params = dict(load_beam_model().parameters, electron_contamination=contamination)
    return BeamModel(params)


def test_contamination_dose_is_the_formula():
    shipped, model = load_beam_model(), _with(CONTAMINATION)
    rect = [-30.0, 50.0, -20.0, 40.0]
    depth = np.array([0.0, 0.0, 2.0, 5.0, 12.0, 30.0, 80.0])
    x = np.array([0.0, 45.0, 10.0, -60.0, 0.0, 20.0, 0.0])
    y = np.array([0.0, 0.0, -25.0, 10.0, 39.0, 0.0, 0.0])
    u, v, z, d = water_point_geometry(900.0, depth, x, y)
    extra = rectangle_dose(u, v, z, d, [rect], [2.0], model) - rectangle_dose(
        u, v, z, d, [rect], [2.0], shipped
    )
    s = math.sqrt(2.0) * CONTAMINATION["sigma_mm"]
    lateral = 0.25 * (erf((rect[1] - u) / s) - erf((rect[0] - u) / s))
    lateral = lateral * (erf((rect[3] - v) / s) - erf((rect[2] - v) / s))
    expected = (
        2.0
        * model.parameters["normalisation_gy_per_mu"]
        * (1000.0 / z) ** 2
        * CONTAMINATION["weight"]
        * np.exp(-d / CONTAMINATION["depth_mm"])
        * lateral
    )
    np.testing.assert_allclose(extra, expected, rtol=1e-9, atol=1e-15)
    assert extra[0] > 10 * extra[-1]  # falls with depth: 80 mm is 20 e-folds down


def test_no_contamination_is_the_shipped_dose_bit_for_bit():
    shipped = load_beam_model()
    assert "electron_contamination" not in shipped.parameters  # its fingerprint is unchanged
    off = _with({"weight": 0.0, "depth_mm": 4.0, "sigma_mm": 50.0})
    u, v, z, d = water_point_geometry(1000.0, np.arange(0.0, 50.0, 2.5), 7.0)
    for dtype in (np.float32, np.float64):
        args = [a.astype(dtype) for a in (u, v, z, d)]
        a = rectangle_dose(*args, [[-20, 20, -30, 30]], [1.0], shipped)
        b = rectangle_dose(*args, [[-20, 20, -30, 30]], [1.0], off)
        assert np.array_equal(a, b)


def test_contamination_of_beamlets_adds_up_to_the_field():
    # the term is one more Gaussian of the same erf product: beamlet doses sum to the field
    model = _with(CONTAMINATION)
    u, v, z, d = water_point_geometry(1000.0, np.array([0.0, 3.0, 10.0]), np.array([0, 35, 80]))
    cells = [[x, x + 10.0, y, y + 10.0] for x in range(-50, 50, 10) for y in range(-30, 30, 10)]
    whole = rectangle_dose(u, v, z, d, [[-50, 50, -30, 30]], [1.0], model)
    parts = sum(rectangle_dose(u, v, z, d, [c], [1.0], model) for c in cells)
    np.testing.assert_allclose(parts, whole, rtol=1e-9)


def test_influence_columns_carry_the_contamination():
    # the influence matrix (its own loop over the model's terms) adds up to the field dose
    # of the model with the term, which differs from the shipped model's near the surface
    from dose_engine import Beam, beamlets_for_target, compute_influence_matrix, field_dose
    from dose_engine._validation import water_phantom

    dens, ct = water_phantom(1000.0, spacing_mm=5.0, half_width_mm=60, depth_mm=60)
    # a narrow contamination, so that it shows in a 3 x 3 cm^2 field at 2.5 mm depth
    beam, model = Beam(0.0), _with({"weight": 0.3, "depth_mm": 4.0, "sigma_mm": 10.0})
    pts = np.array([[x, 0, z] for x in np.linspace(-10, 10, 5) for z in np.linspace(-10, 10, 5)])
    bl = beamlets_for_target([beam], pts, margin_mm=0)
    rect = [[-15, 15, -15, 15]]
    open_dose = field_dose(dens, ct, ct, beam, rect, 1.0, model)
    shipped_dose = field_dose(dens, ct, ct, beam, rect, 1.0, load_beam_model())
    im = compute_influence_matrix(
        dens, ct, ct, [beam], bl, model, lateral_cutoff_mm=150.0, relative_threshold=0.0,
        progress=False,
    )  # fmt: skip
    inner = open_dose > 0.2 * open_dose.max()
    np.testing.assert_allclose(im.dose(np.ones(len(bl)))[inner], open_dose[inner], rtol=1e-4)
    assert np.max(open_dose - shipped_dose) > 0.05 * shipped_dose.max()


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"weight": -0.1, "depth_mm": 4.0, "sigma_mm": 50.0}, "weight >= 0"),
        ({"weight": 0.1, "depth_mm": 0.0, "sigma_mm": 50.0}, "positive depth_mm"),
        ({"weight": 0.1, "depth_mm": 4.0, "sigma_mm": float("nan")}, "sigma_mm"),
        ({"weight": 0.1, "depth_mm": 4.0}, "'sigma_mm'"),
        ("strong", "must be"),
    ],
)
def test_bad_contamination_entry_refused(entry, words):
    with pytest.raises(BeamModelError, match="electron_contamination") as err:
        _with(entry)
    assert words in str(err.value)


def _buildup(model: BeamModel, field, depths) -> np.ndarray:
    """Depth dose at SSD 1000 mm, normalised to its maximum over 0-60 mm."""
    fine = np.arange(0.0, 60.0, 0.25)
    top = _dose(model, 1000.0, field, fine, 0.0).max()
    return _dose(model, 1000.0, field, depths, 0.0) / top


@pytest.mark.slow
def test_fit_recovers_a_known_contamination_on_held_out_fields():
    # A synthetic clinic (dose_engine._energy_models' fields, PDDs from 0.5 mm) made by the
    # shipped model plus a known contamination; fitted on 5, 10, 20 and 40 cm squares, the
    # held-out 3 x 3, 15 x 15, 30 x 30 and 20 x 5 cm^2 build-ups are checked at the clinic's
    # depths up to 20 mm (between them both depth functions are interpolated linearly on
    # other nodes, which differ by up to 2 % at 1 mm).
    from dose_engine._energy_models import PDD_DEPTHS_MM, _fields, _is_fitted, synthetic_clinic

    truth = _with(CONTAMINATION)
    clinic = synthetic_clinic(truth, "6X with contamination")
    fit_data = replace(
        clinic,
        scans=tuple(s for s in clinic.scans if _is_fitted(s.field)),
        output_factors={f: v for f, v in clinic.output_factors.items() if _is_fitted(f)},
    )
    depths = PDD_DEPTHS_MM[PDD_DEPTHS_MM <= 20.0]
    worst = {}
    for contamination in (False, True):
        params = fit_beam_model(fit_data, scatter_tail=False, electron_contamination=contamination)
        model = BeamModel(params)
        worst[contamination] = max(
            np.max(np.abs(_buildup(model, f, depths) - _buildup(truth, f, depths)))
            for f in _fields()
            if not _is_fitted(f)
        )
        if contamination:
            fitted = params["electron_contamination"]
            for key, value in CONTAMINATION.items():
                assert fitted[key] == pytest.approx(value, rel=0.01), key
    # without the term the field-size dependence of the build-up cannot be followed
    # (3 x 3 cm^2: 6.9 points of dmax); with it, 0.05 points
    assert worst[False] > 0.03
    assert worst[True] < 0.003


@pytest.mark.slow
def test_fit_with_contamination_on_the_measured_6mv_depth_doses():
    # pymedphys' measured 5 x 5 and 10 x 10 cm^2 PDDs (PTW 60008 diode, SSD 900 mm): surface
    # dose / dmax, dmax and the depth dose beyond dmax, shipped model and the refit with the
    # contamination term (numbers: benches/bench_buildup.py).
    from dose_engine._measured import pymedphys_6mv_data

    measured = pymedphys_6mv_data()
    refit = BeamModel(fit_6mv_model(electron_contamination=True))
    assert refit.electron_contamination[0] > 0.0
    fine = np.arange(0.0, 350.01, 0.1)
    for scan in measured.pdds():
        reading = scan.value / scan.value.max()
        peak = scan.position_mm[np.argmax(scan.value)]
        for model in (load_beam_model(), refit):
            calc = _dose(model, scan.ssd_mm, scan.field, fine, 0.0)
            calc = calc / calc.max()
            assert calc[0] == pytest.approx(reading[0], abs=0.01)  # surface / dmax
            assert abs(fine[np.argmax(calc)] - peak) <= 1.0
            beyond = scan.position_mm >= peak
            local = np.interp(scan.position_mm[beyond], fine, calc) / reading[beyond] - 1.0
            assert np.max(np.abs(local)) < 0.01
            buildup = scan.position_mm <= 15.0
            diff = np.interp(scan.position_mm[buildup], fine, calc) - reading[buildup]
            assert np.max(np.abs(diff)) < 0.01
