"""RT-PLAN writer and reader (rtplan.io._rtplan_write / _rtplan_read).

Independent checks: the DICOM elements are read back with plain pydicom and compared
with the plan and with analytic geometry (SSD to the phantom's elliptic body);
pymedphys's own RT-PLAN reader (``Delivery.from_dicom(...).metersetmap()``) must
reproduce the sequenced fluence of an Agility-style beam; every bad input is refused
with an error naming the file, beam and DICOM element.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import pydicom
import pytest

import rtplan
from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.errors import InputError, OutputExistsError, ReferenceMismatchError
from rtplan.io import read_rtplan, write_rtplan
from rtplan.phantoms import write_phantom

VARIAN = load_machine("VarianMLC120")
AGILITY = load_machine("AgilityMLC160")
#: Body of the TG-119 phantoms: ellipse with semi-axes 150 mm (x) and 100 mm (y).
BODY_A_MM, BODY_B_MM = 150.0, 100.0


def rect_segment(machine, x1, x2, y1, y2, total_mu, *, shift_mm=0.0):
    """A rectangular MLC aperture; closed pairs park at ``shift_mm`` under the jaws."""
    c = machine.mlc.leaf_centers_mm
    inside = (c > y1) & (c < y2)
    a = np.where(inside, x1, shift_mm)
    b = np.where(inside, x2, shift_mm)
    jaws = {}
    if machine.has_x_jaws:
        jaws["X"] = (x1, x2)
    if machine.has_y_jaws:
        jaws["Y"] = (y1, y2)
    return Segment(np.stack([a, b]), jaws, total_mu, machine.mlc.leaf_boundaries_mm)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """cshape phantom (5 mm voxels) on disk + a 3-beam Varian plan written as RT-PLAN."""
    root = tmp_path_factory.mktemp("rtplan_io")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    beams = []
    for number, (gantry, coll, couch) in enumerate(
        ((0.0, 0.0, 0.0), (90.0, 10.0, 0.0), (300.0, 350.0, 0.0)), start=1
    ):
        geom = Beam(
            gantry,
            collimator_angle_deg=coll,
            couch_angle_deg=couch,
            isocenter_mm=iso,
            patient_position=patient.position,
        )
        segs = (
            rect_segment(VARIAN, -40.0, 40.0, -40.0, 40.0, 60.0 + number),
            rect_segment(VARIAN, -20.0, 32.5, -25.0, 15.0, 35.5),
            rect_segment(VARIAN, -37.5, -5.0, 5.0, 30.0, 12.25),
        )
        beams.append(DeliverableBeam(number, f"G{gantry:g}", geom, VARIAN, segs))
    plan = DeliverablePlan(beams, 5, 10.0, "PTV", label="io-test")
    path = root / "RP.dcm"
    write_rtplan(path, plan, patient, plan_name="round trip")
    return types.SimpleNamespace(
        root=root, written=written, patient=patient, plan=plan, path=path, iso=iso
    )


def _cp_positions(cp):
    return {
        i.RTBeamLimitingDeviceType: [float(v) for v in i.LeafJawPositions]
        for i in cp.BeamLimitingDevicePositionSequence
    }


def test_written_elements_match_the_plan(case):
    ds = pydicom.dcmread(case.path)
    p = case.patient
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5"
    assert ds.Modality == "RTPLAN" and ds.RTPlanGeometry == "PATIENT"
    assert ds.FrameOfReferenceUID == p.frame_of_reference_uid
    assert ds.StudyInstanceUID == p.study_instance_uid
    assert ds.SeriesInstanceUID != p.ct_series_instance_uid
    assert ds.PatientID == p.dicom_patient.PatientID
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == p.structure_set_uid
    assert ds.RTPlanLabel == "io-test" and ds.ApprovalStatus == "UNAPPROVED"
    dref = ds.DoseReferenceSequence[0]
    assert dref.ReferencedROINumber == p.structure("PTV").number
    assert float(dref.TargetPrescriptionDose) == 10.0 and dref.DoseReferenceType == "TARGET"
    assert ds.PatientSetupSequence[0].PatientPosition == "HFS"
    fg = ds.FractionGroupSequence[0]
    assert fg.NumberOfFractionsPlanned == 5 and fg.NumberOfBeams == 3
    for rb, dbeam, b in zip(
        fg.ReferencedBeamSequence, case.plan.beams, ds.BeamSequence, strict=True
    ):
        assert rb.ReferencedBeamNumber == b.BeamNumber == dbeam.number
        # Per-fraction meterset = total MU over all fractions / 5.
        assert float(rb.BeamMeterset) == pytest.approx(dbeam.total_mu / 5, abs=1e-4)
        assert b.BeamType == "DYNAMIC" and b.RadiationType == "PHOTON"
        assert b.TreatmentMachineName == "VarianMLC120"
        assert [d.RTBeamLimitingDeviceType for d in b.BeamLimitingDeviceSequence] == [
            "ASYMX",
            "ASYMY",
            "MLCX",
        ]
        mlc = b.BeamLimitingDeviceSequence[2]
        assert mlc.NumberOfLeafJawPairs == 60
        np.testing.assert_allclose(
            [float(v) for v in mlc.LeafPositionBoundaries], VARIAN.mlc.leaf_boundaries_mm
        )
        assert b.NumberOfWedges == b.NumberOfBlocks == b.NumberOfBoli == 0
        assert b.NumberOfControlPoints == len(b.ControlPointSequence) == 6
        cps = b.ControlPointSequence
        assert float(cps[0].GantryAngle) == dbeam.beam.gantry_angle_deg
        assert float(cps[0].BeamLimitingDeviceAngle) == dbeam.beam.collimator_angle_deg
        assert cps[0].GantryRotationDirection == "NONE"
        np.testing.assert_allclose([float(v) for v in cps[0].IsocenterPosition], case.iso)
        w = np.array([float(cp.CumulativeMetersetWeight) for cp in cps])
        mu = np.array([s.total_mu for s in dbeam.segments])
        expected = np.repeat(np.concatenate([[0], np.cumsum(mu)]) / mu.sum(), 2)[1:-1]
        np.testing.assert_allclose(w, expected, atol=1e-8)
        assert float(b.FinalCumulativeMetersetWeight) == 1.0
        for k, cp in enumerate(cps):
            pos = _cp_positions(cp)  # every device at every control point
            seg = dbeam.segments[k // 2]
            np.testing.assert_allclose(pos["MLCX"], seg.leaf_positions_mm.ravel(), atol=1e-4)
            np.testing.assert_allclose(pos["ASYMX"], seg.jaws_mm["X"])
            np.testing.assert_allclose(pos["ASYMY"], seg.jaws_mm["Y"])


def test_ssd_matches_the_elliptic_body(case):
    """SSD from the ray cast = analytic distance to the ellipse x²/150² + y²/100² = 1."""
    ds = pydicom.dcmread(case.path)
    x0, y0, _ = case.iso
    for b in ds.BeamSequence:
        g = np.deg2rad(float(b.ControlPointSequence[0].GantryAngle))
        src_dir = np.array([np.sin(g), -np.cos(g)])  # HFS couch 0: source side (x, y)
        # Solve |iso + t*dir| on the ellipse for the entry point on the source side.
        qa = (src_dir[0] / BODY_A_MM) ** 2 + (src_dir[1] / BODY_B_MM) ** 2
        qb = 2 * (x0 * src_dir[0] / BODY_A_MM**2 + y0 * src_dir[1] / BODY_B_MM**2)
        qc = (x0 / BODY_A_MM) ** 2 + (y0 / BODY_B_MM) ** 2 - 1
        t = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        # 1 mm: polygon chords of the body contour + linear interpolation on 5 mm voxels.
        assert float(b.ControlPointSequence[0].SourceToSurfaceDistance) == pytest.approx(
            1000.0 - t, abs=1.0
        )


def test_ssd_on_a_flat_water_surface():
    from rtplan.phantoms import make_phantom

    p = make_phantom("water_box", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    # 300 mm cube centred on the origin: anterior surface y = -150 mm, left x = +150 mm.
    for gantry, iso, expected in (
        (0.0, (0.0, -50.0, 0.0), 900.0),
        (90.0, (20.0, 0.0, 10.0), 1000.0 - 130.0),
        (180.0, (0.0, 30.0, 0.0), 1000.0 - 120.0),
        (30.0, (0.0, 0.0, 0.0), 1000.0 - 150.0 / np.cos(np.deg2rad(30.0))),
    ):
        got = rtplan.ssd_mm(Beam(gantry, isocenter_mm=iso), p)
        assert got == pytest.approx(expected, abs=0.1), (gantry, got, expected)
    # Without the EXTERNAL structure the CT's -500 HU level gives the same surface.
    assert rtplan.ssd_mm(
        Beam(0.0, isocenter_mm=(0, -50, 0)), p, use_external=False
    ) == pytest.approx(900.0, abs=0.1)


def test_round_trip_read_equals_written_plan(case):
    back = read_rtplan(case.path, case.patient)
    assert isinstance(back, DeliverablePlan)
    assert (back.fractions, back.total_dose_gy, back.target_name, back.label) == (
        5,
        10.0,
        "PTV",
        "io-test",
    )
    assert len(back.beams) == len(case.plan.beams)
    for got, want in zip(back.beams, case.plan.beams, strict=True):
        assert (got.number, got.name) == (want.number, want.name)
        assert got.machine == VARIAN  # the shipped machine, found by TreatmentMachineName
        for attr in (
            "gantry_angle_deg",
            "collimator_angle_deg",
            "couch_angle_deg",
            "sad_mm",
            "patient_position",
        ):
            assert getattr(got.beam, attr) == getattr(want.beam, attr)
        np.testing.assert_allclose(got.beam.isocenter_mm, want.beam.isocenter_mm, atol=1e-6)
        assert len(got.segments) == len(want.segments)
        for sg, sw in zip(got.segments, want.segments, strict=True):
            np.testing.assert_allclose(sg.leaf_positions_mm, sw.leaf_positions_mm, atol=1e-4)
            assert dict(sg.jaws_mm) == dict(sw.jaws_mm)
            assert sg.total_mu == pytest.approx(sw.total_mu, rel=1e-6)
        assert got.total_mu == pytest.approx(want.total_mu, rel=1e-6)


def test_no_overwrite_and_nothing_written_on_error(case, tmp_path):
    with pytest.raises(OutputExistsError, match="--force"):
        write_rtplan(case.path, case.plan, case.patient)
    bad = DeliverablePlan(case.plan.beams, 5, 10.0, "NoSuchROI")
    out = tmp_path / "bad.dcm"
    with pytest.raises(InputError, match="target structure 'NoSuchROI'.*available: Body, PTV"):
        write_rtplan(out, bad, case.patient)
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_segments_beyond_machine_limits(case, tmp_path):
    seg = rect_segment(VARIAN, -40.0, 40.0, -40.0, 40.0, 50.0)
    leaves = seg.leaf_positions_mm.copy()
    leaves[1, 30] = 205.0  # beyond the +200 mm leaf range
    wide = Segment(leaves, seg.jaws_mm, 50.0, seg.leaf_boundaries_mm)
    beam = DeliverableBeam(1, "wide", case.plan.beams[0].beam, VARIAN, (wide,))
    with pytest.raises(InputError, match=r"beam 1 segment 0.*leaf B31.*205"):
        write_rtplan(tmp_path / "x.dcm", DeliverablePlan([beam], 1, 2.0, "PTV"), case.patient)
    assert not (tmp_path / "x.dcm").exists()


# ---------------------------------------------------------------- pymedphys cross-check
def test_pymedphys_metersetmap_reproduces_the_sequenced_fluence(case, tmp_path):
    """pymedphys reads an Agility-style plan (ASYMY + MLCX) and its MetersetMap equals
    rtplan's fluence of the sequenced segments (per fraction)."""
    from pymedphys import Delivery
    from pymedphys._metersetmap.metersetmap import get_grid

    from rtplan.sequencing import fluence_from_segments, sequence_fluence

    rng = np.random.default_rng(11)
    xe = np.arange(-40.0, 40.1, 5.0)
    ye = np.arange(-30.0, 30.1, 5.0)
    fluence = rng.random((ye.size - 1, xe.size - 1)) * 20.0
    seq = sequence_fluence(fluence, AGILITY, x_edges_mm=xe, y_edges_mm=ye, n_levels=5)
    assert len(seq.segments) > 3
    geom = Beam(30.0, isocenter_mm=case.iso)
    plan = DeliverablePlan([DeliverableBeam(1, "A30", geom, AGILITY, seq.segments)], 2, 4.0, "PTV")
    path = tmp_path / "RP_agility.dcm"
    write_rtplan(path, plan, case.patient)
    ds = pydicom.dcmread(path)
    assert [d.RTBeamLimitingDeviceType for d in ds.BeamSequence[0].BeamLimitingDeviceSequence] == [
        "ASYMY",
        "MLCX",
    ]
    delivery = Delivery.from_dicom(ds, fraction_group_number=1)
    assert delivery.mu[-1] == pytest.approx(seq.total_mu / 2, rel=1e-6)
    pmp = np.asarray(delivery.metersetmap())  # default grid: 1 mm, Agility leaves
    grid = get_grid()
    x_edges = np.concatenate([grid["mlc"] - 0.5, [grid["mlc"][-1] + 0.5]])
    y_edges = np.concatenate([grid["jaw"] - 0.5, [grid["jaw"][-1] + 0.5]])
    ours = fluence_from_segments(seq.segments, x_edges, y_edges) / plan.fractions
    # pymedphys converts DICOM to its "bipolar" convention (Delivery._from_dicom_beam:
    # MLC banks reversed and negated, jaws [Y2, -Y1]), which mirrors both map axes
    # relative to IEC BLD x (leaf travel) and y (leaf stacking).
    mirrored = ours[::-1, ::-1]
    assert pmp.shape == mirrored.shape
    np.testing.assert_allclose(pmp, mirrored, atol=1e-4 * pmp.max())
    assert pmp.sum() == pytest.approx(ours.sum(), rel=1e-6)
    # rtplan's reader gets the same Agility beam back (the shipped machine, no X jaws).
    (back,) = read_rtplan(path, case.patient).beams
    assert back.machine == AGILITY and not back.machine.has_x_jaws
    assert len(back.segments) == len(seq.segments)
    for sg, sw in zip(back.segments, seq.segments, strict=True):
        np.testing.assert_allclose(sg.leaf_positions_mm, sw.leaf_positions_mm, atol=1e-4)
        assert dict(sg.jaws_mm) == dict(sw.jaws_mm)
        assert sg.total_mu == pytest.approx(sw.total_mu, rel=1e-6)


