"""TG-119 results table: the four phantoms planned automatically with the shipped protocols.

For every published goal (Ezzell et al. 2009, doi:10.1118/1.3238104; the C-shape at the
harder level, the stricter core D5 <= 20 % of Rx reported beside it) prints the achieved
value, pass/fail and the planning time as a markdown table, and writes
``benches/results/bench_tg119.json``.
Run with ``python -m pytest benches/bench_tg119.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rtplan.io import read_patient
from rtplan.phantoms import write_phantom
from rtplan.planning import PlanOptions, plan_patient

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
    patient = read_patient(written.ct_dir, written.rtstruct_path)

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
        "warnings": [w.message for w in result.warnings],
    }
    cells = []
    for r in result.goal_table:
        g = r.goal
        unit = f" {g.unit}" if g.unit else ""
        goal = f"{g.metric.text} {g.comparison} {g.level:g}{unit}"
        if g.label.startswith("implicit"):  # the safety layer's goals, not TG-119's
            goal += " (implicit)"
        cells.append([g.structure, goal, f"{r.value:.2f}{unit}", "PASS" if r.passed else "FAIL"])
    for r in result.goal_table.reported:
        g = r.goal
        unit = f" {g.unit}" if g.unit else ""
        goal = f"{g.metric.text} {g.comparison} {g.level:g}{unit} (reported)"
        cells.append([g.structure, goal, f"{r.value:.2f}{unit}", "REPORTED"])
    title = f"TG-119 {phantom} ({protocol}), planned in {wall:.1f} s"
    _print_table(title, ["structure", "goal", "achieved", "result"], cells)
    _save("bench_tg119.json", _ROWS)
    benchmark.extra_info.update({"plan_time_s": wall, "all_goals_met": result.all_goals_met})


#: Trade-off scan of the C-shape (hard): (beams, target_weight) pairs. ``target_weight``
#: weighs the PTV goals against the core goals (protocol default 2).
FRONT = [(9, 0.5), (9, 1.0), (9, 2.0), (9, 4.0), (9, 8.0), (17, 2.0)]


def test_cshape_tradeoff_front(tmp_path):
    """PTV homogeneity against the core rim, every plan normalised to PTV D95 = 50 Gy.

    Shows where the C-shape (hard) plans sit between the PTV D10 <= 55 Gy and the core
    D5 <= 10 Gy goals when the PTV goals weigh less or more, and with 17 beams.
    """
    from rtplan.protocols import load_protocol

    written = write_phantom("cshape", tmp_path / "input")
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    base = load_protocol("tg119_cshape")
    rows = []
    for n_beams, weight in FRONT:
        protocol = base.with_overrides(n_beams=n_beams, target_weight=weight)
        t0 = time.perf_counter()
        options = PlanOptions(cache_dir=tmp_path / "cache")
        result = plan_patient(patient, protocol, options=options, progress=False)
        values = {f"{r.goal.structure} {r.goal.metric.text}": r.value for r in result.goal_table}
        rows.append(
            {
                "beams": n_beams,
                "target_weight": weight,
                "plan_time_s": time.perf_counter() - t0,
                "goals_met": len(result.goal_table) - result.goal_table.n_failed,
                **values,
            }
        )
    keys = [k for k in rows[0] if k not in ("beams", "target_weight", "plan_time_s", "goals_met")]
    cells = [
        [str(r["beams"]), f"{r['target_weight']:g}", *(f"{r[k]:.2f}" for k in keys)]
        + [f"{r['goals_met']}/{len(keys)}", f"{r['plan_time_s']:.0f} s"]
        for r in rows
    ]
    _print_table(
        "C-shape (hard) trade-off, normalised to PTV D95 = 50 Gy",
        ["beams", "target_weight", *keys, "goals met", "time"],
        cells,
    )
    _save("bench_cshape_front.json", rows)


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table under a level-3 heading."""
    lines = [f"\n### {title}", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(lines))


def _save(name: str, data) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(data, indent=2))
