"""A physicist's own CVXPY term in the automatic planner (issue 18 item 2).

A generalised equivalent uniform dose limit on the TG-119 C-shape's core, planned end to end
on a coarse phantom (10 mm beamlets, 8 mm dose grid, five beams, no helper terms: a few
seconds with CVXPY). The check is independent of the optimiser: the gEUD of the final
aperture dose, computed by hand from the dose grid and the core's occupancy, sits on the
limit, while the same plan without the term is well above it. Refusals: each names the
term, the structure, the priority or the solver, before any dose is computed where it can.
"""

from __future__ import annotations

import re
from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest

import optimizers as op
from rtplan.errors import InputError, StructureError
from rtplan.phantoms import make_phantom
from rtplan.planning import PlanOptions, plan_patient
from rtplan.protocols import load_protocol

A = 8.0
LIMIT_GY = 18.0
LABEL = "gEUD(Core, a=8) <= 18 Gy"


def core_geud(doses, x):
    p = doses.weights("Core")
    return cp.pnorm(cp.multiply(p ** (1 / A), doses["Core"]), A)


def geud_limit(doses, x):
    return [core_geud(doses, x) <= LIMIT_GY]


@pytest.fixture(scope="module")
def patient():
    return make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)


@pytest.fixture(scope="module")
def protocol():
    p = load_protocol("tg119_cshape").with_overrides(dose_grid_mm=8.0, n_beams=5)
    p = replace(p, beams=replace(p.beams, beamlet_width_mm=10.0, beamlet_height_mm=10.0))
    # the CVXPY solve at this size takes seconds without the helper and safety terms
    nets = dict(implicit_target_limits=False, target_floor_pct=0.0, hotspot_pct=0.0)
    safety = replace(p.safety, alara_weight=0.0, nto_weight=0.0, **nets)
    helpers = replace(p.helpers, ring=False, normal_tissue=False)
    return replace(p, safety=safety, helpers=helpers)


def geud_by_hand(result) -> float:
    """gEUD of the final dose before normalisation, occupancy-weighted, numpy."""
    occ = result.patient.structures[result.mapping["Core"]].occupancy(result.dose_grid)
    w = occ[occ > 0].astype(np.float64)
    d = result.dose_gy[occ > 0].astype(np.float64) / result.normalization
    return float((np.sum(w * d**A) / w.sum()) ** (1 / A))


@pytest.fixture(scope="module")
def plans(patient, protocol):
    term = op.CvxpyTerm(geud_limit, "Core", hard=True, label=LABEL)
    base = plan_patient(patient, protocol, options=PlanOptions(solver="cvxpy"), progress=False)
    custom = plan_patient(patient, protocol, progress=False, custom_terms={1: [term]})
    return base, custom


def test_geud_limit_holds_on_the_final_dose(plans):
    base, custom = plans
    assert geud_by_hand(base) > 1.2 * LIMIT_GY  # without the term the core is hotter
    # the optimiser met it (largest violation, Gy) ...
    assert custom.optimization.final.term_values[LABEL] <= 1e-3
    # ... and on the delivered dose (sequenced apertures with the MLC's transmission, leaf
    # gap and tongue-and-groove, which the optimiser's beamlets do not see; normalised) it
    # holds within 1 % of Rx, or the plan says by how much it is exceeded
    delivered = geud_by_hand(custom) * custom.normalization
    excess = delivered - LIMIT_GY
    flagged = [w for w in custom.warnings if w.code == "custom_term_final_dose"]
    tol_gy = 0.01 * custom.protocol.prescription.total_dose_gy
    assert len(flagged) == (excess > tol_gy)
    if flagged:
        assert f"`{LABEL}`" in flagged[0].message
        quoted = re.search(r"violated by ([0-9.]+) ", flagged[0].message)
        assert quoted and float(quoted.group(1)) == pytest.approx(excess, rel=0.01)
    assert custom.optimization.levels[0].labels == base.optimization.levels[0].labels


