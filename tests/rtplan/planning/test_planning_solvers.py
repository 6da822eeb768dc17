"""The automatic planner with both optimisers on the TG-119 C-shape (coarse settings).

The first-order translation uses dose-volume quadratics (Wu & Mohan) that exempt the part of
a structure a goal lets miss; the CVXPY translation uses the convex, conservative CVaR
surrogates. Both must produce a deliverable, normalised plan, and the exemptions must buy a
better trade-off: at the same coverage (both normalised to PTV D95 = 50 Gy) the first-order
plan has a lower core dose and a lower PTV hot spot than the CVaR plan.
"""

from dataclasses import replace

import pytest

from rtplan.planning import plan_patient
from rtplan.protocols import load_protocol

# both solvers plan the C-shape at clinical settings: ~90 s on 2 cores
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plans(cshape_patient):
    out = {}
    for solver in ("first_order", "cvxpy"):
        protocol = load_protocol("tg119_cshape").with_overrides(
            dose_grid_mm=8.0, n_beams=5, solver=solver, max_iterations=300
        )
        # the comparison is of the two goal translations: no implicit safety terms, and
        # these coarse plans need ~13 % normalisation (beyond the default 5 % cap)
        nets_off = replace(
            protocol.safety,
            implicit_target_limits=False,
            target_floor_pct=0.0,
            hotspot_pct=0.0,
            alara_weight=0.0,
            normalization_cap_pct=20.0,
        )
        protocol = replace(protocol, safety=nets_off)
        out[solver] = plan_patient(cshape_patient, protocol, progress=False)
    return out


def _values(result):
    return {
        f"{r.goal.structure} {r.goal.metric.text} {r.goal.comparison} {r.goal.level:g} Gy": r.value
        for r in result.goal_table
    }


def test_both_solvers_give_normalised_deliverable_plans(plans):
    for result in plans.values():
        values = _values(result)
        assert values["PTV D95% >= 50 Gy"] == pytest.approx(50.0, abs=0.05)
        assert result.plan.beams and all(b.segments for b in result.plan.beams)
        assert result.plan.total_mu > 0


def test_dose_volume_exemptions_beat_the_cvar_translation(plans):
    fo, cvx = _values(plans["first_order"]), _values(plans["cvxpy"])
    # the goals both translations optimise (the core D5 reading is reported, not planned for)
    for label in ("Core D10% <= 10 Gy", "PTV D10% <= 55 Gy"):
        assert fo[label] < cvx[label], label
