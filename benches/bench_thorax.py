"""``rtplan plan`` and ``rtplan dose`` on a patient-sized thorax (issue 12), end to end,
every goal cross-checked by an independent DVH.

The case of issue 12 rebuilt as a phantom (no public thorax CT is reachable here): the
``thorax`` phantom at 512 × 512 × 131 (0.98 × 0.98 × 3 mm), with a GTV, cord, lungs,
heart and oesophagus and **no body contour** (the clinical RT-STRUCT had none; planning
derives ``BODY (rtplan)``), a couch under the patient; the shipped ``lung_60gy_30fx``
protocol (PTV = GTV + 10 mm derived, 7 beams, 3 mm dose grid, final dose ``auto``: the
collapsed cone, three correction loops).

The plan runs in a fresh process through ``benches/_measure.py plan`` (wall and CPU
seconds per stage, CPU = user + system of all threads; the peak resident memory is the
child's ``ru_maxrss`` from ``os.wait4``), then ``rtplan dose`` (collapsed cone, the
plan's engine) in another.  From the written files only:

- every goal's value again from dicompyler-core's DVH of the written RT-DOSE and
  RT-STRUCT (``RS_derived.dcm``: the derived PTV and Lungs-PTV included);
- the global maximum and where it lies, from the RT-DOSE read with pydicom;
- the target voxels below 90 % of Rx beyond the partial-volume rim: dose voxels whose
  whole cube lies inside the analytic PTV (a sphere of GTV radius + 10 mm; centre at most
  that minus half the voxel diagonal from the GTV's centre).

Targets of issue 12 (printed and recorded, not asserted: a shared machine's wall time is
no test): ``rtplan plan`` ≤ 90 s on 2 cores and ≤ 3 GB, ``rtplan dose`` ≤ 30 s; cord
≤ 45 Gy, normalisation within the cap, global maximum ≤ 110 %, no target voxel below
90 % outside the rim.  The bench asserts only that the plan was written and that
rtplan's goal values agree with dicompyler-core's (:data:`AGREEMENT`; near-minima of
targets, D98 % and above, are printed but not asserted: they read the partial-volume rim,
where the two rasterisations differ by up to 2 Gy).

Writes ``benches/results/bench_thorax.json``.  Run with
``python -m pytest benches/bench_thorax.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from rtplan.phantoms import write_phantom
from rtplan.phantoms._thorax import THORAX

RESULTS = Path(__file__).parent / "results"
MEASURE = Path(__file__).parent / "_measure.py"
MATRIX, PIXEL_MM, SLICE_MM, N_SLICES = 512, 500 / 512, 3.0, 131
PROTOCOL, RX_GY, GRID_MM = "lung_60gy_30fx", 60.0, 3.0
TARGETS = {"plan_s": 90.0, "plan_peak_gib": 3.0, "dose_s": 30.0, "global_max_pct": 110.0}
#: Largest difference between rtplan's goal value and dicompyler-core's: 3 % of the
#: goal's level, or 1 % of Rx for dose goals and 1 percentage point for volume goals,
#: whichever is larger (dicompyler-core rasterises the contours on the dose grid's planes
#: with its own point-in-polygon rule; rtplan uses fractional occupancy, so small
#: structures and near-maxima differ by a partial voxel).
AGREEMENT = {"relative": 0.03, "dose_gy": 0.01 * RX_GY, "volume_pct": 1.0}


def _run(args: list[str]) -> dict:
    """Run ``python ARGS`` in a fresh process: exit status, wall time (s), peak resident
    memory (GiB) and its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with proc.stdout:
        output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    # reaped here, not by Popen.wait: tell the Popen, else its __del__ warns that the
    # child "is still running" (a ResourceWarning pytest raises as an error)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_status": proc.returncode,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "output": output,
    }


def _dvhcalc():
    """dicompyler-core's ``dvhcalc`` importable under pydicom 3 (it still imports
    ``pydicom.dicomio.read_file``), as ``tests/rtplan/conftest.py``'s fixture."""
    import importlib

    import pydicom.dicomio

    if not hasattr(pydicom.dicomio, "read_file"):
        pydicom.dicomio.read_file = pydicom.dcmread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module("dicompylercore.dicomparser")
        return importlib.import_module("dicompylercore.dvhcalc")


