"""The final dose's engine of a plan (``--final-dose``, ``[dose] final_algorithm``, issue 16).

- The ``auto`` criterion against analytic volumes: lung and bone boxes of known size put
  into the water box phantom; the TG-119 phantoms hold none; the skin is not counted.
- The choice and its warnings (``pencil_beam_lung``, ``ccc_not_commissioned``).
- Refusals: bad protocol values (file and key named), a bad option, ``--final-dose ccc``
  with a beam model that has no collapsed-cone commissioning (exit 2, nothing written).
- End to end: a small thorax planned by ``rtplan plan`` with the default (``auto``): its
  RT-DOSE equals the collapsed-cone dose recomputed from the written RT-PLAN by
  :func:`rtplan.compute_plan_dose` (within 1 %) and differs from the pencil-beam one; the
  RT-DOSE, plan.json and report.html name the algorithm and dose to water; dciodvfy
  finds no error in the RT-DOSE.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pydicom
import pytest
from _dciodvfy import to_16bit_copy
from _tiny_protocol import tiny_cshape_protocol

from dose_engine import BeamModelError, hu_to_density, load_beam_model
from rtplan import compute_plan_dose, read_patient
from rtplan.cli import main
from rtplan.errors import InputError, ProtocolError
from rtplan.io import read_rtdose
from rtplan.io._rtplan_read import read_rtplan_beams
from rtplan.phantoms import make_phantom, write_phantom
from rtplan.planning import PlanOptions
from rtplan.planning._final_algorithm import (
    HIGH_DENSITY,
    LOW_DENSITY,
    MIN_VOLUME_CC,
    SKIN_MM,
    choose_final_algorithm,
    heterogeneity_volumes_cc,
)
from rtplan.protocols import load_protocol
from rtplan.structures import body_grid, body_structure

# ------------------------------------------------------------------ the criterion


def _volumes(patient):
    body = patient.structures["Body"]
    ct = patient.ct
    density = hu_to_density(ct.array.astype(np.float32))
    return heterogeneity_volumes_cc(density, ct.grid, ct.grid, body.occupancy(ct.grid))


def test_lung_and_bone_boxes_are_measured_and_the_skin_is_not():
    """5 mm voxels of the water box: a 50 mm lung cube (-800 HU: 0.2) is 125 cm³, a 20 mm
    bone cube (+1000 HU: 1.6) and a 20 mm one at +450 HU (1.30) are 8 cm³ each; contrast-like
    +300 HU (1.19, below the bone threshold) and a layer of air in the body's first row
    (within SKIN_MM of its surface) count nothing."""
    patient = make_phantom("water_box", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    ct = patient.ct
    assert _volumes(patient) == (0.0, 0.0)
    k = np.array(ct.grid.shape) // 2
    ct.array[k[0] - 5 : k[0] + 5, k[1] - 5 : k[1] + 5, k[2] - 12 : k[2] - 2] = -800.0
    ct.array[k[0] - 2 : k[0] + 2, k[1] - 2 : k[1] + 2, k[2] + 4 : k[2] + 8] = 1000.0
    ct.array[k[0] - 2 : k[0] + 2, k[1] + 6 : k[1] + 10, k[2] + 4 : k[2] + 8] = 450.0  # 1.30
    ct.array[k[0] - 2 : k[0] + 2, k[1] + 6 : k[1] + 10, k[2] - 12 : k[2] - 8] = 300.0  # 1.19
    body = patient.structures["Body"].occupancy(ct.grid) >= 0.5
    ys = np.flatnonzero(body[k[0], :, k[2]])
    ct.array[:, ys[0], :] = -1000.0  # the body's first row: within SKIN_MM of its surface
    assert float(hu_to_density(np.float32(300.0))) < HIGH_DENSITY == 1.25
    assert HIGH_DENSITY < float(hu_to_density(np.float32(450.0))) < 1.4
    low, high = _volumes(patient)
    assert low == pytest.approx(10 * 10 * 10 * 0.125)
    assert high == pytest.approx(4 * 4 * 4 * 0.125 + 4 * 4 * 4 * 0.125)
    assert LOW_DENSITY == 0.6 and SKIN_MM == 10.0


@pytest.mark.parametrize("name", ["cshape", "multitarget", "prostate", "head_neck"])
def test_tg119_phantoms_hold_no_lung_or_bone(name):
    patient = make_phantom(name, pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    assert _volumes(patient) == (0.0, 0.0)


@pytest.mark.parametrize("grid_mm", [8.0, 10.0, 12.0, 15.0])
def test_water_phantom_on_planning_dose_grids_holds_no_lung(grid_mm):
    """On a dose grid as planning builds it, the body's outermost voxels (their density
    interpolated across the water's edge) are skin, whatever the spacing: at 10 mm they
    lie 10 mm from the nearest outside voxel's centre but 5 mm from the surface, and
    252 cm³ of the C-shape's rim used to count as lung (auto took the collapsed cone)."""
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    body = body_structure(patient)
    grid = body_grid(patient.ct.grid, body, grid_mm)
    density = hu_to_density(patient.ct.array.astype(np.float32))
    occupancy = body.occupancy(grid)
    assert heterogeneity_volumes_cc(density, patient.ct.grid, grid, occupancy) == (0.0, 0.0)


