"""The augmented-Lagrangian penalty of a lexicographic level bound: its value and gradient
from one evaluation of the earlier level's terms, the same numbers as the value-only
evaluation and a separate gradient give."""

import numpy as np
from _optimizers_synth import slab_problem

import optimizers as op
from optimizers._array_backend import array_backend
from optimizers._augmented_lagrangian import AugmentedLagrangian
from optimizers._compiled import CompiledTerms
from optimizers._terms import _LevelBound


def _level_one_penalty():
    """Level 1 of a two-level problem (MeanDose against level 0's PTV and OAR terms, whose
    bound is set below their value so that the penalty is active) and its penalty."""
    a, s = slab_problem(np.random.default_rng(6), n_side=12, n_beamlets=12)
    level0 = [op.Underdose("PTV", 50.0), op.Overdose("PTV", 52.0), op.Overdose("OAR", 5.0)]
    bound = _LevelBound(level0, 1.0, 0)
    prob = op.Problem(a, s, [op.MeanDose("BODY"), bound], matrix_dtype=np.float32)
    comp = CompiledTerms(prob, array_backend(prob, "numpy"))
    al = AugmentedLagrangian(comp, rho0=10.0)
    al.lam[0][:] = 0.5
    x = np.linspace(20.0, 60.0, a.shape[1])
    return al, comp, bound, prob.union_dose(x), x


def test_level_bound_penalty_is_the_value_only_residual_and_its_gradient():
    al, comp, bound, d, x = _level_one_penalty()
    total, g_u, g_x = al.value_grad(d, x, np.zeros_like(d), None)
    # reference: the residual from the value-only pass, the gradient from its own pass
    f0 = comp._accumulate(bound, 1.0, d, x, 0.0, None, None, False)[0]
    c = f0 - bound.bound
    assert c > 0  # the bound is violated: the penalty is active
    rho, lam = al.rho[0], float(al.lam[0][0])
    s = max(c + lam / rho, 0.0)
    assert total == 0.5 * rho * (s * s - (lam / rho) ** 2)
    _, gq_u, _ = comp._accumulate(bound, 1.0, d, x, 0.0, np.zeros_like(d), None, True)
    np.testing.assert_array_equal(g_u, rho * s * gq_u)
    assert g_x is None


def test_level_bound_terms_are_evaluated_once_per_gradient_evaluation(monkeypatch):
    al, _, _, d, x = _level_one_penalty()
    calls = []
    original = AugmentedLagrangian._level

    def counted(self, t, d_, x_, want_grad):
        calls.append(want_grad)
        return original(self, t, d_, x_, want_grad)

    monkeypatch.setattr(AugmentedLagrangian, "_level", counted)
    al.value_grad(d, x, np.zeros_like(d), None)
    assert calls == [True]  # before: a value-only pass, then a pass with gradients
    calls.clear()
    al.value_grad(d, x, None, None, want_grad=False)
    assert calls == [False]
