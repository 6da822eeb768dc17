"""Solver status that tells the truth (issue 12, item 5): a hard constraint is declared
infeasible only with a certificate; a feasible one gets the extra rounds it needs; a solve
that ran out of work says "did not converge", with its residual, and does not raise."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _optimizers_synth import slab_problem

import optimizers as op


def _one_voxel_per_beamlet(n: int = 30):
    """Beamlet j gives 0.01 Gy/MU to voxel j only: any dose >= 0 is reachable, so the least
    violation of contradictory bounds is known in closed form."""
    a = sp.csr_matrix(0.01 * sp.eye(n, dtype=np.float32))
    target = np.arange(5, 15)
    organ = np.arange(0, 20)  # holds the whole target
    return a, {"T": target, "O": organ}


@pytest.mark.parametrize("method", ["first_order", "cvxpy"])
def test_target_inside_organ_with_lower_max_is_proven_infeasible(method):
    a, s = _one_voxel_per_beamlet()
    terms = [
        op.SquaredDeviation("T", 50.0),
        op.MinDose("T", 50.0, hard=True),
        op.MaxDose("O", 40.0, hard=True),
    ]
    with pytest.raises(op.InfeasibleError, match=r"MinDose\(T >= 50 Gy\)") as info:
        op.solve(op.Problem(a, s, terms), method=method)
    if method == "cvxpy":  # Clarabel's own infeasibility status is the evidence
        return
    cert = info.value.certificate
    assert cert.infeasible and cert.verdict == "infeasible"
    # minimise s_T + s_O with 50 (1 - s_T) <= 40 (1 + s_O): s_T = 10/50 = 0.2, s_O = 0
    assert cert.min_violation == pytest.approx(0.2, rel=1e-5)
    assert cert.relaxed == pytest.approx({"MinDose(T >= 50 Gy) [hard]": 0.2}, rel=1e-5)
    assert cert.binding == ("MaxDose(O <= 40 Gy) [hard]",)
    assert "no fluence x >= 0 meets them" in str(info.value)


def test_certificate_on_a_subsample_is_a_relaxation():
    """On the slab the organ holds the target and its penumbra: the least violation is at
    least the 0.2 of uniform doses, and a certificate from fewer rows (a relaxation) can
    only be smaller than the one from every row, yet still proves the conflict."""
    a, s = slab_problem(np.random.default_rng(0))
    ptv = s["PTV"]
    s = dict(s, ORG=np.union1d(ptv, ptv + 1))
    prob = op.Problem(
        a,
        s,
        [
            op.SquaredDeviation("PTV", 50.0),
            op.MinDose("PTV", 50, hard=True),
            op.MaxDose("ORG", 40, hard=True),
        ],
    )
    full = op.certify_hard_constraints(prob)
    few = op.certify_hard_constraints(prob, max_nonzeros=500)
    assert full.n_rows == full.n_rows_total and few.n_rows < full.n_rows_total
    assert full.infeasible and few.infeasible
    assert 0.2 <= few.min_violation <= full.min_violation * (1 + 1e-6)


def _active_cap_problem():
    """Squared deviation from 50 Gy in the slab target with a hard organ cap that binds (6 Gy)."""
    a, s = slab_problem(np.random.default_rng(0))
    terms = [op.SquaredDeviation("PTV", 50.0), op.MaxDose("OAR", 6.0, hard=True)]
    return op.Problem(a, s, terms)


def test_iteration_capped_solve_reports_did_not_converge_with_its_residual():
    prob = _active_cap_problem()
    r = op.solve_first_order(prob, max_iter=400, hard_extra_iter=0)
    assert r.status == op.Status.ITERATION_LIMIT and not r.success
    viol = r.extras["violations"]["MaxDose(OAR <= 6 Gy) [hard]"]
    assert viol > 0.01 and r.extras["max_violation"] == viol
    assert r.message.startswith("Did not converge")
    assert f"largest relative violation {viol:.3g}" in r.message
    # the residual is the organ's maximum dose above its cap, relative to the cap
    d_oar = prob.dose(r.x)[prob.structures["OAR"]]
    assert viol == pytest.approx((d_oar.max() - 6.0) / 6.0, rel=1e-6)
    # evidence that it is not a contradiction: a fluence meeting the cap exists
    assert r.extras["certificate"]["verdict"] == "feasible"
    assert "not shown infeasible" in r.message


def test_feasible_hard_constraint_is_met_after_the_extra_rounds():
    prob = _active_cap_problem()
    ref = op.solve_cvxpy(prob)  # the independent check
    free = op.solve_cvxpy(prob.with_terms([op.SquaredDeviation("PTV", 50.0)]))
    assert ref.objective > 5 * free.objective  # the cap binds
    r = op.solve_first_order(prob, max_iter=400)
    assert r.extras["extended"] and r.n_iter > 400
    assert r.status == op.Status.OPTIMAL
    assert r.extras["max_violation"] <= 1e-4
    assert r.objective == pytest.approx(ref.objective, rel=2e-3)
