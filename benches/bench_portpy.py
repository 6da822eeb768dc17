"""rtplan on a PortPy-format lung problem of PortPy's "medium" size (pytest-benchmark).

Run: ``python -m pytest benches/bench_portpy.py -p no:cacheprovider -s``

A synthetic lung patient (about 160,000 optimisation voxels x 2,500 beamlets, ~3 M
non-zeros, 7 beams) is written in PortPy's on-disk layout, read with
:func:`rtplan.io.read_portpy_patient`, and optimised by rtplan's first-order solver and by
rtplan's CVXPY formulation with Clarabel.

The folder is read as PortPy plans it (the beamlets in the beam's-eye view of the PTV plus
3 mm; ``all_beamlets=True`` for every one). PortPy itself runs beside rtplan on the same
folder in ``benches/bench_peers.py`` (``test_portpy_lung``, when PortPy is installed: the
``peers`` extra on Python >= 3.12, or ``RTPLAN_PORTPY_PYTHON``); this module times rtplan
alone. Target: first-order <= 2 s, at the optimum of
rtplan's CVXPY formulation (objective and PTV D95 compared between the two solvers).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "rtplan"))
from _portpy_synth import synthetic_lung  # noqa: E402

import optimizers as op  # noqa: E402
from optimizers import dose_at_volume  # noqa: E402
from rtplan.io import read_portpy_patient  # noqa: E402

FIRST_ORDER_TOL = 2e-5  # stopping tolerance; the gap to CVXPY's optimum is checked below
RX_GY = 60.0


def lung_terms():
    """Lung 60 Gy / 30 fx style goals as smooth terms + hard limits (PortPy's Lung_2Gy_30Fx
    protocol uses quadratic over/underdose on the PTV, OAR penalties and max/mean limits)."""
    return [
        op.Underdose("PTV", RX_GY, weight=1000),
        op.Overdose("PTV", RX_GY * 1.07, weight=1000),
        op.Overdose("CORD", 30.0, weight=10),
        op.Overdose("ESOPHAGUS", 30.0, weight=10),
        op.Overdose("HEART", 20.0, weight=10),
        op.Overdose("LUNG_R", 10.0, weight=10),
        op.Overdose("LUNG_L", 5.0, weight=10),
        op.Overdose("BODY", 30.0, weight=10),
        op.MaxDose("CORD", 50.0, hard=True),
        op.MeanDose("ESOPHAGUS", 34.0, hard=True),
        op.MeanDose("HEART", 27.0, hard=True),
    ]


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    root = tmp_path_factory.mktemp("portpy")
    info = synthetic_lung(root / "Lung_Synth_Medium", ptv_radius_mm=26.0)
    return root, info


@pytest.fixture(scope="module")
def problem(patient):
    root, _ = patient
    p = read_portpy_patient(root, "Lung_Synth_Medium")
    prob = op.Problem(
        p.influence_matrix,
        p.structure_voxels,
        lung_terms(),
        voxel_weights=p.structure_fractions,
        matrix_dtype=np.float32,  # bandwidth-bound products: half the bytes
    )
    prob.row_blocks()  # build once, outside the timing
    return p, prob


def ptv_d95_gy(p, x):
    dose = p.influence_matrix @ x.astype(np.float32)
    v = p.structure_voxels["PTV"]
    w = p.structure_fractions["PTV"]
    return dose_at_volume(dose[v].astype(np.float64), w / w.sum(), 95.0)


def test_read_portpy(benchmark, patient):
    root, info = patient
    p = benchmark.pedantic(
        lambda: read_portpy_patient(root, "Lung_Synth_Medium"), rounds=1, iterations=1
    )
    print(
        f"\nPORTPY READ: {p.influence_matrix.shape[0]} voxels x {p.influence_matrix.shape[1]} "
        f"beamlets ({info['n_beamlets']} on file), {p.influence_matrix.nnz} non-zeros"
    )
    assert p.influence_matrix.nnz <= info["nnz"] and all(b.selection == "bev" for b in p.beams)


@pytest.fixture(scope="module")
def first_order(problem):
    p, prob = problem
    return op.solve_first_order(prob, tol=FIRST_ORDER_TOL)


def test_first_order_portpy(benchmark, problem, first_order):
    p, prob = problem
    res = benchmark.pedantic(
        lambda: op.solve_first_order(prob, tol=FIRST_ORDER_TOL), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {
            "time_s": res.solve_time_s,
            "objective": res.objective,
            "n_iter": res.n_iter,
            "ptv_d95_gy": ptv_d95_gy(p, res.x),
        }
    )
    print(
        f"\nFIRST-ORDER PortPy-medium: {res.solve_time_s:.2f} s, {res.n_iter} iterations, "
        f"objective {res.objective:.6g}, PTV D95 {ptv_d95_gy(p, res.x):.2f} Gy, max violation "
        f"{res.extras['max_violation']:.2g}"
    )
    assert res.success
    assert res.solve_time_s <= 2.0, "target: first-order <= 2 s"


def test_cvxpy_portpy(benchmark, problem, first_order):
    p, prob = problem
    res = benchmark.pedantic(
        lambda: op.solve_cvxpy(prob, solver="CLARABEL"), rounds=1, iterations=1
    )
    rel = (first_order.objective - res.objective) / abs(res.objective)
    d95_c, d95_f = ptv_d95_gy(p, res.x), ptv_d95_gy(p, first_order.x)
    benchmark.extra_info.update(
        {
            "time_s": res.solve_time_s,
            "objective": res.objective,
            "ptv_d95_gy": d95_c,
        }
    )
    print(
        f"\nCVXPY+CLARABEL PortPy-medium: {res.solve_time_s:.1f} s (set-up "
        f"{res.extras['setup_time_s']:.1f} s), objective {res.objective:.6g}, "
        f"PTV D95 {d95_c:.2f} Gy; "
        f"first-order gap {100 * rel:+.3f} %, D95 {d95_f:.2f} Gy"
    )
    assert abs(rel) <= 5e-3
    assert abs(d95_c - d95_f) <= 0.5
