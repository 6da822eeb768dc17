"""Optimiser speed on a TG-119 C-shape problem of clinical size (pytest-benchmark).

Run: ``python -m pytest benches/bench_optimizers.py -p no:cacheprovider -s``
(``--benchmark-json=out.json`` records the figures; ``-s`` shows the summary lines).

Two matrices: a synthetic one of the size and sparsity the issue anticipated (400,000
voxels x ~2,800 beamlets, ~9 M non-zeros; ``tests/rtplan/_opt_synth.py``), and the dose engine's own
9-beam, 3 mm TG-119 C-shape matrix computed on ``rtplan.phantoms.make_phantom("cshape")``
(620,160 voxels x 2,612 beamlets, 81 M non-zeros, 63 M of them in the BODY rows the terms
touch: seven times denser than anticipated).
Set ``RTPLAN_BENCH_MATRIX=/path/to/file.npz`` (``scipy.sparse.save_npz``) with
``RTPLAN_BENCH_STRUCTURES=/path/to/structures.npz`` (arrays ``PTV``, ``CORE``, ``BODY`` of
row indices) to run the same bench on the dose engine's real matrix.

Targets (issue brief): first-order solve <= 10 s on 2 cores and >= 10x faster than
CVXPY + Clarabel at an objective within 0.5 %. pyRadPlan on the same phantom, side by side:
``benches/bench_peers.py``.

Measured 2026-11-22 on the shared 2-core machine (load average ~4): CVXPY + Clarabel 683 s
wall (canonicalisation 17 s, 33 interior-point iterations, 3.15 GB peak RSS), objective
96.83335; first-order at the bench tolerance 5-9 s, objective 96.92 (+0.09 %).
The dose engine's matrix is too big for Clarabel; subsampled (``subsample``: every 8th voxel
of each structure, every 2nd beamlet; 45,117 x 1,306, 4.3 M non-zeros), measured 2026-11-22:
CVXPY + Clarabel 73.6 s (27 interior-point iterations), objective 165.432; first-order 0.81 s,
objective 165.697 (+0.16 %), 91x faster. Every 16th voxel (2.1 M non-zeros): 33.2 s vs
0.76 s, +0.19 %.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "rtplan"))
from _opt_synth import tg119_cshape  # noqa: E402

import optimizers as op  # noqa: E402

#: TG-119 C-shape goals (Ezzell et al. 2009): PTV D95 >= 50 Gy, D10 <= 55 Gy; core D10 <= 25 Gy.
TERMS = [
    op.Underdose("PTV", 50.0, weight=100),
    op.Overdose("PTV", 52.5, weight=100),
    op.Overdose("CORE", 20.0, weight=20),
    op.Overdose("BODY", 25.0, weight=5),
    op.MeanDose("BODY", weight=0.1),
]
FIRST_ORDER_TOL = 5e-5  # stopping tolerance of the timed solve (gap checked below)
TIGHT_TOL = 1e-7  # reference solve: equals CVXPY+Clarabel to 1e-5 on the synthetic case


def _dose_engine_tg119(spacing_mm=3.0):
    """The dose engine's own matrix for the TG-119 C-shape phantom (9 beams, 3 mm grid)."""
    import dose_engine as de
    from rtplan.phantoms import make_phantom

    pat = make_phantom("cshape")
    dg = pat.ct.grid.with_spacing(spacing_mm)
    names = (("PTV", "PTV"), ("CORE", "Core"), ("BODY", "Body"))
    masks = {k: pat.structure(n).mask(dg) for k, n in names}
    beams = de.equispaced_coplanar_beams(9, isocenter_mm=de.isocenter_at_centroid(masks["PTV"], dg))
    pts = dg.voxel_centres_mm().reshape(-1, 3)[masks["PTV"].ravel()]
    bl = de.beamlets_for_target(beams, pts)
    im = de.compute_influence_matrix(
        de.hu_to_density(pat.ct.array), pat.ct.grid, dg, beams, bl, progress=False
    )
    return im.matrix.tocsr(), {k: np.flatnonzero(m) for k, m in masks.items()}