def test_thorax_holds_lung_and_bone():
    patient = make_phantom("thorax", pixel_spacing_mm=5.0, slice_spacing_mm=5.0, n_slices=21)
    low, high = _volumes(patient)
    # lungs: two D-shaped ellipses of ~ 78 x 85 mm semi-axes over 100 mm of z
    assert 2000.0 < low < 4000.0
    assert high > MIN_VOLUME_CC


# ------------------------------------------------------------------ the choice
MODEL = load_beam_model()


def _uncommissioned(tmp_path):
    path = tmp_path / "clinic10.json"
    path.write_text(json.dumps(dict(MODEL.parameters, name="clinic 10 MV")))
    return path


@pytest.mark.parametrize(
    ("requested", "low", "high", "algorithm", "codes"),
    [
        ("auto", 0.0, 0.0, "pencil_beam", []),
        ("auto", MIN_VOLUME_CC - 0.1, MIN_VOLUME_CC - 0.1, "pencil_beam", []),
        ("auto", MIN_VOLUME_CC, 0.0, "ccc", []),
        ("auto", 0.0, 50.0, "ccc", []),  # bone only
        ("ccc", 0.0, 0.0, "ccc", []),
        ("pencil_beam", 300.0, 0.0, "pencil_beam", ["pencil_beam_lung"]),
        ("pencil_beam", 0.0, 300.0, "pencil_beam", []),  # bone: no lung warning
    ],
)
def test_choice_and_warnings(requested, low, high, algorithm, codes):
    choice, warnings = choose_final_algorithm(requested, low, high, MODEL)
    assert choice.algorithm == algorithm and choice.requested == requested
    assert [w.code for w in warnings] == codes
    record = choice.as_dict()
    assert record["algorithm"] == algorithm and record["low_density_cc"] == low


def test_auto_without_commissioning_falls_back_with_warnings(tmp_path):
    model = load_beam_model(str(_uncommissioned(tmp_path)))
    choice, warnings = choose_final_algorithm("auto", 800.0, 20.0, model)
    assert choice.algorithm == "pencil_beam"
    assert [w.code for w in warnings] == ["ccc_not_commissioned", "pencil_beam_lung"]
    assert "clinic 10 MV" in warnings[0].message
    assert "800 cm³ of lung" in warnings[1].message


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("value", ['"monte_carlo"', "3", '"CCC"', '""'])
def test_protocol_key_is_validated(tmp_path, value):
    path = tmp_path / "p.toml"
    path.write_text(tiny_cshape_protocol(ring=False) + f"\n[dose]\nfinal_algorithm = {value}\n")
    with pytest.raises(ProtocolError, match=r"final_algorithm") as info:
        load_protocol(path)
    assert str(path) in str(info.value) and "auto, ccc, pencil_beam" in str(info.value)