def dicompyler_goal_values(
    out: Path, goals: list[dict], rtstruct: Path | None = None, rx_gy: float = RX_GY
) -> list[dict]:
    """Each evaluated goal of plan.json with dicompyler-core's value of the same metric
    from ``out``'s RTDOSE.dcm and ``rtstruct`` (default ``out``'s RS_derived.dcm), in the
    goal's unit (``rx_gy``: the prescription, for % goals), and whether the two agree
    within :data:`AGREEMENT` (its dose slack scaled to ``rx_gy``)."""
    import pydicom

    dvhcalc = _dvhcalc()
    rs = rtstruct or out / "RS_derived.dcm"
    rois = {str(r.ROIName): int(r.ROINumber) for r in pydicom.dcmread(rs).StructureSetROISequence}
    cache: dict = {}
    rows = []
    for g in goals:
        if g.get("status") == "not_evaluated" or g["structure"] not in rois:
            continue
        name = g["structure"]
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name] = dvhcalc.get_dvh(str(rs), str(out / "RTDOSE.dcm"), rois[name])
        dvh = cache[name]
        metric, unit = g["metric"], g["unit"]
        if metric == "Dmean":
            theirs, kind = float(dvh.mean), "dose"
        elif metric == "Dmax":
            theirs, kind = float(dvh.max), "dose"
        elif m := re.fullmatch(r"D([\d.]+)%", metric):
            theirs, kind = float(dvh.relative_volume.statistic(f"D{m[1]}").value), "dose"
        elif m := re.fullmatch(r"D([\d.]+)cc", metric):
            theirs, kind = float(dvh.statistic(f"D{m[1]}cc").value), "dose"
        elif m := re.fullmatch(r"V([\d.]+)Gy", metric):
            vol = float(dvh.statistic(f"V{m[1]}Gy").value)
            theirs, kind = 100.0 * vol / float(dvh.volume), "volume"
        else:
            continue
        dose_slack_gy = AGREEMENT["dose_gy"] * rx_gy / RX_GY
        if kind == "dose" and unit == "%":
            theirs = 100.0 * theirs / rx_gy
            slack = 100.0 * dose_slack_gy / rx_gy
        else:
            slack = dose_slack_gy if kind == "dose" else AGREEMENT["volume_pct"]
        slack = max(slack, AGREEMENT["relative"] * abs(float(g["level"])))
        rows.append(
            {
                "goal": f"{name} {metric} {g['comparison']} {g['level']} {unit}",
                "rtplan": float(g["value"]),
                "dicompyler": theirs,
                "status": g["status"],
                "agree": abs(theirs - float(g["value"])) <= slack,
            }
        )
    return rows


def dose_checks(out: Path) -> dict:
    """Global maximum (Gy, % of Rx, position mm LPS, the structures holding it) and the
    PTV voxels below 90 % of Rx beyond the partial-volume rim, from the RT-DOSE read with
    pydicom alone and the phantom's analytic PTV."""
    import pydicom

    ds = pydicom.dcmread(out / "RTDOSE.dcm")
    dose = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    z = z0 + np.asarray(ds.GridFrameOffsetVector, float)
    zz, yy, xx = np.meshgrid(
        z, y0 + dy * np.arange(ds.Rows), x0 + dx * np.arange(ds.Columns), indexing="ij"
    )
    k = np.unravel_index(int(np.argmax(dose)), dose.shape)
    cx, cy, cz = THORAX["gtv_c"]
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2)
    ptv_r = THORAX["gtv_r"] + 10.0
    whole = r <= ptv_r - np.sqrt(3) * GRID_MM / 2
    cold = whole & (dose < 0.9 * RX_GY)
    return {
        "global_max_gy": float(dose[k]),
        "global_max_pct": float(100 * dose[k] / RX_GY),
        "global_max_at_mm": [float(xx[k]), float(yy[k]), float(zz[k])],
        "global_max_from_gtv_centre_mm": float(r[k]),
        "global_max_in_ptv": bool(r[k] <= ptv_r),
        "ptv_whole_voxels": int(whole.sum()),
        "ptv_whole_voxels_below_90pct": int(cold.sum()),
        "ptv_whole_voxels_min_pct": float(100 * dose[whole].min() / RX_GY),
        "ptv_rim_voxels_below_90pct": int(((r <= ptv_r) & ~whole & (dose < 0.9 * RX_GY)).sum()),
    }


def crosscheck_table(crosscheck: list[dict]) -> str:
    """The rows of a Markdown table of :func:`dicompyler_goal_values` (goal, rtplan,
    dicompyler-core, status, agree)."""
    return "\n".join(
        f"| {c['goal']} | {c['rtplan']:.2f} | {c['dicompyler']:.2f} | {c['status']} | "
        f"{c['agree']} |"
        for c in crosscheck
    )


def assert_goals_agree(crosscheck: list[dict]) -> None:
    """Every goal of :func:`dicompyler_goal_values` agrees within :data:`AGREEMENT`, except
    a target's near-minima (D98 % and above): they read its partial-volume rim, where the
    two rasterisations differ most (PTV D99: 55.65 Gy rtplan, 57.47 dicompyler-core on the
    2026-12-06 thorax plan), so they are reported, not asserted."""
    checked = [c for c in crosscheck if not re.search(r" D(9[89]|100)(\.\d+)?% ", c["goal"])]
    assert checked and all(c["agree"] for c in checked), crosscheck


