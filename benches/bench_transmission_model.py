"""The MLC transmission in the optimiser (``transmission_model``): what the optimiser's
dose predicts against what the plan delivers, per pass of the correction loop (issue 12).

``python benches/bench_transmission_model.py PHANTOM off|on [OVERRIDES_JSON]`` plans one
TG-119 phantom with its shipped protocol (the protocol's beams and grid, as ``rtplan
demo`` does), stage by stage in this process, with ``[optimization] transmission_model``
off or on (``OVERRIDES_JSON``: more protocol overrides, e.g.
``'{"final_dose_corrections": 2}'``), and prints one JSON object:

* per pass (0 = uncorrected, then each correction loop): the optimiser's own dose at its
  optimum (``D x* + c``, with the meterset part when on) and the delivered (final) dose,
  the prescription target's D95/D10/D99 and, on the C-shape, the core's D10/D5 (before
  normalisation); on the core, the occupancy-weighted mean of each part of the dose
  (``D x*``; the segments' open fluence ``D x̂0``; their leaf transmission ``D τ``; the
  model's transmission ``U κ M̃(x*)``; the offset ``c``; the final dose); the MU per
  fraction of every beam, delivered and as the model's calibrated surrogate;
* the plan kept, its normalisation and goals (value, pass), MU per fraction, body
  maximum (% of Rx), CPU seconds (user + system, all threads) and peak resident memory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHANTOMS = {
    "cshape": ("tg119_cshape", "PTV", "Core"),
    "prostate": ("tg119_prostate", "PTV", None),
    "head_neck": ("tg119_head_neck", "PTV", None),
    "multitarget": ("tg119_multitarget", "CentralTarget", None),
}


def measure(phantom: str, on: bool, overrides: dict) -> dict:
    """Plan ``phantom`` (module docstring) and return the record."""
    from optimizers import dose_at_volume
    from rtplan.dose import resolve_mlc_parameters
    from rtplan.io import read_patient
    from rtplan.phantoms import write_phantom
    from rtplan.planning import _plan
    from rtplan.planning._transmission import transmission_fluence
    from rtplan.protocols import load_protocol

    name, target, core = PHANTOMS[phantom]
    protocol = load_protocol(name).with_overrides(transmission_model=on, **overrides)
    passes: list[dict] = []

    def points(dose, rows, structure, volumes):
        occ = ctx.occupancy[structure].ravel()[rows]
        sel = occ > 0
        return [round(dose_at_volume(dose[sel], occ[sel], v), 2) for v in volumes]

    def product(v):
        return np.asarray(ctx.matrix @ np.asarray(v, np.float32), dtype=np.float64)

    optimise, segments = _plan.stage_optimise, _plan.stage_segments

    def stage_optimise(c):
        optimise(c)
        model = product(c.fluence)
        if c.optimiser_offset is not None:
            model += c.optimiser_offset
        record: dict = {}
        if c.meterset_dose is not None and on:
            model += c.meterset_dose.dose(c.fluence)
            record["model MU/fx per beam"] = [
                round(float(v) / protocol.prescription.fractions, 1)
                for v in c.meterset_dose.meterset(c.fluence)
            ]
        rows = c.matrix_rows
        record["model target D95/D10/D99"] = points(model, rows, target, (95, 10, 99))
        if core:
            record["model core D10/D5"] = points(model, rows, core, (10, 5))
        passes.append(record)

    def stage_segments(c):
        segments(c)
        record = passes[-1]
        final = np.asarray(c.dose, np.float64).ravel()
        everywhere = np.arange(final.size)
        record["delivered target D95/D10/D99"] = points(final, everywhere, target, (95, 10, 99))
        record["delivered MU/fx per beam"] = [
            round(float(b.total_mu) / c.plan.fractions, 1) for b in c.plan.beams
        ]
        if not core:
            return
        record["delivered core D10/D5"] = points(final, everywhere, core, (10, 5))
        t = resolve_mlc_parameters(c.machine, c.beam_model).transmission
        tau, _ = transmission_fluence(c.beamlets, c.plan.beams, c.beam_indices, c.machine, t)
        open_mu = np.clip(c.segment_weights.beamlet_fluence_mu - tau, 0.0, None)
        rows = c.matrix_rows
        occ = c.occupancy[core].ravel()[rows]
        sel = occ > 0

        def mean(v):
            return round(float(np.average(np.asarray(v)[sel], weights=occ[sel])), 3)

        parts = {
            "D x*": mean(product(c.fluence)),
            "D x_open (segments)": mean(product(open_mu)),
            "D tau (segments)": mean(product(tau)),
            "final": mean(final[rows]),
        }
        if c.optimiser_offset is not None:
            parts["c"] = mean(c.optimiser_offset)
        if c.meterset_dose is not None and on:
            parts["U k M(x*) (model)"] = mean(c.meterset_dose.dose(c.fluence))
        record["core mean, Gy"] = parts

    _plan.stage_optimise, _plan.stage_segments = stage_optimise, stage_segments
    with tempfile.TemporaryDirectory() as tmp:
        written = write_phantom(phantom, Path(tmp) / "input")
        patient = read_patient(written.ct_dir, written.rtstruct_path)
        ctx = _plan._Context(
            patient, protocol, "numpy", None, False, {}, _plan.resolve_beam_model(None)
        )
        c0 = time.process_time()
        for stage in _plan.STAGES:
            getattr(_plan, f"stage_{stage}")(ctx)
        cpu = time.process_time() - c0
    _plan.stage_optimise, _plan.stage_segments = optimise, segments
    kept = next((k for k, r in enumerate(ctx.corrections) if r.get("kept")), 0)
    rx = protocol.prescription.total_dose_gy
    return {
        "phantom": phantom,
        "transmission_model": on,
        "overrides": overrides,
        "passes": passes,
        "kept": kept,
        "normalization": round(ctx.normalization, 4),
        "goals": {
            f"{r.goal.structure} {r.goal.metric.text}": [round(float(r.value), 2), r.passed]
            for r in ctx.goal_table.results
        },
        "reported": {
            f"{r.goal.structure} {r.goal.metric.text}": round(float(r.value), 2)
            for r in ctx.goal_table.reported
        },
        "goals met": f"{sum(r.passed for r in ctx.goal_table.results)}/"
        f"{len(ctx.goal_table.results)}",
        "MU/fx": round(ctx.plan.total_mu / ctx.plan.fractions, 1),
        "body max % of Rx": round(float(np.max(ctx.dose)) / rx * 100, 2),
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in PHANTOMS or sys.argv[2] not in ("on", "off"):
        sys.exit(f"usage: python {os.path.basename(__file__)} {'|'.join(PHANTOMS)} on|off [JSON]")
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    print(json.dumps(measure(sys.argv[1], sys.argv[2] == "on", extra), indent=1))
