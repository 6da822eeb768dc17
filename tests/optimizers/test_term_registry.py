"""A new term added through the documented route (docs/interfaces.md, "Adding a term"):
a Term subclass that declares its maths, a CVXPY canonicaliser and a first-order surrogate
registered with ``optimizers.register_term``; both solvers then solve with it and agree."""

import numpy as np
import pytest
from _optimizers_synth import slab_problem

import optimizers as op


class MeanDoseDeviation(op.Term):
    """Squared deviation of the mean dose from a level: ``(sum_i p_i d_i - dose_gy)**2``
    (Gy²), convex and smooth (the example of docs/interfaces.md)."""

    def __init__(self, structure, dose_gy, *, weight=1.0, label=None):
        super().__init__(structure, dose_gy, weight=weight, label=label)

    def value(self, dose_gy, p):
        return float((p @ dose_gy - self.dose_gy) ** 2)

    def gradient(self, dose_gy, p):
        return 2.0 * (p @ dose_gy - self.dose_gy) * p


def canon_mean_dose_deviation(term, ctx):
    # the level is a parameter: ctx.affine keeps the weighted square DPP
    return ctx.cp.square(ctx.affine(ctx.p @ ctx.dose() - ctx.level()))


op.register_term(MeanDoseDeviation, cvxpy=canon_mean_dose_deviation, first_order=op.Surrogate())


class _Unregistered(op.Term):
    def value(self, dose_gy, p):
        return 0.0

    def gradient(self, dose_gy, p):
        return 0.0 * dose_gy


def _problem(oar_gy):
    """The slab target held at 60 Gy against a body overdose above 40 Gy, and the new term
    pulling the organ's mean dose (30 Gy without it) down to ``oar_gy``: a trade-off."""
    a, s = slab_problem(np.random.default_rng(11), n_side=16, n_beamlets=24)
    terms = [
        op.Underdose("PTV", 60.0),
        op.Overdose("PTV", 60.0),
        op.Overdose("BODY", 40.0, weight=0.1),
        MeanDoseDeviation("OAR", oar_gy, weight=0.5),
    ]
    return a, s, op.Problem(a, s, terms)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    d, w = rng.uniform(0.0, 30.0, 40), rng.uniform(0.1, 1.0, 40)
    p = w / w.sum()
    term = MeanDoseDeviation("OAR", 12.0)
    g = term.gradient(d, p)
    step = 1e-6
    fd = [
        (term.value(d + step * e, p) - term.value(d - step * e, p)) / (2 * step)
        for e in np.eye(d.size)
    ]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("oar_gy", [2.0, 10.0])
def test_registered_term_solves_with_both_solvers_and_they_agree(oar_gy):
    a, s, prob = _problem(oar_gy)
    fo = op.solve(prob, method="first_order", tol=1e-12)
    cv = op.solve(prob, method="cvxpy")
    assert fo.success and cv.success
    assert fo.objective == pytest.approx(cv.objective, rel=1e-3, abs=1e-6)
    # the term's reported value is the squared miss of the OAR's mean dose, by hand
    for r in (fo, cv):
        mean_gy = float(np.mean(a[s["OAR"]] @ r.x))
        label = "MeanDoseDeviation(OAR)"
        assert r.term_values[label] == pytest.approx((mean_gy - oar_gy) ** 2, rel=1e-9, abs=1e-12)
    # the term acts: without it the OAR's mean dose is elsewhere
    free = op.solve(prob.with_terms(prob.terms[:3]), method="cvxpy")
    assert abs(np.mean(a[s["OAR"]] @ free.x) - oar_gy) > abs(np.mean(a[s["OAR"]] @ cv.x) - oar_gy)


def test_reformulation_updates_the_registered_terms_level():
    """Its level is a CVXPY parameter: a re-solve with a new level reuses the formulation."""
    _, _, prob = _problem(2.0)
    form = op.CvxpyFormulation(prob)
    first = op.solve_cvxpy(prob, formulation=form)
    moved = prob.with_terms([*prob.terms[:3], MeanDoseDeviation("OAR", 10.0, weight=0.5)])
    again = op.solve_cvxpy(moved, formulation=form)
    fresh = op.solve_cvxpy(moved)
    assert again.objective == pytest.approx(fresh.objective, rel=1e-5, abs=1e-8)
    assert abs(again.objective - first.objective) > 1.0  # the level really changed


@pytest.mark.parametrize("method", ["first_order", "cvxpy"])
def test_unregistered_term_is_refused_by_name(method):
    a, s, _ = _problem(2.0)
    prob = op.Problem(a, s, [op.Underdose("PTV", 60.0), _Unregistered("OAR")])
    with pytest.raises(op.InvalidProblemError, match=r"_Unregistered.*register_term"):
        op.solve(prob, method=method)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"term_type": int, "first_order": op.Surrogate()}, TypeError, "`term_type`"),
        ({"term_type": _Unregistered, "cvxpy": 3}, TypeError, "`cvxpy`"),
        ({"term_type": _Unregistered, "first_order": "exact"}, TypeError, "`first_order`"),
        ({"term_type": _Unregistered}, ValueError, "`cvxpy`, `first_order`"),
    ],
)
def test_register_term_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        op.register_term(**kwargs)
