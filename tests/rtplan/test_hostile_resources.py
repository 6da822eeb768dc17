"""Hostile input, class "resource bombs" (issue 13).

Inputs that would ask for hundreds of GiB or hours of work are refused from an estimate
made before anything is allocated: exit status 5, one line with the estimate, the limit and
the environment variable that raises it; a raised limit lets the same job through.
"""

from __future__ import annotations

import numpy as np
import pytest
from _hostile import assert_names, copy_ct, edit, files_under, two_beam_plan

from dose_engine import (
    Beam,
    Grid,
    ResourceLimitError,
    beamlets_for_target,
    compute_influence_matrix,
    equispaced_coplanar_beams,
)
from dose_engine._limits import DEFAULT_LIMITS, limit
from dose_engine._validation import water_phantom
from rtplan import evaluate_goals, parse_goal, read_patient
from rtplan.cli import main
from rtplan.io import read_ct, read_rtdose, write_rtplan


def run_cli(capsys, argv):
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def _huge_matrix(ds):
    ds.Rows, ds.Columns = 65535, 65535  # the pixel data stays 40 x 40


def test_ct_header_claiming_65535_squared_is_refused_before_allocating(
    small_phantom_dicom, tmp_path
):
    ct = copy_ct(small_phantom_dicom.ct_dir, tmp_path / "CT")
    for p in ct.glob("*.dcm"):
        edit(p, _huge_matrix)
    with pytest.raises(ResourceLimitError) as exc:
        read_ct(ct)
    assert_names(str(exc.value), r"65535", r"GiB", r"RTPLAN_LIMIT_IMAGE_VOXELS", str(ct))


def test_rtdose_header_claiming_a_huge_volume_is_refused(tmp_path):
    from _other_systems_build import write_dose_variant

    path = tmp_path / "RD.dcm"
    write_dose_variant(path)
    edit(path, _huge_matrix)
    with pytest.raises(ResourceLimitError) as exc:
        read_rtdose(path)
    assert_names(str(exc.value), str(path), r"\(0028,0010\) Rows 65535", r"1\.7e\+10|1\.72e\+10")


@pytest.mark.parametrize("spacing_mm", [0.01, 0.05, (0.001, 3.0, 3.0)])
def test_fine_grid_is_refused_with_the_estimate(spacing_mm):
    grid = Grid((100, 512, 512), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ResourceLimitError) as exc:
        grid.with_spacing(spacing_mm)
    assert_names(str(exc.value), r"needs \d\.\d+e\+\d+ voxels", r"RTPLAN_LIMIT_GRID_VOXELS")