def stage_table(measure: dict) -> list[str]:
    """The Markdown rows ``| stage | wall s | CPU s |`` of a ``_measure.py`` record."""
    wall, cpu = measure["stages_wall_s"], measure["stages_cpu_s"]
    lines = ["| stage | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {k} | {wall[k]:.1f} | {cpu.get(k, float('nan')):.1f} |" for k in wall]
    lines.append(f"| end to end | {measure['wall_s']:.1f} | {measure['cpu_s']:.1f} |")
    return lines


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
    load_before = os.getloadavg()
    plan_args = [
        str(MEASURE),
        "plan",
        str(phantom.ct_dir),
        str(phantom.rtstruct_path),
        PROTOCOL,
        str(out),
    ]
    plan = benchmark.pedantic(_run, args=(plan_args,), rounds=1, iterations=1)
    assert plan["exit_status"] == 0, plan["output"][-3000:]
    measure = json.loads(plan["output"].rsplit("MEASURE ", 1)[1])
    record = json.loads((out / "plan.json").read_text())
    dose_args = [
        str(MEASURE),
        "dose",
        str(phantom.ct_dir),
        str(out / "RS_derived.dcm"),
        str(out / "RTPLAN.dcm"),
        str(tmp_path / "RTDOSE_recomputed.dcm"),
        "ccc",
    ]
    dose = _run(dose_args)
    assert dose["exit_status"] == 0, dose["output"][-3000:]
    load_after = os.getloadavg()

    crosscheck = dicompyler_goal_values(out, record["goals"])
    checks = dose_checks(out)
    result = {
        "case": f"thorax phantom {MATRIX}x{MATRIX}x{N_SLICES}, {PIXEL_MM:.3f} x {PIXEL_MM:.3f} x "
        f"{SLICE_MM} mm, no body contour, {PROTOCOL} (7 beams, 3 mm grid)",
        "cpus_visible": os.cpu_count(),
        "load_average_before_after": [load_before, load_after],
        "write_phantom_s": write_s,
        "plan": {k: v for k, v in plan.items() if k != "output"},
        "plan_measure": measure,
        "dose": {k: v for k, v in dose.items() if k != "output"},
        "dose_algorithm": record["plan"]["dose_algorithm"]["algorithm"],
        "corrections": record["plan"].get("corrections"),
        "targets": TARGETS,
        "goals": record["goals"],
        "dicompyler_crosscheck": crosscheck,
        "dose_checks": checks,
        "warnings": record.get("warnings", []),
        "normalization": record["plan"].get("normalization_detail"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_thorax.json").write_text(json.dumps(result, indent=2, default=str))
    benchmark.extra_info.update(
        {
            "plan_wall_s": plan["wall_s"],
            "plan_cpu_s": plan["cpu_s"],
            "plan_peak_gib": plan["peak_gib"],
            "dose_wall_s": dose["wall_s"],
            "dose_cpu_s": dose["cpu_s"],
            "stages_wall_s": measure["stages_wall_s"],
            "stages_cpu_s": measure["stages_cpu_s"],
            "global_max_pct": checks["global_max_pct"],
        }
    )
    norm = result["normalization"] or {}
    print(
        f"\nbench_thorax: {result['case']}, {os.cpu_count()} CPUs visible, load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (wall times on a loaded "
        f"machine are not the targets' idle seconds; CPU seconds are less disturbed)\n"
        f"rtplan plan: {plan['wall_s']:.1f} s wall, {plan['cpu_s']:.1f} s CPU (target "
        f"{TARGETS['plan_s']:.0f} s on 2 cores), peak {plan['peak_gib']:.2f} GiB (target "
        f"{TARGETS['plan_peak_gib']:.0f} GB)\n"
        f"rtplan dose (collapsed cone): {dose['wall_s']:.1f} s wall, {dose['cpu_s']:.1f} s CPU "
        f"(target {TARGETS['dose_s']:.0f} s), peak {dose['peak_gib']:.2f} GiB\n"
        + "\n".join(stage_table(measure))
        + f"\nnormalisation x{norm.get('factor', float('nan')):.3f} (needed "
        f"x{norm.get('needed', float('nan')):.3f}, cap {norm.get('cap_pct')} %)\n"
        f"global maximum {checks['global_max_pct']:.1f} % of Rx at "
        f"{[round(v, 1) for v in checks['global_max_at_mm']]} mm, "
        f"{checks['global_max_from_gtv_centre_mm']:.1f} mm from the GTV centre "
        f"({'inside' if checks['global_max_in_ptv'] else 'outside'} the PTV)\n"
        f"PTV voxels wholly inside: {checks['ptv_whole_voxels']}, below 90 % Rx: "
        f"{checks['ptv_whole_voxels_below_90pct']} (min {checks['ptv_whole_voxels_min_pct']:.1f}"
        f" %); rim voxels below 90 %: {checks['ptv_rim_voxels_below_90pct']}\n"
        "| goal | rtplan | dicompyler-core | status | agree |\n|---|---|---|---|---|\n"
        + crosscheck_table(crosscheck)
    )
    assert_goals_agree(crosscheck)
