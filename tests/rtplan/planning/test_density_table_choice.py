"""The CT-to-density table is chosen end to end: ``[dose] density_table`` of the protocol
(relative to the protocol file), ``--hu-table FILE`` over it, ``density_table=``.

A calibration that gives soft tissue (0 HU) 10 % more electron density than the shipped
table lengthens every radiological depth in the water-like phantom, so the dose of the same
RT-PLAN at depth falls; the plan made with it records the table (file name, rows) in
plan.json and the report.  Bad tables are refused before anything is written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_protocol import tiny_cshape_protocol

from dose_engine import hu_to_density, load_hu_table
from rtplan import compute_plan_dose, load_machine
from rtplan.cli import main
from rtplan.io import read_patient, read_rtdose, read_rtplan_beams
from rtplan.phantoms import write_phantom
from rtplan.protocols import load_protocol

# one plan and three dose computations: ~30 s on 2 cores
pytestmark = pytest.mark.slow

DENSER = """\
# denser soft tissue than the shipped table (test)
hu, relative_electron_density
-1000, 0.001
-100, 1.045
0, 1.10
1000, 1.76
3000, 3.08
"""


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("density_table")
    ph = write_phantom("cshape", root / "phantom", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    (root / "protocols").mkdir()
    (root / "protocols" / "scanner.csv").write_text(DENSER)
    protocol = root / "protocols" / "tiny.toml"
    protocol.write_text(
        tiny_cshape_protocol(ring=False) + '[dose]\ndensity_table = "scanner.csv"\n'
    )
    out = root / "plan"
    status = main(
        ["plan", str(ph.ct_dir), str(ph.rtstruct_path), "--protocol", str(protocol),
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    return root, ph, protocol, out, status


def test_protocol_table_is_resolved_next_to_the_protocol(case):
    root, _, protocol, _, _ = case
    assert load_protocol(protocol).density_table == str(root / "protocols" / "scanner.csv")


def test_plan_records_the_table(case):
    root, _, _, out, status = case
    assert status in (0, 1)
    record = json.loads((out / "plan.json").read_text())["plan"]["hu_table"]
    assert record["file"] == "scanner.csv"
    assert record["hu"] == [-1000.0, -100.0, 0.0, 1000.0, 3000.0]
    assert record["relative_electron_density"] == [0.001, 1.045, 1.1, 1.76, 3.08]
    assert record["source"] == "denser soft tissue than the shipped table (test)"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "file scanner.csv" in report and "0 HU → 1.1" in report
    # the MLC and jaw parameters of its aperture doses: the machine's (shipped model)
    plan = json.loads((out / "plan.json").read_text())["plan"]
    mlc = plan["mlc_parameters"]
    machine = load_machine(plan["machine"])
    assert mlc["transmission"] == machine.dosimetry.transmission
    assert mlc["dosimetric_leaf_gap_mm"] == machine.dosimetry.dosimetric_leaf_gap_mm
    assert mlc["from_beam_model"] == []
    assert f"dosimetric leaf gap {machine.dosimetry.dosimetric_leaf_gap_mm:g} mm" in report
    # the collimator heights the head scatter was computed with
    assert mlc["source_to_mlc_mm"] == machine.dosimetry.source_to_mlc_mm
    assert mlc["source_to_y_jaws_mm"] == machine.dosimetry.source_to_y_jaws_mm
    heights = (machine.dosimetry.source_to_mlc_mm, machine.dosimetry.source_to_y_jaws_mm)
    assert all(h is not None for h in heights)
    assert f"{heights[0]:g} / " in report


def test_denser_table_lowers_the_dose_at_depth(case, tmp_path):
    root, ph, _, out, _ = case
    patient = read_patient(ph.ct_dir, ph.rtstruct_path)
    plan = read_rtplan_beams(out / "RTPLAN.dcm", patient)
    table = root / "protocols" / "scanner.csv"
    body = np.asarray(patient.ct.array) > -200
    rho = np.asarray(hu_to_density(np.asarray(patient.ct.array, np.float32), load_hu_table(table)))
    rho0 = np.asarray(hu_to_density(np.asarray(patient.ct.array, np.float32)))
    assert np.median(rho[body] / rho0[body]) == pytest.approx(1.10, abs=0.01)
    shipped = compute_plan_dose(plan, patient, dose_grid_mm=8.0)
    denser = compute_plan_dose(plan, patient, dose_grid_mm=8.0, density_table=table)
    ptv = patient.structure("PTV").mask(shipped.grid)
    ratio = float(np.mean(denser.dose_gy[ptv]) / np.mean(shipped.dose_gy[ptv]))
    # ~60-100 mm deep: 6-10 mm more water-equivalent depth, about 0.5 %/mm less dose
    assert 0.92 < ratio < 0.99
    # rtplan dose --hu-table gives the same dose as the API
    rd = tmp_path / "RD.dcm"
    args = ["dose", str(ph.ct_dir), str(ph.rtstruct_path), str(out / "RTPLAN.dcm")]
    assert main([*args, "--out", str(rd), "--dose-grid-mm", "8", "--hu-table", str(table)]) == 0
    np.testing.assert_allclose(read_rtdose(rd)[0].max(), denser.dose_gy.max(), rtol=1e-3)


def test_bad_table_refused_before_anything_is_written(case, tmp_path, capsys):
    root, ph, protocol, out, _ = case
    bad = tmp_path / "bad.csv"
    bad.write_text("-1000, 0.001\n0, 1.0\n-100, 0.9\n")
    rd = tmp_path / "RD.dcm"
    args = ["dose", str(ph.ct_dir), str(ph.rtstruct_path), str(out / "RTPLAN.dcm")]
    assert main([*args, "--out", str(rd), "--hu-table", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"HU table {bad}, line 3: HU -100 after 0" in err and not rd.exists()
    new = tmp_path / "plan"
    argv = ["plan", str(ph.ct_dir), str(ph.rtstruct_path), "--protocol", str(protocol)]
    assert main([*argv, "--out", str(new), "--hu-table", str(bad), "--no-progress"]) == 2
    assert "line 3" in capsys.readouterr().err and not new.exists()
