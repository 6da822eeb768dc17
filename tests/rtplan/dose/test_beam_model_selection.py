"""One beam model per nominal energy and fluence mode, chosen for each beam (issue 15).

A plan of three gantry-0 beams on the small multitarget phantom, written as RT-PLAN by
rtplan's writer with machines of 6 MV, 10 MV and 6 MV FFF (the writer states each beam's
(300A,0114) NominalBeamEnergy and, for FFF, (3002,0050) PrimaryFluenceModeSequence), is
read back and computed:

- each beam with the shipped model for its energy and mode: its dose equals that beam
  alone computed with that model file only, and the three beams differ as their beams
  do (10X penetrates deeper than 6X: a larger ratio of dose at depth to dose near dmax;
  6FFF is peaked: a lower off-axis to central-axis ratio);
- an 18 MV beam (no model) is refused by ``rtplan dose`` with exit status 2, naming the
  file, the beam, the element and the models available, and nothing is written; so is an
  FFF beam when only flattened models are given;
- the planner takes the model for its machine's energy and mode, or the plan's beams take
  a given model's energy and mode; hostile model sets (two models for one beam, a bad
  fluence mode) are refused.
"""

from __future__ import annotations

import json
import types
from dataclasses import replace
from importlib.resources import files as resources_files

import numpy as np
import pydicom
import pytest

from dose_engine import BeamModel, load_beam_model
from dose_engine._beam import Beam
from dose_engine._energy_models import TRUTHS
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
from rtplan.cli import main
from rtplan.dose import BeamModels, compute_plan_dose, shipped_beam_models
from rtplan.dose._models import fitted_to_synthetic_data
from rtplan.errors import InputError, MachineError
from rtplan.io import read_patient, read_rtdose, read_rtplan_beams, write_rtplan
from rtplan.planning._plan import machine_and_beam_model
from rtplan.safety import synthetic_model_warnings

VARIAN = load_machine("VarianMLC120")
BEAMS = {1: (6.0, "STANDARD"), 2: (10.0, "STANDARD"), 3: (6.0, "FFF")}
FIELD_MM = 100.0


def _segment(machine, half_mm: float, mu: float) -> Segment:
    c = machine.mlc.leaf_centers_mm
    inside = np.abs(c) < half_mm
    leaves = np.stack([np.where(inside, -half_mm, 0.0), np.where(inside, half_mm, 0.0)])
    jaws = {"X": (-half_mm, half_mm), "Y": (-half_mm, half_mm)}
    return Segment(leaves, jaws, mu, machine.mlc.leaf_boundaries_mm)


def _plan(patient, beams: dict) -> DeliverablePlan:
    iso = tuple(0.5 * (lo + hi) for lo, hi in patient.ct.grid.extent_mm)
    out = []
    for number, (energy, mode) in beams.items():
        machine = replace(VARIAN, nominal_energy_mv=energy, fluence_mode=mode)
        geom = Beam(0.0, isocenter_mm=iso, patient_position=patient.position)
        seg = _segment(machine, FIELD_MM / 2, 100.0)
        out.append(DeliverableBeam(number, f"B{number}", geom, machine, (seg,)))
    return DeliverablePlan(out, 1, 2.0, "CentralTarget", label="energies")


@pytest.fixture(scope="module")
def case(small_phantom_dicom, tmp_path_factory):
    root = tmp_path_factory.mktemp("energies")
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    path = root / "RP_mixed.dcm"
    write_rtplan(path, _plan(patient, BEAMS), patient)
    return types.SimpleNamespace(root=root, dicom=small_phantom_dicom, patient=patient, path=path)


def _with_energy(case, name: str, energy: float):
    ds = pydicom.dcmread(case.path)
    ds.BeamSequence[1].ControlPointSequence[0].NominalBeamEnergy = energy
    out = case.root / name
    ds.save_as(out)
    return out


def test_writer_states_energy_and_fluence_mode(case):
    ds = pydicom.dcmread(case.path)
    energies = [float(b.ControlPointSequence[0].NominalBeamEnergy) for b in ds.BeamSequence]
    assert energies == [6.0, 10.0, 6.0]
    assert "PrimaryFluenceModeSequence" not in ds.BeamSequence[0]  # absent: STANDARD
    item = ds.BeamSequence[2].PrimaryFluenceModeSequence[0]
    assert (item.FluenceMode, item.FluenceModeID) == ("NON_STANDARD", "FFF")
    plan = read_rtplan_beams(case.path, case.patient, beam_keys=shipped_beam_models().keys)
    got = {b.number: (b.machine.nominal_energy_mv, b.machine.fluence_mode) for b in plan.beams}
    assert got == BEAMS


