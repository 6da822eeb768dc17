"""The aperture (final) dose's CPU time with the float32 erf and small chunks (issue 12).

The TG-119 C-shape is planned once with the shipped ``tg119_cshape`` protocol (9 beams,
3 mm grid); then the final dose of its segments on the plan's voxels
(:func:`rtplan.planning._plan.aperture_dose`, what the segments stage and each
correction pass compute; each beam's voxels ray-traced once beforehand, as the correction
pass reuses them) is timed in this one process, alternating two settings twice:

- ``scipy erf, 200,000-point chunks``: :func:`scipy.special.erf` (double precision per
  value, the erf used before) and the chunk size used before;
- ``float32 erf, 16,384-point chunks``: :func:`dose_engine._backend._erf_float32` and
  :data:`dose_engine._field_dose.CHUNK_POINTS` (now).

Both use the edge-pair product ``E_x K E_y`` of :class:`dose_engine._model._ApertureLayout`
(the two products over the leaf-pair rows it replaced are not kept, so they are not
timed here; ``benches/_measure.py`` in fresh processes compares whole plans).  Prints CPU
seconds (user + system, all threads: the machine is shared), their ratio, and the largest
dose difference relative to the maximum.  Writes ``benches/results/bench_aperture_speed.json``.
Run with ``python -m pytest benches/bench_aperture_speed.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import scipy.special

from dose_engine import _backend, _field_dose
from rtplan.phantoms import make_phantom
from rtplan.planning import _plan, plan_patient

RESULTS = Path(__file__).parent / "results"

SETTINGS = {
    "scipy erf, 200,000-point chunks": (scipy.special.erf, 200_000),
    "float32 erf, 16,384-point chunks": (_backend._erf_float32, _field_dose.CHUNK_POINTS),
}


def test_cshape_aperture_dose_cpu_ratio(monkeypatch):
    patient = make_phantom("cshape")
    ctx_seen = {}
    stage = _plan.stage_evaluate

    def keep_context(ctx):  # the planner's context at its last stage: plan, grid, mask
        ctx_seen["ctx"] = ctx
        return stage(ctx)

    monkeypatch.setattr(_plan, "stage_evaluate", keep_context)
    plan_patient(patient, "tg119_cshape", progress=False)
    ctx = ctx_seen["ctx"]
    _plan.aperture_dose(ctx)  # fills ctx.points_cache: no timed run traces rays
    cpu: dict[str, list[float]] = {name: [] for name in SETTINGS}
    doses = {}
    for _ in range(2):
        for name, (erf32, chunk) in SETTINGS.items():
            monkeypatch.setattr(_backend, "_erf_float32", erf32)
            monkeypatch.setattr(_field_dose, "CHUNK_POINTS", chunk)
            c0 = time.process_time()
            doses[name] = np.asarray(_plan.aperture_dose(ctx), dtype=np.float64)
            cpu[name].append(time.process_time() - c0)
    before, after = (doses[name] for name in SETTINGS)
    rel_diff = float(np.abs(after - before).max() / before.max())
    best = {name: min(times) for name, times in cpu.items()}
    ratio = best["scipy erf, 200,000-point chunks"] / best["float32 erf, 16,384-point chunks"]
    print(
        "\nC-shape final dose (9 beams, 3 mm), CPU s of two runs each, alternating:\n"
        + "\n".join(f"  {name}: {', '.join(f'{t:.2f}' for t in ts)}" for name, ts in cpu.items())
        + f"\n  ratio (best of each) {ratio:.2f}; largest difference {rel_diff:.2e} of the maximum"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_aperture_speed.json").write_text(
        json.dumps({"cpu_s": cpu, "ratio": ratio, "max_rel_diff": rel_diff}, indent=2)
    )
    assert rel_diff < 1e-5  # float32 rounding, not a different dose
