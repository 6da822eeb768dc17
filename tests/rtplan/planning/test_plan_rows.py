"""Planning keeps only the influence rows the optimiser reads, without copying the
matrix's entries (issue 12 item 6: the thorax matrix is 1.2 GB)."""

import numpy as np
import scipy.sparse as sp

from rtplan.planning._plan import _nonempty_rows


def _matrix_on_rows(rng, n_rows, keep):
    a = sp.random(n_rows, 9, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    on = np.zeros(n_rows, dtype=bool)
    on[keep] = True
    a = sp.csr_matrix(a.multiply(on[:, None]))
    a.eliminate_zeros()
    return a


def test_rows_of_a_matrix_empty_elsewhere_share_its_entries():
    rng = np.random.default_rng(3)
    keep = np.sort(rng.choice(200, 60, replace=False))
    a = _matrix_on_rows(rng, 200, keep)
    rows = _nonempty_rows(a, keep)
    np.testing.assert_array_equal(rows.toarray(), a.toarray()[keep])
    assert np.shares_memory(rows.data, a.data) and np.shares_memory(rows.indices, a.indices)


def test_entries_outside_the_rows_fall_back_to_a_copy():
    rng = np.random.default_rng(4)
    keep = np.sort(rng.choice(200, 60, replace=False))
    a = _matrix_on_rows(rng, 200, np.arange(200))  # every row holds entries
    rows = _nonempty_rows(a, keep)
    np.testing.assert_array_equal(rows.toarray(), a.toarray()[keep])
    assert not np.shares_memory(rows.data, a.data)
