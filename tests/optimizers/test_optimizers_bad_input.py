"""Bad input is refused with errors that say what was wrong and how to fix it."""

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op


@pytest.fixture
def data():
    return slab_problem(np.random.default_rng(0), n_side=12, n_beamlets=12)


def test_nan_in_matrix(data):
    a, s = data
    a = a.copy()
    a.data[3] = np.nan
    with pytest.raises(op.InvalidProblemError, match=r"1 NaN or infinite entries"):
        op.Problem(a, s, [op.Overdose("PTV", 10)])


def test_negative_in_matrix(data):
    a, s = data
    a = a.copy()
    a.data[:2] = -0.5
    with pytest.raises(op.InvalidProblemError, match=r"2 negative entries"):
        op.Problem(a, s, [op.Overdose("PTV", 10)])


def test_dense_matrix_refused(data):
    a, s = data
    with pytest.raises(op.InvalidProblemError, match="scipy.sparse"):
        op.Problem(a.toarray(), s, [op.Overdose("PTV", 10)])


def test_index_out_of_range(data):
    a, s = data
    s = dict(s, OAR=np.array([1, 2, a.shape[0]]))
    with pytest.raises(
        op.InvalidProblemError, match=rf"`OAR`: voxel index {a.shape[0]} is out of range"
    ):
        op.Problem(a, s, [op.Overdose("PTV", 10)])


def test_goal_on_empty_structure(data):
    a, s = data
    s = dict(s, CORD=np.array([], dtype=int))
    op.Problem(a, s, [op.Overdose("PTV", 10)])  # an unused empty structure is fine
    with pytest.raises(op.InvalidProblemError, match=r"MaxDose\(CORD <= 45 Gy\).*no voxels"):
        op.Problem(a, s, [op.Overdose("PTV", 10), op.MaxDose("CORD", 45, hard=True)])


def test_unknown_structure_lists_available(data):
    a, s = data
    with pytest.raises(op.InvalidProblemError, match="available: BODY, OAR, PTV"):
        op.Problem(a, s, [op.Overdose("LUNG", 10)])


def test_bad_voxel_weights(data):
    a, s = data
    with pytest.raises(op.InvalidProblemError, match="expected"):
        op.Problem(a, s, [op.Overdose("PTV", 10)], voxel_weights={"PTV": np.ones(3)})


def test_unknown_solver_and_method(data):
    a, s = data
    p = op.Problem(a, s, [op.Overdose("PTV", 10)])
    with pytest.raises(op.InvalidProblemError, match="CLARABEL, OSQP, SCS, MOSEK"):
        op.solve_cvxpy(p, solver="GUROBI")
    with pytest.raises(op.InvalidProblemError, match="first_order, cvxpy"):
        op.solve(p, method="newton")


@pytest.mark.parametrize("method", ["cvxpy", "first_order"])
def test_contradictory_hard_constraints_are_named(data, method):
    a, s = data
    terms = [
        op.SquaredDeviation("PTV", 40),
        op.MinDose("PTV", 30, hard=True),
        op.MaxDose("PTV", 20, hard=True),
        op.MaxDose("OAR", 50, hard=True),
    ]
    opts = {"max_outer": 8} if method == "first_order" else {}
    with pytest.raises(op.InfeasibleError) as info:
        op.solve(op.Problem(a, s, terms), method=method, **opts)
    msg = str(info.value)
    assert "MinDose(PTV >= 30 Gy)" in msg and "MaxDose(PTV <= 20 Gy)" in msg
    assert "MaxDose(OAR <= 50 Gy)" not in msg


def test_unbounded_is_explained(data):
    a, s = data
    with pytest.raises(op.InfeasibleError, match=r"unbounded.*GEUD\(PTV, a=-5\)"):
        op.solve_cvxpy(op.Problem(a, s, [op.GEUD("PTV", -5)]))


def test_matrix_is_not_mutated(data):
    a, s = data
    before = a.copy()
    op.solve_first_order(op.Problem(a, s, [op.Underdose("PTV", 10), op.Overdose("PTV", 11)]))
    assert (a != before).nnz == 0 and a.dtype == np.float32
    assert sp.isspmatrix_csr(a) or a.format == "csr"