def test_the_planner_says_it_switched_to_cvxpy(plans):
    base, custom = plans
    assert custom.protocol.optimization.solver == "cvxpy"
    switched = [w for w in custom.warnings if w.code == "solver_switched"]
    expected = (
        f"SOLVER SWITCHED: the first-order solver cannot use the custom term(s) `{LABEL}`; "
        "this plan was optimised with the CVXPY (CLARABEL) solver."
    )
    assert [w.message for w in switched] == [expected]
    summary = custom.plan_summary()  # what plan.json and the report are written from
    assert summary["solver"] == "cvxpy"
    assert summary["warnings"][0] == switched[0].as_dict()
    assert f"WARNING: {switched[0].message}" in custom.summary()  # the CLI's lines
    assert not [w for w in base.warnings if w.code == "solver_switched"]


# ------------------------------------------------------------------------- refusals
def test_term_on_a_missing_structure_is_named(patient, protocol):
    term = op.CvxpyTerm(geud_limit, "Rectum", hard=True, label="gEUD rectum")
    with pytest.raises(
        StructureError,
        match=r"^`custom_terms\[1\]`: gEUD rectum reads structure 'Rectum', which this plan "
        r"does not have; use a protocol structure name or a helper: Core, PTV",
    ):
        plan_patient(patient, protocol, progress=False, custom_terms={1: [term]})


def test_priority_without_goals_is_named(patient, protocol):
    term = op.CvxpyTerm(geud_limit, "Core", hard=True, label="gEUD core")
    with pytest.raises(
        InputError,
        match=r"^`custom_terms`: priority 3 \(gEUD core\) has no goals in protocol .*; use one "
        r"of the priorities \[1\]\.",
    ):
        plan_patient(patient, protocol, progress=False, custom_terms={3: [term]})


def test_non_convex_term_is_named(patient, protocol):
    term = op.CvxpyTerm(lambda d, x: -core_geud(d, x), "Core", label="maximise core gEUD")
    with pytest.raises(
        op.InvalidProblemError,
        match=r"^maximise core gEUD: its objective is not convex by CVXPY's DCP rules.*"
        r"You are trying to minimize a function that is concave",
    ):
        plan_patient(patient, protocol, progress=False, custom_terms={1: [term]})


def test_solver_not_installed_is_named_before_any_work(patient, protocol):
    missing = [s for s in ("MOSEK", "SCS", "OSQP") if s not in op.available_solvers()]
    if not missing:
        pytest.skip("every CVXPY solver rtplan knows is installed here")
    p = protocol.with_overrides(cvxpy_solver=missing[0])
    term = op.CvxpyTerm(geud_limit, "Core", hard=True)
    with pytest.raises(
        op.SolverError, match=rf"^CVXPY solver `{missing[0]}` \(protocol .*\) is not available"
    ):
        plan_patient(patient, p, progress=False, custom_terms={1: [term]})


def test_term_no_solver_can_use_is_named(patient, protocol):
    class Unregistered(op.Term):
        pass

    with pytest.raises(
        InputError, match=r"^`custom_terms`: no solver can use all of them: `Unregistered\(Core\)`"
    ):
        plan_patient(patient, protocol, progress=False, custom_terms={1: [Unregistered("Core")]})


@pytest.mark.parametrize(
    ("custom_terms", "error", "message"),
    [
        ([1, 2], TypeError, r"`custom_terms` must be a mapping of priority -> terms"),
        ({1: ["not a term"]}, TypeError, r"^`custom_terms\[1\]` must be a sequence of optim"),
        ({0: []}, InputError, r"^`custom_terms`: priority 0 must be an integer >= 1"),
    ],
)
def test_bad_custom_terms_argument(patient, protocol, custom_terms, error, message):
    with pytest.raises(error, match=message):
        plan_patient(patient, protocol, progress=False, custom_terms=custom_terms)