@pytest.fixture(scope="module", params=["synthetic", "dose_engine"])
def tg119(request):
    path = os.environ.get("RTPLAN_BENCH_MATRIX")
    if path:
        a = sp.load_npz(path).tocsr().astype(np.float32)
        s = dict(np.load(os.environ["RTPLAN_BENCH_STRUCTURES"]))
        source = path
    elif request.param == "dose_engine":
        t0 = time.perf_counter()
        a, s = _dose_engine_tg119()
        source = f"dose_engine ({time.perf_counter() - t0:.0f} s to compute)"
    else:
        a, s, _ = tg119_cshape()
        source = "synthetic"
    info = {"source": source, "n_voxels": a.shape[0], "n_beamlets": a.shape[1], "nnz": int(a.nnz)}
    return a, s, info


def _time(f, n=10):
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


def test_matvec_vs_memory_bandwidth(benchmark, tg119):
    a, s, info = tg119
    prob = op.Problem(a, s, TERMS)
    a_u = prob.a_union
    a_t = a_u.T.tocsr()  # explicit CSR transpose, compared with the CSC view the solver uses
    rng = np.random.default_rng(0)
    x = rng.random(a_u.shape[1])
    g = rng.random(a_u.shape[0])
    t_fwd = benchmark.pedantic(lambda: a_u @ x, rounds=10, iterations=1, warmup_rounds=1)
    t_fwd = _time(lambda: a_u @ x)
    t_bwd_csr = _time(lambda: a_t @ g)
    t_bwd_t = _time(lambda: a_u.T @ g)
    a32 = a_u.astype(np.float32)
    x32 = x.astype(np.float32)
    t_fwd32 = _time(lambda: a32 @ x32)
    src = np.ones(50_000_000)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t_copy = _time(lambda: np.copyto(dst, src), n=5)
    bw = 2 * src.nbytes / t_copy  # read + write
    m, n = a_u.shape
    bytes64 = a_u.nnz * (8 + 4) + (m + 1) * 4 + m * 8 + n * 8
    bytes32 = a_u.nnz * (4 + 4) + (m + 1) * 4 + m * 4 + n * 4
    fig = {
        "fwd_ms": 1e3 * t_fwd,
        "bwd_csr_ms": 1e3 * t_bwd_csr,
        "bwd_transpose_view_ms": 1e3 * t_bwd_t,
        "fwd_float32_ms": 1e3 * t_fwd32,
        "copy_bandwidth_GBs": bw / 1e9,
        "fwd_GBs": bytes64 / t_fwd / 1e9,
        "fwd_float32_GBs": bytes32 / t_fwd32 / 1e9,
        "fwd_fraction_of_bandwidth": bytes64 / t_fwd / bw,
    }
    benchmark.extra_info.update(fig | info)
    print(
        f"\nMATVEC {info['n_voxels']}x{info['n_beamlets']} nnz={info['nnz']}: "
        f"fwd {fig['fwd_ms']:.1f} ms (float64, {fig['fwd_GBs']:.1f} GB/s), "
        f"fwd float32 {fig['fwd_float32_ms']:.1f} ms ({fig['fwd_float32_GBs']:.1f} GB/s), "
        f"transpose CSR {fig['bwd_csr_ms']:.1f} ms "
        f"vs A.T view {fig['bwd_transpose_view_ms']:.1f} ms; "
        f"numpy copy bandwidth {fig['copy_bandwidth_GBs']:.1f} GB/s -> fwd at "
        f"{100 * fig['fwd_fraction_of_bandwidth']:.0f} % of it"
    )


@pytest.fixture(scope="module")
def first_order_result(tg119):
    a, s, _ = tg119
    # float32 products: the solver is memory-bandwidth bound on these matrices
    prob = op.Problem(a, s, TERMS, matrix_dtype=np.float32)
    return prob, op.solve_first_order(prob, tol=FIRST_ORDER_TOL)


