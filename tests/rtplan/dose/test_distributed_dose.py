"""Per-angle pencil-beam doses on a Dask cluster (``rtplan dose --scheduler``).

Independent check: the serial dose of the same plan (``compute_plan_dose`` without a
client), to the last bit, and a pickle round trip of what a task carries to a worker
process (a remote cluster's workers receive the beams and the model pickled).
"""

from __future__ import annotations

import pickle
import types

import numpy as np
import pydicom
import pytest

from dose_engine import load_beam_model
from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.cli import main
from rtplan.dose import compute_plan_dose
from rtplan.dose._aperture import static_parts
from rtplan.errors import InputError
from rtplan.io import read_rtplan, write_rtplan
from rtplan.phantoms import write_phantom

distributed = pytest.importorskip("distributed")

VARIAN = load_machine("VarianMLC120")
GRID_MM = 6.0


def _segment(x1: float, x2: float, mu: float) -> Segment:
    c = VARIAN.mlc.leaf_centers_mm
    inside = np.abs(c) < 40
    a, b = np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)
    return Segment(
        np.stack([a, b]),
        {"X": (-60.0, 60.0), "Y": (-40.0, 40.0)},
        mu,
        VARIAN.mlc.leaf_boundaries_mm,
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A cshape phantom (6 mm), a plan of a static beam and a 12-degree arc (6 angles)."""
    root = tmp_path_factory.mktemp("dask_dose")
    written = write_phantom("cshape", root / "ct", pixel_spacing_mm=6.0, slice_spacing_mm=6.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    beams = [
        DeliverableBeam(
            k + 1,
            name,
            Beam(gantry, isocenter_mm=iso, patient_position=patient.position),
            VARIAN,
            (_segment(-40.0, 30.0, 80.0), _segment(-20.0, 20.0, 40.0)),
        )
        for k, (name, gantry) in enumerate((("S1", 90.0), ("A2", 200.0)))
    ]
    path = root / "RP.dcm"
    write_rtplan(path, DeliverablePlan(beams, 1, 2.0, "PTV"), patient)
    ds = pydicom.dcmread(path)  # beam 2 into an arc, 200 -> 212 deg clockwise
    cps = ds.BeamSequence[1].ControlPointSequence
    cps[0].GantryRotationDirection = "CW"
    cps[-1].GantryAngle = 212.0
    for cp in cps[1:-1]:
        cp.GantryAngle = 200.0 + 12.0 * float(cp.CumulativeMetersetWeight)
    ds.save_as(path)
    plan = read_rtplan(path, patient)
    return types.SimpleNamespace(root=root, written=written, patient=patient, plan=plan, path=path)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_the_plan_holds_a_static_beam_and_an_arc_of_several_angles(case):
    static, arc = case.plan.beams
    assert not static.is_arc and len(static_parts(static)) == 1
    assert arc.is_arc and len(static_parts(arc)) >= 6  # every 2 degrees of 12


def test_angles_as_dask_tasks_give_the_serial_dose_to_the_last_bit(case, client):
    serial = compute_plan_dose(case.plan, case.patient, dose_grid_mm=GRID_MM)
    spread = compute_plan_dose(case.plan, case.patient, dose_grid_mm=GRID_MM, client=client)
    assert float(serial.dose_gy.max()) > 0.1
    np.testing.assert_array_equal(spread.dose_gy, serial.dose_gy)
    assert spread.beam_max_gy == serial.beam_max_gy


def test_what_a_task_carries_survives_pickling(case):
    model = load_beam_model(None)
    for part in static_parts(case.plan.beams[1]):
        back = pickle.loads(pickle.dumps(part))
        assert back.beam == part.beam and len(back.segments) == len(part.segments)
        np.testing.assert_array_equal(
            back.segments[0].leaf_positions_mm, part.segments[0].leaf_positions_mm
        )
    assert pickle.loads(pickle.dumps(model)).sad_mm == model.sad_mm


def test_an_angle_the_engine_refuses_names_its_beam_and_gantry_angle(case, client):
    arc = case.plan.beams[1]
    far = Beam(
        arc.beam.gantry_angle_deg,
        isocenter_mm=(5000.0, 5000.0, 5000.0),
        patient_position=case.patient.position,
    )
    outside = DeliverablePlan(
        [DeliverableBeam(2, "A2", far, arc.machine, arc.segments)], 1, 2.0, "PTV"
    )
    with pytest.raises(InputError, match=r"beam 2 \('A2'\) at gantry 20\d(\.\d+)? deg"):
        compute_plan_dose(outside, case.patient, dose_grid_mm=GRID_MM, client=client)


def test_cli_scheduler_local_writes_the_serial_dose(case, tmp_path):
    from rtplan.io import read_rtdose

    args = [case.written.ct_dir, case.written.rtstruct_path, case.path, "--dose-grid-mm", "6"]
    assert main(["dose", *map(str, args), "--out", str(tmp_path / "serial.dcm")]) == 0
    out = tmp_path / "local.dcm"
    assert main(["dose", *map(str, args), "--out", str(out), "--scheduler", "local"]) == 0
    np.testing.assert_array_equal(read_rtdose(out)[0], read_rtdose(tmp_path / "serial.dcm")[0])


def test_cli_refuses_a_scheduler_for_the_collapsed_cone_before_any_work(case, tmp_path, capsys):
    out = tmp_path / "ccc.dcm"
    args = [case.written.ct_dir, case.written.rtstruct_path, case.path]
    code = main(
        ["dose", *map(str, args), "--out", str(out), "--algorithm", "ccc", "--scheduler", "local"]
    )
    assert code == 2 and not out.exists()
    assert "--scheduler" in capsys.readouterr().err
