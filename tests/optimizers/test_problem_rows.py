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