# ---------------------------------------------------------------------- bad input
def _mutated(case, tmp_path, mutate, name="bad.dcm"):
    ds = pydicom.dcmread(case.path)
    mutate(ds)
    out = tmp_path / name
    ds.save_as(out)
    return out


def _set_cp(beam_index, cp_index, **elements):
    def mutate(ds):
        cp = ds.BeamSequence[beam_index].ControlPointSequence[cp_index]
        for k, v in elements.items():
            setattr(cp, k, v)

    return mutate


def _set_beam(beam_index, **elements):
    def mutate(ds):
        for k, v in elements.items():
            setattr(ds.BeamSequence[beam_index], k, v)

    return mutate


def _leaf(beam_index, cp_indices, leaf_index, value):
    def mutate(ds):
        for k in cp_indices:
            for item in (
                ds.BeamSequence[beam_index]
                .ControlPointSequence[k]
                .BeamLimitingDevicePositionSequence
            ):
                if item.RTBeamLimitingDeviceType == "MLCX":
                    pos = [float(v) for v in item.LeafJawPositions]
                    pos[leaf_index] = value
                    item.LeafJawPositions = pos

    return mutate


def _drop_meterset(ds):
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[1].BeamMeterset


def _arc_angles_only(ds):
    ds.BeamSequence[0].ControlPointSequence[3].GantryAngle = 40.0