def test_reasonable_grid_is_built_as_before():
    grid = Grid((100, 512, 512), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert grid.with_spacing(3.0).shape == (34, 171, 171)


@pytest.mark.parametrize("beamlet_mm", [0.001, 0.01])
def test_tiny_beamlets_are_refused(beamlet_mm):
    beams = [Beam(0.0), Beam(90.0)]
    with pytest.raises(ResourceLimitError) as exc:
        beamlets_for_target(
            beams,
            np.array([[-40.0, -40.0, -40.0], [40.0, 40.0, 40.0]]),
            beamlet_width_mm=beamlet_mm,
            beamlet_height_mm=beamlet_mm,
        )
    assert_names(str(exc.value), rf"Beamlets of {beamlet_mm:g}", r"RTPLAN_LIMIT_BEAMLET_MAP_CELLS")


@pytest.mark.parametrize("n", [1001, 100_000])
def test_too_many_beams_are_refused(n):
    with pytest.raises(ResourceLimitError, match=rf"{n} equispaced beams.*RTPLAN_LIMIT_BEAMS"):
        equispaced_coplanar_beams(n)


def test_influence_work_is_estimated_first(monkeypatch):
    dens, grid = water_phantom(900.0, spacing_mm=10.0, half_width_mm=50, depth_mm=120)
    beams = [Beam(0.0)]
    bl = beamlets_for_target(beams, np.array([[0.0, 0.0, 0.0]]))
    pairs = grid.voxel_count * len(bl.x_mm)
    monkeypatch.setenv("RTPLAN_LIMIT_INFLUENCE_PAIRS", str(pairs - 1))
    with pytest.raises(ResourceLimitError) as exc:
        compute_influence_matrix(dens, grid, grid, beams, bl, progress=False)
    assert_names(str(exc.value), rf"{grid.voxel_count:,} voxels × {len(bl.x_mm):,} beamlets")
    monkeypatch.setenv("RTPLAN_LIMIT_INFLUENCE_PAIRS", str(pairs))
    im = compute_influence_matrix(dens, grid, grid, beams, bl, progress=False)
    assert im.matrix.shape == (grid.voxel_count, len(bl.x_mm))


@pytest.fixture(scope="module")
def uniform(small_phantom_patient):
    grid = small_phantom_patient.ct.grid
    return grid, {"CentralTarget": small_phantom_patient.structure("CentralTarget")}


@pytest.mark.parametrize("bin_width_gy", [1e-9, 1e-6, 1e-5])
def test_dvh_bin_bomb_is_refused_with_the_estimate(bin_width_gy, uniform):
    grid, structures = uniform
    dose = np.full(grid.shape, 50.0)
    goal = [parse_goal("CentralTarget D95% >= 49 Gy")]
    with pytest.raises(ResourceLimitError) as exc:
        evaluate_goals(dose, structures, goal, grid, bin_width_gy=bin_width_gy)
    assert_names(str(exc.value), r"`bin_width_gy`", r"bins of one DVH", r"MiB")


def test_raised_dvh_limit_lets_the_job_through_and_is_right(uniform, monkeypatch):
    grid, structures = uniform
    dose = np.full(grid.shape, 50.0)
    goal = [parse_goal("CentralTarget D95% >= 49 Gy")]
    monkeypatch.setenv("RTPLAN_LIMIT_DVH_BINS", "1e7")
    table = evaluate_goals(dose, structures, goal, grid, bin_width_gy=1e-5)
    assert table[0].value == pytest.approx(50.0) and table.all_passed


@pytest.mark.parametrize("text", ["abc", "-5", "0"])
def test_bad_limit_override_is_named(text, monkeypatch):
    monkeypatch.setenv("RTPLAN_LIMIT_BEAMS", text)
    with pytest.raises(ResourceLimitError, match=r"RTPLAN_LIMIT_BEAMS"):
        equispaced_coplanar_beams(3)


def test_defaults_are_the_documented_ones():
    import pathlib

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "input_checks.md").read_text()
    for name, (default, _) in DEFAULT_LIMITS.items():
        assert limit(name) == default
        assert f"RTPLAN_LIMIT_{name.upper()}" in doc and f"{default:.3g}" in doc


# ---------------------------------------------------------------------------------------
# Through the CLI: exit 5, nothing written


@pytest.fixture(scope="module")
def plan_files(small_phantom_dicom, tmp_path_factory):
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    rp = tmp_path_factory.mktemp("rp") / "RP.dcm"
    write_rtplan(rp, two_beam_plan(patient), patient)
    return small_phantom_dicom, rp


def test_cli_dose_on_a_0_01_mm_grid(plan_files, tmp_path, capsys):
    written, rp = plan_files
    argv = ["dose", written.ct_dir, written.rtstruct_path, rp, "--out", tmp_path / "RD.dcm"]
    status, err = run_cli(capsys, [*argv, "--dose-grid-mm", "0.01"])
    assert status == 5
    assert_names(err, r"^rtplan dose: error: A grid of 0\.01", r"RTPLAN_LIMIT_GRID_VOXELS")
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--beamlet-mm", "0.001"], r"Beamlets of 0\.001"),
        (["--beams", "100000"], r"100000 (equispaced )?beams"),
        (["--dose-grid-mm", "0.01"], r"A grid of 0\.01"),
    ],
)
def test_cli_influence_bombs(extra, pattern, small_phantom_dicom, tmp_path, capsys):
    argv = ["influence", small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path]
    argv += ["--target", "CentralTarget", "--out", tmp_path / "m.h5", "--no-progress", *extra]
    status, err = run_cli(capsys, argv)
    assert status == 5
    assert_names(err, r"^rtplan influence: error: ", pattern)
    assert files_under(tmp_path) == set()


def test_cli_evaluate_bin_width_bomb(tmp_path, small_phantom_dicom, capsys):
    from rtplan.io import write_rtdose

    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    path = tmp_path / "RD.dcm"
    dose = np.full(patient.ct.grid.shape, 50.0)
    write_rtdose(path, dose, patient.ct.grid, patient, plan_sop_instance_uid="1.2.3")
    argv = ["evaluate", path, small_phantom_dicom.rtstruct_path, "--bin-width-gy", "1e-9"]
    status, err = run_cli(capsys, argv)
    assert status == 5
    assert_names(err, r"^rtplan evaluate: error: ", r"bins of one DVH")
