"""VMAT RT-PLAN export (rtplan.io._rtplan_write with rtplan.delivery.ArcBeam).

Synthetic conformal arcs whose circular aperture sweeps sideways as the gantry turns, with
known MU, for both machine models.  Independent checks: dciodvfy (IOD conformance), the
RT-PLAN reader (control points and dose back within 1 %), pymedphys's own RT-PLAN reader
(MU, gantry angles and leaf positions of the Agility-style arc), exact refusals of arcs
that break the machine's limits.
"""

from __future__ import annotations

import subprocess
import types

import numpy as np
import pydicom
import pytest

from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, load_machine, read_patient
from rtplan.cli import main
from rtplan.delivery import ArcBeam, ControlPoint, check_deliverability
from rtplan.dose import compute_plan_dose
from rtplan.errors import InputError
from rtplan.io import read_rtplan, write_rtplan
from rtplan.phantoms import write_phantom

GRID_MM = 8.0
FRACTIONS = 2
#: MU per fraction between neighbouring control points.
MU_PER_INTERVAL = 2.0


def circle_arc(machine, iso, position, *, number, start_deg, direction, n_cp=11, spacing=4.0):
    """A conformal arc: a 30 mm radius circle whose centre sweeps +-5 mm along the leaves
    over the arc; ``MU_PER_INTERVAL`` MU per fraction between control points."""
    sign = 1.0 if direction == "CW" else -1.0
    y = machine.mlc.leaf_centers_mm
    half = np.sqrt(np.clip(30.0**2 - y**2, 0.0, None))
    cps = []
    for k in range(n_cp):
        shift = 5.0 * np.sin(2 * np.pi * k / (n_cp - 1))
        open_ = half > 0
        leaves = np.stack(
            [np.where(open_, shift - half, shift), np.where(open_, shift + half, shift)]
        )
        jaws = {"Y": (-30.0, 30.0)}
        if machine.has_x_jaws:
            jaws = {"X": (-45.0, 45.0), **jaws}
        cps.append(
            ControlPoint((start_deg + sign * spacing * k) % 360.0, leaves, jaws, k / (n_cp - 1))
        )
    return ArcBeam(
        number,
        f"arc{number}",
        Beam(
            start_deg,
            collimator_angle_deg=machine.require_arc_limits().collimator_angle_deg,
            isocenter_mm=iso,
            patient_position=position,
        ),
        machine,
        control_points=cps,
        meterset_mu=MU_PER_INTERVAL * (n_cp - 1) * FRACTIONS,
        rotation_direction=direction,
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("vmat")
    written = write_phantom(
        "cshape", root / "cshape", pixel_spacing_mm=GRID_MM, slice_spacing_mm=GRID_MM
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    plans, paths = {}, {}
    for name in ("VarianMLC120", "AgilityMLC160"):
        m = load_machine(name)
        beams = [
            # clockwise from 180 to 220, counter-clockwise from 20 through 0 to 340
            circle_arc(m, iso, patient.position, number=1, start_deg=180.0, direction="CW"),
            circle_arc(m, iso, patient.position, number=2, start_deg=20.0, direction="CC"),
        ]
        plans[name] = DeliverablePlan(beams, FRACTIONS, 4.0, "PTV", label="vmat")
        paths[name] = root / f"RP_{name}.dcm"
        write_rtplan(paths[name], plans[name], patient)
    return types.SimpleNamespace(root=root, patient=patient, iso=iso, plans=plans, paths=paths)


@pytest.mark.parametrize("machine", ["VarianMLC120", "AgilityMLC160"])
def test_the_arc_plan_is_dciodvfy_clean_and_carries_its_control_points(case, machine):
    run = subprocess.run(["dciodvfy", str(case.paths[machine])], capture_output=True, text=True)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert lines and lines[0] == "RTPlan", lines
    assert [ln for ln in lines if ln.startswith(("Error", "Warning"))] == []
    ds = pydicom.dcmread(case.paths[machine])
    for item, direction, start in zip(ds.BeamSequence, ("CW", "CC"), (180.0, 20.0), strict=True):
        cps = item.ControlPointSequence
        assert item.BeamType == "DYNAMIC" and item.NumberOfControlPoints == len(cps) == 11
        assert cps[0].GantryRotationDirection == direction
        assert float(cps[0].DoseRateSet) == 600.0  # the machine's maximum
        sign = 1 if direction == "CW" else -1
        np.testing.assert_allclose(
            [float(cp.GantryAngle) for cp in cps], (start + sign * 4.0 * np.arange(11)) % 360
        )
        np.testing.assert_allclose(
            [float(cp.CumulativeMetersetWeight) for cp in cps], np.arange(11) / 10, atol=1e-8
        )
    metersets = [
        float(rb.BeamMeterset) for rb in ds.FractionGroupSequence[0].ReferencedBeamSequence
    ]
    assert metersets == pytest.approx([MU_PER_INTERVAL * 10] * 2)


@pytest.mark.parametrize("machine", ["VarianMLC120", "AgilityMLC160"])
def test_the_reader_gives_back_the_arcs_control_points(case, machine):
    plan = case.plans[machine]
    back = read_rtplan(case.paths[machine], case.patient)
    for ours, read in zip(plan.beams, back.beams, strict=True):
        assert isinstance(read, ArcBeam) and read.rotation_direction == ours.rotation_direction
        assert read.machine == ours.machine and read.total_mu == pytest.approx(ours.total_mu)
        for a, b in zip(ours.control_points, read.control_points, strict=True):
            assert b.gantry_angle_deg == pytest.approx(a.gantry_angle_deg, abs=1e-4)
            np.testing.assert_allclose(b.leaf_positions_mm, a.leaf_positions_mm, atol=1e-4)
            assert dict(b.jaws_mm) == dict(a.jaws_mm)
    # the same deliverability either way; `rtplan check` passes the file
    ours, theirs = check_deliverability(plan), check_deliverability(back)
    assert ours.ok and theirs.ok
    assert theirs.delivery_time_s == pytest.approx(ours.delivery_time_s, rel=1e-6)
    assert theirs.mcs == pytest.approx(ours.mcs, rel=1e-6)
    assert main(["check", str(case.paths[machine])]) == 0


@pytest.mark.slow
def test_the_reread_arcs_give_the_same_dose(case):
    """The Agility-style plan (both arcs): the dose of the re-read plan within 1 % of the
    in-memory plan's (one machine only: each arc angle is one dose calculation)."""
    plan = case.plans["AgilityMLC160"]
    back = read_rtplan(case.paths["AgilityMLC160"], case.patient)
    in_memory = compute_plan_dose(plan, case.patient, dose_grid_mm=GRID_MM)
    reread = compute_plan_dose(back, case.patient, dose_grid_mm=GRID_MM)
    peak = float(in_memory.dose_gy.max())
    assert peak > 0.2  # 80 MU in all through a 60 mm circle: a real dose
    assert float(np.max(np.abs(reread.dose_gy - in_memory.dose_gy))) <= 0.01 * peak


def test_pymedphys_reads_the_agility_arc_with_the_same_mu_and_leaves(case, tmp_path):
    from pymedphys import Delivery

    beam = case.plans["AgilityMLC160"].beams[0]
    path = tmp_path / "RP_one_arc.dcm"
    write_rtplan(path, DeliverablePlan([beam], FRACTIONS, 4.0, "PTV"), case.patient)
    delivery = Delivery.from_dicom(pydicom.dcmread(path), fraction_group_number=1)
    cum_mu = beam.cumulative_meterset_weights() * beam.meterset_mu / FRACTIONS
    np.testing.assert_allclose(delivery.mu, cum_mu, atol=1e-5)
    # pymedphys's bipolar convention: angles in (-180, 180], per leaf pair [B, -A] with the
    # pairs in reverse order (pymedphys _dicom/delivery/core.py)
    angles = np.array([c.gantry_angle_deg for c in beam.control_points])
    np.testing.assert_allclose(np.asarray(delivery.gantry) % 360.0, angles, atol=1e-4)
    mlc = np.asarray(delivery.mlc)
    assert mlc.shape == (11, 80, 2)
    for k, cp in enumerate(beam.control_points):
        a, b = cp.leaf_positions_mm
        np.testing.assert_allclose(mlc[k, :, 0], b[::-1], atol=1e-4)
        np.testing.assert_allclose(mlc[k, :, 1], -a[::-1], atol=1e-4)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"spacing": 5.0, "n_cp": 6},
            (
                r"beam 1 control point 0: 5 degrees to the next control point, outside the "
                r"spacing \[2, 4\] degrees of machine 'AgilityMLC160'\. "
                r"\[arc\.control_point_spacing_deg\] \(5 violation\(s\)"
            ),
        ),
    ],
)
def test_an_arc_breaking_the_machine_limits_is_not_written(case, tmp_path, kw, match):
    m = load_machine("AgilityMLC160")
    beam = circle_arc(
        m, case.iso, case.patient.position, number=1, start_deg=0.0, direction="CW", **kw
    )
    out = tmp_path / "bad.dcm"
    with pytest.raises(InputError, match=match):
        write_rtplan(out, DeliverablePlan([beam], FRACTIONS, 4.0, "PTV"), case.patient)
    assert not out.exists()


