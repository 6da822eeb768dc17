"""Measure one ``rtplan plan`` or ``rtplan dose`` run in a fresh process (issue 12 item 6).

``python benches/_measure.py plan CT_DIR RS PROTOCOL OUT`` plans in-process and prints one
JSON line: wall and CPU (user + system, all threads) seconds per planning stage, the total,
and the peak resident memory of this process.  ``python benches/_measure.py dose CT_DIR RS
RTPLAN OUT [ALGORITHM]`` does the same for ``rtplan dose`` (``--algorithm``, default
``pencil_beam``).  CPU seconds are what other engineers'
jobs on a shared machine disturb least; wall seconds are what the targets name.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _wrap_stages(cpu: dict, peak: dict) -> None:
    """Record the process CPU time of every planning stage (wall is in the result) and
    the peak memory so far at its end (the stage that raises it holds the peak).  Only a
    stage's first call counts: the correction loop (stage ``correct``) calls optimise,
    sequence and segments again, inside its own time."""
    from rtplan.planning import _plan

    for name in _plan.STAGES:
        fn = getattr(_plan, f"stage_{name}")

        def timed(ctx, _fn=fn, _name=name):
            c0 = time.process_time()
            try:
                return _fn(ctx)
            finally:
                cpu.setdefault(_name, time.process_time() - c0)
                peak.setdefault(_name, _peak_rss_mib())

        setattr(_plan, f"stage_{name}", timed)


def measure_plan(ct_dir: str, rtstruct: str, protocol: str, out: str) -> dict:
    import rtplan

    cpu: dict = {}
    peak: dict = {}
    _wrap_stages(cpu, peak)
    t0, c0 = time.perf_counter(), time.process_time()
    patient = rtplan.read_patient(ct_dir, rtstruct)
    result = rtplan.plan_patient(patient, protocol)
    result.write(out, overwrite=True)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "stages_wall_s": dict(result.timings),
        "stages_cpu_s": cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_rss_after_stage_mib": peak,
        "goals_met": f"{sum(g.passed for g in result.goal_table.results)}"
        f"/{len(result.goal_table.results)}",
    }


def measure_dose(
    ct_dir: str, rtstruct: str, rtplan_path: str, out: str, algorithm: str = "pencil_beam"
) -> dict:
    from rtplan.cli import main

    t0, c0 = time.perf_counter(), time.process_time()
    args = ["dose", ct_dir, rtstruct, rtplan_path, "--out", out, "--force"]
    status = main([*args, "--algorithm", algorithm])
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "status": status,
        "peak_rss_mib": _peak_rss_mib(),
    }


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    record = (measure_plan if mode == "plan" else measure_dose)(*args)
    print("MEASURE " + json.dumps(record))
