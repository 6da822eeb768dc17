"""The self-contained report.html and plan.json.

Checked against the inputs that produced them: every goal appears as a row with its
status, the DVH and one PNG per dose-grid slice and view are embedded and decode as PNG
of the display grid's size, the global maximum (value, position, marker) is np.argmax of
the dose, the JSON numbers equal the goal table's and the beams' MU sum, the input UIDs
are the patient's, structures get distinct colours, and neither file holds the
patient's name or ID or a network reference.  A planned phantom checks the report
against its own RT-DOSE (maximum) and RT-PLAN (MU per fraction, angles, label), and
that no path of the machine appears; a real headless browser checks what a person sees.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from dose_engine import Grid
from rtplan.errors import InputError, OutputExistsError
from rtplan.evaluation import Goal, evaluate_goals
from rtplan.phantoms import make_phantom
from rtplan.report import PLAN_JSON_SCHEMA, plan_json, write_plan_json, write_report
from rtplan.report._colours import MAX_MARKER_COLOUR
from rtplan.report._tables import isodose_lines

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


def _slice_data(text: str) -> dict:
    """The viewer's slice data (the JSON the page's script reads)."""
    m = re.search(r"<script type='application/json' id='slice-data'>(.*?)</script>", text, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def _png(b64: str):
    """(PIL image in RGB, width, height) of a base64 PNG, checking its signature."""
    from PIL import Image

    png = base64.b64decode(b64)
    assert png.startswith(PNG_MAGIC)
    img = Image.open(io.BytesIO(png))
    return img.convert("RGB"), img.width, img.height


def _without_images(text: str) -> str:
    """The report without its base64 payloads (they may hold any 4-letter string)."""
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    return re.sub(r"<script type='application/json'.*?</script>", "", text, flags=re.S)


def test_report_is_self_contained_with_every_goal(case, tmp_path):
    patient, _, _, table, _, _ = case
    path = _write(case, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="goal-(pass|acceptable|fail)"', text)
    assert rows == [r.status for r in table]
    for r in table:
        assert f"<td>{r.goal.metric.text}</td>" in text
        assert f"{r.value:.4g}" in text
    (dvh_png,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    _, width, height = _png(dvh_png)
    assert width > 300 and height > 200
    # every slice of the dose grid, per view, on the display grid (dose grid refined by
    # an integer factor: (n - 1) * m + 1 pixels along each axis)
    nz, ny, nx = case[2].shape
    data = _slice_data(text)
    assert {v: len(d["png"]) for v, d in data.items()} == {
        "axial": nz,
        "coronal": ny,
        "sagittal": nx,
    }
    sizes = {v: {_png(b)[1:] for b in d["png"]} for v, d in data.items()}
    assert all(len(s) == 1 for s in sizes.values())  # one size per view
    (ax_w, ax_h), (co_w, co_h), (sa_w, sa_h) = (next(iter(sizes[v])) for v in data)
    assert (ax_w - 1) % (nx - 1) == 0 and (ax_h - 1) % (ny - 1) == 0
    assert (co_w, sa_w) == (ax_w, ax_h) and co_h == sa_h and (co_h - 1) % (nz - 1) == 0
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert not re.search(r"<script[^>]*\ssrc", text)  # inline script only
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


def test_summary_banner_is_green_only_when_every_goal_was_evaluated_and_met(case, tmp_path):
    """Failed goals: red; all met but some not evaluated (an absent optional organ): amber,
    never the green of a complete pass."""
    table = case[3]
    met = replace(table, results=tuple(r for r in table if r.passed))
    cord = (Goal("Cord", "D0.03cc", "<=", 45.0), "structure 'Cord' not found")
    banners = {}
    for name, t in {
        "met": met,
        "partial": replace(met, not_evaluated=(cord,)),
        "failed": replace(table, results=table.results + (replace(met[0], status="fail"),)),
    }.items():
        text = _write(case, tmp_path / f"{name}.html", goal_table=t).read_text()
        (banners[name],) = re.findall(r"<div class='summary (\w+)'>", text)
    assert len(met) >= 1
    assert banners == {"met": "ok", "partial": "partial", "failed": "bad"}


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
    k = np.unravel_index(np.argmax(dose), dose.shape)
    x, y, z = grid.index_to_point(np.array(k, float))
    assert f"dose maximum at (x, y, z) = ({x:.1f}, {y:.1f}, {z:.1f}) mm" in text
    assert "no structures given" in text
    data = _slice_data(text)
    assert [data[v]["max"] for v in ("axial", "coronal", "sagittal")] == list(k)
    assert re.search(rf"id='view-axial'[^>]*data-slice='{k[0]}'", text)  # first shown


def test_global_maximum_is_marked_where_argmax_is(case, tmp_path):
    """The + marker is centred on np.argmax of the dose in all three views, and the text
    gives its value, LPS position and the structures whose occupancy there is >= 0.5."""
    patient, dose, grid, _, _, _ = case
    text = _write(case, tmp_path / "report.html").read_text()
    k = np.unravel_index(np.argmax(dose), dose.shape)
    x, y, z = grid.index_to_point(np.array(k, float)) + 0.0
    inside = [
        n
        for n, s in patient.structures.items()
        if s.occupancy(grid)[k] >= 0.5  # independent: occupancy on the dose grid
    ]
    shown = re.search(r"; inside ([^.]*)\. Marked", text).group(1).split(", ")
    assert sorted(shown) == sorted(inside) and shown
    assert f"<b>{dose[k]:.2f} Gy</b> ({100 * dose[k] / 78:.1f} % of 78 Gy)" in text
    assert f"({x:.1f}, {y:.1f}, {z:.1f}) mm (DICOM patient LPS)" in text
    data = _slice_data(text)
    nz, ny, nx = dose.shape
    for view, fixed, (rows_axis, cols_axis) in (
        ("axial", 0, (1, 2)),
        ("coronal", 1, (0, 2)),
        ("sagittal", 2, (0, 1)),
    ):
        img, w, h = _png(data[view]["png"][k[fixed]])
        rgb = np.asarray(img)
        r, c = np.nonzero(np.all(rgb == MAX_MARKER_COLOUR, axis=2))
        m_rows = (h - 1) // (dose.shape[rows_axis] - 1)
        m_cols = (w - 1) // (dose.shape[cols_axis] - 1)
        row = k[rows_axis] * m_rows
        if view != "axial":  # superior at the top
            row = h - 1 - row
        assert (np.median(r), np.median(c)) == (row, k[cols_axis] * m_cols), view
        other = data[view]["png"][(k[fixed] + 3) % dose.shape[fixed]]
        assert not np.all(np.asarray(_png(other)[0]) == MAX_MARKER_COLOUR, axis=2).any()


def test_isodose_lines_at_each_prescription_level():
    """Default lines in % of the highest level, plus one per prescription level when
    there are several; a level equal to a percentage line shares it."""
    lines = isodose_lines(70.0, levels_gy={"PTV70": 70.0, "PTV56": 56.0})
    assert [round(gy, 4) for gy, _, _ in lines] == [35.0, 56.0, 66.5, 70.0, 74.9]
    labels = [lab for _, lab, _ in lines]
    assert labels[1] == "80 % (56 Gy) = 56 Gy prescription (PTV56)"
    assert labels[3] == "100 % (70 Gy) = 70 Gy prescription (PTV70)"
    assert len({rgb for _, _, rgb in lines}) == 5
    lines = isodose_lines(70.0, levels_gy={"PTV70": 70.0, "PTV54": 54.0}, percent=(95, 107))
    assert [round(gy, 4) for gy, _, _ in lines] == [54.0, 66.5, 70.0, 74.9]
    one = isodose_lines(50.0, levels_gy={"PTV": 50.0})
    assert [lab for _, lab, _ in one][0] == "50 % (25 Gy)" and len(one) == 5
    for bad in (-5, 0, float("nan"), "ninety"):
        with pytest.raises(InputError, match=r"`isodose_pct` must hold finite percentages"):
            isodose_lines(70.0, percent=(50, bad))


def test_report_isodose_levels_are_chosen_by_the_caller(case, tmp_path):
    text = _write(case, tmp_path / "r.html", isodose_pct=(90,)).read_text()
    labels = re.findall(r"<span class='swatch iso'[^>]*></span>([^<]+)", text)
    assert labels == ["90 % (70.2 Gy)"]  # of the 78 Gy prescription
    with pytest.raises(InputError, match="isodose_pct"):
        _write(case, tmp_path / "bad.html", isodose_pct=(0,))
    assert not (tmp_path / "bad.html").exists()


def test_structures_get_distinct_colours():
    """Both lungs in one RT-STRUCT colour (as a clinical export had them) get two; a
    ROIDisplayColor is kept when it is distinct and readable; the result is stable."""
    from rtplan.report._colours import MIN_COLOUR_DISTANCE, roi_colours

    given = {
        "PTV": (255, 0, 0),
        "Lung_L": (0, 255, 255),
        "Lung_R": (0, 255, 255),
        "Cord": (0, 250, 250),
        "Skin": (255, 255, 255),
        "Heart": None,
    }
    got = roi_colours(given)
    assert list(got) == list(given)
    assert got["PTV"] == (255, 0, 0) and got["Lung_L"] == (0, 255, 255)
    cols = np.array(list(got.values()), float)
    dist = np.linalg.norm(cols[:, None] - cols[None], axis=2)
    assert dist[np.triu_indices(len(cols), 1)].min() >= MIN_COLOUR_DISTANCE
    assert roi_colours(given) == got


def test_report_legend_separates_structures_of_one_colour(case, tmp_path):
    import dataclasses

    patient, *_ = case
    structures = dict(patient.structures)
    structures["Bladder"] = dataclasses.replace(
        structures["Bladder"], color_rgb=structures["Rectum"].color_rgb
    )
    text = _write(
        case, tmp_path / "r.html", patient=dataclasses.replace(patient, structures=structures)
    ).read_text()
    legend = dict(
        (n, c)
        for c, n in re.findall(
            r"<span class='swatch roi' style='border-color:(#[0-9a-f]{6})'></span>([^<]+)", text
        )
    )
    assert set(legend) >= {"Bladder", "Rectum", "PTV"}
    assert len(set(legend.values())) == len(legend)


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
    from rtplan.report._plots import dvh_figure

    patient, dose, grid, table, _, _ = case
    fig = dvh_figure(table.dvhs, prescription_gy=78.0)
    ax = fig.axes[0]
    by_label = {ln.get_label(): ln for ln in ax.lines}
    for name in ("PTV", "Rectum"):
        rgb = patient.structures[name].color_rgb
        assert by_label[name].get_color() == tuple(c / 255 for c in rgb)
    assert ax.get_xlabel() == "Dose (Gy)" and "%" in ax.get_ylabel()


def test_import_rtplan_stays_light():
    code = (
        "import sys, rtplan, rtplan.report, rtplan.evaluation; "
        "bad = [m for m in ('matplotlib', 'cvxpy') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_display_resampling_equals_the_engine_resample(case):
    """The viewer's separable trilinear resampler (and its per-structure box) gives what
    dose_engine.resample (scipy map_coordinates) gives on the display grid."""
    from dose_engine._resample import resample
    from rtplan.report._slices import _mask_on, _resample_linear, display_grid

    patient, full_dose, full_grid, _, _, _ = case
    assert display_grid(full_grid)[1] == (3, 3, 3)  # 4 mm voxels -> 1.33 mm pixels
    # a box of the case's dose grid around the PTV keeps the reference resample quick
    grid = Grid((10, 12, 14), origin_mm=(-28.0, -24.0, -20.0), spacing_mm=(4.0, 4.0, 4.0))
    dose = full_dose[10:20, 9:21, 13:27]
    assert grid.origin_mm == tuple(full_grid.index_to_point(np.array([10.0, 9.0, 13.0])))
    display, refine = display_grid(grid)
    assert refine == (3, 3, 3) and display.shape == tuple((n - 1) * 3 + 1 for n in grid.shape)
    axes = display.zyx_axes_mm()
    got = _resample_linear(dose, grid, axes, fill=0.0)
    assert got[::3, ::3, ::3] == pytest.approx(dose, abs=1e-5)  # dose voxels are nodes
    assert got == pytest.approx(resample(dose.astype(np.float32), grid, display), abs=1e-4)
    ct = patient.ct
    assert _resample_linear(ct.array, ct.grid, axes, fill=-1000.0) == pytest.approx(
        resample(np.asarray(ct.array, np.float32), ct.grid, display, fill_value=-1000.0),
        abs=1e-3,
    )
    inside = {}
    for s in patient.structures.values():
        occ = s.occupancy(ct.grid)
        ref = resample(np.asarray(occ, np.float32), ct.grid, display)
        differ = _mask_on(occ, ct.grid, display) != (ref >= 0.5)
        assert np.all(np.abs(ref[differ] - 0.5) < 1e-5), s.name  # float32 ties only
        inside[s.name] = int((ref >= 0.5).sum())
    assert inside["PTV"] > 1000 and inside["Body"] > 1000  # not a vacuous comparison


def test_deliverability_table_of_a_machine_without_arc_limits():
    """Two open 40 x 40 mm segments (30 and 10 MU per fraction) on a machine file without
    ``[arc]``: no delivery time and no leaf speed ("–"), MU, MCS (open fields: 1) and
    area (16 cm²) as computed by hand."""
    from importlib import resources

    from dose_engine import Beam
    from rtplan import DeliverableBeam, DeliverablePlan, Segment
    from rtplan._internal.toml_files import parse_toml
    from rtplan.delivery import check_deliverability, parse_machine
    from rtplan.report._tables import deliverability_html

    f = resources.files("rtplan").joinpath("data", "machines", "elekta_agility160.toml")
    data = parse_toml(f.read_bytes(), source="agility", what="Machine file", error=ValueError)
    data.pop("arc")
    m = parse_machine(data, source="no arc")
    assert m.arc is None
    leaves = np.tile([[-20.0], [20.0]], m.mlc.n_pairs)
    segs = [Segment(leaves, {"Y": (-20.0, 20.0)}, mu, m.mlc.leaf_boundaries_mm) for mu in (60, 20)]
    plan = DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), m, segs)], 2, 4.0, "PTV")
    text = deliverability_html(check_deliverability(plan).to_dict())
    rows = re.findall(r"<tr(?: class='total')?>(.*?)</tr>", text)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows[1:]]
    assert cells == [
        ["G0", "1", "fixed", "4", "40.00", "–", "–", "1.000", "16.0"],
        ["<b>Total</b>", "", "", "", "<b>40.00</b>", "<b>–</b>", "", "<b>1.000</b>", ""],
    ]
    assert "Every limit of the machine holds." in text