BAD_PLANS = {
    "frame_of_reference": (
        lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4.5"),
        ReferenceMismatchError,
        r"\(0020,0052\) FrameOfReferenceUID is 1\.2\.3\.4\.5 but the CT",
    ),
    "structure_set": (
        lambda ds: setattr(
            ds.ReferencedStructureSetSequence[0], "ReferencedSOPInstanceUID", "1.2.3.9"
        ),
        ReferenceMismatchError,
        r"references RT-STRUCT 1\.2\.3\.9 but the loaded RT-STRUCT",
    ),
    "leaf_outside_limits": (
        _leaf(1, range(6), 60 + 30, 230.0),
        InputError,
        (
            r"beam 2 segment 0: \(300A,011C\) LeafJawPositions of MLCX: leaf B31 at "
            r"230\.00 mm is outside the MLC's limits"
        ),
    ),
    "overlapping_leaves": (
        _leaf(2, (2, 3), 29, 45.0),
        InputError,
        (
            r"beam 3 segment 1: \(300A,011C\) LeafJawPositions of MLCX: leaves of pair "
            r"30 overlap"
        ),
    ),
    "missing_meterset": (
        _drop_meterset,
        InputError,
        (
            r"\(300C,0004\) ReferencedBeamSequence: beam 2 has no BeamMeterset "
            r"\(300A,0086\)"
        ),
    ),
    "couch_rotation": (
        _set_cp(1, 0, PatientSupportRotationDirection="CC"),
        InputError,
        r"beam 2 control point 0: PatientSupportRotationDirection is CC .*only the gantry",
    ),
    "gantry_changes": (
        _arc_angles_only,
        InputError,
        r"beam 1 control point 3: GantryAngle changes from 0 to 40",
    ),
    "wedge": (
        _set_beam(0, NumberOfWedges=1),
        InputError,
        r"beam 1: \(300A,00D0\) NumberOfWedges is 1; wedges are not modelled",
    ),
    "compensator": (
        _set_beam(2, NumberOfCompensators=1),
        InputError,
        r"beam 3: \(300A,00E0\) NumberOfCompensators is 1",
    ),
    "block": (_set_beam(0, NumberOfBlocks=2), InputError, r"NumberOfBlocks is 2"),
    "bolus": (_set_beam(0, NumberOfBoli=1), InputError, r"NumberOfBoli is 1"),
    "electron": (
        _set_beam(1, RadiationType="ELECTRON"),
        InputError,
        r"beam 2: \(300A,00C6\) RadiationType is ELECTRON; only PHOTON",
    ),
    "energy": (
        _set_cp(0, 0, NominalBeamEnergy=10),
        InputError,
        r"beam 1: \(300A,0114\) NominalBeamEnergy is 10 MV",
    ),
    "mlcy": (
        lambda ds: setattr(
            ds.BeamSequence[0].BeamLimitingDeviceSequence[2], "RTBeamLimitingDeviceType", "MLCY"
        ),
        InputError,
        r"RTBeamLimitingDeviceType MLCY",
    ),
    "patient_position": (
        lambda ds: setattr(ds.PatientSetupSequence[0], "PatientPosition", "FFS"),
        ReferenceMismatchError,
        r"PatientPosition is FFS .* CT is HFS",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_PLANS))
