"""The report of a real plan, checked against the plan's own DICOM and in a real browser.

A coarse C-shape phantom is planned once (3 beams, 8 mm dose grid, a protocol name
longer than the 16-character RT Plan Label) and written with :meth:`PlanResult.write`:

- the global maximum the report states is np.argmax of the RT-DOSE written (pydicom);
- the MU per fraction of the beam table, ``PlanResult.mu_per_fraction`` and plan.json
  are the RT-PLAN's (300A,0086) BeamMeterset; gantry angles are the RT-PLAN's;
- the title is the protocol's full name, the RT Plan Label its first 16 characters;
- every safety warning and the dose calculation (algorithm, beam model file, density
  table) are stated; no path of the machine (output folder, home, temporary folder,
  working directory, installed package) appears in report.html or plan.json;
- headless Chromium (``_browser.py``) loads report.html: the slider fragment changes the
  slice shown, images decode with a non-zero size, and what is on screen changes with
  the slice and shows the maximum's marker.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _browser import MISSING, dump_dom, find_browser, screenshot
from _tiny_protocol import tiny_cshape_protocol

import dose_engine
import rtplan
from rtplan.planning import plan_patient
from rtplan.protocols import load_protocol
from rtplan.report._colours import MAX_MARKER_COLOUR

LONG_NAME = "Tiny C-shape phantom, three beams, report check"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_plan")
    written = rtplan.phantoms.write_phantom(
        "cshape", root / "input", pixel_spacing_mm=5.0, slice_spacing_mm=5.0
    )
    patient = rtplan.read_patient(written.ct_dir, written.rtstruct_path)
    text = tiny_cshape_protocol(ring=False).replace(
        'name = "tiny C-shape"', f'name = "{LONG_NAME}"'
    )
    (root / "p.toml").write_text(text)
    result = plan_patient(patient, load_protocol(root / "p.toml"), progress=False)
    out = root / "plan"
    result.write(out)
    return result, out


def _report(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def _without_images(text: str) -> str:
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    return re.sub(r"<script type='application/json'.*?</script>", "", text, flags=re.S)


def test_global_maximum_is_the_rtdose_argmax(planned):
    _, out = planned
    ds = pydicom.dcmread(out / "RTDOSE.dcm")
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    dose = ds.pixel_array * float(ds.DoseGridScaling)  # (frames, rows, columns)
    k, r, c = np.unravel_index(np.argmax(dose), dose.shape)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    x, y, z = x0 + c * dx, y0 + r * dy, z0 + float(ds.GridFrameOffsetVector[k])
    m = re.search(
        r"Global maximum \(voxel\): <b>([\d.]+) Gy</b>.*? at \(x, y, z\) = \(([-\d.]+), "
        r"([-\d.]+), ([-\d.]+)\) mm \(DICOM patient LPS\), dose-grid voxel \[z, y, x\] = "
        r"\[(\d+), (\d+), (\d+)\]",
        _report(out),
    )
    assert float(m.group(1)) == pytest.approx(dose.max(), abs=0.006)
    assert [float(m.group(i)) for i in (2, 3, 4)] == pytest.approx([x, y, z], abs=0.051)
    assert [int(m.group(i)) for i in (5, 6, 7)] == [k, r, c]


def test_mu_per_fraction_is_the_rtplan_beam_meterset(planned):
    result, out = planned
    ds = pydicom.dcmread(out / "RTPLAN.dcm")
    fg = ds.FractionGroupSequence[0]
    meterset = [float(b.BeamMeterset) for b in fg.ReferencedBeamSequence]
    gantry = [float(b.ControlPointSequence[0].GantryAngle) for b in ds.BeamSequence]
    text = _report(out)
    table = re.search(r"<table class='beams'>.*?</table>", text, re.S).group(0)
    assert "<th>MU per fraction</th>" in table
    rows = re.findall(r"<tr><td>[^<]*</td>(.*?)</tr>", table)
    cells = [re.findall(r"<td>([^<]*)</td>", r) for r in rows]
    assert [float(c[-1]) for c in cells] == pytest.approx(meterset, abs=0.051)
    assert [float(c[1]) for c in cells] == pytest.approx(gantry)
    assert result.mu_per_fraction == pytest.approx(sum(meterset), rel=1e-6)
    fractions = int(fg.NumberOfFractionsPlanned)
    assert result.total_mu_all_fractions == pytest.approx(sum(meterset) * fractions, rel=1e-6)
    assert f"mu_per_fraction={sum(meterset):.4g}" in repr(result)
    assert f"{sum(meterset):.0f} MU per fraction" in result.summary()
    record = json.loads((out / "plan.json").read_text())
    assert record["plan"]["total_mu_per_fraction"] == pytest.approx(sum(meterset), rel=1e-6)


def test_title_is_the_full_protocol_name(planned):
    _, out = planned
    label = str(pydicom.dcmread(out / "RTPLAN.dcm").RTPlanLabel)
    assert (
        len(LONG_NAME) > 16
        and label == "".join(ch for ch in LONG_NAME if ch.isalnum() or ch in " -_")[:16]
    )
    text = _report(out)
    assert f"<h1>{html.escape(LONG_NAME)}</h1>" in text
    assert f"<title>{html.escape(LONG_NAME)} — rtplan report</title>" in text
    assert re.search(rf"RT Plan Label \(300A,0002\)</th><td[^>]*>{re.escape(label)}<", text)


def test_warnings_and_dose_calculation_are_stated(planned):
    result, out = planned
    text = _report(out)
    record = json.loads((out / "plan.json").read_text())
    assert result.warnings and len(record["warnings"]) == len(result.warnings)
    for w in record["warnings"]:
        assert f"WARNING: {html.escape(w['message'])}" in text
    assert f"Normalisation x {result.normalization:.4f}" in text
    assert "pencil beam (dose_engine" in text
    assert "file beam_model_6MV.json" in text and "file hu_to_density.json" in text
    table = dose_engine.load_hu_table()
    for hu, rho in zip(table.hu, table.density, strict=True):
        assert f"{hu:g} HU → {rho:g}" in text
    implicit = [r for r in result.goal_table if r.goal.label.startswith("implicit")]
    assert f"{len(implicit)} implicit goal(s)" in text and implicit
    assert record["plan"]["dose_algorithm"]["name"] == "pencil beam"
    # issue 16: auto keeps the pencil beam for the water phantom, which holds no lung/bone
    selection = record["plan"]["dose_algorithm"]["selection"]
    assert selection["requested"] == "auto" and selection["algorithm"] == "pencil_beam"
    assert selection["low_density_cc"] == 0.0 and selection["high_density_cc"] == 0.0
    assert "Chosen: auto: no lung or bone" in text
    assert not [w for w in record["warnings"] if w["code"].startswith(("pencil", "ccc"))]
    assert record["plan"]["hu_table"]["hu"] == [float(v) for v in table.hu]


def test_no_path_of_the_machine_in_report_or_plan_json(planned):
    """Nothing written names a folder of the machine it ran on."""
    _, out = planned
    forbidden = {
        str(out.parent),
        str(out),
        str(Path.home()) + os.sep,
        os.getcwd() + os.sep,
        os.path.realpath(tempfile.gettempdir()) + os.sep,
        str(Path(rtplan.__file__).parent.parent),
        str(Path(dose_engine.__file__).parent),
    }
    for name in ("report.html", "plan.json"):
        text = _without_images((out / name).read_text(encoding="utf-8"))
        found = sorted(p for p in forbidden if p in text)
        assert not found, f"{name} holds {found}"


# ------------------------------------------------------------------ real browser
@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if found is None:
        pytest.skip(MISSING)
    return found


def _figures(dom: str) -> dict[str, dict[str, str]]:
    out = {}
    for tag in re.findall(r"<figure [^>]*>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        out[attrs["data-view"]] = attrs
    return out


def test_browser_shows_the_slice_the_slider_asks_for(planned, browser, tmp_path):
    result, out = planned
    url = (out / "report.html").as_uri()
    nz, ny, nx = result.dose_grid.shape
    want = {"axial": 2, "coronal": ny - 1, "sagittal": 5}
    dom = dump_dom(browser, f"{url}#axial=2&coronal={ny - 1}&sagittal=5", tmp_path / "prof")
    figs = _figures(dom)
    assert {v: int(f["data-slice"]) for v, f in figs.items()} == want
    for view, f in figs.items():
        w, h = (int(v) for v in f["data-decoded"].split("x"))  # decoded by the browser
        assert w > 50 and h > 50, view
    z_mm = result.dose_grid.zyx_axes_mm()[0][2]
    assert f'<span id="pos-axial">z = {z_mm:.1f} mm (slice 3 of {nz})</span>' in dom
    assert f"<h1>{html.escape(LONG_NAME)}</h1>" in dom
    assert "Global maximum (voxel):" in dom
    k = np.unravel_index(np.argmax(result.dose_gy), result.dose_gy.shape)
    figs = _figures(dump_dom(browser, f"{url}#max", tmp_path / "prof"))
    assert [int(figs[v]["data-slice"]) for v in ("axial", "coronal", "sagittal")] == list(k)


def test_browser_screen_changes_with_the_slice_and_shows_the_maximum(planned, browser, tmp_path):
    from PIL import Image

    result, out = planned
    url = (out / "report.html").as_uri()
    shots = {
        frag: np.asarray(
            Image.open(
                screenshot(browser, f"{url}#{frag}", tmp_path / f"{i}.png", tmp_path / "prof")
            ).convert("RGB")
        )
        for i, frag in enumerate(("max", "axial=0&coronal=0&sagittal=0"))
    }
    at_max, at_edge = shots.values()
    marker = np.all(at_max == MAX_MARKER_COLOUR, axis=2)
    assert marker.sum() > 20  # the + drawn in the three views (and the legend's +)
    assert np.all(at_edge == MAX_MARKER_COLOUR, axis=2).sum() < marker.sum()
    assert (np.abs(at_max.astype(int) - at_edge).sum(axis=2) > 0).sum() > 1000