def test_too_little_mu_per_control_point_is_not_written(case, tmp_path):
    m = load_machine("AgilityMLC160")
    beam = circle_arc(m, case.iso, case.patient.position, number=1, start_deg=0.0, direction="CW")
    # 0.05 MU per fraction between control points: below Agility's 0.1 and its lowest rate
    thin = ArcBeam(
        1,
        "thin",
        beam.beam,
        m,
        control_points=beam.control_points,
        meterset_mu=0.05 * 10 * FRACTIONS,
        rotation_direction="CW",
    )
    out = tmp_path / "thin.dcm"
    with pytest.raises(
        InputError,
        match=r"beam 1 control point 0: 0\.05 MU to the next control point, below the minimum "
        r"0\.1 MU of machine 'AgilityMLC160'\. \[arc\.min_mu_per_control_point\]",
    ):
        write_rtplan(out, DeliverablePlan([thin], FRACTIONS, 4.0, "PTV"), case.patient)
    assert not out.exists()


def test_an_arc_without_control_points_is_not_written(case, tmp_path):
    arc = case.plans["VarianMLC120"].beams[0]
    samples = DeliverableBeam(1, "samples", arc.beam, arc.machine, arc.segments)
    out = tmp_path / "samples.dcm"
    with pytest.raises(
        InputError,
        match=r"beam\(s\) 1 \('samples'\) are arcs given as segments .*delivery\.ArcBeam",
    ):
        write_rtplan(out, DeliverablePlan([samples], FRACTIONS, 4.0, "PTV"), case.patient)
    assert not out.exists()
