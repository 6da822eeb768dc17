"""The union of a problem's rows: no copy of a matrix whose every row it uses (issue 12 item
6, memory on patient-sized matrices), and never a change to the caller's matrix."""

import numpy as np
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op


def _reversed_rows(a: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix with the column indices of every row stored in descending order."""
    data, indices = a.data.copy(), a.indices.copy()
    for lo, hi in zip(a.indptr[:-1], a.indptr[1:], strict=True):
        data[lo:hi], indices[lo:hi] = data[lo:hi][::-1], indices[lo:hi][::-1]
    return sp.csr_matrix((data, indices, a.indptr.copy()), shape=a.shape)


def test_union_of_every_row_is_the_matrix_itself():
    a, s = slab_problem(np.random.default_rng(0), n_side=12, n_beamlets=12)
    x = np.linspace(1.0, 2.0, a.shape[1])
    every = op.Problem(a, s, [op.Overdose("BODY", 1.0)], matrix_dtype=np.float32)
    assert every.a_union is a
    np.testing.assert_allclose(every.union_dose(x), a.toarray() @ x, rtol=1e-6)
    part = op.Problem(a, s, [op.Overdose("PTV", 1.0)], matrix_dtype=np.float32)
    np.testing.assert_array_equal(part.a_union.toarray(), a.toarray()[s["PTV"]])
    as64 = op.Problem(a, s, [op.Overdose("BODY", 1.0)])  # float64: a converted copy
    assert as64.a_union.dtype == np.float64 and a.dtype == np.float32


def test_unsorted_matrix_is_sorted_in_a_copy_not_in_place():
    a, s = slab_problem(np.random.default_rng(1), n_side=12, n_beamlets=12)
    u = _reversed_rows(a)
    stored = u.indices.copy()
    assert not u.has_sorted_indices
    prob = op.Problem(u, s, [op.Overdose("BODY", 1.0)], matrix_dtype=np.float32)
    assert prob.a_union is not u and prob.a_union.has_sorted_indices
    np.testing.assert_array_equal(u.indices, stored)
    np.testing.assert_array_equal(prob.a_union.toarray(), a.toarray())


def test_levels_keep_one_row_sliced_copy_at_a_time():
    """Each lexicographic level's rows are a copy of most of a patient's matrix (a thorax's
    lungs: 1 GB): a later level's copy replaces the earlier one in the shared cache, while a
    problem still in use keeps its own rows and products."""
    a, s = slab_problem(np.random.default_rng(2), n_side=12, n_beamlets=12)
    x = np.linspace(1.0, 2.0, a.shape[1])
    base = op.Problem(a, s, [op.Overdose("BODY", 1.0)], matrix_dtype=np.float32)
    first = base.with_terms([op.Overdose("PTV", 1.0)])
    first_blocks = first.row_blocks()
    second = base.with_terms([op.Overdose("OAR", 1.0)])
    cache = base._cache
    copies = [a_u for _, a_u in cache._by_key.values() if a_u is not a]
    assert len(copies) == 1 and copies[0] is second.a_union
    # the first problem still computes its own rows' dose, and rebuilds its blocks
    np.testing.assert_allclose(first.union_dose(x), a.toarray()[s["PTV"]] @ x, rtol=1e-6)
    again = first.row_blocks()
    assert again is not first_blocks
    assert again.sparse.shape[0] + again.dense_pos.size == s["PTV"].size


def test_levels_on_the_whole_matrix_share_one_split():
    """Levels on other structures whose rows are all the matrix's (a thorax's levels) split
    it once: one dense block held, not one per level, and the products of each level are
    those of the matrix."""
    a, s = slab_problem(np.random.default_rng(4), n_side=12, n_beamlets=12)
    structures = dict(s, REST=np.setdiff1d(s["BODY"], s["PTV"]))
    x = np.linspace(1.0, 2.0, a.shape[1])
    base = op.Problem(a, structures, [op.Overdose("BODY", 1.0)], matrix_dtype=np.float32)
    first = base.with_terms([op.Overdose("BODY", 1.0)])
    second = base.with_terms([op.Overdose("REST", 1.0), op.Underdose("PTV", 1.0)])
    assert first.a_union is a and second.a_union is a
    blocks = first.row_blocks()
    assert blocks.dense is not None  # the slab's rows are dense enough to test the block
    assert second.row_blocks() is blocks
    assert len(base._cache._blocks) == 1
    whole = np.zeros(a.shape[0])
    whole[blocks.dense_pos] = blocks.dense @ x
    whole[blocks.sparse_pos] = blocks.sparse @ x
    np.testing.assert_allclose(whole, a.toarray() @ x, rtol=1e-6)
    # a level on a row-sliced copy keeps its own split
    part = base.with_terms([op.Overdose("PTV", 1.0)])
    assert part.row_blocks() is not blocks
    assert part.row_blocks().sparse.shape[0] + part.row_blocks().dense_pos.size == s["PTV"].size


def test_rows_with_most_entries_use_the_matrix_itself():
    """A level whose rows hold at least FULL_MATRIX_NNZ_FRACTION of the entries works on the
    whole matrix (no copy); its structures' doses are the same rows of the full product."""
    from optimizers._problem import FULL_MATRIX_NNZ_FRACTION

    a, s = slab_problem(np.random.default_rng(3), n_side=12, n_beamlets=12)
    counts = np.diff(a.indptr)
    rest = np.setdiff1d(s["BODY"], s["PTV"])
    share = counts[rest].sum() / a.nnz
    assert share >= FULL_MATRIX_NNZ_FRACTION  # the slab's target is small
    structures = dict(s, REST=rest)
    x = np.linspace(1.0, 2.0, a.shape[1])
    prob = op.Problem(a, structures, [op.Overdose("REST", 1.0)], matrix_dtype=np.float32)
    assert prob.a_union is a
    d = prob.union_dose(x)
    np.testing.assert_allclose(prob.term_dose(prob.terms[0], d), a.toarray()[rest] @ x, rtol=1e-6)
    small = op.Problem(a, structures, [op.Overdose("PTV", 1.0)], matrix_dtype=np.float32)
    assert small.a_union is not a and small.a_union.shape[0] == s["PTV"].size


def test_preconditioner_squares_blocks_of_rows_as_the_whole_matrix(monkeypatch):
    """``(A ** 2).T @ h`` one block of rows at a time (no squared copy of the matrix), with
    blocks of ~50 entries, a zero stretch of ``h`` skipped and empty rows, against scipy
    squaring the whole matrix."""
    from optimizers import _line_search

    rng = np.random.default_rng(3)
    a = sp.random(600, 40, density=0.1, format="csr", dtype=np.float32, random_state=rng)
    a = sp.vstack([sp.csr_matrix((5, 40), dtype=np.float32), a]).tocsr()  # empty first rows
    h = rng.random(a.shape[0])
    h[100:300] = 0.0
    exact = np.asarray(a.power(2).T @ h)
    monkeypatch.setattr(_line_search, "SQUARED_BLOCK_NNZ", 50)
    np.testing.assert_allclose(_line_search.squared_transpose_product(a, h), exact, rtol=1e-12)
    dense = _line_search.squared_transpose_product(a.toarray(), h)
    np.testing.assert_allclose(dense, exact, rtol=1e-6)
