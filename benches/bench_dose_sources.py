"""Where a TG-119 plan's dose comes from: optimal fluence, segments, MLC physics (issue 12).

Plans one phantom with its shipped protocol up to the first final dose (stages structures
to segments, no correction loop) and reports, per target and organ, dose-volume points of

* the optimal fluence's dose ``D x*`` (the influence matrix: what the optimiser saw),
* the final aperture dose of the least-squares segment weights (the plan's first pass),
* the same segments' aperture dose with an ideal MLC (no leaf or jaw transmission, leaf
  gap, interleaf leakage or tongue-and-groove): the difference is the MLC physics' share,

and per beam its MU, segments and mean organ dose with both MLCs; the goals of the final
dose before normalisation. Writes ``benches/results/bench_dose_sources.json``.
Run with ``python -m pytest benches/bench_dose_sources.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from dose_engine import MLCParameters, hu_to_density
from optimizers import dose_at_volume
from rtplan.dose._aperture import aperture_dose as beam_aperture_dose
from rtplan.evaluation import evaluate_goals
from rtplan.io import read_patient
from rtplan.phantoms import write_phantom
from rtplan.planning import _plan
from rtplan.protocols import load_protocol

RESULTS = Path(__file__).parent / "results"
VOLUMES_PCT = (99, 95, 10, 5)


def _points(dose: np.ndarray, occupancy: np.ndarray, rows: np.ndarray | None = None) -> list:
    """``D_v%`` for :data:`VOLUMES_PCT` over the voxels of ``occupancy`` (those in
    ``rows`` only when given), Gy."""
    occ = occupancy.ravel()
    idx = np.flatnonzero(occ > 0)
    if rows is not None:
        idx = np.intersect1d(idx, rows)
    d = np.asarray(dose).ravel()
    return [round(dose_at_volume(d[idx], occ[idx], v), 2) for v in VOLUMES_PCT]


@pytest.mark.parametrize(("phantom", "protocol"), [("cshape", "tg119_cshape")])
def test_dose_sources(phantom, protocol, tmp_path):
    written = write_phantom(phantom, tmp_path / "input")
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    ctx = _plan._Context(
        patient, load_protocol(protocol), "numpy", None, False, {}, _plan.resolve_beam_model(None)
    )
    c0 = time.process_time()
    for stage in ("structures", "beams", "dose", "optimise", "sequence", "segments"):
        getattr(_plan, f"stage_{stage}")(ctx)
    cpu_plan = time.process_time() - c0
    optimal = np.zeros(ctx.dose_grid.shape, dtype=np.float32)
    optimal.ravel()[ctx.matrix_rows] = ctx.matrix @ ctx.fluence.astype(np.float32)
    density = hu_to_density(ctx.patient.ct.array, ctx.density_table)
    mask = _plan.final_dose_mask(ctx)
    real = _plan.resolve_mlc_parameters(ctx.machine, ctx.beam_model)
    names = [n for n in ctx.occupancy if ctx.roles.get(n) in ("target", "oar")]
    ideal_total = np.zeros(ctx.dose_grid.shape, dtype=np.float64)
    beams = []
    for b in ctx.plan.beams:
        doses = {
            label: np.asarray(
                beam_aperture_dose(
                    b,
                    density,
                    ctx.patient.ct.grid,
                    ctx.dose_grid,
                    ctx.beam_model,
                    voxel_mask=mask,
                    mlc_parameters=params,
                )
            )
            for label, params in (("real", real), ("ideal", MLCParameters()))
        }
        ideal_total += doses["ideal"]
        beams.append(
            {
                "beam": b.name,
                "mu_per_fraction": sum(s.total_mu for s in b.segments) / ctx.plan.fractions,
                "segments": len(b.segments),
                **{
                    f"{n} mean {label} Gy": round(float(np.average(d, weights=ctx.occupancy[n])), 3)
                    for n in names
                    for label, d in doses.items()
                },
            }
        )
    rows = {
        n: {
            "optimal fluence (influence matrix)": _points(
                optimal, ctx.occupancy[n], ctx.matrix_rows
            ),
            "final, least-squares segments": _points(ctx.dose, ctx.occupancy[n]),
            "final, ideal MLC": _points(ideal_total, ctx.occupancy[n]),
        }
        for n in names
    }
    goals, structures, body = _plan._evaluation_goals(ctx)
    rx = ctx.protocol.prescription.total_dose_gy
    table = evaluate_goals(
        ctx.dose, structures, goals, ctx.dose_grid, prescription_gy=rx, body=body
    )
    result = {
        "phantom": phantom,
        "volumes_pct": VOLUMES_PCT,
        "dose_volume_points_gy": rows,
        "mu_sequenced": float(ctx.segment_weights.mu_before.sum()),
        "mu_least_squares": float(ctx.segment_weights.mu_after.sum()),
        "beams": beams,
        "goals_before_normalisation": {
            f"{r.goal.structure} {r.goal.metric.text}": round(float(r.value), 2) for r in table
        },
        "cpu_s_to_first_final_dose": cpu_plan,
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_dose_sources.json").write_text(json.dumps(result, indent=2))
    # the beams' MU add up to the re-fitted meterset
    per_fraction = sum(b["mu_per_fraction"] for b in beams)
    assert per_fraction * ctx.plan.fractions == pytest.approx(result["mu_least_squares"], rel=1e-9)
