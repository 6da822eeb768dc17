"""The thorax phantom planned with the shipped lung protocol: the clinical targets of
issue 12, checked from the written files with tools independent of rtplan's evaluation
(the RT-DOSE read with pydicom alone, DVHs of the written RT-STRUCT by dicompyler-core,
the PTV from the phantom's analytic geometry).

Coarse for the suite: 4 mm CT pixels, 5 mm slices over z in [-50, 50] mm (the CT covers
the tumour's part of the thorax), 5 mm dose grid, 120 iterations per level (as
tests/rtplan/planning/test_dose_levels.py); no body contour, as in issue 12.  The
full-size case (512 x 512 x 131, 3 mm grid) is ``benches/bench_thorax.py``.

The three clinical targets of issue 12 (normalisation within the cap, global maximum
<= 110 %, no PTV voxel below 90 % beyond the partial-volume rim) failed while the lung's
``Dmean <= 20 Gy`` goal was a linear "minimise the mean" term in the coverage level: it
traded the PTV rim in lung (19 Gy) against a lung mean of 5.6 Gy, far below its limit,
and a few heavy beams carried the dose (x 1.35 normalisation needed, 124 % maximum). A
mean goal now pushes only above its aim (rtplan/planning/_levels.py).

These targets are the optimisation's (issue 12), judged on the pencil-beam final dose
(``final_dose="pencil_beam"``: the thorax's default final dose is the collapsed cone,
tested in tests/rtplan/planning/test_final_algorithm.py).
"""

from __future__ import annotations

import html
import json
import warnings

import numpy as np
import pydicom
import pytest

from rtplan.io import read_patient
from rtplan.phantoms import write_phantom
from rtplan.phantoms._thorax import THORAX as T
from rtplan.planning import PlanOptions, plan_patient
from rtplan.protocols import load_protocol
from rtplan.structures import BODY_OUTLINE_NAME

#: One plan of a coarse thorax shared by every test here: minutes of CPU.
pytestmark = pytest.mark.slow