def test_reader_refuses_bad_plans(case, tmp_path, kind):
    mutate, error, match = BAD_PLANS[kind]
    path = _mutated(case, tmp_path, mutate)
    with pytest.raises(error, match=match) as info:
        read_rtplan(path, case.patient)
    assert str(path) in str(info.value)  # the message names the file


def test_reader_carries_positions_forward_like_other_systems(case, tmp_path):
    """A control point that omits devices, angles and isocentre keeps the previous ones
    (as Varian/Elekta exports do); the plan reads back the same."""

    def strip(ds):
        for b in ds.BeamSequence:
            for k, cp in enumerate(b.ControlPointSequence):
                if k % 2 == 1:  # second control point of each segment: weight only
                    del cp.BeamLimitingDevicePositionSequence
                if k > 0:
                    for kw in ("GantryAngle", "IsocenterPosition", "NominalBeamEnergy"):
                        if kw in cp:
                            delattr(cp, kw)
            # Varian-style symmetric device names
            for d in b.BeamLimitingDeviceSequence:
                d.RTBeamLimitingDeviceType = {"ASYMX": "X", "ASYMY": "Y"}.get(
                    d.RTBeamLimitingDeviceType, d.RTBeamLimitingDeviceType
                )
            for cp in b.ControlPointSequence:
                for d in cp.get("BeamLimitingDevicePositionSequence", []):
                    d.RTBeamLimitingDeviceType = {"ASYMX": "X", "ASYMY": "Y"}.get(
                        d.RTBeamLimitingDeviceType, d.RTBeamLimitingDeviceType
                    )

    path = _mutated(case, tmp_path, strip)
    back = read_rtplan(path, case.patient)
    for got, want in zip(back.beams, case.plan.beams, strict=True):
        for sg, sw in zip(got.segments, want.segments, strict=True):
            np.testing.assert_allclose(sg.leaf_positions_mm, sw.leaf_positions_mm, atol=1e-4)
            assert dict(sg.jaws_mm) == dict(sw.jaws_mm)
            assert sg.total_mu == pytest.approx(sw.total_mu, rel=1e-6)


