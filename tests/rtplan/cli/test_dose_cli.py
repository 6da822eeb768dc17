"""``rtplan dose CT_DIR RTSTRUCT RTPLAN --out RTDOSE.dcm``: recalculation of any RT-PLAN.

- Round trip: a plan's dose written as RT-DOSE by the planner equals the dose that
  ``rtplan dose`` recomputes from the written RT-PLAN (1 % of the prescription above 10 %
  of the maximum).
- Measured data: an RT-PLAN with one open 10 × 10 cm² field at SSD 900 mm on the water
  box, read and computed by ``rtplan dose``, reproduces pymedphys's measured 6 MV data
  (PTW MEPHYSTO scans 06MV_10x10.mcc read by ``dose_engine._measured``): depth dose
  beyond dmax within 2 % (local), 50 % field widths within 2 mm, absolute dose at 10 cm
  depth within 2 % of the measured 0.812 cGy/MU.
- Bad input: non-zero exit, one line on stderr, no output file.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import types

import numpy as np
import pydicom
import pytest
from scipy.ndimage import map_coordinates

from dose_engine._beam import Beam
from dose_engine._measured import read_measured_6mv
from dose_engine._validation import profile_metrics
from rtplan import (
    DeliverableBeam,
    DeliverablePlan,
    Segment,
    compute_plan_dose,
    load_machine,
    read_patient,
)
from rtplan.cli import main
from rtplan.errors import InputError
from rtplan.io import read_rtdose, write_rtdose, write_rtplan
from rtplan.phantoms import write_phantom
from rtplan.structures import body_structure

VARIAN = load_machine("VarianMLC120")


def rect_segment(machine, x1, x2, y1, y2, total_mu):
    """A rectangular MLC aperture with jaws on it; closed pairs park at 0 under the jaws."""
    c = machine.mlc.leaf_centers_mm
    inside = (c > y1) & (c < y2)
    leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
    return Segment(leaves, {"X": (x1, x2), "Y": (y1, y2)}, total_mu, machine.mlc.leaf_boundaries_mm)


def sample(dose, grid, points_mm):
    """Trilinear interpolation of ``dose`` at LPS points (n, 3)."""
    idx = grid.point_to_index(np.asarray(points_mm, float)).T
    return map_coordinates(dose, idx, order=1)


@pytest.fixture(scope="module")
def cshape(tmp_path_factory):
    root = tmp_path_factory.mktemp("dose_cli")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = patient.structure("PTV").centroid_mm(patient.ct.grid)
    beams = []
    for number, gantry in enumerate((0.0, 120.0, 240.0), start=1):
        geom = Beam(gantry, collimator_angle_deg=5.0 * number, isocenter_mm=iso)
        segs = (
            rect_segment(VARIAN, -45.0, 45.0, -45.0, 45.0, 80.0),
            rect_segment(VARIAN, -30.0, 12.5, -20.0, 35.0, 40.0 + 5 * number),
        )
        beams.append(DeliverableBeam(number, f"G{gantry:g}", geom, VARIAN, segs))
    draft = DeliverablePlan(beams, 3, 1.0, "PTV")
    # The planner's final dose; prescribe the median PTV dose so "1 % of Rx" is meaningful.
    planned = compute_plan_dose(draft, patient, dose_grid_mm=5.0)
    ptv = patient.structure("PTV").mask(planned.grid)
    rx = round(float(np.median(planned.dose_gy[ptv])), 3)
    plan = DeliverablePlan(beams, 3, rx, "PTV")
    rp = root / "RP.dcm"
    ds = write_rtplan(rp, plan, patient)
    rd = root / "RD_planned.dcm"
    write_rtdose(
        rd, planned.dose_gy, planned.grid, patient, plan_sop_instance_uid=ds.SOPInstanceUID
    )
    return types.SimpleNamespace(
        root=root,
        written=written,
        patient=patient,
        plan=plan,
        rp=rp,
        rd=rd,
        rx=rx,
        plan_uid=ds.SOPInstanceUID,
    )


def _args(case, out, *extra):
    return [
        "dose",
        str(case.written.ct_dir),
        str(case.written.rtstruct_path),
        str(case.rp),
        "--out",
        str(out),
        *extra,
    ]


def test_round_trip_recalculated_dose_equals_the_written_rtdose(cshape, tmp_path, capsys):
    out = tmp_path / "RD_recalc.dcm"
    assert main(_args(cshape, out, "--dose-grid-mm", "5")) == 0
    assert "RT-DOSE" in capsys.readouterr().out
    planned, g1, _ = read_rtdose(cshape.rd)
    recalc, g2, refs = read_rtdose(out)
    assert g1 == g2
    assert refs.referenced_plan_uid == cshape.plan_uid
    assert refs.frame_of_reference_uid == cshape.patient.frame_of_reference_uid
    assert refs.dose_summation_type == "PLAN"
    high = planned > 0.1 * planned.max()
    assert high.sum() > 1000
    worst = float(np.max(np.abs(recalc[high] - planned[high])))
    assert worst <= 0.01 * cshape.rx, (worst, cshape.rx)
    # The recalculation is not a copy of the input: the dose reaches the prescription.
    ptv = cshape.patient.structure("PTV").mask(g2)
    assert np.median(recalc[ptv]) == pytest.approx(cshape.rx, rel=0.01)


def test_existing_output_needs_force(cshape, tmp_path, capsys):
    out = tmp_path / "RD.dcm"
    out.write_bytes(b"keep me")
    assert main(_args(cshape, out, "--dose-grid-mm", "8")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]
    assert out.read_bytes() == b"keep me"
    assert main(_args(cshape, out, "--dose-grid-mm", "8", "--force")) == 0
    assert pydicom.dcmread(out).Modality == "RTDOSE"


def test_metal_in_the_ct_is_warned_and_exits_1_with_the_dose_written(cshape, tmp_path, capsys):
    """A 2 x 2 voxel insert at 4000 HU in the Core of one CT slice: the dose is written,
    one WARNING names the 4 voxels and the Core, exit status 1 (the plan's convention)."""
    ct_dir = tmp_path / "ct"
    shutil.copytree(cshape.written.ct_dir, ct_dir)
    grid = cshape.patient.ct.grid
    core = np.argwhere(cshape.patient.structure("Core").mask(grid))
    z, y, x = core[len(core) // 2]
    assert cshape.patient.structure("Core").mask(grid)[z, y : y + 2, x : x + 2].all()
    slice_z_mm = float(grid.index_to_point(np.array([[z, y, x]]))[0, 2])
    (path,) = [
        f
        for f in ct_dir.iterdir()
        if abs(
            float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) - slice_z_mm
        )
        < 1e-3
    ]
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[y : y + 2, x : x + 2] = round(
        (4000.0 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)
    )
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    out = tmp_path / "RD.dcm"
    args = _args(cshape, out, "--dose-grid-mm", "8")
    args[1] = str(ct_dir)
    assert main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    metal = [line for line in lines if line.startswith("WARNING: ") and "metal" in line]
    assert len(metal) == 1, lines
    assert (
        "4 CT voxels inside the body are above 3000 HU (metal, highest 4000 HU), in Core 4"
        in (metal[0])
    )
    assert pydicom.dcmread(out).Modality == "RTDOSE"


def _mutate_plan(case, tmp_path, mutate):
    ds = pydicom.dcmread(case.rp)
    mutate(ds)
    path = tmp_path / "RP_bad.dcm"
    ds.save_as(path)
    return path


def _leaf_out_of_range(ds):
    for cp in ds.BeamSequence[0].ControlPointSequence:
        item = cp.BeamLimitingDevicePositionSequence[2]
        pos = [float(v) for v in item.LeafJawPositions]
        pos[60 + 31] = 250.0
        item.LeafJawPositions = pos


def _no_meterset(ds):
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[2].BeamMeterset


def _collimator_rotation(ds):
    for cp in ds.BeamSequence[0].ControlPointSequence:
        cp.BeamLimitingDeviceRotationDirection = "CW"


CLI_BAD = {
    "frame_of_reference": (
        lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3"),
        "FrameOfReferenceUID is 1.2.3 but the CT",
    ),
    "structure_set": (
        lambda ds: setattr(
            ds.ReferencedStructureSetSequence[0], "ReferencedSOPInstanceUID", "1.2.3.4"
        ),
        "references RT-STRUCT 1.2.3.4",
    ),
    "leaf_range": (_leaf_out_of_range, "leaf B32 at 250.00 mm is outside the MLC's limits"),
    "meterset": (_no_meterset, "beam 3 has no BeamMeterset (300A,0086)"),
    "collimator_rotation": (_collimator_rotation, "BeamLimitingDeviceRotationDirection is CW"),
    "wedge": (lambda ds: setattr(ds.BeamSequence[1], "NumberOfWedges", 1), "NumberOfWedges is 1"),
    "electron": (
        lambda ds: setattr(ds.BeamSequence[2], "RadiationType", "ELECTRON"),
        "RadiationType is ELECTRON",
    ),
    "isocentre_outside_ct": (
        lambda ds: setattr(
            ds.BeamSequence[0].ControlPointSequence[0], "IsocenterPosition", [0.0, 0.0, 900.0]
        ),
        "beam 1 ('G0'): Beam at gantry 0°: isocentre",
    ),
}


@pytest.mark.parametrize("kind", sorted(CLI_BAD))
def test_bad_plans_exit_2_with_one_line_and_no_output(cshape, tmp_path, capsys, kind):
    mutate, message = CLI_BAD[kind]
    bad = _mutate_plan(cshape, tmp_path, mutate)
    out = tmp_path / "RD.dcm"
    args = [
        "dose",
        str(cshape.written.ct_dir),
        str(cshape.written.rtstruct_path),
        str(bad),
        "--out",
        str(out),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rtplan dose: error: ") and message in err[0], err[0]
    assert str(bad) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RP_bad.dcm"]


def test_structure_set_of_another_ct_is_refused_by_the_command(cshape, tmp_path):
    """Through the installed entry point: another phantom's RT-STRUCT (another frame of
    reference) → exit status 2, one stderr line, no file."""
    other = write_phantom(
        "water_box", tmp_path / "other", pixel_spacing_mm=10.0, slice_spacing_mm=10.0
    )
    out = tmp_path / "RD.dcm"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtplan.cli",
            "dose",
            str(cshape.written.ct_dir),
            str(other.rtstruct_path),
            str(cshape.rp),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "frame of reference" in lines[0] and str(other.rtstruct_path) in lines[0], lines[0]
    assert not out.exists()


# ------------------------------------------------------------------ measured 6 MV data
@pytest.fixture(scope="module")
def water_open_field(tmp_path_factory):
    """One open 10 × 10 cm² field (jaws and MLC), gantry 0, isocentre 100 mm deep in the
    water box (surface y = −150 mm → SSD 900 mm), 100 MU in one fraction, recomputed by
    ``rtplan dose`` on a 2.5 mm grid."""
    root = tmp_path_factory.mktemp("water")
    # 2.5 mm voxels on the box boundary (y = -150 mm lies on a voxel face); the CT is
    # cropped laterally to ±120 mm (enough scatter for a 10 × 10 field) to keep it small.
    written = write_phantom(
        "water_box",
        root / "wb",
        pixel_spacing_mm=2.5,
        slice_spacing_mm=2.5,
        matrix_size=(96, 136),
        n_slices=97,
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    seg = rect_segment(VARIAN, -50.0, 50.0, -50.0, 50.0, 100.0)
    beam = DeliverableBeam(
        1, "open 10x10", Beam(0.0, isocenter_mm=(0.0, -50.0, 0.0)), VARIAN, (seg,)
    )
    rp = root / "RP.dcm"
    ds = write_rtplan(rp, DeliverablePlan([beam], 1, 0.8, "Body"), patient)
    assert float(
        ds.BeamSequence[0].ControlPointSequence[0].SourceToSurfaceDistance
    ) == pytest.approx(900.0, abs=0.05)
    out = root / "RD.dcm"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(
            [
                "dose",
                str(written.ct_dir),
                str(written.rtstruct_path),
                str(rp),
                "--out",
                str(out),
                "--dose-grid-mm",
                "2.5",
            ]
        )
    # the CT is cropped laterally through the water: the one warning (exit status 1) is
    # the field of view cutting the "patient"
    warnings = [line for line in printed.getvalue().splitlines() if line.startswith("WARNING")]
    assert status == 1 and len(warnings) == 1, printed.getvalue()
    assert warnings[0].startswith("WARNING: CT FIELD OF VIEW: the body reaches the right, left")
    dose, grid, _ = read_rtdose(out)
    return types.SimpleNamespace(dose=dose, grid=grid, written=written, patient=patient, root=root)


SURFACE_Y_MM = -150.0


def test_measured_depth_dose_through_rtplan(water_open_field):
    dose, grid = water_open_field.dose, water_open_field.grid
    meas = next(s for s in read_measured_6mv()["scans"][100.0] if s.curve == "PDD")
    depth = np.arange(0.0, 250.01, 0.5)
    pts = np.stack([np.zeros_like(depth), SURFACE_Y_MM + depth, np.zeros_like(depth)], axis=-1)
    calc = sample(dose, grid, pts)
    calc = calc / calc.max()
    mv = meas.value / meas.value.max()
    dmax = float(meas.position_mm[np.argmax(meas.value)])
    # Beyond dmax, and ≤ 250 mm: the box is 300 mm deep, the tank was deeper (exit
    # backscatter differs in the last few cm).
    sel = (meas.position_mm >= dmax) & (meas.position_mm <= 250.0)
    local = np.abs(np.interp(meas.position_mm[sel], depth, calc) / mv[sel] - 1.0)
    assert sel.sum() > 50
    assert float(local.max()) <= 0.02, float(local.max())


@pytest.mark.parametrize("depth_mm", [15.0, 50.0, 100.0, 200.0])
@pytest.mark.parametrize("curve", ["CROSSPLANE_PROFILE", "INPLANE_PROFILE"])
def test_measured_profile_widths_through_rtplan(water_open_field, curve, depth_mm):
    dose, grid = water_open_field.dose, water_open_field.grid
    meas = next(
        s
        for s in read_measured_6mv()["scans"][100.0]
        if s.curve == curve and s.depth_mm == depth_mm
    )
    x = np.arange(-110.0, 110.01, 0.5)
    y = np.full_like(x, SURFACE_Y_MM + depth_mm)
    # Crossplane = IEC BLD x (leaf travel) = patient x at gantry 0; inplane = BLD y = z.
    pts = np.stack(
        [x, y, np.zeros_like(x)] if curve == "CROSSPLANE_PROFILE" else [np.zeros_like(x), y, x],
        axis=-1,
    )
    width_calc, _ = profile_metrics(x, sample(dose, grid, pts))
    width_meas, _ = profile_metrics(meas.position_mm, meas.value)
    assert abs(width_calc - width_meas) <= 2.0, (width_calc, width_meas)


def test_measured_absolute_dose_at_10cm_through_rtplan(water_open_field):
    dose, grid = water_open_field.dose, water_open_field.grid
    d10 = float(sample(dose, grid, [[0.0, SURFACE_Y_MM + 100.0, 0.0]])[0])  # Gy for 100 MU
    cgy_per_mu = d10 * 100.0 / 100.0
    measured = read_measured_6mv()["absolute"]["d10_ssd900"]
    assert measured == pytest.approx(0.812)
    assert cgy_per_mu == pytest.approx(measured, rel=0.02)


def test_plan_from_another_system_jaws_only(water_open_field, tmp_path, capsys):
    """pydicom's ``rtplan.dcm`` (another vendor's export: symmetric "X"/"Y" jaw devices, no
    MLC, 30 fractions of 116.0037 MU, no FrameOfReferenceUID) is refused as it is, then —
    re-referenced to the water box with its isocentre 100 mm deep and its jaws set to
    10 × 10 cm² — recomputed: dose at the isocentre = measured 0.812 cGy/MU × total MU."""
    from pydicom.data import get_testdata_file

    from rtplan.errors import ReferenceMismatchError
    from rtplan.io import read_rtplan

    w, patient = water_open_field.written, water_open_field.patient
    original = get_testdata_file("rtplan.dcm")
    with pytest.raises(ReferenceMismatchError, match=r"FrameOfReferenceUID is \(missing\)"):
        read_rtplan(original, patient)
    ds = pydicom.dcmread(original)
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid
    ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = patient.structure_set_uid
    cp0 = ds.BeamSequence[0].ControlPointSequence[0]
    cp0.IsocenterPosition = [0.0, -50.0, 0.0]
    for item in cp0.BeamLimitingDevicePositionSequence:
        item.LeafJawPositions = [-50.0, 50.0]
    rp = tmp_path / "RP_other_system.dcm"
    ds.save_as(rp)

    plan = read_rtplan(rp, patient)
    assert (plan.fractions, plan.target_name) == (30, "PTV")
    assert plan.total_dose_gy == pytest.approx(30.826203)
    (beam,) = plan.beams
    assert beam.machine.name == "unit001" and beam.machine.has_x_jaws
    assert beam.machine.mlc.n_pairs == 1  # the virtual MLC of a jaws-only field
    assert beam.total_mu == pytest.approx(116.0036697 * 30, rel=1e-9)
    np.testing.assert_allclose(beam.segment_rectangles_mm(0), [[-50.0, 50.0, -50.0, 50.0]])

    out = tmp_path / "RD.dcm"
    assert (
        main(
            [
                "dose",
                str(w.ct_dir),
                str(w.rtstruct_path),
                str(rp),
                "--out",
                str(out),
                "--dose-grid-mm",
                "5",
            ]
        )
        == 1  # the water box's CT is cropped laterally: the one warning, ct_truncated
    )
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("WARNING")]
    assert len(printed) == 1 and "CT FIELD OF VIEW" in printed[0], printed
    dose, grid, refs = read_rtdose(out)
    assert refs.referenced_plan_uid == ds.SOPInstanceUID
    d_iso = float(sample(dose, grid, [[0.0, -50.0, 0.0]])[0])
    expected = read_measured_6mv()["absolute"]["d10_ssd900"] / 100.0 * 116.0036697 * 30
    assert d_iso == pytest.approx(expected, rel=0.02)


def test_merged_rectangles_give_the_same_dose_as_segment_by_segment(cshape):
    """compute_plan_dose merges leaf openings shared by several segments; the dose equals
    the plain sum over segments of field_dose of each segment's fluence × its MU (linearity,
    checked directly)."""
    from dose_engine._density import hu_to_density
    from dose_engine._field_dose import field_dose
    from rtplan.dose._aperture import merge_rectangles

    rects = np.array([[0, 1, 0, 1], [0, 1, 0, 1], [2, 3, 0, 1], [0, 1, 0, 1.0]])
    r, mu = merge_rectangles(rects, np.array([1.0, 2.0, 5.0, 4.0]))
    np.testing.assert_array_equal(r, [[0, 1, 0, 1], [2, 3, 0, 1]])
    np.testing.assert_array_equal(mu, [7.0, 5.0])

    patient, beam = cshape.patient, cshape.plan.beams[1]
    grid = patient.ct.grid.with_spacing(10.0)
    plan = DeliverablePlan([beam], 3, 1.0, "PTV")
    merged = compute_plan_dose(plan, patient, dose_grid=grid).dose_gy
    density = np.asarray(hu_to_density(patient.ct.array))
    from dose_engine import load_beam_model

    # each segment's fluence with the MLC physics and its head scatter following its jaws
    model = load_beam_model()
    fluence = [beam.segment_fluence(k, model=model) for k in range(len(beam.segments))]
    plain = sum(
        np.asarray(
            field_dose(density, patient.ct.grid, grid, beam.beam, r, w * seg.total_mu),
            dtype=float,
        )
        for (r, w), seg in zip(fluence, beam.segments, strict=True)
    )
    # compute_plan_dose computes the body's voxels only (the test below pins that)
    body = body_structure(patient).occupancy(grid) > 0
    np.testing.assert_allclose(merged[body], plain[body], rtol=1e-5, atol=1e-6 * plain.max())


def test_plan_dose_is_the_full_grid_dose_inside_the_body_and_zero_outside(cshape):
    """The final dose is computed on the body's voxels only (work scales with the body,
    not its box): there it is the dose of the whole grid to float32 rounding (a point's
    dose and depth do not depend on the other points; the kernel's float32 products over a
    chunk of points may take another OpenBLAS kernel for another chunk size, which moves
    last bits: 4.5e-6 of a voxel's dose with numpy 2.4.6), elsewhere exactly 0."""
    patient, plan = cshape.patient, cshape.plan
    grid = patient.ct.grid.with_spacing(10.0)
    body = body_structure(patient).occupancy(grid) > 0
    assert 0.3 < body.mean() < 0.95  # the grid holds air around the body
    everywhere = np.ones(grid.shape, dtype=bool)
    full = compute_plan_dose(plan, patient, dose_grid=grid, voxel_mask=everywhere).dose_gy
    dose = compute_plan_dose(plan, patient, dose_grid=grid).dose_gy
    np.testing.assert_allclose(dose[body], full[body], rtol=1e-5, atol=1e-6 * full.max())
    assert np.all(dose[~body] == 0.0) and full[~body].max() > 0.01 * full.max()
    with pytest.raises(InputError, match="no voxel of the body"):
        compute_plan_dose(plan, patient, dose_grid=grid, voxel_mask=~everywhere)


def test_machine_option_checks_the_plan_against_that_machine(cshape, tmp_path, capsys):
    """``--machine AgilityMLC160`` for a plan made on the 120-leaf MLC: refused (exit 2),
    because the plan's 60 leaf pairs are not the Agility's 80."""
    out = tmp_path / "RD.dcm"
    assert main(_args(cshape, out, "--machine", "AgilityMLC160")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "60 leaf pairs" in err[0] and "AgilityMLC160" in err[0], err
    assert not out.exists()
    assert main(_args(cshape, out, "--machine", "NoSuchMachine")) == 2
    assert "Unknown machine 'NoSuchMachine'" in capsys.readouterr().err
    assert not out.exists()
