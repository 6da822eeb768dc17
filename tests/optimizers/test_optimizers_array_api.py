"""The first-order solver on the array API: the whole L-BFGS / FISTA / augmented-Lagrangian
loop run with array-api-strict vectors (dense products) against the numpy/scipy run, which
catches numpy-only calls on the path CuPy takes; and the CuPy back-end's error without CuPy."""

import importlib.util

import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op
from optimizers._array_backend import ArrayBackend, array_backend

xps = pytest.importorskip("array_api_strict")


def _strict_backend(problem):
    """Dense array-api-strict products with the problem's union matrix, (n_u, n_beamlets)."""
    a = xps.asarray(problem.a_union.toarray(), dtype=xps.float64)
    a_t = xps.matrix_transpose(a)
    return ArrayBackend("array_api_strict", xps, lambda v: a @ v, lambda g: a_t @ g)


def _quadratic_problem():
    a, s = slab_problem(np.random.default_rng(5), n_side=12, n_beamlets=16)
    terms = [
        op.Underdose("PTV", 60, weight=100),
        op.Overdose("PTV", 63, weight=100),
        op.Overdose("OAR", 15, weight=10),
        op.MeanDose("BODY", weight=0.5),
        op.MaxDose("OAR", 30.0, hard=True),
        op.MeanDose("BODY", 20.0, hard=True),
    ]
    return op.Problem(a, s, terms)


@pytest.mark.parametrize(("inner", "tol"), [("lbfgs", 1e-12), ("fista", 1e-13)])
def test_strict_array_api_run_matches_numpy(inner, tol):
    """Same optimum to 1e-6 (tolerances tight enough that rounding-level differences
    between dense and sparse products do not show: FISTA at tol=1e-11 stops 2e-6 short of
    the optimum, wherever the rounding of the products leads it; at 1e-13 the two runs agree
    to 3e-8)."""
    prob = _quadratic_problem()
    opts = {"inner": inner, "tol": tol, "max_iter": 20000}
    ref = op.solve_first_order(prob, **opts)
    res = op.solve_first_order(prob, backend=_strict_backend(prob), **opts)
    assert ref.success and res.success, (ref.message, res.message)
    assert isinstance(res.x, np.ndarray)
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)
    assert res.extras["max_violation"] <= 1e-4
    # individual terms trade along near-flat directions of the optimum: looser
    for label, value in ref.term_values.items():
        assert res.term_values[label] == pytest.approx(value, rel=1e-4, abs=1e-6), label


def test_strict_array_api_objective_and_gradient_of_every_term():
    """Augmented objective and gradient of every dose term kind, soft and hard (gEUD, CVaR
    DVH goals, level bounds), equal on array-api-strict and numpy at the same point."""
    from optimizers._augmented_lagrangian import AugmentedLagrangian
    from optimizers._compiled import CompiledTerms
    from optimizers._first_order import _counted_products
    from optimizers._terms import _LevelBound

    a, s = slab_problem(np.random.default_rng(5), n_side=12, n_beamlets=16)
    soft = [
        op.Underdose("PTV", 60, weight=100),
        op.Overdose("OAR", 15, weight=10),
        op.GEUD("OAR", 4, weight=1),
        op.MaxDVH("BODY", 30, 20, weight=1),
        op.MinDVH("PTV", 58, 95, weight=5),
        op.MeanDose("BODY", weight=0.5),
    ]
    hard = [
        op.MaxDose("OAR", 20.0, hard=True),
        op.MinDVH("PTV", 59, 95, hard=True),
        op.GEUD("OAR", 4, 10.0, hard=True),
        _LevelBound([op.Overdose("PTV", 61)], 1e-3, 0),
    ]
    prob = op.Problem(a, s, soft + hard)
    x = np.random.default_rng(0).random(prob.n_beamlets) * 3000
    values = []
    for backend in (array_backend(prob, "numpy"), _strict_backend(prob)):
        comp = CompiledTerms(prob, backend)
        al = AugmentedLagrangian(comp, rho0=10.0)
        al.lam = [lam + 0.5 for lam in al.lam]
        fwd, bwd = _counted_products(backend, {"dose": 0})
        xb = backend.asarray(x)
        d = fwd(xb)
        f, g_u, g_x = comp.soft_value_grad(d, xb)
        fa, g_u, g_x = al.value_grad(d, xb, g_u, g_x)
        assert g_x is None
        values.append((f + fa, backend.to_host(bwd(g_u))))
    (f_np, g_np), (f_st, g_st) = values
    assert f_st == pytest.approx(f_np, rel=1e-12)
    np.testing.assert_allclose(g_st, g_np, rtol=1e-10, atol=1e-12 * np.abs(g_np).max())