RX_GY = 60.0
PIXEL_MM, SLICE_MM, N_SLICES, GRID_MM = 4.0, 5.0, 21, 5.0


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thorax_plan")
    written = write_phantom(
        "thorax",
        tmp / "in",
        pixel_spacing_mm=PIXEL_MM,
        slice_spacing_mm=SLICE_MM,
        n_slices=N_SLICES,
        body_contour=False,
    )
    protocol = load_protocol("lung_60gy_30fx").with_overrides(
        dose_grid_mm=GRID_MM, max_iterations=120
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    options = PlanOptions(final_dose="pencil_beam")
    result = plan_patient(patient, protocol, progress=False, options=options)
    out = result.write(tmp / "plan")
    return result, out


def _dose(out):
    """RT-DOSE (Gy, [z, y, x]) and its voxel centres (mm, LPS), by pydicom alone."""
    ds = pydicom.dcmread(out / "RTDOSE.dcm")
    dose = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    z = z0 + np.asarray(ds.GridFrameOffsetVector, float)
    y = y0 + dy * np.arange(ds.Rows)
    x = x0 + dx * np.arange(ds.Columns)
    return dose, np.meshgrid(z, y, x, indexing="ij")


def _dvh(out, dvhcalc, name):
    rois = {
        str(r.ROIName): int(r.ROINumber)
        for r in pydicom.dcmread(out / "RS_derived.dcm").StructureSetROISequence
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dvhcalc.get_dvh(str(out / "RS_derived.dcm"), str(out / "RTDOSE.dcm"), rois[name])


def test_body_outline_and_dose_grid_leave_the_couch_out_gh12(plan):
    result, out = plan
    assert result.mapping["Body"] == BODY_OUTLINE_NAME  # derived: the RT-STRUCT had none
    rois = [str(r.ROIName) for r in pydicom.dcmread(out / "RS_derived.dcm").StructureSetROISequence]
    assert {BODY_OUTLINE_NAME, "PTV", "CTV", "Lungs-PTV"} <= set(rois)
    _, (_, yy, _) = _dose(out)
    # The dose grid ends within one dose voxel of the back (y = +105 mm): the couch foam
    # (y 107 ... 153 mm) is not in it (issue 12: 67 Gy in the couch foam).
    shell_y = T["couch"][1] + T["couch_shell_mm"]
    assert yy.max() <= shell_y + GRID_MM
    assert yy.max() < T["couch"][3] - T["couch_shell_mm"]


def test_cord_and_lungs_within_limits_by_an_independent_dvh(plan, dicompyler):
    result, out = plan
    table = {(r.goal.structure, r.goal.metric.text): r for r in result.goal_table}
    cord = _dvh(out, dicompyler, "SpinalCord")
    assert float(cord.max) <= 45.0
    lungs = _dvh(out, dicompyler, "Lungs-PTV")
    assert float(lungs.mean) <= 20.0
    assert float(lungs.V20Gy.value) / float(lungs.volume) * 100 <= 35.0
    # rtplan's goal table agrees with dicompyler-core on the lung (the cord, 10 mm wide,
    # spans two 5 mm dose voxels: the two DVH algorithms sample it differently), and the
    # cord's near-maximum is below the maximum over every dose voxel touching the analytic
    # cord cylinder (RT-DOSE read with pydicom)
    assert table[("Lungs-PTV", "Dmean")].value == pytest.approx(float(lungs.mean), rel=0.03)
    dose, (_, yy, xx) = _dose(out)
    near = np.hypot(xx - T["cord_c"][0], yy - T["cord_c"][1]) <= T["cord_r"] + GRID_MM / np.sqrt(2)
    assert table[("SpinalCord", "D0.03cc")].value <= dose[near].max() + 1e-6
    assert dose[near].max() <= 45.0


def test_normalisation_within_the_cap_gh12(plan):
    _, out = plan
    record = json.loads((out / "plan.json").read_text())
    detail = record["plan"]["normalization_detail"]
    assert abs(detail["needed"] - 1.0) <= detail["cap_pct"] / 100
    assert not [w for w in record["warnings"] if w["code"] == "normalization_cap"]


def test_global_maximum_within_110_percent_gh12(plan):
    _, out = plan
    dose, _ = _dose(out)
    assert dose.max() <= 1.10 * RX_GY


def test_every_beam_carries_part_of_the_dose_gh12(plan):
    """The RT-PLAN's meterset (pydicom): all 7 beams deliver, none more than the 40 % the
    beam-balance check flags (issue 12: one beam carried half of the MU, two none)."""
    _, out = plan
    ds = pydicom.dcmread(out / "RTPLAN.dcm")
    mu = [float(b.BeamMeterset) for b in ds.FractionGroupSequence[0].ReferencedBeamSequence]
    assert len(mu) == 7 and min(mu) > 0
    assert max(mu) / sum(mu) <= 0.40


def test_no_ptv_voxel_below_90_percent_beyond_the_partial_volume_rim_gh12(plan, dicompyler):
    """Every dose voxel whose whole cube lies inside the analytic PTV (the sphere of
    r 30 mm around the GTV's centre: centre at most 30 mm - half the voxel diagonal from
    it) gets at least 90 % of Rx; the partial-volume rim is the voxels cut by the PTV
    surface.  dicompyler-core's PTV D99 of the written RT-STRUCT says the same."""
    _, out = plan
    dose, (zz, yy, xx) = _dose(out)
    cx, cy, cz = T["gtv_c"]
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2)
    whole = r <= T["gtv_r"] + 10.0 - np.sqrt(3) * GRID_MM / 2
    assert whole.sum() > 200
    assert dose[whole].min() >= 0.90 * RX_GY
    assert float(_dvh(out, dicompyler, "PTV").D99.value) >= 0.90 * RX_GY


def test_pencil_beam_dose_of_a_body_with_lung_is_flagged_gh16(plan):
    """Issue 16: the plan's dose is the pencil beam's (asked for) in a body with lung: the
    ``pencil_beam_lung`` warning in PlanResult, plan.json and the report, in the same
    words; plan.json and the RT-DOSE name the pencil beam."""
    result, out = plan
    found = {w.code: w.message for w in result.warnings}
    assert "DOSE ALGORITHM: the dose shown is a pencil-beam dose" in found["pencil_beam_lung"]
    record = json.loads((out / "plan.json").read_text())
    assert {"code": "pencil_beam_lung", "message": found["pencil_beam_lung"]} in record["warnings"]
    text = (out / "report.html").read_text(encoding="utf-8")
    assert html.escape(found["pencil_beam_lung"]) in text
    assert record["plan"]["dose_algorithm"]["algorithm"] == "pencil_beam"
    assert record["plan"]["dose_algorithm"]["selection"]["requested"] == "pencil_beam"
    ds = pydicom.dcmread(out / "RTDOSE.dcm")
    assert ds.DoseComment.startswith("pencil beam, dose to water")
    assert ds.TissueHeterogeneityCorrection == "IMAGE"
