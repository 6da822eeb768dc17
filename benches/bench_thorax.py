"""``rtplan plan`` and ``rtplan dose`` on a patient-sized thorax (issue 12), end to end.

The case of issue 12 rebuilt as a phantom (no public thorax CT is reachable here): the
``thorax`` phantom at 512 × 512 × 131 (0.98 × 0.98 × 3 mm), with a GTV, cord, lungs,
heart and oesophagus and **no body contour** (the clinical RT-STRUCT had none; planning
derives ``BODY (rtplan)``), a couch under the patient; the shipped ``lung_60gy_30fx``
protocol (PTV = GTV + 10 mm derived, 7 beams, 3 mm dose grid).

Each command runs in a fresh process; its wall time and peak resident memory (the child's
``ru_maxrss`` from ``os.wait4``) are measured.  Targets of issue 12 (printed, recorded,
not asserted: this bench measures the baseline the speed work starts from):
``rtplan plan`` ≤ 90 s and ≤ 3 GB, ``rtplan dose`` ≤ 30 s; on the plan: cord ≤ 45 Gy,
normalisation within the cap, global maximum ≤ 110 %.

Writes ``benches/results/bench_thorax.json``.  Run with
``python -m pytest benches/bench_thorax.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rtplan.phantoms import write_phantom

RESULTS = Path(__file__).parent / "results"
MATRIX, PIXEL_MM, SLICE_MM, N_SLICES = 512, 500 / 512, 3.0, 131
TARGETS = {"plan_s": 90.0, "plan_peak_gib": 3.0, "dose_s": 30.0}


def _run(args: list[str]) -> dict:
    """Run ``python -m rtplan.cli ARGS`` in a fresh process: exit status, wall time (s),
    peak resident memory (GiB) and the last lines of its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtplan.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with proc.stdout:
        output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_status": proc.returncode,
        "wall_s": time.perf_counter() - t0,
        "peak_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "output_tail": output.strip().splitlines()[-30:],
    }


def test_rtplan_plan_and_dose_thorax_512(tmp_path, benchmark):
    t0 = time.perf_counter()
    phantom = write_phantom(
        "thorax",
        tmp_path / "input",
        pixel_spacing_mm=PIXEL_MM,
        slice_spacing_mm=SLICE_MM,
        matrix_size=MATRIX,
        n_slices=N_SLICES,
        body_contour=False,
    )
    write_s = time.perf_counter() - t0
    out = tmp_path / "plan"
    plan_args = [
        "plan",
        str(phantom.ct_dir),
        str(phantom.rtstruct_path),
        "--protocol",
        "lung_60gy_30fx",
        "--out",
        str(out),
        "--no-progress",
    ]
    plan = benchmark.pedantic(_run, args=(plan_args,), rounds=1, iterations=1)
    assert plan["exit_status"] in (0, 1), "\n".join(plan["output_tail"])
    record = json.loads((out / "plan.json").read_text())
    dose_args = [
        "dose",
        str(phantom.ct_dir),
        str(out / "RS_derived.dcm"),
        str(out / "RTPLAN.dcm"),
        "--out",
        str(tmp_path / "RTDOSE_recomputed.dcm"),
    ]
    dose = _run(dose_args)
    assert dose["exit_status"] == 0, "\n".join(dose["output_tail"])

    result = {
        "case": f"thorax phantom {MATRIX}x{MATRIX}x{N_SLICES}, {PIXEL_MM:.3f} x {PIXEL_MM:.3f} x "
        f"{SLICE_MM} mm, no body contour, lung_60gy_30fx (7 beams, 3 mm grid)",
        "cpus_visible": os.cpu_count(),
        "write_phantom_s": write_s,
        "plan": {k: v for k, v in plan.items() if k != "output_tail"},
        "plan_stages_s": record.get("timings_s", {}),
        "dose": {k: v for k, v in dose.items() if k != "output_tail"},
        "targets": TARGETS,
        "goals": record["goals"],
        "warnings": record.get("warnings", []),
        "normalization": record.get("plan", {}).get("normalization_detail"),
        "plan_output": plan["output_tail"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_thorax.json").write_text(json.dumps(result, indent=2, default=str))
    benchmark.extra_info.update(
        {
            "plan_wall_s": plan["wall_s"],
            "plan_peak_gib": plan["peak_gib"],
            "dose_wall_s": dose["wall_s"],
            "dose_peak_gib": dose["peak_gib"],
            "stages_s": result["plan_stages_s"],
        }
    )
    lines = ["| stage | time (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["plan_stages_s"].items()]
    print(
        f"\nbench_thorax: {result['case']}, {os.cpu_count()} CPUs visible\n"
        f"rtplan plan: {plan['wall_s']:.1f} s (target {TARGETS['plan_s']:.0f} s), peak "
        f"{plan['peak_gib']:.2f} GiB (target {TARGETS['plan_peak_gib']:.0f} GB), exit "
        f"{plan['exit_status']}\n"
        f"rtplan dose: {dose['wall_s']:.1f} s (target {TARGETS['dose_s']:.0f} s), peak "
        f"{dose['peak_gib']:.2f} GiB\n"
        + "\n".join(lines)
        + "\n"
        + "\n".join(
            f"{g['structure']} {g['metric']} {g['comparison']} {g['level']} {g['unit']}: "
            f"{g['value']} ({g['status']})"
            for g in record["goals"]
        )
    )