def test_reader_skips_setup_beams_without_meterset(case, tmp_path):
    """RayStation exports setup beams (TreatmentDeliveryType SETUP, e.g. "SB1_1") listed in
    the fraction group without a BeamMeterset: they deliver no dose and are skipped, even
    at another energy; the treatment beams read back unchanged."""

    def add_setup_beam(ds):
        setup = copy.deepcopy(ds.BeamSequence[0])
        setup.BeamNumber, setup.BeamName, setup.TreatmentDeliveryType = 101, "SB1_1", "SETUP"
        setup.ControlPointSequence[0].NominalBeamEnergy = 10  # not the model's 6 MV
        ds.BeamSequence.append(setup)
        ref = pydicom.Dataset()
        ref.ReferencedBeamNumber = 101  # no BeamMeterset, as RayStation writes it
        ds.FractionGroupSequence[0].ReferencedBeamSequence.append(ref)
        ds.FractionGroupSequence[0].NumberOfBeams = 4

    path = _mutated(case, tmp_path, add_setup_beam)
    back = read_rtplan(path, case.patient)
    assert [b.number for b in back.beams] == [b.number for b in case.plan.beams]
    assert back.total_mu == pytest.approx(case.plan.total_mu, rel=1e-6)


def test_reader_needs_a_prescription_or_an_argument(case, tmp_path):
    path = _mutated(case, tmp_path, lambda ds: delattr(ds, "DoseReferenceSequence"))
    with pytest.raises(InputError, match=r"TargetPrescriptionDose; pass `prescription_gy=`"):
        read_rtplan(path, case.patient)
    plan = read_rtplan(path, case.patient, prescription_gy=12.0)
    assert plan.total_dose_gy == 12.0


