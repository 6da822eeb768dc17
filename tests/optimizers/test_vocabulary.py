"""One vocabulary (issue 14): "solver" for CVXPY's solvers, "backend" for the array library,
deprecated names that warn, one default method, and a status for lexicographic results."""

import inspect

import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op


def test_available_solvers_lists_what_imports():
    names = op.available_solvers()
    assert "CLARABEL" in names  # a declared dependency
    for name in names:
        assert name in {"CLARABEL", "OSQP", "SCS", "MOSEK"}


@pytest.mark.parametrize(
    ("old", "new"),
    [("Prescription", "SquaredDeviation"), ("available_backends", "available_solvers")],
)
def test_deprecated_names_warn_and_name_their_replacement(old, new):
    with pytest.warns(DeprecationWarning, match=rf"optimizers\.{old} is now optimizers\.{new}"):
        obj = getattr(op, old)
    assert old not in op.__all__ and new in op.__all__
    if old == "Prescription":
        assert obj is op.SquaredDeviation
    else:
        assert obj() == op.available_solvers()


def test_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Prescriptions'"):
        op.Prescriptions  # noqa: B018


def test_solve_and_solve_lexicographic_share_their_default_method():
    default = inspect.signature(op.solve).parameters["method"].default
    lex = inspect.signature(op.solve_lexicographic).parameters["method"].default
    assert default == lex == "first_order"


def test_lexicographic_result_has_a_status_in_the_result_vocabulary():
    a, s = slab_problem(np.random.default_rng(4), n_side=12, n_beamlets=16)
    levels = [[op.Underdose("PTV", 60), op.Overdose("PTV", 62)], [op.MeanDose("OAR")]]
    ok = op.solve_lexicographic(a, s, levels, method="cvxpy")
    assert ok.status == op.Status.OPTIMAL and ok.success
    assert ok.message == "All 2 priority levels solved to optimality."
    # a level stopped by its iteration budget: the run takes that level's status
    cut = op.solve_lexicographic(a, s, levels, method="first_order", max_iter=2)
    first_failed = next(lv for lv in cut.levels if not lv.result.success)
    assert cut.status == first_failed.result.status == op.Status.ITERATION_LIMIT
    assert not cut.success
    assert cut.message.startswith(f"Priority level {first_failed.level} of 2 ended iteration_limit")
    assert "status=iteration_limit" in repr(cut)
