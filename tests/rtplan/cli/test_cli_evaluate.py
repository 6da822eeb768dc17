"""``rtplan evaluate`` end to end on a written phantom and analytic RT-DOSE files.

Independent references: the TG-119 prostate PTV is an ellipsoid centred on the origin
with semi-axes 30 × 22 × 28 mm (volume 4/3·π·30·22·28 mm³ = 77.41 cm³), so a dose linear
in x, y, z averages over it to the dose at the origin; a uniform dose gives every metric
equal to that dose.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydicom.uid import generate_uid

from dose_engine import Grid
from rtplan.cli import main
from rtplan.io import write_patient, write_rtdose
from rtplan.phantoms import make_phantom

PTV_CC = 4.0 / 3.0 * math.pi * 30 * 22 * 28 / 1000.0
DOSE_GRID = Grid((41, 31, 41), origin_mm=(-59.0, -39.0, -50.0), spacing_mm=(3.0, 3.0, 2.5))


def _linear(grid):
    z, y, x = grid.zyx_axes_mm()
    return 60.0 + 0.2 * x[None, None, :] - 0.1 * y[None, :, None] + 0.05 * z[:, None, None]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    patient = make_phantom("prostate", pixel_spacing_mm=3.0, slice_spacing_mm=2.5)
    written = write_patient(patient, root / "pt")
    out = {"rs": written.rtstruct_path, "ct": written.ct_dir}
    out["linear"] = root / "RD_linear.dcm"
    write_rtdose(
        out["linear"], _linear(DOSE_GRID), DOSE_GRID, patient, plan_sop_instance_uid=generate_uid()
    )
    out["uniform"] = root / "RD_uniform.dcm"
    write_rtdose(
        out["uniform"],
        np.full(DOSE_GRID.shape, 42.0),
        DOSE_GRID,
        patient,
        plan_sop_instance_uid=generate_uid(),
    )
    other = make_phantom("prostate", pixel_spacing_mm=3.0, slice_spacing_mm=2.5)  # new UIDs
    out["other"] = root / "RD_other.dcm"
    write_rtdose(
        out["other"],
        np.full(DOSE_GRID.shape, 1.0),
        DOSE_GRID,
        other,
        plan_sop_instance_uid=generate_uid(),
    )
    out["root"] = root
    return out


def _protocol(path, goals: str, rx_gy: float = 60.0):
    path.write_text(
        f'name = "Evaluate test"\n[prescription]\ntotal_dose_gy = {rx_gy}\nfractions = 30\n'
        'target = "PTV"\n[structures.PTV]\nrole = "target"\n[structures.Rectum]\n' + goals
    )
    return path


def _run(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_metric_table_without_protocol(files, capsys):
    rc, out, err = _run(capsys, files["uniform"], files["rs"])
    assert rc == 0 and err == ""
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln[:1].isalpha()}
    for name in ("Body", "PTV", "Rectum", "Bladder"):
        assert name in lines
    ptv = lines["PTV"].split()
    assert float(ptv[1]) == pytest.approx(PTV_CC, rel=0.005)
    assert [float(v) for v in ptv[2:9]] == [42.0] * 7  # mean, min, max, D98, D95, D50, D2
    assert "partly outside the dose grid" in lines["Body"]


def test_json_output_matches_analytic_values(files, capsys):
    rc, out, _ = _run(capsys, files["linear"], files["rs"], "--json")
    assert rc == 0
    res = json.loads(out)
    rows = {r["structure"]: r for r in res["structures"]}
    ptv = rows["PTV"]
    assert ptv["volume_cc"] == pytest.approx(PTV_CC, rel=0.005)
    assert ptv["mean_gy"] == pytest.approx(60.0, rel=1e-3)
    assert ptv["d98_gy"] < ptv["d95_gy"] < ptv["d50_gy"] < ptv["d2_gy"] <= ptv["max_gy"]
    assert res["goals"] is None
    assert res["dose_grid"]["shape_zyx"] == [41, 31, 41]
    assert res["frame_of_reference_uid"]


def test_with_ct_gives_the_same_numbers(files, capsys):
    rc, out, _ = _run(capsys, files["linear"], files["rs"], "--json", "--ct", files["ct"])
    rc2, out2, _ = _run(capsys, files["linear"], files["rs"], "--json")
    assert rc == rc2 == 0
    assert json.loads(out)["structures"] == json.loads(out2)["structures"]


def test_protocol_goals_set_the_exit_status(files, capsys, tmp_path):
    passing = _protocol(
        tmp_path / "pass.toml",
        (
            '[[goals]]\nstructure = "PTV"\nmetric = "Dmean"\nmin = 59.5\n'
            '[[goals]]\nstructure = "PTV"\nmetric = "D95%"\nmin = 90\nunit = "%"\n'
            '[[goals]]\nstructure = "Rectum"\nmetric = "V70Gy"\nmax = 0\nunit = "cc"\n'
        ),
    )
    rc, out, err = _run(capsys, files["linear"], files["rs"], "--protocol", passing)
    assert rc == 0, out + err
    assert "3/3 goals met" in out
    failing = _protocol(
        tmp_path / "fail.toml",
        (
            '[[goals]]\nstructure = "PTV"\nmetric = "Dmean"\nmax = 59.0\n'
            '[[goals]]\nstructure = "PTV"\nmetric = "Dmean"\nmax = 59.0\nacceptable = 61\n'
        ),
    )
    rc, out, _ = _run(capsys, files["linear"], files["rs"], "--protocol", failing, "--json")
    assert rc == 1
    goals = json.loads(out)["goals"]
    assert [g["status"] for g in goals] == ["fail", "acceptable"]
    assert goals[0]["value"] == pytest.approx(60.0, rel=1e-3)
    # a shipped protocol by name, with --map to the phantom's names
    rc, out, _ = _run(
        capsys, files["uniform"], files["rs"], "--protocol", "tg119_prostate", "--json"
    )
    res = json.loads(out)
    assert rc == 1 and res["prescription_gy"] == pytest.approx(75.6)
    assert {g["structure"] for g in res["goals"]} == {"PTV", "Rectum", "Bladder"}
    assert all(g["value"] == pytest.approx(42.0) for g in res["goals"])


def test_quality_indices_of_a_uniform_dose(files, capsys, tmp_path):
    # uniform 42 Gy, Rx 41.5 Gy: HI 0; every voxel of the dose grid is in the Rx isodose,
    # so CI = TV / V(grid); GI = V(20.75 Gy) / V(41.5 Gy) = 1
    proto = _protocol(
        tmp_path / "rx.toml",
        '[[goals]]\nstructure = "PTV"\nmetric = "D95%"\nmin = 41.5\n',
        rx_gy=41.5,
    )
    rc, out, _ = _run(capsys, files["uniform"], files["rs"], "--protocol", proto, "--json")
    ind = json.loads(out)["indices"]
    assert rc == 0
    grid_cc = DOSE_GRID.voxel_count * DOSE_GRID.voxel_volume_cc
    assert ind["target"] == "PTV" and ind["body"] == "dose grid"
    assert ind["HI"] == 0.0 and ind["GI"] == pytest.approx(1.0)
    assert ind["CI"] == pytest.approx(PTV_CC / grid_cc, rel=0.005)
    rc, out, _ = _run(capsys, files["uniform"], files["rs"], "--protocol", proto)
    assert "Target PTV (isodoses in dose grid): HI 0.000, CI 0.0" in out


def test_mismatched_frame_of_reference_is_refused(files, capsys):
    rc, out, err = _run(capsys, files["other"], files["rs"])
    assert rc == 2 and out == ""
    assert "frame of reference" in err and err.count("1.2.") >= 2
    assert err.startswith("rtplan evaluate: error: ") and err.count("\n") == 1


def test_bad_input_exits_2(files, capsys, tmp_path):
    rc, _, err = _run(capsys, tmp_path / "missing.dcm", files["rs"])
    assert rc == 2 and "missing.dcm" in err
    rc, _, err = _run(capsys, files["rs"], files["rs"])  # an RT-STRUCT is not an RT-DOSE
    assert rc == 2 and "RT Dose Storage" in err
    bad = _protocol(
        tmp_path / "bad.toml", '[[goals]]\nstructure = "PTV"\nmetric = "D95Q"\nmin = 1\n'
    )
    rc, _, err = _run(capsys, files["linear"], files["rs"], "--protocol", bad)
    assert rc == 2 and "'Q'" in err
    rc, _, err = _run(capsys, files["linear"], files["rs"], "--map", "PTV=Body")
    assert rc == 2 and "--protocol" in err


@pytest.mark.parametrize("summation", ["FRACTION", "BEAM"])
def test_a_partial_course_dose_against_course_goals(files, capsys, tmp_path, summation):
    # 2 Gy per fraction, uniform, written as one fraction's (or one beam's) dose
    patient = make_phantom("prostate", pixel_spacing_mm=3.0, slice_spacing_mm=2.5)
    written = write_patient(patient, tmp_path / "pt")
    rd = tmp_path / "RD.dcm"
    write_rtdose(
        rd,
        np.full(DOSE_GRID.shape, 2.0),
        DOSE_GRID,
        patient,
        plan_sop_instance_uid=generate_uid(),
        dose_summation_type=summation,
    )
    goals = '[[goals]]\nstructure = "PTV"\nmetric = "Dmean"\nmin = 59.9\n'
    protocol = _protocol(tmp_path / "p.toml", goals)  # 30 fractions
    rc, out, err = _run(capsys, rd, written.rtstruct_path, "--protocol", protocol, "--json")
    if summation == "BEAM":
        assert rc == 2 and "(3004,000A) DoseSummationType" in err and out == ""
        return
    res = json.loads(out)
    assert rc == 0, err
    assert res["fractions_applied"] == 30 and res["dose_summation_type"] == "FRACTION"
    assert res["goals"][0]["value"] == pytest.approx(60.0)
    assert res["max_dose_gy"] == pytest.approx(60.0)
    # without a protocol the dose is reported as stored (with the reader's warning)
    with pytest.warns(UserWarning, match="not the whole course"):
        rc, out, _ = _run(capsys, rd, written.rtstruct_path, "--json")
    assert rc == 0 and json.loads(out)["max_dose_gy"] == pytest.approx(2.0)


def test_dose_of_another_patient_is_refused_without_printing_ids(files, capsys, tmp_path):
    import pydicom

    ds = pydicom.dcmread(files["uniform"])
    ds.PatientID = "OTHER-PATIENT-123"
    other = tmp_path / "RD_other_patient.dcm"
    ds.save_as(other)
    rc, out, err = _run(capsys, other, files["rs"])
    assert rc == 2 and out == ""
    assert "(0010,0020) PatientID" in err and "OTHER-PATIENT-123" not in err
    rc, _, err = _run(capsys, other, files["rs"], "--ct", files["ct"])
    assert rc == 2 and "PatientID" in err


def test_goal_on_an_absent_optional_structure_is_not_evaluated(files, capsys, tmp_path):
    proto = _protocol(
        tmp_path / "optional.toml",
        (
            "[structures.Parotid_L]\nrequired = false\n"
            '[[goals]]\nstructure = "PTV"\nmetric = "Dmean"\nmin = 59.5\n'
            '[[goals]]\nstructure = "Parotid_L"\nmetric = "Dmean"\nmax = 26.0\n'
        ),
    )
    rc, out, _ = _run(capsys, files["linear"], files["rs"], "--protocol", proto, "--json")
    assert rc == 0  # a goal not evaluated is neither met nor failed
    res = json.loads(out)
    assert [g["status"] for g in res["goals"]] == ["pass", "not_evaluated"]
    assert res["goals"][1]["structure"] == "Parotid_L" and res["goals"][1]["value"] is None
    assert "not found in the patient" in res["skipped"]["Parotid_L"]
    assert res["goals_summary"].startswith("1/1 goals met, 1 not evaluated: Parotid_L Dmean")
    rc, out, _ = _run(capsys, files["linear"], files["rs"], "--protocol", proto)
    assert "[NOT EVALUATED] P2 Parotid_L Dmean <= 26 Gy" in out  # protocol default priority 2
