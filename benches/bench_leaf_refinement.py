"""Leaf-position refinement on the four TG-119 phantoms: before and after, same conditions.

``python benches/bench_leaf_refinement.py PHANTOM on|off [GOAL_WEIGHT]`` plans one TG-119
phantom with its shipped protocol (the protocol's beams and grid, as ``rtplan demo`` and
``benches/bench_tg119.py`` do) with the leaf refinement on or off, in this process, and
prints one JSON line: every goal (value, pass), the prescription target's D95/D10/D99,
the C-shape core's D10 and D5, the body maximum in % of the prescription, MU per
fraction, the refinement's record, CPU seconds (user + system, all threads) and the peak
resident memory (GOAL_WEIGHT: the protocol's ``leaf_refinement_goal_weight``
instead of its own).  ``python benches/bench_leaf_refinement.py all`` runs the eight plans one
after another, each in a fresh process (one heavy process at a time), and writes
``benches/results/bench_leaf_refinement.json``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHANTOMS = {
    "cshape": ("tg119_cshape", "PTV", "Core"),
    "prostate": ("tg119_prostate", "PTV", None),
    "head_neck": ("tg119_head_neck", "PTV", None),
    "multitarget": ("tg119_multitarget", "CentralTarget", None),
}
RESULTS = Path(__file__).parent / "results"


def measure(phantom: str, refine: bool, goal_weight: float | None = None) -> dict:
    """Plan ``phantom`` with the refinement ``refine`` (and, if given, its
    ``leaf_refinement_goal_weight``); the figures of the module docstring."""
    import numpy as np

    from rtplan.evaluation import dvh
    from rtplan.io import read_patient
    from rtplan.phantoms import write_phantom
    from rtplan.planning import PlanOptions, plan_patient
    from rtplan.protocols import load_protocol

    name, target, core = PHANTOMS[phantom]
    protocol = load_protocol(name)
    if goal_weight is not None:
        protocol = protocol.with_overrides(leaf_refinement_goal_weight=goal_weight)
    with tempfile.TemporaryDirectory() as tmp:
        written = write_phantom(phantom, Path(tmp) / "input")
        patient = read_patient(written.ct_dir, written.rtstruct_path)
        c0, t0 = time.process_time(), time.perf_counter()
        result = plan_patient(
            patient, protocol, options=PlanOptions(leaf_refinement=refine), progress=False
        )
        cpu = time.process_time() - c0
        wall = time.perf_counter() - t0
        result.write(Path(tmp) / "plan")
        record = json.loads((Path(tmp) / "plan" / "plan.json").read_text())
    grid = result.dose_grid
    rx = result.protocol.prescription.total_dose_gy

    def metrics(name: str, *percents: float) -> list[float]:
        occ = patient.structures[result.mapping[name]].occupancy(grid)
        h = dvh(result.dose_gy, occ, voxel_volume_cc=grid.voxel_volume_cc)
        return [round(float(h.dose_at_volume(p)), 2) for p in percents]

    table = result.goal_table
    out = {
        "phantom": phantom,
        "leaf_refinement": refine,
        "goal_weight": protocol.optimization.leaf_refinement_goal_weight,
        "goals_met": f"{len(table) - table.n_failed}/{len(table)}",
        "goals": [
            {
                "structure": r.goal.structure,
                "goal": f"{r.goal.metric.text} {r.goal.comparison} {r.goal.level:g}",
                "value": round(float(r.value), 2),
                "passed": bool(r.passed),
            }
            for r in result.goal_table
        ],
        "target_d95_d10_d99_gy": metrics(target, 95, 10, 99),
        "body_max_pct": round(100.0 * float(np.max(result.dose_gy)) / rx, 2),
        "mu_per_fraction": round(result.mu_per_fraction, 1),
        "normalization": round(result.normalization, 4),
        "leaf_refinement_record": record["plan"].get("leaf_refinement"),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "stages_wall_s": {k: round(v, 1) for k, v in result.timings.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
    }
    if core is not None:
        out["core_d10_d5_gy"] = metrics(core, 10, 5)
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["all"]:
        rows = []
        for phantom in PHANTOMS:
            for flag in ("off", "on"):
                done = subprocess.run(
                    [sys.executable, __file__, phantom, flag],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_leaf_refinement.json").write_text(json.dumps(rows, indent=1))
        return
    phantom, flag, *weight = argv
    print(json.dumps(measure(phantom, flag == "on", float(weight[0]) if weight else None)))


if __name__ == "__main__":
    main(sys.argv[1:])