def test_each_beam_is_computed_with_the_model_for_its_energy_and_mode(case):
    shipped = shipped_beam_models()
    assert shipped.keys == ((6.0, "FFF"), (6.0, "STANDARD"), (10.0, "STANDARD"))
    assert [m.name for m in shipped][1:] == [load_beam_model().name, TRUTHS["10X"]["name"]]
    plan = read_rtplan_beams(case.path, case.patient, beam_keys=shipped.keys)
    result = compute_plan_dose(plan, case.patient, dose_grid_mm=5.0)
    assert result.beam_models == {
        1: "6X 'rtplan generic 6 MV pencil beam'",
        2: "10X 'rtplan generic 10 MV pencil beam'",
        3: "6FFF 'rtplan generic 6 MV FFF pencil beam'",
    }
    files = {1: "beam_model_6MV.json", 2: "beam_model_10MV.json", 3: "beam_model_6FFF.json"}
    alone = {}
    for dbeam in plan.beams:
        model = load_beam_model(str(_data_file(files[dbeam.number])))
        one = DeliverablePlan([dbeam], 1, 2.0, "CentralTarget")
        alone[dbeam.number] = compute_plan_dose(
            one, case.patient, dose_grid=result.grid, model=model
        ).dose_gy
    np.testing.assert_allclose(sum(alone.values()), result.dose_gy, rtol=1e-6, atol=1e-9)
    # the beams enter at the phantom's anterior surface (gantry 0): depth along +y
    ax = result.grid.zyx_axes_mm()
    k = int(np.argmin(np.abs(ax[0] - 0.5 * (ax[0][0] + ax[0][-1]))))
    i = int(np.argmin(np.abs(ax[2] - 0.5 * (ax[2][0] + ax[2][-1]))))
    depth_ratio = {}
    for n, d in alone.items():
        column = d[k, :, i]
        top = int(np.argmax(column > 0.05 * column.max()))  # first voxel in the body
        depth_ratio[n] = column[top + 20] / column.max()  # 100 mm below the surface voxel
    assert depth_ratio[2] > depth_ratio[1] + 0.03  # 10X: about 73 % against 67 %
    off_axis = {n: d[k, :, i + 6].max() / d[k, :, i].max() for n, d in alone.items()}
    assert off_axis[3] < off_axis[1] - 0.02  # 30 mm off axis the FFF beam has fallen


def _data_file(name: str):
    from importlib import resources

    return resources.files("dose_engine").joinpath("data", name)


def _dose_argv(case, rtplan_file, out):
    d = case.dicom
    return ["dose", str(d.ct_dir), str(d.rtstruct_path), str(rtplan_file), "--out", str(out)]


def test_dose_cli_computes_a_plan_of_three_energies(case, tmp_path, capsys):
    out = tmp_path / "RD.dcm"
    # exit 1: the small phantom's body touches the CT's edges (the ct_truncated warning)
    assert main([*_dose_argv(case, case.path, out), "--dose-grid-mm", "6"]) == 1
    printed = capsys.readouterr().out
    assert "WARNING: CT FIELD OF VIEW" in printed
    assert "beam models 10X 'rtplan generic 10 MV pencil beam'; 6FFF" in printed
    # the 10X and 6FFF models were fitted to synthetic clinics: said for their beams only
    assert (
        "WARNING: BEAM MODEL: beam 2 computed with 'rtplan generic 10 MV pencil beam', a "
        "representative 10X model fitted to a synthetic clinic" in printed
    )
    assert "WARNING: BEAM MODEL: beam 3 computed with 'rtplan generic 6 MV FFF" in printed
    assert "beam 1 computed" not in printed
    dose, _, _ = read_rtdose(out)
    assert dose.max() > 0.5


def test_models_fitted_to_synthetic_clinics_are_told_apart_from_measured_ones():
    """The shipped 6X was fitted to pymedphys' measured 6 MV scans; 10X and 6FFF to
    synthetic clinics (their provenance, written by dose_engine._energy_models)."""
    by_label = {m.name: m for m in shipped_beam_models()}
    six = by_label["rtplan generic 6 MV pencil beam"]
    ten = by_label["rtplan generic 10 MV pencil beam"]
    assert not fitted_to_synthetic_data(six)
    assert fitted_to_synthetic_data(ten)
    assert fitted_to_synthetic_data(by_label["rtplan generic 6 MV FFF pencil beam"])
    warnings = synthetic_model_warnings({1: six, 3: ten, 2: ten})
    assert [w.code for w in warnings] == ["beam_model_synthetic"]
    assert "beams 2, 3 computed with 'rtplan generic 10 MV pencil beam'" in warnings[0].message
    assert synthetic_model_warnings({1: six}) == []


