"""Validation tables of the shipped beam models, one per energy and fluence mode (issue 15).

- **10X** and **6FFF**: the shipped models (``python -m dose_engine._energy_models``: fitted
  on the 5 × 5, 10 × 10, 20 × 20 and 40 × 40 cm² fields of a synthetic clinic made by a
  different truth model, :data:`dose_engine._energy_models.TRUTHS`) against every field of
  that clinic: the fitted ones and the held-out 3 × 3, 15 × 15, 30 × 30 and 20 × 5 cm²
  (X ≠ Y jaws).  Profiles at 15, 50, 100, 200 and 300 mm depth, SSD 1000 mm.
- **6FFF with the flattened bounds** (``horn.dip ≥ 0``, the fit before this change): the
  same clinic fitted as a STANDARD beam, to show what the peaked profile needs.
- **6X**: the shipped model against the pymedphys measured 6 MV data it was fitted on
  (5 × 5 and 10 × 10 cm², SSD 900 mm; ``bench_dose_accuracy.py`` has its hold-out fit).

Judged by :data:`dose_engine._validation.TARGETS` (PDD beyond dmax 2 % local, dmax 1.5 mm,
80-20 % penumbra and 50 % width 1 mm — FFF profiles renormalised at their inflection
points —, output factors 1 %, gamma 2 %/2 mm ≥ 99 %).  Prints the tables and CPU seconds;
writes ``benches/results/bench_energy_models.json``.

Run: ``python -m pytest benches/bench_energy_models.py -p no:cacheprovider -s``
"""

from __future__ import annotations

import json
import resource
import time
from importlib import resources
from pathlib import Path

from dose_engine import BeamModel, compare_to_measured, load_beam_model
from dose_engine._energy_models import (
    TRUTHS,
    fit_energy_model,
    synthetic_clinic,
    table_failures,
    truth_model,
    validation_table,
)
from dose_engine._measured import pymedphys_6mv_data

RESULTS = Path(__file__).parent / "results"
COLUMNS = (
    ("field", "field mm", "s"),
    ("role", "role", "s"),
    ("pdd_local_max_pct", "PDD %", ".2f"),
    ("dmax_diff_mm", "dmax mm", ".2f"),
    ("penumbra_diff_mm", "pen. mm", ".2f"),
    ("width_diff_mm", "width mm", ".2f"),
    ("output_factor_pct", "OF %", ".2f"),
    ("gamma_min_pass_pct", "gamma %", ".1f"),
)


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(" | ".join(h for _, h, _ in COLUMNS))
    for r in rows:
        print(" | ".join(format(float(r[k]) if f != "s" else r[k], f) for k, _, f in COLUMNS))
    fails = table_failures(rows)
    print("outside the targets: " + ("; ".join(fails) if fails else "none"))


def _shipped(kind: str) -> BeamModel:
    ref = resources.files("dose_engine").joinpath("data", TRUTHS[kind]["file"])
    return load_beam_model(str(ref))


def test_energy_model_tables():
    out: dict = {}
    for kind in TRUTHS:
        t0 = time.process_time()
        clinic = synthetic_clinic(truth_model(kind), kind)
        rows = validation_table(_shipped(kind), clinic)
        out[kind] = {"rows": rows, "cpu_s": time.process_time() - t0}
        cpu = out[kind]["cpu_s"]
        _print(f"{kind}: shipped model vs its synthetic clinic ({cpu:.1f} CPU s)", rows)
        assert table_failures(rows) == []
    t0 = time.process_time()
    params, clinic = fit_energy_model("6FFF", fluence_mode="STANDARD")
    flat = BeamModel(params)
    rows = validation_table(flat, clinic)
    out["6FFF fitted as STANDARD"] = {
        "rows": rows,
        "horn": flat.parameters["horn"],
        "cpu_s": time.process_time() - t0,
    }
    _print(
        f"6FFF clinic fitted with the flattened bounds (dip >= 0): horn {flat.parameters['horn']} "
        f"({out['6FFF fitted as STANDARD']['cpu_s']:.1f} CPU s, fit included)",
        rows,
    )
    t0 = time.process_time()
    report = compare_to_measured(load_beam_model(), pymedphys_6mv_data())
    out["6X"] = {"worst": report.worst(), "cpu_s": time.process_time() - t0}
    print(f"\n6X: shipped model vs pymedphys measured 6 MV (fitted on it): {report.worst()}")
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_energy_models.json").write_text(json.dumps(out, indent=1, default=float))
