"""The CVXPY solve on a compressed matrix (sparse plus low rank) against the exact one, the
bound of the dose error against the measured error, and DPP re-solves without compilation."""

from __future__ import annotations

import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op

TERMS = [
    op.Underdose("PTV", 60.0, weight=10),
    op.Overdose("PTV", 63.0, weight=10),
    op.Overdose("OAR", 15.0, weight=1),
    op.MaxDVH("OAR", 25.0, 30.0, weight=1),
    op.MeanDose("BODY", weight=0.01),
]


def _slab(seed: int = 0, n_side: int = 20, n_beamlets: int = 30):
    """The slab with a 5 % scatter tail (dropped by the threshold, carried by the rank)."""
    rng = np.random.default_rng(seed)
    return slab_problem(rng, n_side=n_side, n_beamlets=n_beamlets, scatter_fraction=0.05)


def _dropped_dense(a, rel_threshold: float) -> np.ndarray:
    """The entries below ``rel_threshold`` times their column's maximum (dense, numpy)."""
    dense = a.toarray().astype(np.float64)
    return np.where(dense < rel_threshold * dense.max(axis=0), dense, 0.0)


def test_rank_zero_residual_is_the_dropped_entries():
    a, _ = _slab()
    c = op.compress_matrix(a, op.Compression(rel_threshold=0.05, rank=0))
    dropped = _dropped_dense(a, 0.05)
    assert np.count_nonzero(dropped) > 0
    assert c.sparse.nnz == a.nnz - np.count_nonzero(dropped)
    np.testing.assert_allclose(c.residual_l1, np.abs(dropped).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(c.residual_l2, np.linalg.norm(dropped, axis=1), rtol=1e-6)


@pytest.mark.parametrize("rank", [0, 2, 6])
def test_dose_error_never_exceeds_its_bound(rank):
    a, _ = _slab(1)
    c = op.compress_matrix(a, op.Compression(rel_threshold=0.05, rank=rank))
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.random(a.shape[1]) ** 3 * 100.0
        err = np.abs(a.toarray().astype(np.float64) @ x - c.dose(x))
        assert np.all(err <= c.error_bound_gy(x) * (1 + 1e-9) + 1e-12)
        assert err.max() > 0  # something was dropped: the check can fail


def test_low_rank_part_carries_most_of_the_dropped_dose():
    a, _ = _slab(2)
    x = np.full(a.shape[1], 50.0)
    exact = a @ x
    errs = []
    for rank in (0, 6):
        c = op.compress_matrix(a, op.Compression(rel_threshold=0.05, rank=rank))
        errs.append(np.abs(exact - c.dose(x)).max())
    assert errs[1] < 0.2 * errs[0]


def test_compressed_solve_matches_exact_solve():
    """Within 2 % of the exact optimum on the slab, whose narrow primary tails make a hard
    case for the low-rank part (a pencil-beam matrix: tests/rtplan/planning)."""
    a, s = _slab(4, n_side=24, n_beamlets=36)
    prob = op.Problem(a, s, TERMS)
    exact = op.solve_cvxpy(prob)
    comp = op.solve_cvxpy(prob, compression=op.Compression(rel_threshold=0.02, rank=8))
    rec = comp.extras["compression"]
    assert exact.extras["compression"] is None
    assert rec["nnz_sparse"] < 0.9 * a.nnz
    assert 0 < rec["max_dose_error_gy"] <= rec["max_dose_error_bound_gy"]
    # the objective is judged on the exact matrix: never below the exact optimum
    assert comp.objective >= exact.objective * (1 - 1e-6)
    assert comp.objective <= exact.objective * 1.02
    assert comp.objective == pytest.approx(prob.objective(comp.x), rel=1e-12)


def test_compression_is_shared_by_problems_on_the_same_rows():
    a, s = _slab(5)
    prob = op.Problem(a, s, TERMS)
    settings = op.Compression(rel_threshold=0.05, rank=2)
    assert prob.with_terms(TERMS[::-1]).compressed(settings) is prob.compressed(settings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rel_threshold": 1.0}, "rel_threshold"),
        ({"rel_threshold": -0.1}, "rel_threshold"),
        ({"rank": -1}, "rank"),
        ({"rank": 2.5}, "rank"),
    ],
)
def test_bad_compression_settings_are_refused(kwargs, match):
    with pytest.raises(op.InvalidProblemError, match=match):
        op.Compression(**kwargs)


