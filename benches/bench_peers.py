"""rtplan beside its peers, in the same run, on the same input (pytest-benchmark).

Run: ``python -m pytest benches/bench_peers.py -p no:cacheprovider -s``

Each test skips when its peer is not installed, so a figure is printed only when both tools
ran here, now. Results go to ``benches/results/bench_peers_*.json`` as well.

- ``test_tg119_cshape_pyradplan``: pyRadPlan (``pip install -e ".[peers]"``) and rtplan plan
  the TG-119 C-shape written by :func:`rtplan.phantoms.write_phantom` (DICOM CT + RT-STRUCT,
  read by each tool's own DICOM import), 9 equispaced beams, 3 mm dose grid; each tool in a
  fresh process (``benches/_peer_tg119.py`` says what each runs) so each peak memory is its
  own. Plan quality is read by ONE evaluator: each tool's dose is resampled (trilinear) to
  rtplan's dose grid, normalised to PTV D95 = 50 Gy and measured with
  :func:`rtplan.evaluation.dvh` on rtplan's structure occupancies.
- ``test_portpy_lung``: PortPy's own IMRT pipeline (``benches/_portpy_pipeline.py``, run by
  the Python in ``RTPLAN_PORTPY_PYTHON``, or by this one if PortPy is installed here; PortPy
  1.2.0 needs Python >= 3.12) and rtplan's first-order and CVXPY solvers, on the same
  PortPy-format synthetic lung folder, with the solver in ``RTPLAN_PORTPY_SOLVER`` (default
  SCS, at PortPy's settings: CVXPY's defaults) for both CVXPY formulations. rtplan reads the
  folder as PortPy plans it (the beamlets in the beam's-eye view of the PTV + 3 mm: the test
  checks that they are exactly the ones PortPy optimised, beam by beam) and poses PortPy's
  own problem (protocol ``Lung_2Gy_30Fx``: its terms, rings, smoothness and limits, per
  fraction, written by PortPy's run and translated by ``benches/_portpy_problem.py``; the
  rings come from PortPy's run, rtplan does not rebuild them). Every objective is that one
  function evaluated by rtplan on the full matrix, and rtplan's reading of PortPy's
  solution must equal PortPy's own value. Times are CPU (user + system, each process's
  own) and wall seconds; the ratios are PortPy's end to end over rtplan's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests" / "rtplan"))
from _portpy_problem import portpy_problem  # noqa: E402
from _portpy_synth import synthetic_lung  # noqa: E402
from bench_portpy import ptv_d95_gy  # noqa: E402
from bench_tg119 import _print_table, _save  # noqa: E402

import optimizers as op  # noqa: E402
from dose_engine import Grid  # noqa: E402
from optimizers._cvxpy_canon import import_cvxpy  # noqa: E402
from rtplan import Image  # noqa: E402
from rtplan.evaluation import dvh  # noqa: E402
from rtplan.io import read_patient, read_portpy_patient  # noqa: E402
from rtplan.phantoms import write_phantom  # noqa: E402

RX_GY = 50.0  # TG-119 C-shape prescription; both doses are normalised to PTV D95 = RX_GY
#: PortPy's interpreter: $RTPLAN_PORTPY_PYTHON, else this one when PortPy is installed here
#: (the ``peers`` extra installs it on Python >= 3.12)
PORTPY_PYTHON = os.environ.get("RTPLAN_PORTPY_PYTHON") or (
    sys.executable if importlib.util.find_spec("portpy") else None
)
PORTPY_SOLVER = os.environ.get("RTPLAN_PORTPY_SOLVER", "SCS")
#: the first-order solver's stopping tolerance here (relative objective decrease; its
#: default 1e-8 ends 3e-5 above PortPy's objective on this problem, 1e-6 ends 7e-5 above
#: in 0.7 times the CPU seconds)
PEER_FIRST_ORDER_TOL = 1e-6
#: the solver settings PortPy runs with (CVXPY's defaults: SCS 3 at 1e-5), given to rtplan too
PEER_SOLVER_OPTIONS = {"SCS": {"eps_abs": 1e-5, "eps_rel": 1e-5}}.get(PORTPY_SOLVER, {})


def _run(argv: list[str]) -> dict:
    """Run a worker; return the JSON of its last stdout line (stderr shown on failure).

    Adds ``load_average``: the machine's 1-minute load average before and after (a shared
    machine slows both tools; the figure says how busy it was)."""
    before = os.getloadavg()[0]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures | {"load_average": [before, os.getloadavg()[0]]}


def _dose_image(path: Path) -> Image:
    with np.load(path) as z:
        dose = z["dose_gy"]
        grid = Grid(dose.shape, tuple(z["origin_mm"]), tuple(z["spacing_mm"]))
    return Image(dose, grid)


def _quality(dose: Image, grid: Grid, occupancy: dict[str, np.ndarray]) -> dict[str, float]:
    """PTV D95/D10, core D10/D5 of ``dose`` on ``grid``, Gy, after normalising PTV D95 to Rx."""
    d = dose.resample(grid).array if dose.grid != grid else dose.array
    vcc = grid.voxel_volume_cc
    raw_d95 = dvh(d, occupancy["PTV"], voxel_volume_cc=vcc).dose_at_volume(95.0)
    d = d * (RX_GY / raw_d95)
    ptv = dvh(d, occupancy["PTV"], voxel_volume_cc=vcc)
    core = dvh(d, occupancy["Core"], voxel_volume_cc=vcc)
    return {
        "ptv_d95_before_normalisation_gy": raw_d95,
        "ptv_d95_gy": ptv.dose_at_volume(95.0),
        "ptv_d50_gy": ptv.dose_at_volume(50.0),
        "ptv_d10_gy": ptv.dose_at_volume(10.0),
        "core_d50_gy": core.dose_at_volume(50.0),
        "core_d10_gy": core.dose_at_volume(10.0),
        "core_d5_gy": core.dose_at_volume(5.0),
    }


def test_tg119_cshape_pyradplan(tmp_path, benchmark):
    pytest.importorskip("pyRadPlan", reason="pyRadPlan not installed (pip install -e .[peers])")
    written = write_phantom("cshape", tmp_path / "cshape")
    worker = [sys.executable, str(HERE / "_peer_tg119.py")]
    (tmp_path / "pyradplan").mkdir()
    peer = _run([*worker, "pyradplan", str(written.out_dir), str(tmp_path / "pyradplan")])
    (tmp_path / "rtplan").mkdir()
    ours = benchmark.pedantic(
        lambda: _run([*worker, "rtplan", str(written.out_dir), str(tmp_path / "rtplan")]),
        rounds=1,
        iterations=1,
    )

    rt_dose = _dose_image(tmp_path / "rtplan" / "dose.npz")
    grid = rt_dose.grid
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    occupancy = {n: patient.structures[n].occupancy(grid) for n in ("PTV", "Core")}
    quality = {
        "rtplan": _quality(rt_dose, grid, occupancy),
        "pyRadPlan": _quality(_dose_image(tmp_path / "pyradplan" / "dose.npz"), grid, occupancy),
    }
    figures = {"rtplan": ours, "pyRadPlan": peer}
    rows = []
    for tool in ("pyRadPlan", "rtplan"):
        f, q = figures[tool], quality[tool]
        rows.append(
            [
                tool,
                str(f["n_beamlets"]),
                f"{f['influence_matrix_s']:.1f} s",
                f"{f['optimization_s']:.1f} s",
                f"{f['end_to_end_s']:.1f} s",
                f"{f['peak_rss_mib'] / 1024:.2f} GiB",
                f"{q['ptv_d95_gy']:.2f}",
                f"{q['ptv_d10_gy']:.2f}",
                f"{q['core_d10_gy']:.2f}",
                f"{q['core_d5_gy']:.2f}",
            ]
        )
    _print_table(
        f"TG-119 C-shape, 9 beams, 3 mm: pyRadPlan {peer['pyradplan']} beside rtplan "
        "(doses normalised to PTV D95 = 50 Gy, one evaluator)",
        ["tool", "beamlets", "dose (influence matrix)", "optimisation", "end to end",
         "peak RSS", "PTV D95", "PTV D10 (≤ 55)", "core D10 (≤ 10)", "core D5"],
        rows,
    )  # fmt: skip
    print(f"rtplan stages: {ours}\npyRadPlan stages: {peer}")
    _save("bench_peers_tg119.json", {"figures": figures, "quality": quality})
    benchmark.extra_info.update({"figures": figures, "quality": quality})

    # the evaluator reads rtplan's own dose as rtplan's goal table did (no resampling there)
    assert quality["rtplan"]["ptv_d95_before_normalisation_gy"] == pytest.approx(
        ours["goals"]["PTV D95%"], abs=0.02
    )
    # pyRadPlan's dose landed on the phantom: the PTV is covered and the core spared
    pq = quality["pyRadPlan"]
    assert pq["ptv_d50_gy"] < 1.2 * RX_GY
    assert pq["core_d50_gy"] < 0.6 * pq["ptv_d50_gy"]


@pytest.mark.skipif(
    not PORTPY_PYTHON,
    reason="PortPy not installed here; set RTPLAN_PORTPY_PYTHON to a Python >= 3.12 with it",
)
def test_portpy_lung(tmp_path, benchmark):
    synth = synthetic_lung(tmp_path / "Lung_Synth_Medium", ptv_radius_mm=26.0)
    npz = tmp_path / "portpy_problem.npz"
    peer = _run(
        [PORTPY_PYTHON, str(HERE / "_portpy_pipeline.py"), str(tmp_path), "Lung_Synth_Medium",
         PORTPY_SOLVER, str(npz)]
    )  # fmt: skip
    with np.load(npz) as loaded:
        definition = dict(loaded)

    # PortPy's times leave out its imports (``portpy.photon`` imports CVXPY and SciPy's
    # statistics, ~3 CPU s): rtplan's leave out the same imports
    import_cvxpy()

    def rtplan_pipeline():
        load_before = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        p = read_portpy_patient(tmp_path, "Lung_Synth_Medium")  # PortPy's beamlet selection
        # PortPy's objective and constraints, term for term, on PortPy's structures
        prob = portpy_problem(definition, p.influence_matrix, matrix_dtype=np.float32)
        prob.row_blocks()
        return p, prob, time.perf_counter() - t0, time.process_time() - c0, load_before

    p, prob, t_read, c_read, load_before = benchmark.pedantic(
        rtplan_pipeline, rounds=1, iterations=1
    )
    # the same beamlets as PortPy's own pipeline, beam by beam
    assert {str(b.beam_id): b.beamlet_indices.tolist() for b in p.beams} == peer["opt_beamlets"]
    assert p.influence_matrix.shape == (peer["n_voxels"], peer["n_beamlets"])
    # one objective function: rtplan's reading of PortPy's solution is PortPy's own value
    x_peer = definition["x"]
    peer_objective = prob.objective(x_peer)
    assert peer_objective == pytest.approx(peer["objective"], rel=1e-4)

    def timed(solve):
        t, c = time.perf_counter(), time.process_time()
        res = solve()
        return res, time.perf_counter() - t, time.process_time() - c

    first, t_first, c_first = timed(lambda: op.solve_first_order(prob, tol=PEER_FIRST_ORDER_TOL))
    # PortPy's solver at PortPy's settings (CVXPY's SCS defaults), started from the
    # first-order fluence; its time includes the first-order seed
    conic, t_conic, c_conic = timed(
        lambda: op.solve_cvxpy(
            prob, solver=PORTPY_SOLVER, solver_options=PEER_SOLVER_OPTIONS, x0=first.x
        )
    )
    t_conic, c_conic = t_conic + t_first, c_conic + c_first
    cold, t_cold, c_cold = timed(
        lambda: op.solve_cvxpy(prob, solver=PORTPY_SOLVER, solver_options=PEER_SOLVER_OPTIONS)
    )
    ours = {
        "load_average": [load_before, os.getloadavg()[0]],
        "n_voxels": p.influence_matrix.shape[0],
        "n_beamlets": p.influence_matrix.shape[1],
        "nnz": int(p.influence_matrix.nnz),
        "read_and_build_s": t_read,
        "read_and_build_cpu_s": c_read,
        "portpy_solution_objective": peer_objective,
        "portpy_solution_max_violation": prob.max_violation(x_peer)[0],
    }
    runs = {}
    for name, res, wall, cpu in (
        ("first_order", first, t_first, c_first),
        ("cvxpy", conic, t_conic, c_conic),
        ("cvxpy_cold", cold, t_cold, c_cold),
    ):
        runs[name] = {
            "solve_s": wall,
            "solve_cpu_s": cpu,
            "end_to_end_s": t_read + wall,
            "end_to_end_cpu_s": c_read + cpu,
            "iterations": res.n_iter,
            "objective": res.objective,
            "objective_vs_portpy": res.objective / peer["objective"] - 1.0,
            "max_violation": res.extras["max_violation"],
            # total over PortPy's fractions, as PortPy's own reading (its dose_1d)
            "ptv_d95_gy": ptv_d95_gy(p, res.x) * float(definition["n_fractions"]),
            "cpu_ratio": peer["end_to_end_cpu_s"] / (c_read + cpu),
            "wall_ratio": peer["end_to_end_s"] / (t_read + wall),
            "success": bool(res.success),
            # rows, variables and non-zeros CVXPY handed the solver (None: first-order)
            "problem_size": res.extras.get("problem_size"),
        }
    rows = [
        [
            f"PortPy {peer['portpy']} ({peer['solver']})",
            f"{peer['solve_cpu_s']:.1f} / {peer['solve_s']:.1f} s",
            f"{peer['end_to_end_cpu_s']:.1f} / {peer['end_to_end_s']:.1f} s",
            "1",
            str(peer["iterations"]),
            f"{peer['objective']:.6g}",
            f"{peer['ptv_d95_gy']:.3f}",
        ]
    ]
    labels = {
        "first_order": "rtplan first-order",
        "cvxpy": f"rtplan CVXPY ({PORTPY_SOLVER}, first-order start)",
        "cvxpy_cold": f"rtplan CVXPY ({PORTPY_SOLVER}, cold)",
    }
    for name, label in labels.items():
        r = runs[name]
        rows.append(
            [
                label,
                f"{r['solve_cpu_s']:.1f} / {r['solve_s']:.1f} s",
                f"{r['end_to_end_cpu_s']:.1f} / {r['end_to_end_s']:.1f} s",
                f"{r['cpu_ratio']:.1f} / {r['wall_ratio']:.1f}",
                str(r["iterations"]),
                f"{r['objective']:.6g} ({100 * r['objective_vs_portpy']:+.3f} %)",
                f"{r['ptv_d95_gy']:.3f}",
            ]
        )
    _print_table(
        f"PortPy-format synthetic lung ({ours['n_voxels']} voxels x {ours['n_beamlets']} "
        f"beamlets, {ours['nnz'] / 1e6:.2f} M non-zeros): PortPy's problem "
        f"({peer['solver']}, Lung_2Gy_30Fx, per fraction) in both tools",
        ["tool", "solve CPU / wall", "end to end CPU / wall", "faster (CPU / wall)",
         "iterations", "objective (PortPy's)", "PTV D95 (Gy, all fractions)"],
        rows,
    )  # fmt: skip
    brief = {k: v for k, v in peer.items() if k != "opt_beamlets"}
    print(f"PortPy: {brief}\nrtplan: {ours} {runs}")
    print(f"rtplan CVXPY problem the solver got: {runs['cvxpy']['problem_size']}")
    record = {"synthetic": synth, "portpy": peer, "rtplan": ours, "rtplan_runs": runs}
    _save("bench_peers_portpy.json", record)
    benchmark.extra_info.update(record)
    assert peer["status"] == "optimal"
    assert first.success and conic.success and cold.success
    # issue 18: the same objective within 1 % (both evaluated by rtplan on the full matrix)
    for name in runs:
        assert abs(runs[name]["objective_vs_portpy"]) <= 0.01, name
