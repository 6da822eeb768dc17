"""The Monte Carlo check (ompMC in its own process) against measured data and our engines.

- Measured 6 MV data (pymedphys's PTW scans, ``dose_engine._measured``): an open 10 × 10
  field at SSD 900 mm in water gives the measured absolute dose at 100 mm depth
  (0.812 cGy/MU) and the measured depth-dose ratio D(200 mm) / D(100 mm), within the
  Monte Carlo's statistics and spectrum (3 %).
- ``rtplan check-mc`` on that plan against the pencil beam: the high-dose region (body D2)
  within 3 %, gamma pass rate and statistics reported, exit status from ``--min-pass``, the
  JSON written; bad arguments exit 2 with nothing written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dose_engine._beam import Beam
from dose_engine._measured import read_measured_6mv
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.cli import main
from rtplan.io import write_rtdose, write_rtplan
from rtplan.monte_carlo import monte_carlo_dose
from rtplan.phantoms import write_phantom

#: Each Monte Carlo run takes minutes of CPU: the whole module is slow (CI's fast legs skip it).
pytestmark = pytest.mark.slow

VARIAN = load_machine("VarianMLC120")
#: Histories of the test runs: about 1.5 % (1 sigma) on a 3 x 3 x 2 voxel average.
HISTORIES = 300_000


def _open_field(machine, half_mm: float, total_mu: float) -> Segment:
    c = machine.mlc.leaf_centers_mm
    inside = np.abs(c) < half_mm
    leaves = np.stack([np.where(inside, -half_mm, 0.0), np.where(inside, half_mm, 0.0)])
    jaws = {"X": (-half_mm, half_mm), "Y": (-half_mm, half_mm)}
    return Segment(leaves, jaws, total_mu, machine.mlc.leaf_boundaries_mm)


@pytest.fixture(scope="module")
def water_field(tmp_path_factory):
    """One open 10 × 10 cm² field, gantry 0, isocentre 100 mm deep (SSD 900 mm), 100 MU,
    on a 5 mm water box; its Monte Carlo dose on the 5 mm grid."""
    root = tmp_path_factory.mktemp("mc_water")
    written = write_phantom(
        "water_box", root / "wb", pixel_spacing_mm=5.0, slice_spacing_mm=5.0, n_slices=49
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    beam = DeliverableBeam(
        1,
        "open 10x10",
        Beam(0.0, isocenter_mm=(0.0, -50.0, 0.0)),
        VARIAN,
        (_open_field(VARIAN, 50.0, 100.0),),
    )
    plan = DeliverablePlan([beam], 1, 0.8, "Body")
    rp = root / "RP.dcm"
    write_rtplan(rp, plan, patient)
    mc = monte_carlo_dose(plan, patient, dose_grid_mm=5.0, histories=HISTORIES)
    return written, rp, mc


def _axis_dose(mc, depth_mm: float) -> float:
    """Mean over 3 × 3 voxels about the axis and the two voxels either side of the depth."""
    z, y, x = mc.grid.zyx_axes_mm()
    iz, ix = int(np.argmin(np.abs(z))), int(np.argmin(np.abs(x)))
    yy = -150.0 + depth_mm
    iy = int(np.searchsorted(y, yy)) - 1  # the voxels whose centres bracket the depth
    return float(mc.dose_gy[iz - 1 : iz + 2, iy : iy + 2, ix - 1 : ix + 2].mean())


def test_monte_carlo_gives_the_measured_absolute_dose_at_10_cm(water_field):
    _, _, mc = water_field
    measured = read_measured_6mv()["absolute"]["d10_ssd900"] / 100.0 * 100.0  # Gy at 100 MU
    assert _axis_dose(mc, 100.0) == pytest.approx(measured, rel=0.03)


def test_monte_carlo_depth_dose_follows_the_measured_one(water_field):
    _, _, mc = water_field
    (pdd,) = [s for s in read_measured_6mv()["scans"][100.0] if s.curve == "PDD"]
    depth, value = np.asarray(pdd.position_mm), np.asarray(pdd.value)
    measured = np.interp(200.0, depth, value) / np.interp(100.0, depth, value)
    assert _axis_dose(mc, 200.0) / _axis_dose(mc, 100.0) == pytest.approx(measured, rel=0.03)


def test_check_mc_cli_reports_gamma_and_writes_json(water_field, tmp_path, capsys):
    written, rp, _ = water_field
    out = tmp_path / "mc.json"
    args = [
        "check-mc",
        str(written.ct_dir),
        str(written.rtstruct_path),
        str(rp),
        "--algorithm",
        "pencil_beam",
        "--histories",
        str(HISTORIES),
        "--json",
        str(out),
    ]
    status = main([*args, "--min-pass", "0.8"])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    rate = record["gamma"]["pass_rate"]
    assert status == (0 if rate >= 0.8 else 1), printed
    assert f"pass rate {100 * rate:.1f} %" in printed
    assert "median 1 sigma" in printed  # the statistics are stated beside the pass rate
    assert record["mc_spectrum"]["name"] == "commissioned"  # the default, named
    assert "commissioned spectrum" in printed
    high = record["structures"]["Body"]["D2"]  # the field's high-dose region
    assert high["ours_gy"] == pytest.approx(high["monte_carlo_gy"], rel=0.03)


def test_check_mc_cli_refuses_a_bad_pass_rate_before_any_work(water_field, tmp_path, capsys):
    written, rp, _ = water_field
    out = tmp_path / "mc.json"
    status = main(
        [
            "check-mc",
            str(written.ct_dir),
            str(written.rtstruct_path),
            str(rp),
            "--min-pass",
            "95",
            "--json",
            str(out),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-pass" in err[0]
    assert not out.exists()


def test_check_mc_refuses_an_rtdose_of_another_plan_before_the_monte_carlo(
    water_field, tmp_path, capsys
):
    written, rp, _ = water_field
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    rd = tmp_path / "RD.dcm"
    grid = patient.ct.grid
    write_rtdose(rd, np.zeros(grid.shape), grid, patient, plan_sop_instance_uid="1.2.3.4")
    out = tmp_path / "mc.json"
    args = [
        "check-mc",
        str(written.ct_dir),
        str(written.rtstruct_path),
        str(rp),
        "--rtdose",
        str(rd),
        "--json",
        str(out),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names plan 1.2.3.4, not the RT-PLAN given" in err[0]
    assert not out.exists()