def test_dpp_resolve_skips_compilation(compile_calls):
    calls = compile_calls
    a, s = _slab(6)
    prob = op.Problem(a, s, TERMS)
    form = op.CvxpyFormulation(prob, compressed=prob.compressed(op.Compression(rank=3)))
    assert form.cvx_problem.is_dpp()
    r1 = op.solve_cvxpy(prob, formulation=form)
    assert len(calls) == 1
    heavier = [op.Overdose("OAR", 12.0, weight=5), *TERMS[3:]]
    prob2 = prob.with_terms([*TERMS[:2], *heavier])
    r2 = op.solve_cvxpy(prob2, formulation=form)
    assert len(calls) == 1  # the re-solve applied the new parameters only
    assert r2.extras["is_dpp"]
    fresh = op.solve_cvxpy(prob2, compression=op.Compression(rank=3))
    assert r2.objective == pytest.approx(fresh.objective, rel=1e-5)
    assert r2.term_values["Overdose(OAR > 12 Gy)"] < r1.term_values["Overdose(OAR > 15 Gy)"]


def test_compressed_solve_has_no_parameter_per_dose_row(compiled_tensors):
    """Issue 18: the compressed solve holds its dose offset as a constant, with dose
    corrections too. A parameter of one entry per dose row made CVXPY densify the
    quadratic objective's coefficients against every parameter entry (8.38 GiB asked on an
    8 mm C-shape of 33,540 rows, tests/rtplan/planning)."""
    a, s = _slab(7)
    prob = op.Problem(a, s, TERMS, dose_offset=np.full(a.shape[0], 0.5))
    settings = op.Compression(rel_threshold=0.02, rank=4)
    op.solve_cvxpy(prob, compression=settings)
    ((_, n_par),) = compiled_tensors  # the weights and dose levels only
    assert n_par <= 2 * len(TERMS) < a.shape[0] // 10
    op.solve_cvxpy(prob, compression=settings, corrections=2)
    assert [n for _, n in compiled_tensors[1:]] == [n_par] * 3  # one problem per solve


def test_dose_corrections_through_a_parameter_or_constants_agree():
    """A formulation built with ``offset_parameter=True`` re-solves through its parameter;
    without one, each correction compiles a formulation holding the corrected offset:
    the same corrected solution."""
    a, s = _slab(7)
    prob = op.Problem(a, s, TERMS)
    compressed = prob.compressed(op.Compression(rel_threshold=0.02, rank=4))
    form = op.CvxpyFormulation(prob, compressed=compressed, offset_parameter=True)
    by_parameter = op.solve_cvxpy(prob, formulation=form, corrections=2)
    by_constant = op.solve_cvxpy(
        prob, compression=op.Compression(rel_threshold=0.02, rank=4), corrections=2
    )
    assert by_constant.objective == pytest.approx(by_parameter.objective, rel=1e-6)
    np.testing.assert_allclose(by_constant.x, by_parameter.x, rtol=1e-4, atol=1e-6)


def test_constant_offset_checked():
    a, s = _slab(7)
    prob = op.Problem(a, s, TERMS)
    with pytest.raises(op.InvalidProblemError, match="constant_offset"):
        op.CvxpyFormulation(prob, constant_offset=np.zeros(3), offset_parameter=False)
    with pytest.raises(op.InvalidProblemError, match="constant_offset"):
        op.CvxpyFormulation(prob, constant_offset=np.zeros(prob.union_rows.size))


def test_dose_corrections_compile_one_problem_each(compile_calls):
    calls = compile_calls
    a, s = _slab(7)
    prob = op.Problem(a, s, TERMS)
    settings = op.Compression(rel_threshold=0.02, rank=4)
    plain = op.solve_cvxpy(prob, compression=settings)
    n_compiled = len(calls)
    corrected = op.solve_cvxpy(prob, compression=settings, corrections=3)
    assert len(calls) == 5 * n_compiled  # a constant offset per solve: four compilations
    err = [r.extras["compression"]["max_dose_error_gy"] for r in (plain, corrected)]
    assert err[1] < 0.2 * err[0]
