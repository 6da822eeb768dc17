"""Fit the 6 MV pencil-beam model to measured water-tank data.

Run ``python -m dose_engine.fit [OUT.json]`` to regenerate ``data/beam_model_6MV.json``
from the measurements shipped in the pymedphys wheel (:mod:`dose_engine._measured`).

Procedure (variable projection: the depth function ``A(d)`` cancels from every quantity
compared in step 1, because they are ratios of doses at the same depth and distance):

1. Shape parameters — focal-source blur ``σ_src`` (BLD x and y), primary and scatter kernel
   widths ``σ_p(d) = p0 + p1 d``, ``σ_s(d) = s0 + s1 d``, head-scatter weight ``w_h`` and
   widths ``σ_h`` (x and y), the off-axis horn (dip ``a`` and width ``s``) and the
   scatter-to-primary ratio ``r(d)`` at 14 depth nodes — by nonlinear least squares
   (:func:`scipy.optimize.least_squares`) on (a) the 16 in/cross-plane profiles (5 × 5 and
   10 × 10 cm², depths 15/50/100/200 mm, SSD 900 mm), each normalised to its central-axis
   value, (b) the ratio of the 5 × 5 and 10 × 10 PDDs normalised at 100 mm, (c) the 5 × 5
   output factor (measured in the same files' geometry: SSD 900 mm, 100 mm depth).
2. Primary depth function ``A(d) = PDD₁₀(d) (z/SAD)² / G₁₀(d)`` from the 10 × 10 PDD,
   where ``G₁₀`` is the lateral integral of step 1; extended beyond 350 mm with an
   exponential fitted to 250–350 mm.
3. Absolute calibration ``N``: 10 × 10 cm² at SSD 1000 mm gives ``dose_gy_per_mu`` at dmax.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from pathlib import Path

import numpy as np

from ._measured import read_measured_6mv
from ._model import BeamModel, rectangle_dose

__all__ = ["fit_6mv_model", "water_point_geometry"]

logger = logging.getLogger("rtplan.dose_engine")

SAD_MM = 1000.0
R_NODES_MM = np.array([0, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 250, 300, 350], float)
MAX_DEPTH_MM = 600.0


def water_point_geometry(ssd_mm, depth_mm, offaxis_x_mm, offaxis_y_mm=0.0, sad_mm=SAD_MM):
    """Exact fan coordinates of points in a flat water phantom (beam along the normal).

    Parameters
    ----------
    ssd_mm : float
    depth_mm, offaxis_x_mm, offaxis_y_mm : array_like, mm
        Geometric depth below the surface and off-axis distances at that depth.

    Returns
    -------
    u_mm, v_mm, z_mm, radiological_depth_mm : ndarray of float64
        Iso-plane fan coordinates, distance from the source along the axis and slant
        water depth along the ray.
    """
    d, x, y = np.broadcast_arrays(
        np.asarray(depth_mm, float),
        np.asarray(offaxis_x_mm, float),
        np.asarray(offaxis_y_mm, float),
    )
    z = ssd_mm + d
    u = x * sad_mm / z
    v = y * sad_mm / z
    slant = np.sqrt(1.0 + (x * x + y * y) / (z * z))
    return u, v, z, d * slant


def _square(side_mm: float) -> np.ndarray:
    h = side_mm / 2.0
    return np.array([[-h, h, -h, h]])


def _shape_params(theta: np.ndarray) -> dict:
    n = R_NODES_MM.size
    return {
        "source_sigma_mm": [float(theta[0]), float(theta[7])],
        "sigma_primary_mm": [float(theta[1]), float(theta[2])],
        "sigma_scatter_mm": [float(theta[3]), float(theta[4])],
        "head_scatter_weight": float(theta[5]),
        "head_scatter_sigma_mm": [float(theta[6]), float(theta[8])],
        "horn": {"dip": float(theta[9]), "sigma_mm": float(theta[10])},
        "scatter_ratio_nodes": [float(v) for v in theta[11 : 11 + n]],
    }


def _model_from(shape: dict, depth_mm, primary, norm: float, calib: dict, prov: dict) -> BeamModel:
    ratio = np.interp(depth_mm, R_NODES_MM, shape["scatter_ratio_nodes"])
    params = {
        "name": "rtplan generic 6 MV pencil beam",
        "energy_mv": 6.0,
        "sad_mm": SAD_MM,
        "calibration": calib,
        "normalisation_gy_per_mu": float(norm),
        "depth_mm": [float(v) for v in depth_mm],
        "primary_weight": [float(v) for v in primary],
        "scatter_ratio": [float(v) for v in ratio],
        "sigma_primary_mm": shape["sigma_primary_mm"],
        "sigma_scatter_mm": shape["sigma_scatter_mm"],
        "source_sigma_mm": shape["source_sigma_mm"],
        "head_scatter_weight": shape["head_scatter_weight"],
        "head_scatter_sigma_mm": shape["head_scatter_sigma_mm"],
        "horn": shape["horn"],
        "provenance": prov,
    }
    return BeamModel(params)


def _dose(model, ssd, field, depth, x, y=0.0):
    u, v, z, d = water_point_geometry(ssd, depth, x, y)
    return rectangle_dose(
        u.ravel(), v.ravel(), z.ravel(), d.ravel(), _square(field), [1.0], model
    ).reshape(u.shape)


def _pdd(scans, field):
    s = next(s for s in scans[field] if s.curve == "PDD")
    return s.position_mm, s.value


def shape_from_model(params: dict) -> dict:
    """The step-1 (shape) parameters of an existing model file's content."""
    return {
        "source_sigma_mm": list(params["source_sigma_mm"]),
        "sigma_primary_mm": list(params["sigma_primary_mm"]),
        "sigma_scatter_mm": list(params["sigma_scatter_mm"]),
        "head_scatter_weight": float(params["head_scatter_weight"]),
        "head_scatter_sigma_mm": list(params["head_scatter_sigma_mm"]),
        "horn": dict(params["horn"]),
        "scatter_ratio_nodes": [
            float(v) for v in np.interp(R_NODES_MM, params["depth_mm"], params["scatter_ratio"])
        ],
    }