def test_first_order_tg119(benchmark, tg119, first_order_result):
    a, s, info = tg119
    prob, _ = first_order_result
    res = benchmark.pedantic(
        lambda: op.solve_first_order(prob, tol=FIRST_ORDER_TOL), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {
            "objective": res.objective,
            "n_iter": res.n_iter,
            "n_dose_evals": res.n_dose_evals,
            "time_s": res.solve_time_s,
        }
    )
    print(
        f"\nFIRST-ORDER TG-119 ({info['source']}, union {prob.a_union.shape}, "
        f"{prob.a_union.nnz} nnz): {res.solve_time_s:.2f} s, {res.n_iter} iterations, "
        f"{res.n_dose_evals} matrix products, objective {res.objective:.6g} ({res.status})"
    )
    tight = op.solve_first_order(prob, tol=TIGHT_TOL)
    gap = (res.objective - tight.objective) / abs(tight.objective)
    benchmark.extra_info["gap_to_tight"] = gap
    print(
        f"   vs tight solve (tol {TIGHT_TOL:g}, {tight.n_iter} iterations, "
        f"{tight.solve_time_s:.1f} s): objective {tight.objective:.6g}, gap {100 * gap:+.3f} %"
    )
    assert res.success
    assert abs(gap) <= 5e-3
    assert res.solve_time_s <= 10.0, "target: first-order TG-119 solve <= 10 s on 2 cores"


@pytest.mark.skipif(
    not os.environ.get("RTPLAN_BENCH_CVXPY_TG119"),
    reason="CVXPY+Clarabel on the full TG-119 matrix takes ~11 min and 3.2 GB; set "
    "RTPLAN_BENCH_CVXPY_TG119=1 to run it",
)
def test_cvxpy_clarabel_tg119(benchmark, tg119, first_order_result):
    a, s, info = tg119
    prob, fo = first_order_result
    res = benchmark.pedantic(
        lambda: op.solve_cvxpy(prob, solver="CLARABEL"), rounds=1, iterations=1
    )
    rel = (fo.objective - res.objective) / abs(res.objective)
    speedup = res.solve_time_s / fo.solve_time_s
    benchmark.extra_info.update(
        {
            "objective": res.objective,
            "time_s": res.solve_time_s,
            "setup_s": res.extras["setup_time_s"],
            "first_order_rel_gap": rel,
            "speedup": speedup,
        }
    )
    print(
        f"\nCVXPY+CLARABEL TG-119: {res.solve_time_s:.1f} s (canonicalisation "
        f"{res.extras['setup_time_s']:.1f} s, {res.n_iter} IPM iterations), objective "
        f"{res.objective:.6g}; first-order {fo.solve_time_s:.2f} s, "
        f"objective gap {100 * rel:+.3f} %, "
        f"speed-up {speedup:.0f}x"
    )
    assert abs(rel) <= 5e-3
    assert speedup >= 10


#: Subsampling (voxel step, beamlet step) of the C-shape matrices for the CVXPY + Clarabel
#: comparison (see :func:`subsample`); override with RTPLAN_BENCH_SUBSAMPLE="voxel,beamlet".
SUBSAMPLE = tuple(int(v) for v in os.environ.get("RTPLAN_BENCH_SUBSAMPLE", "8,2").split(","))


def subsample(a, structures, *, voxel_step, beamlet_step):
    """Every ``voxel_step``-th voxel and ``beamlet_step``-th beamlet of ``a``.

    Parameters
    ----------
    a : (n_voxels, n_beamlets) scipy.sparse CSR matrix, Gy per MU
    structures : dict of str to (n_s,) array of int
        Row indices (sorted). The kept voxels are every ``voxel_step``-th voxel of each
        structure's list; a kept voxel stays in every structure holding it, so nested
        structures (PTV inside BODY) stay nested and small ones keep ~1/voxel_step of theirs.
    voxel_step, beamlet_step : int

    Returns
    -------
    matrix : (n_kept_voxels, n_kept_beamlets) CSR matrix
    structures : dict of str to array of int
        Row indices into ``matrix``.
    """
    rows = np.unique(np.concatenate([idx[::voxel_step] for idx in structures.values()]))
    cols = np.arange(0, a.shape[1], beamlet_step)
    sub = {k: np.searchsorted(rows, idx[np.isin(idx, rows)]) for k, idx in structures.items()}
    return a[rows][:, cols].tocsr(), sub


