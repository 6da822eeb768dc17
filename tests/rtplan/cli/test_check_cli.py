"""``rtplan check``: deliverability of any RT-PLAN file, exit 0 / 1 / 2.

Independent checks: the numbers printed for a written plan are those the library
computes from the in-memory beams, and a 20-degree arc read from a file is timed by hand
(gantry at 6 deg/s: 20/6 s; 100 MU at 600 MU/min: 10 s, the slower); bad files are
refused with the beam, control point and element named.
"""

from __future__ import annotations

import json
import re
import types

import numpy as np
import pydicom
import pytest

from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.cli import main
from rtplan.delivery import check_deliverability
from rtplan.io import write_rtplan
from rtplan.phantoms import write_phantom

VARIAN = load_machine("VarianMLC120")


def _segment(x1, x2, mu):
    inside = np.abs(VARIAN.mlc.leaf_centers_mm) < 50
    leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
    return Segment(
        leaves, {"X": (-70.0, 70.0), "Y": (-50.0, 50.0)}, mu, VARIAN.mlc.leaf_boundaries_mm
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=8.0, slice_spacing_mm=8.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    segs = (_segment(-50.0, 50.0, 120.0), _segment(-20.0, 30.0, 40.0))
    plan = DeliverablePlan([DeliverableBeam(1, "G0", Beam(0.0), VARIAN, segs)], 2, 4.0, "PTV")
    path = root / "RP.dcm"
    write_rtplan(path, plan, patient)
    return types.SimpleNamespace(root=root, plan=plan, path=path)


def _mutated(case, name, mutate):
    ds = pydicom.dcmread(case.path)
    mutate(ds.BeamSequence[0])
    out = case.root / f"{name}.dcm"
    ds.save_as(out)
    return out


def _arc(beam):
    """Control points 0 -> 1 become a 20-degree CW arc (segment 1 is control points 0-1)."""
    cps = beam.ControlPointSequence
    cps[0].GantryRotationDirection = "CW"
    for cp, angle in zip(cps, (350.0, 10.0, 10.0, 10.0), strict=True):
        cp.GantryAngle = angle


def test_a_static_plan_passes_with_the_librarys_numbers(case, capsys):
    assert main(["check", str(case.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = check_deliverability(case.plan)
    assert out["ok"] and out["violations"] == []
    assert out["total_mu_per_fraction"] == pytest.approx(80.0)  # 160 MU over 2 fractions
    assert out["delivery_time_s"] == pytest.approx(expected.delivery_time_s, rel=1e-6)
    # 60 MU and 20 MU at 600 MU/min and 30 mm of leaf travel at 25 mm/s in between
    assert out["delivery_time_s"] == pytest.approx(6.0 + 1.2 + 2.0, rel=1e-6)
    (beam,) = out["beams"]
    assert beam["mcs"] == pytest.approx(expected.mcs, rel=1e-6)
    assert main(["check", str(case.path)]) == 0
    table = capsys.readouterr().out
    assert "every machine limit holds" in table and "80.00 MU per fraction" in table


def test_an_arc_from_a_file_is_timed_and_its_violations_named(case, capsys):
    path = _mutated(case, "arc20", _arc)
    assert main(["check", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    (beam,) = out["beams"]
    assert beam["is_arc"] and beam["n_control_points"] == 4
    # 20 degrees at 6 deg/s (3.3 s) < 60 MU at 600 MU/min (6 s); then segment 2 as static
    assert beam["delivery_time_s"] == pytest.approx(6.0 + 1.2 + 2.0, rel=1e-6)
    limits = [(v["beam"], v["control_point"], v["limit"]) for v in out["violations"]]
    # 20 degrees between control points 0 and 1, 0 degrees between the others
    assert limits == [(1, k, "arc.control_point_spacing_deg") for k in range(3)]
    assert main(["check", str(path)]) == 1
    assert "beam 1 control point 0: 20 degrees to the next control point" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "mutate", "match"),
    [
        (
            "count",
            lambda b: setattr(b, "NumberOfControlPoints", 5),
            (
                r"beam 1: \(300A,0110\) NumberOfControlPoints is 5 but \(300A,0111\) "
                r"ControlPointSequence has 4 items"
            ),
        ),
        (
            "weights",
            lambda b: setattr(b.ControlPointSequence[2], "CumulativeMetersetWeight", 0.5),
            (
                r"beam 1 control point 2: \(300A,0134\) CumulativeMetersetWeight is 0\.5, "
                r"below control point 1's 0\.75"
            ),
        ),
        (
            "gantry",
            lambda b: (_arc(b), delattr(b.ControlPointSequence[1], "GantryAngle")),
            (
                r"beam 1 control point 1: \(300A,011E\) GantryAngle is missing, but the "
                r"gantry rotates \(CW\)"
            ),
        ),
        ("not_dicom", None, r"is not a DICOM file"),
    ],
)
def test_bad_plans_exit_2_naming_beam_control_point_and_element(case, capsys, name, mutate, match):
    if mutate is None:
        path = case.root / "not_dicom.dcm"
        path.write_text("not a DICOM file")
    else:
        path = _mutated(case, name, mutate)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtplan check: error:") and str(path.name) in err
    assert len(err.strip().splitlines()) == 1
    assert re.search(match, err), err


def test_an_arc_on_a_machine_without_arc_limits_exits_2(case, capsys):
    def other_machine(beam):
        _arc(beam)
        beam.TreatmentMachineName = "OtherLinac"

    path = _mutated(case, "other", other_machine)
    assert main(["check", str(path)]) == 2
    assert "has no `[arc]` table" in capsys.readouterr().err
    # with the limits of a shipped machine whose MLC it has
    assert main(["check", str(path), "--machine", "VarianMLC120"]) == 1


def test_a_sliding_window_from_a_file_is_timed_by_its_leaves(case, capsys):
    def sweep(beam):
        # segment 1 (control points 0 -> 1) becomes a 100 mm sliding window
        for cp, shift in zip(beam.ControlPointSequence[:2], (-50.0, 50.0), strict=True):
            for item in cp.BeamLimitingDevicePositionSequence:
                if item.RTBeamLimitingDeviceType == "MLCX":
                    pos = np.array([float(v) for v in item.LeafJawPositions]).reshape(2, -1)
                    inside = np.abs(VARIAN.mlc.leaf_centers_mm) < 50
                    pos[0, inside], pos[1, inside] = shift - 10.0, shift + 10.0
                    item.LeafJawPositions = [float(v) for v in pos.ravel()]

    path = _mutated(case, "window", sweep)
    assert main(["check", str(path), "--json"]) == 0
    (beam,) = json.loads(capsys.readouterr().out)["beams"]
    assert not beam["is_arc"]
    # 100 mm at 25 mm/s (4 s) against 60 MU at 600 MU/min (6 s): 6 s at 100/6 mm/s; then the
    # beam-off move to segment 2 (bank A from 40 to -20 mm: 2.4 s at 25 mm/s) and its 20 MU
    # (2 s)
    assert beam["delivery_time_s"] == pytest.approx(6.0 + 2.4 + 2.0, rel=1e-6)
    assert beam["max_leaf_speed_mm_per_s"] == pytest.approx(25.0, rel=1e-6)