def test_reader_refuses_non_plans(case, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match="is not a DICOM file"):
        read_rtplan(junk, case.patient)
    rs = case.written.rtstruct_path
    with pytest.raises(InputError, match=r"SOPClassUID .* expected RT Plan Storage"):
        read_rtplan(rs, case.patient)


def test_reader_takes_a_machine_for_stricter_limits(case, tmp_path):
    """With a user machine whose leaf range is narrower, the same plan is refused."""
    import dataclasses

    narrow_mlc = dataclasses.replace(VARIAN.mlc, leaf_position_range_mm=(-30.0, 30.0))
    narrow = dataclasses.replace(VARIAN, mlc=narrow_mlc)
    with pytest.raises(
        InputError,
        match=r"leaf A\d+ at -40\.00 mm is outside the MLC's limits "
        r"\[-30, 30\]",
    ):
        read_rtplan(case.path, case.patient, machine=narrow)


def test_ssd_left_out_when_the_central_axis_misses_the_body(case, tmp_path, caplog):
    """(300A,0130) is Type 3: a central axis that never meets the body (x = 160 mm passes
    beside the 150 mm half-width ellipse) gets no SSD and a logged warning, not an error."""
    geom = Beam(0.0, isocenter_mm=(160.0, -110.0, 0.0))
    beam = DeliverableBeam(
        1, "beside", geom, VARIAN, (rect_segment(VARIAN, -20.0, 20.0, -20.0, 20.0, 10.0),)
    )
    with pytest.raises(InputError, match="never reaches the skin"):
        rtplan.ssd_mm(geom, case.patient)
    with caplog.at_level("WARNING", logger="rtplan.io"):
        ds = write_rtplan(tmp_path / "RP.dcm", DeliverablePlan([beam], 1, 1.0, "PTV"), case.patient)
    assert "SourceToSurfaceDistance" not in ds.BeamSequence[0].ControlPointSequence[0]
    assert any("no SourceToSurfaceDistance" in r.getMessage() for r in caplog.records)