def test_a_beam_no_model_is_for_is_refused(case, tmp_path, capsys):
    """18 MV: no shipped model; exit 2, one line naming the file, beam and element."""
    rp = _with_energy(case, "RP_18MV.dcm", 18.0)
    out = tmp_path / "RD.dcm"
    assert main(_dose_argv(case, rp, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(rp) in err[0] and "beam 2: (300A,0114) NominalBeamEnergy is 18 MV" in err[0]
    assert "no beam model is for 18 MV (the models are for 6, 10 MV)" in err[0]
    assert "6FFF 'rtplan generic 6 MV FFF pencil beam' (beam_model_6FFF.json)" in err[0]
    assert not out.exists()
    plan = _plan(case.patient, {1: (6.0, "STANDARD"), 2: (18.0, "STANDARD")})  # the API
    with pytest.raises(InputError, match=r"beam 2 \('B2'\): no beam model is for 18X"):
        compute_plan_dose(plan, case.patient, dose_grid_mm=6.0)


def test_fff_beam_with_flattened_models_only_is_refused(case, tmp_path, capsys):
    """Models given (--beam-model, twice): a 6X and a 10X; the FFF beam 3 is refused."""
    files = [str(_data_file("beam_model_6MV.json")), str(_data_file("beam_model_10MV.json"))]
    out = tmp_path / "RD.dcm"
    argv = _dose_argv(case, case.path, out)
    for f in files:
        argv += ["--beam-model", f]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "beam 3: (3002,0051) FluenceMode is NON_STANDARD, (3002,0052) FluenceModeID 'FFF'" in err
    assert "but the beam model for 6 MV is STANDARD (flattened)" in err
    assert "(given); shipped: " in err and not out.exists()


def test_ccc_is_refused_for_a_model_without_its_commissioning(case, tmp_path, capsys):
    """Only the shipped 6X model has a collapsed-cone commissioning: the 10X beam of the
    plan makes ``--algorithm ccc`` refuse it (exit 2) before any dose."""
    out = tmp_path / "RD.dcm"
    assert main([*_dose_argv(case, case.path, out), "--algorithm", "ccc"]) == 2
    err = capsys.readouterr().err
    assert "'rtplan generic 10 MV pencil beam'" in err and "collapsed-cone" in err
    assert not out.exists()


def test_planner_model_follows_the_machine_or_the_machine_the_model():
    protocol = types.SimpleNamespace(beams=types.SimpleNamespace(machine="VarianMLC120"))
    machine, model = machine_and_beam_model(protocol, None)
    assert (machine.nominal_energy_mv, model.name) == (6.0, load_beam_model().name)
    ten = load_beam_model(str(_data_file("beam_model_10MV.json")))
    machine, model = machine_and_beam_model(protocol, ten)
    assert model is ten and (machine.nominal_energy_mv, machine.fluence_mode) == (10.0, "STANDARD")
    fff = load_beam_model(str(_data_file("beam_model_6FFF.json")))
    machine, _ = machine_and_beam_model(protocol, fff)
    assert (machine.nominal_energy_mv, machine.fluence_mode) == (6.0, "FFF")


def test_hostile_model_sets_and_machines(tmp_path):
    six = load_beam_model()
    copy = tmp_path / "copy6.json"
    copy.write_text(json.dumps(six.parameters))
    with pytest.raises(InputError, match=r"copy6\.json are both for 6X"):
        BeamModels([six, load_beam_model(copy)])
    with pytest.raises(MachineError, match=r"`fluence_mode` must be one of STANDARD, FFF"):
        replace(VARIAN, fluence_mode="SRS")
    shipped = resources_files("rtplan") / "data" / "machines" / "varian_millennium120.toml"
    toml = tmp_path / "my_linac.toml"
    toml.write_text(
        shipped.read_text().replace('fluence_mode = "STANDARD"', 'fluence_mode = "flat"')
    )
    with pytest.raises(MachineError, match=r"my_linac\.toml.*`fluence_mode` must be one of"):
        load_machine(str(toml))
    bad = dict(six.parameters, fluence_mode="flat")
    with pytest.raises(ValueError, match=r"fluence_mode must be one of STANDARD, FFF"):
        BeamModel(bad)
    with pytest.raises(ValueError, match=r"horn.dip is 1.2"):
        BeamModel(dict(six.parameters, horn={"dip": 1.2, "sigma_mm": 50.0}))