def test_strict_array_api_lexicographic_level_bound():
    """A level bound (a scalar constraint over several terms) solved on the strict namespace."""
    from optimizers._terms import _LevelBound

    prob = _quadratic_problem()
    lv0 = op.solve_first_order(prob.with_terms(prob.terms[:2]))
    bound = _LevelBound(list(prob.terms[:2]), lv0.objective * 1.05, 0)
    level1 = prob.with_terms([bound, prob.terms[2], prob.terms[4]])
    opts = {"x0": lv0.x, "tol": 1e-12}
    ref = op.solve_first_order(level1, **opts)
    res = op.solve_first_order(level1, backend=_strict_backend(level1), **opts)
    assert res.success and res.objective == pytest.approx(ref.objective, rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cupy_backend_without_cupy_says_how_to_install():
    prob = _quadratic_problem()
    with pytest.raises(op.SolverError, match=r'pip install "rtplan\[gpu\]"'):
        op.solve_first_order(prob, backend="cupy")
    with pytest.raises(op.SolverError, match="CuPy"):
        op.solve(prob, method="first_order", backend="cupy")


def test_unknown_backend_and_lbfgsb_off_numpy_are_refused():
    prob = _quadratic_problem()
    with pytest.raises(op.InvalidProblemError, match=r"Unknown `backend` 'jax'"):
        op.solve_first_order(prob, backend="jax")
    with pytest.raises(op.InvalidProblemError, match="numpy arrays only"):
        op.solve_first_order(prob, inner="lbfgsb", backend=_strict_backend(prob))


def _fluence_term_problem(constrained):
    """The quadratic problem (its hard constraints or not) plus fluence smoothness
    (neighbours within each fan of the slab's beamlets) and total MU."""
    prob = _quadratic_problem()
    half = prob.n_beamlets // 2
    pairs = [(j, j + 1) for j in range(prob.n_beamlets - 1) if j + 1 != half]
    fluence = [
        op.Smoothness(pairs=np.asarray(pairs), n_beamlets=prob.n_beamlets, weight=1e-4),
        op.TotalMU(weight=1e-2),
    ]
    return prob.with_terms([t for t in prob.terms if constrained or not t.hard] + fluence)


@pytest.mark.parametrize("constrained", [False, True], ids=["soft", "constrained"])
@pytest.mark.parametrize(("inner", "tol"), [("lbfgs", 1e-12), ("fista", 1e-11)])
def test_strict_array_api_run_with_smoothness_and_total_mu(inner, tol, constrained):
    """Smoothness and TotalMU evaluate on the solver's namespace: same optimum as numpy
    (1e-6; 1e-5 with hard constraints, where the augmented Lagrangian stops at a relative
    violation of ~7e-5 and the two runs stop at slightly different infeasible points)."""
    prob = _fluence_term_problem(constrained)
    opts = {"inner": inner, "tol": tol, "max_iter": 20000}
    ref = op.solve_first_order(prob, **opts)
    res = op.solve_first_order(prob, backend=_strict_backend(prob), **opts)
    assert ref.success and res.success, (ref.message, res.message)
    assert isinstance(res.x, np.ndarray)
    assert res.objective == pytest.approx(ref.objective, rel=1e-5 if constrained else 1e-6)
    for label in ("Smoothness(14 pairs)", "TotalMU"):
        assert res.term_values[label] == pytest.approx(ref.term_values[label], rel=1e-4), label
    # the fluence terms are active: dropping them changes the optimum
    plain = op.solve_first_order(
        prob.with_terms([t for t in prob.terms if t.acts_on == "dose"]), **opts
    )
    assert prob.objective(plain.x) > res.objective * (1 + 1e-4)


def test_fluence_terms_value_and_gradient_on_strict_namespace():
    """Smoothness (pairs and a general operator) and TotalMU: value and gradient on
    array-api-strict equal the scipy/numpy ones."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    operator = sp.random(40, 25, density=0.15, random_state=rng, format="csr")
    operator = operator[np.diff(operator.indptr) > 0]
    terms = [
        op.Smoothness(operator),
        op.Smoothness(pairs=np.array([[0, 1], [1, 2], [2, 3], [0, 24], [7, 3]]), n_beamlets=25),
        op.TotalMU(),
    ]
    x = rng.random(25) * 100
    xs = xps.asarray(x, dtype=xps.float64)
    for t in terms:
        if isinstance(t, op.Smoothness):
            r = t.operator @ x
            assert t.value(x) == pytest.approx(r @ r / r.size, rel=1e-13)
            g_ref = 2.0 / r.size * (t.operator.T @ r)
            np.testing.assert_allclose(t.gradient(x), g_ref, rtol=1e-13, atol=1e-13)
        g = t.gradient(xs)
        assert isinstance(g, type(xs))
        assert t.value(xs) == pytest.approx(t.value(x), rel=1e-13)
        np.testing.assert_allclose(np.from_dlpack(g), t.gradient(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_row_block_products_equal_the_csr_products(dtype):
    # rows 0-39 nearly full (dense block), rows 40-119 about 5 % filled (CSR), shuffled so
    # the dense rows are scattered through the union
    import scipy.sparse as sp

    from optimizers._problem import DENSE_ROW_FRACTION, RowBlocks

    rng = np.random.default_rng(3)
    full = rng.random((40, 60)) * (rng.random((40, 60)) < 0.95)
    thin = rng.random((80, 60)) * (rng.random((80, 60)) < 0.05)
    dense = np.vstack([full, thin])[rng.permutation(120)]
    matrix = sp.csr_matrix(dense)
    prob = op.Problem(matrix, {"T": np.arange(120)}, [op.Underdose("T", 1.0)], matrix_dtype=dtype)
    blocks = prob.row_blocks()
    filled = np.count_nonzero(dense, axis=1) >= DENSE_ROW_FRACTION * 60
    assert np.array_equal(blocks.dense_pos, np.flatnonzero(filled))
    assert blocks.dense.shape == (filled.sum(), 60) and blocks.dense.dtype == dtype
    assert isinstance(blocks, RowBlocks) and prob.row_blocks() is blocks  # built once

    backend = array_backend(prob, "numpy")
    x, g = rng.random(60).astype(dtype), rng.random(120).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(backend.matvec(x), dense @ x, rtol=rtol)
    np.testing.assert_allclose(backend.rmatvec(g), dense.T @ g, rtol=rtol)
    # a matrix with no row dense enough keeps the plain CSR products
    sparse_only = op.Problem(sp.csr_matrix(thin), {"T": np.arange(80)}, [op.Underdose("T", 1.0)])
    assert sparse_only.row_blocks().dense is None
    np.testing.assert_allclose(
        array_backend(sparse_only, "numpy").matvec(x.astype(float)), thin @ x, rtol=1e-12
    )


def test_threaded_csr_products_equal_the_serial_products(monkeypatch):
    import scipy.sparse as sp

    from optimizers import _array_backend

    monkeypatch.setattr(_array_backend, "THREADED_CSR_MIN_NNZ", 0)
    csr = sp.random(301, 47, density=0.3, format="csr", random_state=5)
    rng = np.random.default_rng(5)
    x, g = rng.random(47), rng.random(301)
    for n_chunks in (2, 3, 7):
        matvec, rmatvec = _array_backend._threaded_csr_products(csr, n_chunks)
        np.testing.assert_allclose(matvec(x), csr @ x, rtol=1e-12)
        np.testing.assert_allclose(rmatvec(g), csr.T @ g, rtol=1e-12)
    # the chunks are views: no second copy of the matrix
    chunk = _array_backend._row_range_view(csr, slice(100, 200))
    assert np.shares_memory(chunk.data, csr.data)
    assert np.shares_memory(chunk.indices, csr.indices)
    np.testing.assert_array_equal(chunk.toarray(), csr[100:200].toarray())
    # and so are their transposes (``chunk.T`` copied the pruned arrays)
    chunk_t = _array_backend._transposed_view(chunk)
    assert np.shares_memory(chunk_t.data, csr.data)
    assert np.shares_memory(chunk_t.indices, csr.indices)
    np.testing.assert_array_equal(chunk_t.toarray(), csr[100:200].toarray().T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_product_on_the_active_rows_is_bit_identical(monkeypatch, dtype):
    """``A.T @ g`` read only on the rows where ``g != 0`` (one-sided terms below their
    level have a zero gradient) equals the product over every row to the bit, and both
    equal the dense product."""
    import scipy.sparse as sp

    from optimizers import _array_backend

    monkeypatch.setattr(_array_backend, "THREADED_CSR_MIN_NNZ", 0)
    csr = sp.random(3001, 47, density=0.3, format="csr", random_state=7, dtype=dtype)
    rng = np.random.default_rng(7)
    for zero_share in (0.0, 0.5, 0.95, 1.0):
        g = rng.random(3001).astype(dtype)
        g[rng.random(3001) < zero_share] = 0.0
        monkeypatch.setattr(_array_backend, "ACTIVE_ROWS_MAX_SHARE", 0.0)  # every row
        _, every_row = _array_backend._threaded_csr_products(csr, 5)
        monkeypatch.setattr(_array_backend, "ACTIVE_ROWS_MAX_SHARE", 1.01)  # active rows
        _, active_rows = _array_backend._threaded_csr_products(csr, 5)
        out = active_rows(g)
        assert out.dtype == dtype and out.shape == (47,)
        np.testing.assert_array_equal(out, every_row(g))
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, csr.toarray().T @ g, rtol=rtol, atol=1e-30)


DETERMINISM_SCRIPT = """
import sys
import numpy as np, scipy.sparse as sp
import optimizers as op
from optimizers import _array_backend as ab
from optimizers._array_backend import array_backend

ab.CSR_CHUNK_NNZ = 300_000     # several CSR chunks on a small problem
rng = np.random.default_rng(7)
dense_rows = rng.random((40000, 300)).astype(np.float32)
thin = sp.random(20000, 300, density=0.2, format="csr", random_state=7, dtype=np.float32)
D = sp.vstack([sp.csr_matrix(dense_rows), thin]).tocsr()
prob = op.Problem(
    D,
    {"T": np.arange(40000), "N": np.arange(40000, 60000)},
    [op.Underdose("T", 60.0, weight=100), op.Overdose("T", 63.0, weight=100),
     op.Overdose("N", 20.0, weight=1)],
)
assert prob.row_blocks().dense is not None
be = array_backend(prob, "numpy")
products = [be.rmatvec(rng.random(60000)), be.matvec(rng.random(300))]
res = op.solve_first_order(prob, max_iter=30)
np.save(sys.argv[1], np.concatenate([*products, res.x]))
"""


def test_first_order_result_does_not_depend_on_cpu_or_blas_threads(tmp_path):
    """Issue 13: meterset weights differed by 2.9e-6 between CPU counts. The same solve
    on one CPU with one BLAS thread and on every CPU with default BLAS threads must give
    bit-identical fluence."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity control and at least 2 CPUs")
    script = tmp_path / "solve.py"
    script.write_text(DETERMINISM_SCRIPT)
    one_cpu = f"import os; os.sched_setaffinity(0, {{{min(os.sched_getaffinity(0))}}}); "
    runs = {
        "one": ([sys.executable, "-c", one_cpu + f"exec(open({str(script)!r}).read())"], "1"),
        "all": ([sys.executable, str(script)], ""),
    }
    for name, (cmd, blas) in runs.items():
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        if blas:
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = blas
        proc = subprocess.run(
            [*cmd, str(tmp_path / f"{name}.npy")], env=env, capture_output=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    x1, x2 = np.load(tmp_path / "one.npy"), np.load(tmp_path / "all.npy")
    assert x1.sum() > 0
    np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("cpus", [1, 2, 5])
def test_dense_and_csr_products_are_bit_identical_for_any_pool_size(cpus, monkeypatch):
    import scipy.sparse as sp

    from optimizers import _array_backend

    rng = np.random.default_rng(3)
    a = rng.random((2500, 60)).astype(np.float32)
    csr = sp.random(4000, 60, density=0.3, format="csr", random_state=3, dtype=np.float32)
    x, g, h = rng.random(60), rng.random(2500), rng.random(4000)
    monkeypatch.setattr(_array_backend, "DENSE_CHUNK_ROWS", 300)
    monkeypatch.setattr(_array_backend, "CSR_CHUNK_NNZ", 10_000)
    monkeypatch.setattr(_array_backend, "THREADED_CSR_MIN_NNZ", 0)
    reference = {}
    for n in (1, cpus):
        monkeypatch.setattr(_array_backend, "_usable_cpus", lambda n=n: n)
        mv, rmv = _array_backend._chunked_dense_products(a)
        smv, srmv = _array_backend._threaded_csr_products(csr)
        out = (mv(x), rmv(g), smv(x), srmv(h))
        if not reference:
            reference = out
            np.testing.assert_allclose(out[1], a.T @ g, rtol=1e-5)
            np.testing.assert_allclose(out[3], csr.T @ h, rtol=1e-5)
        for got, want in zip(out, reference, strict=True):
            np.testing.assert_array_equal(got, want)


def _blas_counts():
    from optimizers import _array_backend

    info = _array_backend._blas_controller().info()
    return [lib["num_threads"] for lib in info if lib["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """BLAS at two threads, claimed by the main thread the way a plain
    ``threadpool_limits(2)`` call (not a ``with`` block) leaves it; restored after."""
    from threadpoolctl import threadpool_limits

    from optimizers._array_backend import _release_blas_control

    _release_blas_control()  # whichever thread of an earlier test claimed it
    before = threadpool_limits(limits=2, user_api="blas")
    yield _blas_counts()  # a single-threaded BLAS among them stays at 1
    _release_blas_control()
    before.restore_original_limits()


def test_blas_hold_outlasts_an_earlier_product_in_another_thread(two_blas_threads):
    """Solves in threads of one process (a threaded Dask worker) each hold BLAS to one
    thread.  A set-and-restore per product let the first solve to finish restore the
    machine's count while the second was still multiplying (its sums in another order)."""
    import threading

    from optimizers._array_backend import one_blas_thread

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with one_blas_thread():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with one_blas_thread():
            b_in.set()
            a_out.wait(10)
            seen.append(_blas_counts())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [[1] * len(two_blas_threads)]
    assert _blas_counts() == two_blas_threads  # restored when the last one left


def test_blas_hold_takes_effect_from_a_worker_thread(two_blas_threads, monkeypatch):
    """threadpoolctl >= 3.6 ignores a change from any thread but the one that made the
    last (here the main thread): the hold must still give a worker thread one BLAS thread,
    and the chunked products run there equal the serial ones bit for bit."""
    import threading

    from optimizers import _array_backend

    rng = np.random.default_rng(5)
    a = rng.random((4000, 800)).astype(np.float32)
    g = rng.random(4000)
    monkeypatch.setattr(_array_backend, "DENSE_CHUNK_ROWS", 1000)
    _, rmv = _array_backend._chunked_dense_products(a)
    reference = rmv(g)
    seen, results = [], []

    def solve_like():
        for _ in range(10):
            with _array_backend.one_blas_thread():
                seen.append(_blas_counts())
                results.append(rmv(g))

    threads = [threading.Thread(target=solve_like) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [[1] * len(two_blas_threads)] * 30
    assert all(np.array_equal(r, reference) for r in results)
    assert _blas_counts() == two_blas_threads
