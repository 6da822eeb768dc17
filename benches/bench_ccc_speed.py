"""Collapsed-cone dose speed (issues 12 and 16): this tree against a baseline commit, side by
side, in the same conditions.

Each dose runs in a fresh process (``python benches/bench_ccc_speed.py worker CASE ALGORITHM
OUT.npy``) with ``PYTHONPATH`` on this tree or on a ``git archive`` of the baseline commit
(``RTPLAN_BASELINE``, default :data:`BASELINE`: main with the session-13 kernel physics),
baseline and this tree alternating; each prints wall and CPU seconds (user + system, all
threads) and its peak resident memory.  The cases, through :func:`rtplan.compute_plan_dose`
(what ``rtplan dose`` runs), 72 cones:

- ``cshape``: the 9-beam TG-119 C-shape plan of ``benches/bench_ccc.py`` (three segments a
  beam), 3 mm grid, with the pencil beam's time beside it (issue 16: ≤ 30 s on 2 cores);
- ``thorax``: the 512 × 512 × 131 thorax of ``benches/bench_thorax.py`` (no body contour)
  with 7 beams of ten step-and-shoot segments each, leaves on a 5 mm grid (as sequenced
  plans are), 3 mm grid (issue 12: ``rtplan dose`` ≤ 30 s).

Asserted: both trees' doses agree within :data:`TOLERANCE` of the maximum (the speed work
must not move the dose).  Times are printed and recorded (``extra_info``), never asserted.
Run with ``python -m pytest benches/bench_ccc_speed.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

#: main before the session-14 dose-side speed work (float32 transport and TERMA fluence);
#: the session-13 kernel physics was measured against 09a4ecf, the session-12 speed work
#: against 0c05433 (docs/dose_algorithms.md).
BASELINE = "3f4ccf8"
#: Largest |dose difference| between the trees, relative to the maximum dose.
TOLERANCE = 1e-3
HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def _cshape_case(work: Path):
    from dose_engine import Beam
    from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
    from rtplan.io import read_patient
    from rtplan.phantoms import write_phantom

    out = work / "cshape"
    if not out.exists():
        write_phantom("cshape", out)
    patient = read_patient(out / "CT", out / "RS.dcm")
    iso = patient.structure("PTV").centroid_mm(patient.ct.grid)
    machine = load_machine("VarianMLC120")
    c = machine.mlc.leaf_centers_mm

    def segment(x1, x2, y1, y2, mu):
        inside = (c > y1) & (c < y2)
        leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
        jaws = {"X": (x1, x2), "Y": (y1, y2)}
        return Segment(leaves, jaws, mu, machine.mlc.leaf_boundaries_mm)

    beams = []
    for k in range(9):
        segs = (
            segment(-60.0, 60.0, -50.0, 50.0, 60.0),
            segment(-40.0, 10.0, -45.0, 40.0, 30.0),
            segment(-10.0, 45.0, -30.0, 20.0, 25.0),
        )
        beam = Beam(40.0 * k, isocenter_mm=iso)
        beams.append(DeliverableBeam(k + 1, f"G{40 * k}", beam, machine, segs))
    return DeliverablePlan(beams, 25, 50.0, "PTV"), patient


def _thorax_case(work: Path):
    from dose_engine import Beam
    from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
    from rtplan.io import read_patient
    from rtplan.phantoms import write_phantom

    out = work / "thorax"
    if not out.exists():
        write_phantom(
            "thorax",
            out,
            pixel_spacing_mm=500 / 512,
            slice_spacing_mm=3.0,
            matrix_size=512,
            n_slices=131,
            body_contour=False,
        )
    patient = read_patient(out / "CT", out / "RS.dcm")
    iso = patient.structure("GTV").centroid_mm(patient.ct.grid)
    machine = load_machine("VarianMLC120")
    c = machine.mlc.leaf_centers_mm
    rng = np.random.default_rng(1)
    beams = []
    for k, gantry in enumerate((180, 230, 280, 330, 20, 70, 120)):
        segs = []
        for _ in range(10):
            inside = (c > -35.0) & (c < 35.0)
            a = 5.0 * rng.integers(-8, 0, c.size)
            b = a + 5.0 * rng.integers(1, 9, c.size)
            leaves = np.stack([np.where(inside, a, 0.0), np.where(inside, b, 0.0)])
            jaws = {"X": (-40.0, 40.0), "Y": (-35.0, 35.0)}
            mu = float(rng.uniform(5.0, 30.0))
            segs.append(Segment(leaves, jaws, mu, machine.mlc.leaf_boundaries_mm))
        beam = Beam(float(gantry), isocenter_mm=iso)
        beams.append(DeliverableBeam(k + 1, f"G{gantry}", beam, machine, tuple(segs)))
    return DeliverablePlan(beams, 30, 60.0, "GTV"), patient


CASES = {"cshape": _cshape_case, "thorax": _thorax_case}


def worker(case: str, algorithm: str, out: str) -> dict:
    """One dose of ``case`` in this process: wall and CPU seconds, peak MiB; saves it."""
    import resource

    from rtplan import compute_plan_dose

    plan, patient = CASES[case](Path(out).parent)
    t0, c0 = time.perf_counter(), time.process_time()
    dose = compute_plan_dose(plan, patient, dose_grid_mm=3.0, algorithm=algorithm)
    record = {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    np.save(out, np.asarray(dose.dose_gy, dtype=np.float32))
    return record


def _run(tree: Path, case: str, algorithm: str, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    args = [sys.executable, str(HERE), "worker", case, algorithm, str(out)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """``{"baseline": its git archive, "new": this tree}``."""
    ref = os.environ.get("RTPLAN_BASELINE", BASELINE)
    base = tmp_path_factory.mktemp("baseline")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    return {"baseline": base, "new": ROOT}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ccc_dose_against_baseline(case, trees, tmp_path_factory, benchmark):
    work = tmp_path_factory.getbasetemp() / "cases"
    work.mkdir(exist_ok=True)
    load = os.getloadavg()[0]
    runs = {"baseline": _run(trees["baseline"], case, "ccc", work / f"{case}_baseline.npy")}
    runs["new"] = benchmark.pedantic(  # the benchmark's time: this tree's process, wall
        _run, args=(trees["new"], case, "ccc", work / f"{case}_new.npy"), rounds=1, iterations=1
    )
    runs["pencil_beam"] = _run(trees["new"], case, "pencil_beam", work / f"{case}_pb.npy")
    base = np.load(work / f"{case}_baseline.npy")
    new = np.load(work / f"{case}_new.npy")
    diff = float(np.abs(new.astype(float) - base).max() / base.max())
    benchmark.extra_info.update({"runs": runs, "max_diff_rel": diff, "load": load})
    print(f"\n{case}: load average {load:.1f} at the start; max dose {base.max():.3f} Gy")
    print(f"{'run':<22} {'CPU s':>7} {'wall s':>7} {'peak MiB':>9}")
    labels = {"baseline": "ccc, baseline", "new": "ccc, this tree", "pencil_beam": "pencil beam"}
    for name, r in runs.items():
        print(f"{labels[name]:<22} {r['cpu_s']:7.1f} {r['wall_s']:7.1f} {r['peak_mib']:9.0f}")
    print(
        f"CPU ratio this tree / baseline {runs['new']['cpu_s'] / runs['baseline']['cpu_s']:.2f}; "
        f"max |dose difference| {diff:.1e} of the maximum"
    )
    assert diff <= TOLERANCE


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    print(json.dumps(worker(*sys.argv[2:5])))