def test_reader_asks_which_fraction_group(case, tmp_path):
    import copy

    def two_groups(ds):
        boost = copy.deepcopy(ds.FractionGroupSequence[0])
        boost.FractionGroupNumber = 2
        boost.NumberOfFractionsPlanned = 2
        ds.FractionGroupSequence.append(boost)

    path = _mutated(case, tmp_path, two_groups)
    with pytest.raises(
        InputError,
        match=r"2 fraction groups \(\[1, 2\]\); choose one with "
        r"`fraction_group_number`",
    ):
        read_rtplan(path, case.patient)
    boost = read_rtplan(path, case.patient, fraction_group_number=2)
    assert boost.fractions == 2
    # Same per-fraction meterset, 2 fractions instead of 5.
    assert boost.total_mu == pytest.approx(case.plan.total_mu * 2 / 5, rel=1e-6)
    with pytest.raises(InputError, match="no fraction group 3; available: \\[1, 2\\]"):
        read_rtplan(path, case.patient, fraction_group_number=3)


#: Water box (300 mm cube at the origin): SSD of gantry 0 with the isocentre at
#: (0, -50, 0) and of gantry 90 with it at (20, 0, 0).  Supine: gantry 0 is anterior
#: (−y face, 900 mm); prone: posterior (+y face, 800 mm).  Gantry 90 is on the patient's
#: left (+x face, 870 mm) for HFS and FFP and on the right (−x face, 830 mm) for FFS and
#: HFP (IEC 61217; table in dose_engine._beam).
SSD_BY_POSITION = {
    "HFS": (900.0, 870.0),
    "FFS": (900.0, 830.0),
    "HFP": (800.0, 830.0),
    "FFP": (800.0, 870.0),
}


