"""``optimizers.soft_dose_objective``: the first-order solver's objective of a given dose.

Checked against ``Problem.objective`` (terms whose surrogate is the term itself), against
central differences of itself (the smooth CVaR of a dose-volume term included) and for its
refusals.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import optimizers as op


@pytest.fixture
def problem():
    rng = np.random.default_rng(2)
    matrix = sp.random(60, 8, density=0.5, random_state=3, format="csr") * 2.0
    structures = {"PTV": np.arange(0, 30), "OAR": np.arange(25, 60)}
    terms = [
        op.Underdose("PTV", 60.0, weight=2.0),
        op.Overdose("PTV", 66.0),
        op.MaxDVH("OAR", 20.0, 30.0, weight=0.5),
        op.MeanDose("OAR", 10.0, weight=0.3),
    ]
    weights = {"OAR": rng.uniform(0.5, 1.0, 35)}
    return op.Problem(matrix, structures, terms, voxel_weights=weights), rng


def test_value_and_gradient(problem):
    prob, rng = problem
    x = rng.uniform(0.0, 40.0, 8)
    dose = prob.dose(x)
    value, gradient = op.soft_dose_objective(prob, dose)
    plain = op.Problem(prob.matrix, prob.structures, prob.terms[:2])
    assert op.soft_dose_objective(plain, dose)[0] == pytest.approx(plain.objective(x), rel=1e-12)
    h = 1e-5
    for i in rng.choice(60, 12, replace=False):
        step = np.zeros(60)
        step[i] = h
        fd = (
            op.soft_dose_objective(prob, dose + step)[0]
            - op.soft_dose_objective(prob, dose - step)[0]
        ) / (2 * h)
        assert gradient[i] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_refusals(problem):
    prob, _ = problem
    with pytest.raises(op.InvalidProblemError, match="dose_gy"):
        op.soft_dose_objective(prob, np.zeros(3))
    smooth = op.Problem(prob.matrix, prob.structures, [*prob.terms, op.TotalMU(weight=1.0)])
    with pytest.raises(op.InvalidProblemError, match="fluence terms"):
        op.soft_dose_objective(smooth, np.zeros(60))
