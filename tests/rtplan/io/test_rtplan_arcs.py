"""Arcs and sliding-window beams read from other systems (rtplan.io._rtplan_read).

The reader samples the delivery between control points into static apertures (at most
2 degrees of gantry and 2 mm of leaf travel apart, each at the middle of its interval).
Independent checks: a sweeping-gap series gives back the machine's dosimetric leaf gap by
the clinical measurement (central-axis dose linear in the gap, extrapolated to zero dose;
LoSasso et al. 1998); a 4-degree arc is exactly two static beams at the sample angles; a
short arc through 0 degrees is close to the static beam at 0 and the same in either
direction, while the long way round is not.
"""

from __future__ import annotations

import types

import numpy as np
import pydicom
import pytest

import rtplan.delivery._arc as arc_module
from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.cli import main
from rtplan.dose import compute_plan_dose
from rtplan.errors import InputError
from rtplan.io import read_rtdose, read_rtplan, write_rtplan
from rtplan.phantoms import write_phantom

VARIAN = load_machine("VarianMLC120")
#: Sweep of the sliding-window fields: leaves travel this far while the beam is on, mm.
SWEEP_MM = 120.0
GRID_MM = 5.0


def _segment(x1: float, x2: float, mu: float) -> Segment:
    """Leaves at x1/x2 in the pairs within |y| < 50 mm (others closed at 0), jaws 130 x 100."""
    c = VARIAN.mlc.leaf_centers_mm
    inside = np.abs(c) < 50
    a, b = np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)
    return Segment(
        np.stack([a, b]),
        {"X": (-70.0, 70.0), "Y": (-50.0, 50.0)},
        mu,
        VARIAN.mlc.leaf_boundaries_mm,
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """cshape phantom (5 mm) and a one-beam, one-segment plan to mutate into arcs."""
    root = tmp_path_factory.mktemp("arcs")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    geom = Beam(0.0, isocenter_mm=iso, patient_position=patient.position)
    plan = DeliverablePlan(
        [DeliverableBeam(1, "A1", geom, VARIAN, (_segment(-50.0, 50.0, 100.0),))], 1, 2.0, "PTV"
    )
    path = root / "RP.dcm"
    write_rtplan(path, plan, patient)
    return types.SimpleNamespace(root=root, written=written, patient=patient, path=path, iso=iso)


def _variant(case, name: str, *, gantry=None, leaves=None, mu: float = 100.0):
    """The plan with control point 0 -> 1 changed: ``gantry`` = (start, stop, direction),
    ``leaves`` = ((a0, b0), (a1, b1)) in the pairs within |y| < 50 mm."""
    ds = pydicom.dcmread(case.path)
    beam = ds.BeamSequence[0]
    ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamMeterset = mu
    cps = beam.ControlPointSequence
    if gantry is not None:
        start, stop, direction = gantry
        cps[0].GantryAngle, cps[0].GantryRotationDirection = start, direction
        cps[1].GantryAngle = stop
    if leaves is not None:
        inside = np.abs(VARIAN.mlc.leaf_centers_mm) < 50
        for cp, (a, b) in zip(cps, leaves, strict=True):
            for item in cp.BeamLimitingDevicePositionSequence:
                if item.RTBeamLimitingDeviceType == "MLCX":
                    pos = np.array([float(v) for v in item.LeafJawPositions]).reshape(2, -1)
                    pos[0, inside], pos[1, inside] = a, b
                    item.LeafJawPositions = [float(v) for v in pos.ravel()]
    out = case.root / f"{name}.dcm"
    ds.save_as(out)
    return out


def _dose(case, path, model=None):
    plan = read_rtplan(path, case.patient)
    return plan, compute_plan_dose(plan, case.patient, dose_grid_mm=GRID_MM, model=model)


def _at_iso(case, dose) -> float:
    idx = np.round(dose.grid.point_to_index(np.asarray(case.iso)[None])).astype(int)[0]
    return float(dose.dose_gy[tuple(idx)])


def test_sweeping_gaps_give_back_the_dosimetric_leaf_gap(case):
    # central-axis dose of a gap g swept over L at M MU: M [(g + DLG)/L (1 - T) + T] per
    # unit open-field dose: linear in g, zero at g = -DLG after the leaves' transmission
    gaps = np.array([2.0, 5.0, 10.0, 20.0])
    doses = []
    for g in gaps:
        start = (-SWEEP_MM / 2 - g / 2, -SWEEP_MM / 2 + g / 2)
        stop = (SWEEP_MM / 2 - g / 2, SWEEP_MM / 2 + g / 2)
        plan, dose = _dose(case, _variant(case, f"gap{g:g}", leaves=(start, stop)))
        beam = plan.beams[0]
        assert sum(s.total_mu for s in beam.segments) == pytest.approx(100.0)
        assert len(beam.segments) == int(np.ceil(SWEEP_MM / 2.0))  # 2 mm of travel each
        assert not beam.is_arc
        doses.append(_at_iso(case, dose))
    _, open_dose = _dose(case, _variant(case, "open", leaves=((-70, 70), (-70, 70))))
    # the leaves' transmission as a physicist measures it: the bank closed with its
    # rounded-end gap hidden under the X1 jaw (at -70 mm), central-axis dose over the open
    # field's (with the gap in the field, its head scatter reaches the axis and reads as
    # transmission: +0.0005 with the shipped model's broad extra-focal source)
    _, closed = _dose(case, _variant(case, "closed", leaves=((-75, -75), (-75, -75))))
    per_open = np.array(doses) / _at_iso(case, open_dose)
    t = _at_iso(case, closed) / _at_iso(case, open_dose)
    assert t == pytest.approx(VARIAN.dosimetry.transmission, abs=0.005)
    slope, intercept = np.polyfit(gaps, per_open, 1)
    assert slope == pytest.approx((1 - t) / SWEEP_MM, rel=0.02)
    dlg = (intercept - t) / slope
    # the shipped model, head scatter included (1.58 mm for 1.6 mm)
    assert dlg == pytest.approx(VARIAN.dosimetry.dosimetric_leaf_gap_mm, abs=0.05)
    assert np.max(np.abs(np.polyval([slope, intercept], gaps) - per_open)) < 1e-3


def test_short_arc_is_two_static_beams_at_its_sample_angles(case):
    plan, arc = _dose(case, _variant(case, "arc4", gantry=(0.0, 4.0, "CW")))
    beam = plan.beams[0]
    assert beam.is_arc
    assert [s.gantry_angle_deg for s in beam.segments] == pytest.approx([1.0, 3.0])
    assert [s.total_mu for s in beam.segments] == pytest.approx([50.0, 50.0])
    seg = beam.segments[0]
    static = DeliverablePlan(
        [
            DeliverableBeam(
                k + 1,
                f"G{g:g}",
                Beam(g, isocenter_mm=case.iso, patient_position=case.patient.position),
                VARIAN,
                (Segment(seg.leaf_positions_mm, dict(seg.jaws_mm), 50.0, seg.leaf_boundaries_mm),),
            )
            for k, g in enumerate((1.0, 3.0))
        ],
        1,
        2.0,
        "PTV",
    )
    two = compute_plan_dose(static, case.patient, dose_grid_mm=GRID_MM)
    np.testing.assert_allclose(arc.dose_gy, two.dose_gy, rtol=1e-5, atol=1e-7)
    # the collapsed cone too: the arc's two angles are its two beams
    kw = {"dose_grid_mm": GRID_MM, "algorithm": "ccc"}
    ccc_arc = compute_plan_dose(plan, case.patient, **kw)
    ccc_two = compute_plan_dose(static, case.patient, **kw)
    assert ccc_arc.beam_max_gy[1] == pytest.approx(float(ccc_arc.dose_gy.max()), rel=1e-6)
    np.testing.assert_allclose(ccc_arc.dose_gy, ccc_two.dose_gy, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_arc_through_zero_follows_its_rotation_direction(case, monkeypatch):
    _, static = _dose(case, case.path)
    cw_plan, cw = _dose(case, _variant(case, "cw", gantry=(350.0, 10.0, "CW")))
    cc_plan, cc = _dose(case, _variant(case, "cc", gantry=(10.0, 350.0, "CC")))
    with monkeypatch.context() as m:  # 10-degree samples keep the 340-degree arc quick
        m.setattr(arc_module, "ARC_SAMPLE_DEG", 10.0)
        long_plan, long_way = _dose(case, _variant(case, "long", gantry=(10.0, 350.0, "CW")))
    angles = sorted(s.gantry_angle_deg for s in cw_plan.beams[0].segments)
    assert (
        len(angles) == 10 and angles[0] == pytest.approx(1.0) and angles[-1] == pytest.approx(359.0)
    )
    assert len(long_plan.beams[0].segments) == 34  # 340 degrees in 10-degree samples
    # the same ten angles either way round: the same dose
    np.testing.assert_allclose(cw.dose_gy, cc.dose_gy, rtol=1e-5, atol=1e-6)
    # a 20-degree arc through 0 is close to the static beam at 0 at the isocentre ...
    assert _at_iso(case, cw) == pytest.approx(_at_iso(case, static), rel=0.02)
    # ... and the 340-degree arc the other way spreads the dose: much lower maximum
    assert long_way.dose_gy.max() < 0.7 * cw.dose_gy.max()


def test_rtplan_dose_computes_a_vmat_plan_and_the_writer_refuses_its_spacing(
    case, tmp_path, capsys
):
    # leaves and gantry both moving: samples by whichever needs more, MU kept
    path = _variant(case, "vmat", gantry=(180.0, 200.0, "CW"), leaves=((-30, 10), (10, 50)))
    plan = read_rtplan(path, case.patient)
    segs = plan.beams[0].segments
    assert len(segs) == 20  # 40 mm of leaf travel in 2 mm steps beats 20 degrees in 2
    assert sum(s.total_mu for s in segs) == pytest.approx(100.0)
    # ten 2-degree bins: the two samples of each share its centre angle
    assert [s.gantry_angle_deg for s in segs[:3]] == pytest.approx([181.0, 181.0, 183.0])
    np.testing.assert_allclose(segs[0].leaf_positions_mm[0, 30], -29.0)
    rd = tmp_path / "RD.dcm"
    argv = ["dose", str(case.written.ct_dir), str(case.written.rtstruct_path), str(path)]
    assert main([*argv, "--out", str(rd), "--dose-grid-mm", str(GRID_MM)]) == 0
    dose = read_rtdose(rd)[0]
    assert float(np.max(dose)) == pytest.approx(
        float(compute_plan_dose(plan, case.patient, dose_grid_mm=GRID_MM).dose_gy.max()), rel=1e-3
    )
    # read back as an arc with its control points; 20 degrees between them breaks the
    # machine's control-point spacing, so it is not written again
    with pytest.raises(
        InputError, match=r"beam 1 control point 0: 20 degrees .*\[arc\.control_point_spacing_deg\]"
    ):
        write_rtplan(tmp_path / "again.dcm", plan, case.patient)
    assert not (tmp_path / "again.dcm").exists()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda cp: setattr(cp, "BeamLimitingDeviceRotationDirection", "CW"),
            r"control point 0: BeamLimitingDeviceRotationDirection is CW .*only the gantry",
        ),
        (
            lambda cp: setattr(cp, "GantryRotationDirection", "CCW"),
            r"control point 0: \(300A,011F\) GantryRotationDirection is 'CCW'; expected CW",
        ),
    ],
)
def test_rotations_other_than_the_gantrys_are_refused(case, tmp_path, mutate, match):
    ds = pydicom.dcmread(case.path)
    mutate(ds.BeamSequence[0].ControlPointSequence[0])
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    with pytest.raises(InputError, match=match):
        read_rtplan(path, case.patient)


def test_a_beam_needing_too_many_apertures_is_refused(case, monkeypatch):
    path = _variant(case, "long_arc", gantry=(10.0, 350.0, "CW"))  # 170 apertures
    monkeypatch.setattr(arc_module, "MAX_SAMPLES_PER_BEAM", 100)
    with pytest.raises(InputError, match=r"beam 1: more than 100 apertures after sampling"):
        read_rtplan(path, case.patient)
