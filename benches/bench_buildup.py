"""The build-up region (issue 15): the shipped 6 MV model and its refit with the
electron-contamination term, against the measured pymedphys depth doses.

Measured: pymedphys 0.41's 5 × 5 and 10 × 10 cm² PDDs (PTW 60008 diode, SSD 900 mm, from
the surface in 1 mm steps).  Printed per field: surface dose / dmax, dmax, the largest
difference in the build-up (0-15 mm, points of the dose at dmax) and the largest local
deviation beyond dmax, for the measurement, the shipped model and the refit
(``fit_6mv_model(electron_contamination=True)``); then both models' surface dose and dmax
for 2 × 2 to 40 × 40 cm² at SSD 1000 mm (no measurement there); then the fit's cost with
the contamination's e-folding depth held at 3, 6 and 10 mm (how well the data determine
it).  A report: nothing is asserted (``tests/dose_engine/test_electron_contamination.py``
checks the fit against the measurement and against a synthetic clinic).

Run: ``python -m pytest benches/bench_buildup.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import resource
from unittest import mock

import numpy as np

import dose_engine._fit as fit
from dose_engine import BeamModel, load_beam_model
from dose_engine._fit import _dose, fit_6mv_model
from dose_engine._measured import pymedphys_6mv_data

FINE_MM = np.arange(0.0, 350.01, 0.1)
SQUARES_MM = (20.0, 30.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0)
HELD_DEPTHS_MM = (3.0, 6.0, 10.0)


def _cpu_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def pdd_row(model: BeamModel, scan) -> dict:
    """Build-up and depth-dose figures of one model on one measured PDD."""
    calc = _dose(model, scan.ssd_mm, scan.field, FINE_MM, 0.0)
    calc = calc / calc.max()
    reading = scan.value / scan.value.max()
    peak = scan.position_mm[np.argmax(scan.value)]
    beyond = scan.position_mm >= peak
    buildup = scan.position_mm <= 15.0
    at = np.interp(scan.position_mm, FINE_MM, calc)
    return {
        "surface_pct": 100 * calc[0],
        "dmax_mm": float(FINE_MM[np.argmax(calc)]),
        "buildup_pts": 100 * float(np.max(np.abs(at - reading)[buildup])),
        "beyond_pct": 100 * float(np.max(np.abs(at[beyond] / reading[beyond] - 1.0))),
    }


def square_row(model: BeamModel, side: float) -> tuple[float, float]:
    """Surface dose / dmax (%) and dmax (mm) of a square field at SSD 1000 mm."""
    calc = _dose(model, 1000.0, (side, side), FINE_MM[:600], 0.0)
    return 100 * calc[0] / calc.max(), float(FINE_MM[np.argmax(calc)])


def test_buildup_table():
    measured = pymedphys_6mv_data()
    shipped = load_beam_model()
    cpu = _cpu_s()
    params = fit_6mv_model(electron_contamination=True)
    cpu = _cpu_s() - cpu
    refit = BeamModel(params)
    w, lam, sig = refit.electron_contamination
    res = params["provenance"]["residuals"]
    print(
        f"\nrefit: contamination weight {w:.3f}, e-folding {lam:.2f} mm, sigma {sig:.1f} mm; "
        f"cost {res['least_squares_cost']:.5f} (shipped fit "
        f"{shipped.provenance()['residuals']['least_squares_cost']:.5f}), "
        f"{res['least_squares_nfev']} evaluations, {cpu:.1f} CPU s"
    )
    r_nodes = (0.0, 5.0, 10.0, 15.0)
    for name, m in (("shipped", shipped), ("refit", refit)):
        r = np.interp(r_nodes, m.parameters["depth_mm"], m.parameters["scatter_ratio"])
        a = np.interp(r_nodes, m.parameters["depth_mm"], m.parameters["primary_weight"])
        print(f"{name:8s} r(0, 5, 10, 15 mm) {np.round(r, 3)}  A(d) {np.round(a, 3)}")
    print("\nfield SSD | surface % meas/shipped/refit | dmax mm | build-up pts | beyond dmax %")
    for scan in measured.pdds():
        reading = scan.value / scan.value.max()
        a, b = pdd_row(shipped, scan), pdd_row(refit, scan)
        print(
            f"{scan.field[0]:g}x{scan.field[1]:g} {scan.ssd_mm:g} | {100 * reading[0]:.1f} / "
            f"{a['surface_pct']:.1f} / {b['surface_pct']:.1f} | "
            f"{scan.position_mm[np.argmax(scan.value)]:g} / {a['dmax_mm']:.1f} / "
            f"{b['dmax_mm']:.1f} | {a['buildup_pts']:.2f} / {b['buildup_pts']:.2f} | "
            f"{a['beyond_pct']:.2f} / {b['beyond_pct']:.2f}"
        )
    print("\nSSD 1000 mm, side mm | surface % shipped / refit | dmax mm shipped / refit")
    for side in SQUARES_MM:
        (sa, da), (sb, db) = square_row(shipped, side), square_row(refit, side)
        print(f"{side:g} | {sa:.1f} / {sb:.1f} | {da:.1f} / {db:.1f}")
    print("\ne-folding depth held (mm) | cost | weight | sigma mm | r(0)")
    for lam_mm in HELD_DEPTHS_MM:
        with (
            mock.patch.object(fit, "CONTAMINATION_LO", (0.0, lam_mm, 5.0)),
            mock.patch.object(fit, "CONTAMINATION_HI", (1.0, lam_mm * (1 + 1e-9), 300.0)),
            mock.patch.object(fit, "CONTAMINATION_START", (0.1, lam_mm, 40.0)),
        ):
            p = fit_6mv_model(electron_contamination=True)
        e = p["electron_contamination"]
        print(
            f"{lam_mm:g} | {p['provenance']['residuals']['least_squares_cost']:.5f} | "
            f"{e['weight']:.3f} | {e['sigma_mm']:.1f} | {p['scatter_ratio'][0]:.3f}"
        )