def test_cvxpy_vs_first_order_subsampled_tg119(benchmark, tg119):
    """CVXPY + Clarabel against the first-order solver on a subsampled C-shape matrix (the
    full dose-engine matrix is too big for Clarabel): time and relative objective gap."""
    a, s, info = tg119
    voxel_step, beamlet_step = SUBSAMPLE
    a_sub, s_sub = subsample(a, s, voxel_step=voxel_step, beamlet_step=beamlet_step)
    prob = op.Problem(a_sub, s_sub, TERMS)
    fo = op.solve_first_order(prob, tol=FIRST_ORDER_TOL)
    cv = benchmark.pedantic(lambda: op.solve_cvxpy(prob, solver="CLARABEL"), rounds=1, iterations=1)
    gap = (fo.objective - cv.objective) / abs(cv.objective)
    benchmark.extra_info.update(
        info
        | {
            "subsample": [voxel_step, beamlet_step],
            "union_shape": list(prob.a_union.shape),
            "union_nnz": int(prob.a_union.nnz),
            "cvxpy_s": cv.solve_time_s,
            "cvxpy_setup_s": cv.extras["setup_time_s"],
            "first_order_s": fo.solve_time_s,
            "first_order_rel_gap": gap,
        }
    )
    print(
        f"\nSUBSAMPLED TG-119 ({info['source']}, voxel step {voxel_step}, beamlet step "
        f"{beamlet_step}: union {prob.a_union.shape}, {prob.a_union.nnz} nnz): "
        f"CVXPY+CLARABEL {cv.solve_time_s:.1f} s (set-up {cv.extras['setup_time_s']:.1f} s, "
        f"{cv.n_iter} IPM iterations), objective {cv.objective:.6g}; first-order "
        f"{fo.solve_time_s:.2f} s ({fo.n_iter} iterations), objective {fo.objective:.6g}, "
        f"gap {100 * gap:+.3f} %, speed-up {cv.solve_time_s / fo.solve_time_s:.0f}x"
    )
    assert fo.success and cv.success
    assert abs(gap) <= 5e-3


def test_dpp_second_solve(benchmark):
    """Canonicalisation is skipped when only weights/levels change (DPP)."""
    a, s, _ = tg119_cshape(spacing_mm=6.0, shape_zyx=(20, 50, 50))
    prob = op.Problem(a, s, TERMS)
    t0 = time.perf_counter()
    form = op.CvxpyFormulation(prob)
    r1 = op.solve_cvxpy(prob, formulation=form)
    first = time.perf_counter() - t0
    terms2 = [TERMS[0], TERMS[1], op.Overdose("CORE", 18.0, weight=40), TERMS[3], TERMS[4]]
    prob2 = prob.with_terms(terms2)
    r2 = benchmark.pedantic(lambda: op.solve_cvxpy(prob2, formulation=form), rounds=1, iterations=1)
    fresh = op.solve_cvxpy(prob2)
    print(
        f"\nDPP: first solve {first:.2f} s (canonicalisation {r1.extras['setup_time_s']:.2f} s); "
        f"re-solve after a weight/level change {r2.solve_time_s:.2f} s (set-up "
        f"{r2.extras['setup_time_s']:.3f} s) vs fresh build {fresh.solve_time_s:.2f} s"
    )
    assert form.cvx_problem.is_dpp()
    assert r2.objective == pytest.approx(fresh.objective, rel=1e-5)
    assert r2.extras["setup_time_s"] < fresh.extras["setup_time_s"]