def test_protocol_key_and_option_reach_the_protocol(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(tiny_cshape_protocol(ring=False) + '\n[dose]\nfinal_algorithm = "ccc"\n')
    protocol = load_protocol(path)
    assert protocol.final_algorithm == "ccc"
    assert load_protocol("tg119_cshape").final_algorithm == "auto"
    assert PlanOptions().apply_to(protocol).final_algorithm == "ccc"  # None: the protocol's
    assert PlanOptions(final_dose="pencil_beam").apply_to(protocol).final_algorithm == (
        "pencil_beam"
    )
    with pytest.raises(InputError, match="`final_dose` must be one of"):
        PlanOptions(final_dose="mc")
    with pytest.raises(ProtocolError, match="final_algorithm"):
        protocol.with_overrides(final_algorithm="mc")


def test_cli_refuses_a_bad_final_dose_value(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", str(tmp_path / "out"), "--final-dose", "mc"])
    assert info.value.code == 2
    assert "--final-dose" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ccc_with_an_uncommissioned_model_is_refused_before_any_work(tmp_path, capsys):
    written = write_phantom("cshape", tmp_path / "in", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    (tmp_path / "p.toml").write_text(tiny_cshape_protocol(ring=False))
    out = tmp_path / "plan"
    argv = ["plan", str(written.ct_dir), str(written.rtstruct_path), "--protocol"]
    argv += [str(tmp_path / "p.toml"), "--out", str(out), "--no-progress", "--final-dose"]
    argv += ["ccc", "--beam-model", str(_uncommissioned(tmp_path))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clinic 10 MV" in err[0] and "collapsed-cone" in err[0], err
    assert not out.exists()
    assert issubclass(BeamModelError, ValueError)


# ------------------------------------------------------------------ end to end
GRID_MM = 6.0


@pytest.fixture(scope="module")
def thorax_plan(tmp_path_factory):
    """``rtplan plan`` of a coarse thorax with the default final dose (auto)."""
    tmp = tmp_path_factory.mktemp("thorax_ccc")
    written = write_phantom(
        "thorax", tmp / "in", pixel_spacing_mm=5.0, slice_spacing_mm=5.0, n_slices=21
    )
    out = tmp / "plan"
    argv = ["plan", str(written.ct_dir), str(written.rtstruct_path), "--protocol"]
    argv += ["lung_60gy_30fx", "--out", str(out), "--no-progress", "--dose-grid-mm"]
    argv += [str(GRID_MM), "--beams", "5", "--max-iterations", "60"]
    status = main(argv)
    assert status in (0, 1)
    patient = read_patient(written.ct_dir, out / "RS_derived.dcm")
    return out, patient


@pytest.mark.slow
def test_auto_picks_the_collapsed_cone_and_the_rtdose_is_its_dose(thorax_plan):
    """The written RT-DOSE against the collapsed cone recomputed from the written RT-PLAN
    (which holds the normalised MU), on the RT-DOSE's grid, on every voxel above 20 % of
    the maximum: within 1 %.  The pencil beam recomputed from the same plan differs by
    more (lung), so the comparison tells the engines apart."""
    out, patient = thorax_plan
    dose, grid, _ = read_rtdose(out / "RTDOSE.dcm")
    plan = read_rtplan_beams(out / "RTPLAN.dcm", patient)
    ccc = compute_plan_dose(plan, patient, dose_grid=grid, algorithm="ccc").dose_gy
    pencil = compute_plan_dose(plan, patient, dose_grid=grid).dose_gy
    high = dose >= 0.2 * dose.max()
    assert high.sum() > 500
    assert np.max(np.abs(ccc[high] - dose[high]) / dose[high]) <= 0.01
    assert np.max(np.abs(pencil[high] - dose[high]) / dose[high]) > 0.05
    record = json.loads((out / "plan.json").read_text())
    alg = record["plan"]["dose_algorithm"]
    assert alg["algorithm"] == "ccc" and alg["name"] == "collapsed cone"
    assert alg["dose_quantity"] == "dose to water"
    assert alg["selection"]["requested"] == "auto"
    assert alg["selection"]["low_density_cc"] > 1000.0
    assert not [w for w in record["warnings"] if w["code"] == "pencil_beam_lung"]


@pytest.mark.slow
def test_rtdose_report_and_dciodvfy_name_the_algorithm(thorax_plan, tmp_path):
    out, _ = thorax_plan
    ds = pydicom.dcmread(out / "RTDOSE.dcm")
    assert ds.TissueHeterogeneityCorrection == "IMAGE"
    assert ds.DoseComment.startswith("collapsed cone, dose to water; rtplan Lung 60 Gy")
    assert ds.SeriesDescription == "rtplan plan dose (collapsed cone)"
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "collapsed cone (dose_engine" in text and ", dose to water:" in text
    assert "Chosen: auto: the body holds lung or bone" in text
    path16 = to_16bit_copy(out / "RTDOSE.dcm", tmp_path / "RD16.dcm")
    run = subprocess.run(["dciodvfy", str(path16)], capture_output=True, text=True, check=False)
    report = run.stdout + run.stderr
    assert "RTDose" in report
    assert "Error" not in report and "Warning" not in report, report


@pytest.mark.slow
def test_correction_loop_traces_each_beam_once(tmp_path, monkeypatch):
    """The collapsed cone's rays are traced once per beam for the whole plan: the first
    final dose and every correction loop's reuse them (``points_cache``), which skips the
    largest part of a dose after the fluence."""
    import dose_engine._ccc as ccc

    traced, doses = [], []
    trace, dose = ccc.terma_points, ccc.collapsed_cone_dose
    monkeypatch.setattr(  # its fourth argument is the beam
        ccc, "terma_points", lambda *a, **k: traced.append(a[3]) or trace(*a, **k)
    )
    monkeypatch.setattr(
        "dose_engine.collapsed_cone_dose", lambda *a, **k: doses.append(1) or dose(*a, **k)
    )
    written = write_phantom(
        "thorax", tmp_path / "in", pixel_spacing_mm=8.0, slice_spacing_mm=8.0, n_slices=13
    )
    argv = ["plan", str(written.ct_dir), str(written.rtstruct_path), "--protocol"]
    argv += ["lung_60gy_30fx", "--out", str(tmp_path / "plan"), "--no-progress"]
    argv += ["--dose-grid-mm", "8", "--beams", "5", "--max-iterations", "40"]
    argv += ["--final-dose", "ccc"]
    assert main(argv) in (0, 1)
    record = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert len(record["plan"]["corrections"]) >= 2  # loop 0 and at least one loop
    assert len(doses) == len(record["plan"]["corrections"])
    assert len(traced) == 5 and len(set(traced)) == 5
