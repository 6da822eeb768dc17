"""TG-119 results table: the four phantoms planned automatically with the shipped protocols.

For every published goal (Ezzell et al. 2009, doi:10.1118/1.3238104; the C-shape at the
harder level plus the stricter core D5 <= 20 % of Rx) prints the achieved value, pass/fail
and the planning time as a markdown table, and writes ``benches/results/bench_tg119.json``.
Run with ``python -m pytest benches/bench_tg119.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rtplan.io import load_patient
from rtplan.phantoms import write_phantom
from rtplan.planning import plan_patient

RESULTS = Path(__file__).parent / "results"
CASES = [
    ("cshape", "tg119_cshape"),
    ("multitarget", "tg119_multitarget"),
    ("prostate", "tg119_prostate"),
    ("head_neck", "tg119_head_neck"),
]
_ROWS: dict[str, dict] = {}


@pytest.mark.parametrize(("phantom", "protocol"), CASES)
def test_tg119_case(phantom, protocol, tmp_path, benchmark):
    written = write_phantom(phantom, tmp_path / "input")
    patient = load_patient(written.ct_dir, written.rtstruct_path)

    def run():
        return plan_patient(patient, protocol, progress=False)

    t0 = time.perf_counter()
    result = benchmark.pedantic(run, rounds=1, iterations=1)
    wall = time.perf_counter() - t0
    result.write(tmp_path / "plan")
    _ROWS[phantom] = {
        "protocol": protocol,
        "plan_time_s": wall,
        "stages_s": result.timings,
        "normalization": result.normalization,
        "goals": [r.as_dict() for r in result.goal_table],
    }
    lines = [
        f"\n### TG-119 {phantom} ({protocol}), planned in {wall:.1f} s",
        "| structure | goal | achieved | result |",
        "|---|---|---|---|",
    ]
    for r in result.goal_table:
        g = r.goal
        unit = f" {g.unit}" if g.unit else ""
        lines.append(
            f"| {g.structure} | {g.metric.text} {g.comparison} {g.level:g}{unit} | "
            f"{r.value:.2f}{unit} | {'PASS' if r.passed else 'FAIL'} |"
        )
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_tg119.json").write_text(json.dumps(_ROWS, indent=2))
    benchmark.extra_info.update({"plan_time_s": wall, "all_goals_met": result.all_goals_met})
