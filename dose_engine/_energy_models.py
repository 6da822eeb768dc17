"""The shipped beam models of other energies and fluence modes (10X, 6FFF), from synthetic
clinics: ``python -m dose_engine._energy_models`` writes ``data/beam_model_10MV.json`` and
``data/beam_model_6FFF.json``.

No published 10 MV or FFF water-tank scans are reachable from pip packages (the pymedphys
wheel ships 6 MV only, which built ``beam_model_6MV.json``), so each of these models is
commissioned, through the fit a clinic runs (:func:`~dose_engine.fit_beam_model`), from a
*synthetic clinic*: PDDs, profiles and output factors computed with a **truth** model that
is not the shipped 6 MV model nor a member of the fit's parametrisation (its
scatter-to-primary ratio is tabulated at 112 depths, not the fit's 14 nodes, and so is its
long-range scatter tail, interpolated smoothly from the 6 MV model's 5 nodes; its depth
function is the 6 MV one stretched and attenuated).  The truth is the 6 MV model changed
as :data:`TRUTHS` states, each change towards representative published beam data:

- **10X**: build-up stretched 1.2 times in depth (dmax 14.5 → 23.5 mm, with the
  attenuation) and the attenuation set
  so that PDD(100 mm) of a 10 × 10 cm² field at SSD 1000 mm is 73.0 % (BJR Supplement 25,
  1996: 10 MV, 72-74 %, dmax 23-25 mm); less phantom scatter per primary (× 0.75, the
  narrow scatter and the long-range tail) and a
  wider primary kernel (× 1.8: longer electron ranges); stronger horns (dip 7 %, 60 mm).
- **6FFF**: no flattening filter: a central fluence peak (``horn.dip`` -1.0, 100 mm: the
  40 × 40 cm² profile at 10 cm depth falls to 0.66 of the axis value 15 cm off axis; about
  0.6-0.7 measured, Georg et al.
  2011, Med Phys 38:1280, doi:10.1118/1.3554643), a softer spectrum (PDD(100 mm) 63.5 %
  for 10 × 10 cm² at SSD 1000 mm; TrueBeam 6 MV FFF 63-64 %: Xiao et al. 2015, JACMP
  16:5293, doi:10.1120/jacmp.v16i4.5293) and less head scatter (weight 0.07 against 0.22:
  FFF output factors vary less with field size, Georg et al. 2011).

These are representative beams, not a measured linac: a clinic commissions its own
(``python -m dose_engine.fit``, ``fluence_mode = "FFF"`` in ``commissioning.toml``).
:func:`validation_table` fits on :data:`FIT_FIELDS_MM` and validates on the held-out
:data:`HELD_OUT_FIELDS_MM` (``benches/bench_energy_models.py`` prints it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from ._fit import SAD_MM, _dose, fit_beam_model
from ._measured import MeasuredData
from ._model import BeamModel, load_beam_model
from ._scan import MeasuredScan, field_label
from ._validation import TARGETS, compare_to_measured

__all__ = [
    "FIT_FIELDS_MM",
    "HELD_OUT_FIELDS_MM",
    "TRUTHS",
    "fit_energy_model",
    "synthetic_clinic",
    "truth_model",
    "validation_table",
]

#: Changes of the 6 MV model that make each truth (see the module docstring).
TRUTHS: dict[str, dict] = {
    "10X": {
        "energy_mv": 10.0,
        "fluence_mode": "STANDARD",
        "depth_stretch": 1.2,
        "pdd100_pct": 73.0,
        "scatter_scale": 0.75,
        "primary_sigma_scale": 1.8,
        "head_scatter_weight": 0.17,
        "horn": {"dip": 0.07, "sigma_mm": 60.0},
        "file": "beam_model_10MV.json",
        "name": "rtplan generic 10 MV pencil beam",
    },
    "6FFF": {
        "energy_mv": 6.0,
        "fluence_mode": "FFF",
        "depth_stretch": 0.95,
        "pdd100_pct": 63.5,
        "scatter_scale": 1.0,
        "primary_sigma_scale": 1.0,
        "head_scatter_weight": 0.07,
        "horn": {"dip": -1.0, "sigma_mm": 100.0},
        "file": "beam_model_6FFF.json",
        "name": "rtplan generic 6 MV FFF pencil beam",
    },
}
#: Square fields of the synthetic clinics, side in mm: fitted and held out.
FIT_FIELDS_MM = (50.0, 100.0, 200.0, 400.0)
HELD_OUT_FIELDS_MM = (30.0, 150.0, 300.0)
#: Rectangular fields held out (output factors and scans with X ≠ Y jaws).
HELD_OUT_RECTANGLES_MM = ((200.0, 50.0),)
SSD_MM = 1000.0
PROFILE_DEPTHS_MM = (15.0, 50.0, 100.0, 200.0, 300.0)
REFERENCE_FIELD_MM = (100.0, 100.0)
OF_DEPTH_MM = 100.0
CALIBRATION_GY_PER_MU = 0.01
#: PDD sampling: 1 mm through the build-up, 5 mm beyond, to 300 mm.
PDD_DEPTHS_MM = np.concatenate([np.arange(0.5, 40.0, 1.0), np.arange(40.0, 300.1, 5.0)])
PROFILE_STEP_MM = 2.0


def truth_model(kind: str) -> BeamModel:
    """The truth of the synthetic ``kind`` clinic (a key of :data:`TRUTHS`).

    Calibrated to :data:`CALIBRATION_GY_PER_MU` for 10 × 10 cm² at SSD 1000 mm, dmax.
    """
    t = TRUTHS[kind]
    p = copy.deepcopy(load_beam_model().parameters)
    depth = np.asarray(p["depth_mm"], float)
    a6 = np.asarray(p["primary_weight"], float)
    stretched = np.interp(depth / t["depth_stretch"], depth, a6)
    p["scatter_ratio"] = [float(v) * t["scatter_scale"] for v in p["scatter_ratio"]]
    if "scatter_tail" in p:  # the long-range scatter too, tabulated smoothly (PCHIP) at the
        # model's depths rather than at the fit's nodes, and scaled like the scatter
        from scipy.interpolate import PchipInterpolator

        tail = p["scatter_tail"]
        curve = PchipInterpolator(tail["depth_mm"], tail["ratio"], extrapolate=False)(depth)
        curve = np.where(np.isnan(curve), tail["ratio"][-1], curve)
        p["scatter_tail"] = dict(
            tail,
            depth_mm=[float(v) for v in depth],
            ratio=[float(v) * t["scatter_scale"] for v in np.clip(curve, 0.0, None)],
        )
    p["sigma_primary_mm"] = [
        p["sigma_primary_mm"][0] * t["primary_sigma_scale"],
        p["sigma_primary_mm"][1],
    ]
    p["head_scatter_weight"] = t["head_scatter_weight"]
    p["horn"] = dict(t["horn"])
    p.update(energy_mv=t["energy_mv"], name=f"synthetic {kind} clinic truth")
    if t["fluence_mode"] != "STANDARD":
        p["fluence_mode"] = t["fluence_mode"]
    p["provenance"] = {"data": f"dose_engine._energy_models.TRUTHS[{kind!r}]"}

    def with_attenuation(mu_per_mm: float) -> BeamModel:
        q = dict(p, primary_weight=[float(v) for v in stretched * np.exp(-mu_per_mm * depth)])
        return BeamModel(q)

    def pdd100(mu_per_mm: float) -> float:
        m = with_attenuation(mu_per_mm)
        d = _dose(m, SSD_MM, REFERENCE_FIELD_MM, PDD_DEPTHS_MM, 0.0)
        return 100.0 * float(np.interp(100.0, PDD_DEPTHS_MM, d) / d.max())

    lo, hi = -0.01, 0.01  # extra attenuation, 1/mm: bisection on the PDD(100 mm) target
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pdd100(mid) > t["pdd100_pct"] else (lo, mid)
    model = with_attenuation(0.5 * (lo + hi))
    fine = np.arange(0.0, 60.0, 0.25)
    dmax_dose = float(_dose(model, SSD_MM, REFERENCE_FIELD_MM, fine, 0.0).max())
    q = dict(model.parameters)
    q["normalisation_gy_per_mu"] = CALIBRATION_GY_PER_MU / dmax_dose
    return BeamModel(q, f"<{kind} truth>")


def _fields() -> list[tuple[float, float]]:
    squares = sorted({*FIT_FIELDS_MM, *HELD_OUT_FIELDS_MM})
    return [(s, s) for s in squares] + [(float(x), float(y)) for x, y in HELD_OUT_RECTANGLES_MM]


def synthetic_clinic(truth: BeamModel, kind: str) -> MeasuredData:
    """Every field's PDD, cross- and inplane profiles at :data:`PROFILE_DEPTHS_MM` and output
    factor (SSD 1000 mm, 100 mm depth, relative to 10 × 10 cm²) computed with ``truth``.

    Profiles extend 40 mm beyond the field edge, in :data:`PROFILE_STEP_MM` steps.
    """
    energy = truth.energy_mv
    scans = []
    for field in _fields():
        src = f"synthetic {kind} clinic {field_label(field)}"
        value = _dose(truth, SSD_MM, field, PDD_DEPTHS_MM, 0.0)
        scans.append(
            MeasuredScan(
                "PDD", field[0], SSD_MM, None, PDD_DEPTHS_MM.copy(), value, field[1],
                energy_mv=energy, source=f"{src} PDD",
            )
        )  # fmt: skip
        for d in PROFILE_DEPTHS_MM:
            for curve, axis in (("CROSSPLANE_PROFILE", 0), ("INPLANE_PROFILE", 1)):
                half = field[axis] / 2 * (SSD_MM + d) / SAD_MM + 40.0
                x = np.arange(-half, half + 1e-6, PROFILE_STEP_MM)
                xy = (x, 0.0) if axis == 0 else (0.0, x)
                scans.append(
                    MeasuredScan(
                        curve, field[0], SSD_MM, d, x, _dose(truth, SSD_MM, field, d, *xy),
                        field[1], energy_mv=energy, source=f"{src} {curve} {d:g} mm",
                    )
                )  # fmt: skip
    ref = float(_dose(truth, SSD_MM, REFERENCE_FIELD_MM, OF_DEPTH_MM, 0.0))
    factors = {f: float(_dose(truth, SSD_MM, f, OF_DEPTH_MM, 0.0)) / ref for f in _fields()}
    return MeasuredData(
        scans=tuple(scans),
        output_factors=factors,
        of_ssd_mm=SSD_MM,
        of_depth_mm=OF_DEPTH_MM,
        reference_field_mm=REFERENCE_FIELD_MM,
        calibration={
            "dose_gy_per_mu": CALIBRATION_GY_PER_MU,
            "field_mm": REFERENCE_FIELD_MM,
            "ssd_mm": SSD_MM,
            "depth_mm": "dmax",
        },
        source=f"synthetic {kind} clinic (dose_engine._energy_models)",
        table=f"synthetic {kind} clinic table",
        nominal_energy_mv=energy,
        fluence_mode=truth.fluence_mode,
    )


def _is_fitted(field: tuple[float, float]) -> bool:
    return field[0] == field[1] and field[0] in FIT_FIELDS_MM


def fit_energy_model(
    kind: str, *, max_nfev: int = 500, fluence_mode: str | None = None
) -> tuple[dict, MeasuredData]:
    """Fit the ``kind`` model on its synthetic clinic's :data:`FIT_FIELDS_MM`.

    ``fluence_mode`` fits the data as that mode instead of the truth's (the bounds of the
    horn, :data:`dose_engine._fit.HORN_BOUNDS`; the bench fits the FFF clinic as STANDARD).

    Returns
    -------
    params : dict
        The model file's content (name and provenance say what it was fitted on).
    clinic : MeasuredData
        The whole synthetic clinic (fitted and held-out fields).
    """
    t = TRUTHS[kind]
    clinic = synthetic_clinic(truth_model(kind), kind)
    fit_data = replace(
        clinic,
        scans=tuple(s for s in clinic.scans if _is_fitted(s.field)),
        output_factors={f: v for f, v in clinic.output_factors.items() if _is_fitted(f)},
        fluence_mode=fluence_mode or clinic.fluence_mode,
    )
    params = fit_beam_model(
        fit_data,
        max_nfev=max_nfev,
        # the truths come from the shipped 6 MV model, which has no long-range tail yet
        # (docs/commissioning.md): the shipped 10X and 6FFF files are fits without one
        scatter_tail="scatter_tail" in load_beam_model().parameters,
        name=t["name"],
        fitted_by="dose_engine._energy_models.fit_energy_model "
        "(python -m dose_engine._energy_models)",
    )
    truth = {k: v for k, v in t.items() if k not in ("file", "name")}
    params["provenance"]["data"] += (
        f"; fitted on {', '.join(field_label((s, s)) for s in FIT_FIELDS_MM)}, held out "
        f"{', '.join(field_label(f) for f in _fields() if not _is_fitted(f))}; truth: "
        f"TRUTHS[{kind!r}] = {json.dumps(truth)}"
    )
    params["provenance"]["not_modelled"] = (
        "a representative beam from a synthetic clinic, not a measured linac: commission your "
        "own. " + params["provenance"]["not_modelled"]
    )
    return params, clinic


def validation_table(model: BeamModel, clinic: MeasuredData, *, gamma: bool = True) -> list[dict]:
    """One row per field: worst PDD local deviation beyond dmax (%), dmax, 80-20 %
    penumbra and 50 % width differences (mm), output-factor deviation (%), lowest gamma
    2 %/2 mm pass rate (%), and whether the field was fitted or held out."""
    report = compare_to_measured(model, clinic, gamma=gamma)
    rows = []
    for field in _fields():
        label = field_label(field)

        def worst(table, label=label):
            vals = [abs(v) for k, v in table.items() if k.startswith(f"{label} ")]
            return max(vals) if vals else float("nan")

        of = report.output_factor.get(label)
        gam = [v for k, v in report.gamma_pass_pct.items() if k.startswith(f"{label} ")]
        rows.append(
            {
                "field": label,
                "role": "fit" if _is_fitted(field) else "held out",
                "pdd_local_max_pct": worst(report.pdd_local_max_pct),
                "dmax_diff_mm": worst(report.dmax_diff_mm),
                "penumbra_diff_mm": worst(report.penumbra_diff_mm),
                "width_diff_mm": worst(report.width_diff_mm),
                "output_factor_pct": float("nan")
                if of is None
                else abs(100.0 * (of[0] / of[1] - 1.0)),
                "gamma_min_pass_pct": min(gam) if gam else float("nan"),
            }
        )
    return rows


def table_failures(rows: list[dict]) -> list[str]:
    """Cells of :func:`validation_table` outside :data:`dose_engine._validation.TARGETS`."""
    out = []
    for r in rows:
        for key in ("pdd_local_max_pct", "dmax_diff_mm", "penumbra_diff_mm", "width_diff_mm"):
            if r[key] > TARGETS[key]:
                out.append(f"{r['field']} {key} {r[key]:.3g}")
        if r["output_factor_pct"] > TARGETS["output_factor_pct"]:
            out.append(f"{r['field']} output_factor_pct {r['output_factor_pct']:.3g}")
        if r["gamma_min_pass_pct"] < TARGETS["gamma_min_pass_pct"]:
            out.append(f"{r['field']} gamma {r['gamma_min_pass_pct']:.3g}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Fit and write the shipped 10X and 6FFF models (``data/``, or the folder given)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else Path(str(resources.files("dose_engine") / "data"))
    for kind, t in TRUTHS.items():
        params, _ = fit_energy_model(kind)
        (out_dir / t["file"]).write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
        print(f"{kind}: wrote {out_dir / t['file']} ({params['provenance']['residuals']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
