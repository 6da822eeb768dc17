"""VMAT planned end to end (issue 17 item 2): ``rtplan plan`` with ``technique = "vmat"``.

The tiny C-shape protocol on the Agility-style machine (binned dose rates, 0.1 MU minimum
per control point), two 120-degree arcs in 40-degree sectors, 10 mm dose grid, is planned
through the CLI; then, independently of the planner:

- the written RT-PLAN's control points, read with pydicom, keep every limit the MU
  refinement's bounds promise (at least 0.1 MU per interval with the beam on, and enough
  meterset that the lowest dose-rate step, 37.5 MU/min, does not outrun the gantry at
  6 deg/s and the leaves at 35 mm/s), and ``rtplan check`` finds no violation;
- ``rtplan dose`` of the written RT-PLAN gives the planner's RT-DOSE within 1 % of its
  maximum (both pencil-beam doses: the C-shape is water);
- the MU refinement lowered its objective and plan.json records it.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pydicom
import pytest
from _tiny_protocol import tiny_cshape_protocol

from rtplan.cli import main
from rtplan.delivery import load_machine
from rtplan.io import read_rtdose
from rtplan.phantoms import write_phantom

pytestmark = pytest.mark.slow

AGILITY = load_machine("AgilityMLC160")
ARCS = """\
[beams]
machine = "AgilityMLC160"
technique = "vmat"
arc_sector_deg = 40.0
arcs = [
  {start_deg = 300, stop_deg = 60, direction = "CW"},
  {start_deg = 60, stop_deg = 300, direction = "CC", collimator_deg = 350},
]
"""


def _run(argv):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main([str(a) for a in argv])
    return status, stdout.getvalue()


@pytest.fixture(scope="module")
def vmat_plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("vmat")
    phantom = write_phantom("cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    text = tiny_cshape_protocol(ring=False).replace("[beams]\ncount = 3\n", ARCS)
    text = text.replace("dose_grid_mm = 8.0", "dose_grid_mm = 10.0")
    (root / "vmat.toml").write_text(text)
    out = root / "plan"
    argv = ["plan", phantom.ct_dir, phantom.rtstruct_path, "--protocol", root / "vmat.toml"]
    status, stdout = _run([*argv, "--out", out, "--no-progress"])
    assert status in (0, 1), stdout  # written (a goal of so coarse a plan may fail)
    return phantom, out, json.loads((out / "plan.json").read_text()), stdout


def test_the_plan_is_two_arcs_and_records_its_refinement(vmat_plan):
    _, out, record, stdout = vmat_plan
    plan = record["plan"]
    assert plan["technique"] == "vmat"
    assert [b["rotation_direction"] for b in plan["beams"]] == ["CW", "CC"]
    assert [b["gantry_angle_deg"] for b in plan["beams"]] == [300.0, 60.0]
    assert [b["stop_gantry_angle_deg"] for b in plan["beams"]] == [60.0, 300.0]
    assert [b["collimator_angle_deg"] for b in plan["beams"]] == [10.0, 350.0]  # machine's, given
    refinement = plan["arc_refinement"]
    assert refinement["objective_after"] <= refinement["objective_before"]
    assert refinement["n_columns"] == refinement["n_intervals"] > 100
    assert "arc(s)" in stdout and "control points" in stdout
    assert record["deliverability"]["ok"] is True
    assert all(b["is_arc"] for b in record["deliverability"]["beams"])


def test_every_interval_keeps_the_machine_limits_by_hand(vmat_plan):
    _, out, _, _ = vmat_plan
    ds = pydicom.dcmread(out / "RTPLAN.dcm")
    limits = AGILITY.require_arc_limits()
    fractions = int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned)
    meterset = {
        int(r.ReferencedBeamNumber): float(r.BeamMeterset)
        for r in ds.FractionGroupSequence[0].ReferencedBeamSequence
    }
    n_on = 0
    for beam in ds.BeamSequence:
        assert beam.BeamType == "DYNAMIC"
        cps = beam.ControlPointSequence
        weights = np.array([float(cp.CumulativeMetersetWeight) for cp in cps])
        angles = np.array([float(cp.GantryAngle) for cp in cps])
        leaves = []
        for cp in cps:
            mlc = [
                i
                for i in cp.BeamLimitingDevicePositionSequence
                if i.RTBeamLimitingDeviceType == "MLCX"
            ]
            leaves.append(np.array([float(v) for v in mlc[0].LeafJawPositions]))
        dmu = np.diff(weights) * meterset[int(beam.BeamNumber)]  # per fraction
        dtheta = np.abs((np.diff(angles) + 180.0) % 360.0 - 180.0)
        travel = np.max(np.abs(np.diff(np.array(leaves), axis=0)), axis=1)
        t_mech = np.maximum(
            dtheta / limits.gantry_speed_deg_per_s, travel / limits.leaf_speed_mm_per_s
        )
        on = dmu > 1e-6
        n_on += int(on.sum())
        assert np.all(dmu[on] >= limits.min_mu_per_control_point)
        need = dmu[on] * 60.0 / t_mech[on]  # MU/min at full gantry and leaf speed
        assert np.all(need >= limits.dose_rate_steps_mu_per_min[0])
        assert np.all((dtheta >= 2.0 - 1e-6) & (dtheta <= 4.0 + 1e-6))
    assert n_on > 100
    assert fractions == 25


def test_rtplan_check_passes_on_the_written_plan(vmat_plan):
    _, out, _, _ = vmat_plan
    status, stdout = _run(["check", out / "RTPLAN.dcm"])
    assert status == 0, stdout
    assert "every machine limit holds" in stdout


def test_rtplan_dose_of_the_written_plan_is_the_planners_within_1_percent(vmat_plan, tmp_path):
    phantom, out, record, _ = vmat_plan
    # the C-shape is water: auto keeps the pencil beam, rtplan dose's default engine
    assert record["plan"]["dose_algorithm"]["algorithm"] == "pencil_beam"
    rd = tmp_path / "RD.dcm"
    argv = ["dose", phantom.ct_dir, phantom.rtstruct_path, out / "RTPLAN.dcm", "--out", rd]
    status, stdout = _run([*argv, "--dose-grid-mm", "10"])
    assert status == 0, stdout
    again, grid_again, _ = read_rtdose(rd)
    planned, grid, _ = read_rtdose(out / "RTDOSE.dcm")
    assert grid_again.shape == grid.shape
    np.testing.assert_allclose(grid_again.origin_mm, grid.origin_mm, atol=1e-3)
    assert float(planned.max()) > 40.0  # a real plan: the prescription is 50 Gy
    assert float(np.max(np.abs(again - planned))) <= 0.01 * float(planned.max())


def test_arc_scheduler_local_gives_the_same_plan(vmat_plan, tmp_path):
    """``--arc-scheduler local``: the intervals' columns and the final dose's gantry angles
    as tasks on a LocalCluster; the same control points and RT-DOSE as the serial plan."""
    pytest.importorskip("distributed")
    phantom, out, _, _ = vmat_plan
    protocol = out.parent / "vmat.toml"
    argv = ["plan", phantom.ct_dir, phantom.rtstruct_path, "--protocol", protocol]
    status, stdout = _run(
        [*argv, "--out", tmp_path / "p", "--no-progress", "--arc-scheduler", "local"]
    )
    assert status in (0, 1), stdout
    serial, grid, _ = read_rtdose(out / "RTDOSE.dcm")
    dask, grid_dask, _ = read_rtdose(tmp_path / "p" / "RTDOSE.dcm")
    assert grid_dask.shape == grid.shape
    np.testing.assert_array_equal(dask, serial)
    weights = [
        [float(cp.CumulativeMetersetWeight) for cp in b.ControlPointSequence]
        for b in pydicom.dcmread(out / "RTPLAN.dcm").BeamSequence
    ]
    weights_dask = [
        [float(cp.CumulativeMetersetWeight) for cp in b.ControlPointSequence]
        for b in pydicom.dcmread(tmp_path / "p" / "RTPLAN.dcm").BeamSequence
    ]
    assert weights_dask == weights