def fit_6mv_model(*, max_nfev: int = 200, shape: dict | None = None) -> dict:
    """Fit the model to the pymedphys 6 MV measurements and return the model-file content.

    Parameters
    ----------
    max_nfev : int
        Evaluation budget of the nonlinear shape fit (step 1).
    shape : dict, optional
        Skip step 1 and use these shape parameters (see :func:`shape_from_model`); steps 2-3
        (depth function and calibration) and the residual summary still run.

    Returns
    -------
    params : dict
        JSON-serialisable content of a beam-model file (see :class:`BeamModel`), with a
        ``provenance`` entry holding the data, the procedure, the date and RMS residuals.
    """
    from scipy.optimize import least_squares

    meas = read_measured_6mv()
    scans = meas["scans"]
    of5 = meas["output_factor"][50.0] / meas["output_factor"][100.0]
    depth10, pdd10 = _pdd(scans, 100.0)
    depth5, pdd5 = _pdd(scans, 50.0)
    ratio_meas = np.interp(depth10, depth5, pdd5) / pdd10
    ratio_meas /= np.interp(100.0, depth10, ratio_meas)
    profiles = []
    for field in (50.0, 100.0):
        for s in scans[field]:
            if s.curve == "PDD":
                continue
            centre = np.interp(0.0, s.position_mm, s.value)
            profiles.append((field, s.curve, s.depth_mm, s.position_mm, s.value / centre))
    calib = {"dose_gy_per_mu": 0.01, "field_size_mm": 100.0, "ssd_mm": 1000.0, "depth_mm": 0.0}
    flat_depth = np.concatenate([R_NODES_MM, [MAX_DEPTH_MM]])
    flat_prim = np.ones(flat_depth.size)

    def residuals(theta):
        shape = _shape_params(theta)
        m = _model_from(shape, flat_depth, flat_prim, 1.0, calib, {})
        res = []
        for field, curve, depth, x, rel in profiles:
            xx = np.concatenate([[0.0], x])
            prof = (
                _dose(m, 900.0, field, depth, xx)
                if curve == "CROSSPLANE_PROFILE"
                else _dose(m, 900.0, field, depth, 0.0, xx)
            )
            res.append(prof[1:] / prof[0] - rel)
        g5 = _dose(m, 900.0, 50.0, np.concatenate([[100.0], depth10]), 0.0)
        g10 = _dose(m, 900.0, 100.0, np.concatenate([[100.0], depth10]), 0.0)
        res.append(4.0 * ((g5[1:] / g10[1:]) / (g5[0] / g10[0]) - ratio_meas))
        res.append([20.0 * (g5[0] / g10[0] - of5)])
        return np.concatenate(res)

    n = R_NODES_MM.size
    theta0 = np.concatenate(
        [[1.0, 1.0, 0.01, 15.0, 0.1, 0.05, 30.0, 1.0, 30.0, 0.03, 60.0], np.full(n, 0.15)]
    )
    lo = np.concatenate([[0.1, 0.1, 0.0, 2.0, 0.0, 0.0, 5.0, 0.1, 5.0, 0.0, 20.0], np.zeros(n)])
    hi = np.concatenate(
        [[5.0, 10.0, 0.2, 100.0, 1.0, 0.5, 150.0, 5.0, 150.0, 0.15, 200.0], np.full(n, 5.0)]
    )
    if shape is None:
        fit = least_squares(residuals, theta0, bounds=(lo, hi), max_nfev=max_nfev, x_scale="jac")
        shape = _shape_params(fit.x)
        cost, nfev = float(fit.cost), int(fit.nfev)
        logger.info("shape fit: cost %.4g after %d evaluations", cost, nfev)
    else:
        cost, nfev = float("nan"), 0

    # Step 2: primary depth function from the 10 x 10 PDD.
    m1 = _model_from(shape, flat_depth, flat_prim, 1.0, calib, {})
    g10 = _dose(m1, 900.0, 100.0, depth10, 0.0)
    prim = pdd10 / g10  # g10 already holds the inverse square and lateral integral
    prim = prim / prim.max()
    tail = depth10 >= 250.0
    slope, icpt = np.polyfit(depth10[tail], np.log(prim[tail]), 1)
    ext_depth = np.arange(400.0, MAX_DEPTH_MM + 1.0, 50.0)
    depth_all = np.concatenate([depth10, ext_depth])
    prim_all = np.concatenate([prim, np.exp(icpt + slope * ext_depth)])

    # Step 3: calibration at dmax, 10 x 10 at SSD 1000.
    m2 = _model_from(shape, depth_all, prim_all, 1.0, calib, {})
    fine = np.arange(0.0, 60.0, 0.25)
    ref = _dose(m2, 1000.0, 100.0, fine, 0.0)
    dmax = float(fine[np.argmax(ref)])
    norm = calib["dose_gy_per_mu"] / float(ref.max())
    calib = dict(calib, depth_mm=dmax)

    # Residual summary (relative to the measured curves).
    final = _model_from(shape, depth_all, prim_all, norm, calib, {})
    prof_res = []
    for f, curve, d, x, rel in profiles:
        calc = (
            _dose(final, 900.0, f, d, x)
            if curve == "CROSSPLANE_PROFILE"
            else _dose(final, 900.0, f, d, 0.0, x)
        )
        prof_res.append(calc / _dose(final, 900.0, f, d, 0.0) - rel)
    prof_rms = float(np.sqrt(np.mean(np.concatenate(prof_res) ** 2)))
    pdd_model = _dose(final, 900.0, 100.0, depth10, 0.0)
    pdd_rms = float(np.sqrt(np.mean((pdd_model / pdd_model.max() - pdd10 / pdd10.max()) ** 2)))
    of_model = float(_dose(final, 900.0, 50.0, 100.0, 0.0) / _dose(final, 900.0, 100.0, 100.0, 0.0))
    d10_ssd900 = float(_dose(final, 900.0, 100.0, 100.0, 0.0))
    prov = {
        "data": "pymedphys 0.41 wheel, pymedphys/tests/experimental/mephysto/data/measurements/ "
        "(06MV_05x05.mcc, 06MV_10x10.mcc: PTW 60008 diode, SSD 900 mm, PDD and "
        "in/cross-plane profiles at 15/50/100/200 mm; OutputFactors.csv; "
        "AbsoluteDose.csv), Apache-2.0",
        "fitted_by": "dose_engine._fit.fit_6mv_model (python -m dose_engine.fit)",
        "date": _dt.date.today().isoformat(),
        "output_factor_definition": "dose ratio at 100 mm depth, SSD 900 mm (isocentre), "
        "central axis",
        "residuals": {
            "profile_rms_fraction_of_cax": prof_rms,
            "pdd10_rms_fraction_of_max": pdd_rms,
            "output_factor_5x5_model": of_model,
            "output_factor_5x5_measured": of5,
            "d10_ssd900_model_gy_per_mu": d10_ssd900,
            "d10_ssd900_measured_gy_per_mu": meas["absolute"]["d10_ssd900"] / 100.0,
            "least_squares_cost": cost,
            "least_squares_nfev": nfev,
        },
        "not_modelled": "off-axis beam softening (depth dependence of the horns), MLC and "
        "jaw transmission, tongue-and-groove, fields beyond 10 x 10 cm^2 "
        "(no measurements: the horn and head-scatter are extrapolated)",
    }
    logger.info("fit residuals: %s", prov["residuals"])
    return _model_from(shape, depth_all, prim_all, norm, calib, prov).parameters


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dose_engine.fit [OUT.json]``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).parent / "data" / "beam_model_6MV.json"
    params = fit_6mv_model()
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    sys.stderr.write(f"wrote {out}\n{json.dumps(params['provenance']['residuals'], indent=1)}\n")
    return 0 if math.isfinite(params["normalisation_gy_per_mu"]) else 1
