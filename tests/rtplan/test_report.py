"""The self-contained report.html and plan.json.

Checked against the inputs that produced them: every goal appears as a row with its
status, four PNG images are embedded and decode as PNG, the JSON numbers equal the goal
table's and the beams' MU sum, the input UIDs are the patient's, and neither file holds
the patient's name or ID or a network reference.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from dose_engine import Grid
from rtplan.errors import InputError, OutputExistsError
from rtplan.evaluation import Goal, evaluate_goals
from rtplan.phantoms import make_phantom
from rtplan.report import PLAN_JSON_SCHEMA, plan_json, write_plan_json, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def case():
    patient = make_phantom("prostate", pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    grid = Grid((31, 31, 41), origin_mm=(-80.0, -60.0, -60.0), spacing_mm=(4.0, 4.0, 4.0))
    z, y, x = grid.zyx_axes_mm()
    dose = 78.0 * np.exp(
        -(x[None, None, :] ** 2 + y[None, :, None] ** 2 + z[:, None, None] ** 2) / (2 * 45.0**2)
    )
    goals = [
        Goal("PTV", "D95%", ">=", 70.0),
        Goal("PTV", "Dmax", "<=", 83.0),
        Goal("Rectum", "V70Gy", "<=", 15.0, acceptable_level=40.0),
        Goal("Bladder", "Dmean", "<=", 50.0, priority=2),
    ]
    table = evaluate_goals(dose, patient.structures, goals, grid, prescription_gy=78.0)
    summary = {
        "label": "Prostate <test> plan",
        "prescription_gy": 78.0,
        "fractions": 39,
        "machine": "Generic 6 MV",
        "beams": [
            {"name": f"B{g}", "gantry_angle_deg": g, "mu": 50.0 + i}
            for i, g in enumerate((0, 72, 144, 216, 288))
        ],
        "uids": {"rt_plan_sop_instance_uid": "1.2.3.4"},
    }
    timings = {"load": 0.5, "dose": 12.25, "optimise": 3.0}
    return patient, dose, grid, table, summary, timings


def _write(case, path, **kw):
    patient, dose, grid, table, summary, timings = case
    args = dict(
        patient=patient,
        dose_gy=dose,
        dose_grid=grid,
        goal_table=table,
        timings=timings,
        plan_summary=summary,
    )
    args.update(kw)
    return write_report(path, **args)


def test_report_is_self_contained_with_every_goal(case, tmp_path):
    patient, _, _, table, _, _ = case
    path = _write(case, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="goal-(pass|acceptable|fail)"', text)
    assert rows == [r.status for r in table]
    for r in table:
        assert f"<td>{r.goal.metric.text}</td>" in text
        assert f"{r.value:.4g}" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 4
    for b64 in images:
        png = base64.b64decode(b64)
        assert png.startswith(PNG_MAGIC)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 300 and height > 200
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "<script" not in text
    name = str(patient.dicom_patient.PatientName)
    pid = str(patient.dicom_patient.PatientID)
    assert name not in text and pid not in text
    assert "Prostate &lt;test&gt; plan" in text  # label is escaped
    assert "78 Gy in 39 fractions" in text
    assert patient.frame_of_reference_uid in text and "1.2.3.4" in text
    assert "15.75 s" in text  # total of the stage timings
    assert "HI (PTV; isodoses in Body)" in text and "CI (PTV; isodoses in Body)" in text
    # every structure (Body too) is in the DVH metrics table
    for n in patient.structures:
        assert f"</span>{n}</td>" in text


def test_report_refuses_to_overwrite_and_leaves_nothing_on_failure(case, tmp_path):
    path = tmp_path / "report.html"
    path.write_text("an earlier report")
    with pytest.raises(OutputExistsError, match="already exists"):
        _write(case, path)
    assert path.read_text() == "an earlier report"
    _write(case, path, overwrite=True)
    assert path.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(InputError, match=r"`dose_gy` has shape \(31, 31, 40\)"):
        _write(case, tmp_path / "bad.html", dose_gy=case[1][..., :-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_report_without_patient_centres_on_dose_maximum(case, tmp_path):
    _, dose, grid, table, _, _ = case
    path = write_report(tmp_path / "r.html", dose_gy=dose, dose_grid=grid, goal_table=table)
    text = path.read_text()
    assert len(re.findall(r"data:image/png;base64,", text)) == 4
    k = np.unravel_index(np.argmax(dose), dose.shape)
    x, y, z = grid.index_to_point(np.array(k, float))
    assert f"dose maximum at (x, y, z) = ({x:.1f}, {y:.1f}, {z:.1f}) mm" in text


def test_plan_json_records_goals_timings_versions_and_uids(case, tmp_path):
    patient, _, _, table, summary, timings = case
    path = write_plan_json(
        tmp_path / "plan.json",
        goal_table=table,
        timings=timings,
        plan_summary=summary,
        patient=patient,
    )
    text = path.read_text()
    rec = json.loads(text)
    assert rec["schema"] == PLAN_JSON_SCHEMA
    assert [g["value"] for g in rec["goals"]] == pytest.approx([r.value for r in table])
    assert [g["status"] for g in rec["goals"]] == [r.status for r in table]
    assert rec["goals_summary"] == {
        "n_goals": 4,
        "n_failed": table.n_failed,
        "all_passed": table.all_passed,
        "n_not_evaluated": 0,
        "text": table.summary_line(),
    }
    assert rec["plan"]["total_mu_per_fraction"] == pytest.approx(5 * 50.0 + 0 + 1 + 2 + 3 + 4)
    assert rec["timings_s"] == pytest.approx({**timings, "total": 15.75})
    assert set(rec["versions"]) == {"rtplan", "numpy", "scipy", "cvxpy", "pydicom"}
    assert rec["versions"]["numpy"] == np.__version__
    assert rec["inputs"]["frame_of_reference_uid"] == patient.frame_of_reference_uid
    assert rec["inputs"]["ct_series_instance_uid"] == patient.ct_series_instance_uid
    assert rec["inputs"]["rt_plan_sop_instance_uid"] == "1.2.3.4"
    assert {r["structure"] for r in rec["dvh_metrics"]} == {"PTV", "Rectum", "Bladder"}
    ptv = next(r for r in rec["dvh_metrics"] if r["structure"] == "PTV")
    assert ptv["d95_gy"] == pytest.approx(table[0].value)
    assert str(patient.dicom_patient.PatientName) not in text
    assert str(patient.dicom_patient.PatientID) not in text
    with pytest.raises(OutputExistsError):
        write_plan_json(path, goal_table=table)
    assert plan_json()["goals"] == []


def test_dvh_plot_uses_roi_colours(case):
    from rtplan.report._plots import dose_wash_figure, dvh_figure

    patient, dose, grid, table, _, _ = case
    fig = dvh_figure(table.dvhs, prescription_gy=78.0)
    ax = fig.axes[0]
    by_label = {ln.get_label(): ln for ln in ax.lines}
    for name in ("PTV", "Rectum"):
        rgb = patient.structures[name].color_rgb
        assert by_label[name].get_color() == tuple(c / 255 for c in rgb)
    assert ax.get_xlabel() == "Dose (Gy)" and "%" in ax.get_ylabel()
    fig = dose_wash_figure(dose, grid, "coronal", centre_mm=(0, 0, 0), ct=patient.ct)
    assert any(a.get_ylabel() == "Dose (Gy)" for a in fig.axes)  # the colourbar
    with pytest.raises(ValueError, match="axial, coronal, sagittal"):
        dose_wash_figure(dose, grid, "oblique", centre_mm=(0, 0, 0))


def test_import_rtplan_stays_light():
    code = (
        "import sys, rtplan, rtplan.report, rtplan.evaluation; "
        "bad = [m for m in ('matplotlib', 'cvxpy') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
