"""Optimisation that ends on the final dose (issue 16): the correction loop of the planner.

The influence matrix misses part of the final aperture dose (leaf and jaw transmission
outside the beamlets, scatter beyond its cut-off). The loop re-optimises with
``d = D x + (d_final(x0) - D x0)``; checked here against the final dose the loop itself
computes afterwards: the corrected model must predict the next plan's final dose better
than the uncorrected matrix predicted the first one.
"""

from __future__ import annotations

import json

import pytest
from _tiny_protocol import tiny_cshape_protocol

import rtplan
from rtplan.errors import ProtocolError
from rtplan.planning import plan_patient
from rtplan.protocols import load_protocol
from rtplan.report import plan_json
from rtplan.report._tables import dose_calculation_rows, final_dose_correction_text


@pytest.fixture(scope="module")
def corrected():
    """The C-shape on an 8 mm grid with five beams, one correction (about 10 s)."""
    patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    protocol = load_protocol("tg119_cshape").with_overrides(
        dose_grid_mm=8.0, n_beams=5, max_iterations=60, final_dose_corrections=1
    )
    return plan_patient(patient, protocol, progress=False)


def test_corrected_model_predicts_the_final_dose_better(corrected):
    first, second = corrected.corrections
    assert first["loop"] == 0 and second["loop"] == 1
    # loop 1's correction is the uncorrected matrix's error at the first plan (Gy, in the
    # targets); the corrected model's error at the new plan is what the loop left: smaller
    # on average (not everywhere: re-sequencing moves single voxels by more)
    assert second["target_mean_abs_correction_gy"] > 0.2
    assert second["target_mean_abs_model_error_gy"] < 0.7 * second["target_mean_abs_correction_gy"]
    assert second["target_mean_abs_change_gy"] > 0  # the plan did change


def test_the_pass_kept_is_within_the_cap_meets_the_most_goals_and_is_the_plan(corrected):
    records = corrected.corrections
    kept = [r for r in records if r["kept"]]
    assert len(kept) == 1
    # the passes needing the least normalisation beyond the cap come first, then goals met
    least = min(r["normalization_beyond_cap"] for r in records)
    eligible = [r for r in records if r["normalization_beyond_cap"] == least]
    assert kept[0] in eligible
    most = max(r["goals_met_normalized"] for r in eligible)
    assert kept[0]["goals_met_normalized"] == most
    assert kept[0]["shortfall_normalized"] == min(
        r["shortfall_normalized"] for r in eligible if r["goals_met_normalized"] == most
    )
    # the plan returned is the kept pass: its goal table (normalised) meets that many
    table = corrected.goal_table
    assert len(table) - table.n_failed == kept[0]["goals_met_normalized"]
    for r in records:
        assert set(r["goals"]) == {res.goal.text for res in table}


def test_plan_json_and_report_state_the_corrections(corrected):
    summary = corrected.plan_summary()
    record = json.loads(json.dumps(plan_json(plan_summary=summary, goal_table=None)))
    assert [c["loop"] for c in record["plan"]["corrections"]] == [0, 1]
    rows = dict(dose_calculation_rows(summary))
    line = rows["Final-dose correction"]
    assert "pass 0:" in line and "pass 1:" in line and line.count("[kept]") == 1


def test_zero_corrections_leave_the_plan_uncorrected():
    patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    protocol = load_protocol("tg119_cshape").with_overrides(
        dose_grid_mm=8.0, n_beams=5, max_iterations=60, final_dose_corrections=0
    )
    plain = plan_patient(patient, protocol, progress=False)
    assert plain.corrections == ()
    assert plain.plan_summary()["corrections"] == []
    assert "Final-dose correction" not in dict(dose_calculation_rows(plain.plan_summary()))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("final_dose_corrections", -1, "from 0 .off. to 5, found -1"),
        ("final_dose_corrections", 6, "from 0 .off. to 5, found 6"),
        ("final_dose_corrections", True, "found True"),
        ("final_dose_tolerance_pct", 100.0, "percentage >= 0 and < 100, found 100.0"),
    ],
)
def test_bad_correction_settings_are_refused(key, value, match):
    with pytest.raises(ProtocolError, match=rf"\[optimization\] {key}.*{match}"):
        load_protocol("tg119_cshape").with_overrides(**{key: value})


def test_correction_tolerance_reaches_the_tight_solves_objective(monkeypatch):
    """The correction loop's re-optimisation starts from the last fluence and stops at
    ``CORRECTION_TOL``: from the same start it must reach the objective of a solve run
    to a 100 times tighter tolerance (within 0.1 %) with fewer matrix products.

    (A cold start can end elsewhere: the dose-volume terms are not convex. On this coarse
    C-shape the cold solve ends 3 % lower, on the 3 mm C-shape 0.6 % higher; that choice
    of start is the loop's, unchanged here.)"""
    from rtplan.planning import _plan

    patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    protocol = load_protocol("tg119_cshape").with_overrides(dose_grid_mm=8.0, n_beams=5)
    ctx = _plan._Context(
        patient, protocol, "numpy", None, False, {}, _plan.resolve_beam_model(None)
    )
    for stage in ("structures", "beams", "dose", "optimise", "sequence", "segments"):
        getattr(_plan, f"stage_{stage}")(ctx)
    first = ctx.fluence
    ctx.dose_offset = _plan.dose_correction(
        ctx.matrix, ctx.matrix_rows, ctx.segment_weights.beamlet_fluence_mu, ctx.dose
    )
    _plan.stage_optimise(ctx)  # as stage_correct runs it: warm start, CORRECTION_TOL
    loose = ctx.optimization.final
    ctx.fluence = first
    monkeypatch.setattr(_plan, "CORRECTION_TOL", _plan.CORRECTION_TOL / 100.0)
    _plan.stage_optimise(ctx)
    tight = ctx.optimization.final
    assert loose.success and tight.success
    assert tight.objective <= loose.objective <= 1.001 * tight.objective
    assert loose.n_dose_evals < 0.7 * tight.n_dose_evals


def test_the_loop_stops_after_a_pass_meeting_every_goal(tmp_path):
    """Three corrections asked on goals the first corrected pass meets once normalised
    within the cap (PTV D95 >= 45 Gy, Core D10 <= 60 Gy, the 60 % target floor): no later
    pass can score higher, so the loop stops after it, keeps it and says why."""
    text = tiny_cshape_protocol(ring=False).replace("count = 3", "count = 5")
    text = text.replace("min = 50.0", "min = 45.0").replace("max = 40.0", "max = 60.0")
    text = text.replace(
        "sequencing_levels = 4", "sequencing_levels = 4\nfinal_dose_corrections = 3"
    )
    text += "[safety]\nimplicit_target_limits = false\nhotspot_pct = 0\ntarget_floor_pct = 60\n"
    path = tmp_path / "easy.toml"
    path.write_text(text)
    patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    result = plan_patient(patient, load_protocol(path), progress=False)
    records = result.corrections
    assert [r["loop"] for r in records] == [0, 1]
    last = records[-1]
    assert last["normalization_beyond_cap"] == 0.0
    assert last["goals_met_normalized"] == last["n_goals"] == len(result.goal_table)
    assert last["stopped"] == "all goals met within the normalisation cap"
    assert last["kept"] and result.goal_table.all_passed
    line = final_dose_correction_text(records)
    assert "pass 1:" in line and "loop stopped: all goals met within the normalisation cap" in line