@pytest.mark.parametrize("position", sorted(SSD_BY_POSITION))
def test_patient_positions_round_trip_with_their_ssd(tmp_path, position):
    written = write_phantom(
        "water_box",
        tmp_path / "wb",
        pixel_spacing_mm=10.0,
        slice_spacing_mm=10.0,
        position=position,
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    assert patient.position == position
    beams = [
        DeliverableBeam(
            n,
            f"G{g:g}",
            Beam(g, isocenter_mm=iso, patient_position=position),
            VARIAN,
            (rect_segment(VARIAN, -30.0, 30.0, -30.0, 30.0, 20.0),),
        )
        for n, (g, iso) in enumerate(((0.0, (0.0, -50.0, 0.0)), (90.0, (20.0, 0.0, 0.0))), 1)
    ]
    ds = write_rtplan(tmp_path / "RP.dcm", DeliverablePlan(beams, 1, 2.0, "Body"), patient)
    assert ds.PatientSetupSequence[0].PatientPosition == position
    ssd = [float(b.ControlPointSequence[0].SourceToSurfaceDistance) for b in ds.BeamSequence]
    np.testing.assert_allclose(ssd, SSD_BY_POSITION[position], atol=0.1)
    back = read_rtplan(tmp_path / "RP.dcm", patient)
    for got, want in zip(back.beams, beams, strict=True):
        assert got.beam.patient_position == position
        np.testing.assert_allclose(
            got.beam.source_position_mm, want.beam.source_position_mm, atol=1e-9
        )
    # A beam set up for another position than the CT's is refused by the writer.
    other = "FFS" if position != "FFS" else "HFS"
    wrong = DeliverableBeam(
        1, "x", Beam(0.0, isocenter_mm=(0, 0, 0), patient_position=other), VARIAN, beams[0].segments
    )
    with pytest.raises(InputError, match=f"patient position {other} but the CT is {position}"):
        write_rtplan(tmp_path / "RP2.dcm", DeliverablePlan([wrong], 1, 2.0, "Body"), patient)


def _fluence_mode(mode, mode_id=None, beams=(1,)):
    def mutate(ds):
        item = pydicom.Dataset()
        item.FluenceMode = mode
        if mode_id is not None:
            item.FluenceModeID = mode_id
        for i in beams:
            ds.BeamSequence[i].PrimaryFluenceModeSequence = pydicom.Sequence([item])

    return mutate


@pytest.mark.parametrize(
    ("mode", "mode_id"), [("NON_STANDARD", "FFF"), ("NON_STANDARD", "SRS"), ("STANDARD", "FFF")]
)
def test_fff_plan_refused_with_a_flattened_model(case, tmp_path, mode, mode_id):
    path = _mutated(case, tmp_path, _fluence_mode(mode, mode_id))
    with pytest.raises(InputError, match=r"beam 2: \(3002,0051\) FluenceMode is .*flattening") as e:
        read_rtplan(path, case.patient)
    assert str(path) in str(e.value) and f"FluenceModeID '{mode_id}'" in str(e.value)
    # with an FFF model an all-FFF plan is read; a flattened plan is then refused
    fff = _mutated(case, tmp_path, _fluence_mode(mode, mode_id, (0, 1, 2)), name="fff.dcm")
    assert len(read_rtplan(fff, case.patient, fluence_mode="FFF").beams) == 3
    with pytest.raises(
        InputError, match=r"beam 1: .*STANDARD \(flattened\) but the beam model is FFF"
    ):
        read_rtplan(case.path, case.patient, fluence_mode="FFF")


def test_unknown_fluence_mode_refused(case, tmp_path):
    path = _mutated(case, tmp_path, _fluence_mode("NON_STANDARD", "HDR"))
    with pytest.raises(InputError, match=r"beam 2: .*FluenceModeID 'HDR'; that fluence mode"):
        read_rtplan(path, case.patient)
    with pytest.raises(InputError, match=r"`fluence_mode` must be one of STANDARD, FFF"):
        read_rtplan(case.path, case.patient, fluence_mode="fff ")


def test_foreign_machine_with_shipped_leaves_gets_their_dosimetry(case, tmp_path):
    """A plan from another system names its own linac; a Millennium 120 MLC is recognised by
    its leaf boundaries, so its dose has the Millennium's leaf and jaw parameters."""

    def rename(ds):
        for b in ds.BeamSequence:
            b.TreatmentMachineName = "TrueBeam_3"

    plan = read_rtplan(_mutated(case, tmp_path, rename), case.patient)
    machine = plan.beams[0].machine
    assert machine.name == "TrueBeam_3" and machine.dosimetry == VARIAN.dosimetry
