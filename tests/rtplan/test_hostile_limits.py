"""Every documented limit can be overridden on purpose, by ``--limit NAME=VALUE`` on any
command or by its ``RTPLAN_LIMIT_<NAME>`` variable (issue 13), and the CLI's batch checks
every patient's output before anything is computed or a cluster started.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _hostile import assert_names, copy_ct, edit, files_under, first_slice

from rtplan.cli import main
from rtplan.cli._limits import LIMITS
from rtplan.errors import InputError, OutputError, OutputExistsError
from rtplan.io import read_ct, read_patient, write_rtdose
from rtplan.planning import BatchEntry, plan_batch


def run_cli(capsys, argv):
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def rtdose(small_phantom_dicom, tmp_path_factory):
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    path = tmp_path_factory.mktemp("rd") / "RD.dcm"
    dose = np.full(patient.ct.grid.shape, 50.0)
    write_rtdose(path, dose, patient.ct.grid, patient, plan_sop_instance_uid="1.2.3")
    return path


#: name -> (a value that makes the small phantom's job exceed it, status, what the
#: message names).  Lowering a limit proves the override reaches the check.
TIGHT = {
    "image_voxels": ("100", 5, r"RTPLAN_LIMIT_IMAGE_VOXELS"),
    "grid_voxels": ("100", 5, r"RTPLAN_LIMIT_GRID_VOXELS"),
    "beams": ("2", 5, r"RTPLAN_LIMIT_BEAMS"),
    "beamlet_map_cells": ("10", 5, r"RTPLAN_LIMIT_BEAMLET_MAP_CELLS"),
    "influence_pairs": ("1000", 5, r"RTPLAN_LIMIT_INFLUENCE_PAIRS"),
    "dvh_bins": ("10", 5, r"bins of one DVH.*RTPLAN_LIMIT_DVH_BINS"),
    "hu_min": ("-500", 2, r"\(7FE0,0010\).*outside -500 \.\. 20000 HU.*RTPLAN_LIMIT_HU_MIN"),
    "hu_max": ("-500", 2, r"\(7FE0,0010\).*outside -1100 \.\. -500 HU.*RTPLAN_LIMIT_HU_MIN"),
}


def test_every_documented_limit_has_a_case():
    assert set(TIGHT) == set(LIMITS)
    doc = (Path(__file__).parents[2] / "docs" / "input_checks.md").read_text()
    for name in LIMITS:
        assert f"RTPLAN_LIMIT_{name.upper()}" in doc


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("name", sorted(TIGHT))
def test_limit_override_reaches_its_check(
    name, how, small_phantom_dicom, rtdose, tmp_path, capsys, monkeypatch
):
    value, status, pattern = TIGHT[name]
    if name == "dvh_bins":
        argv = ["evaluate", rtdose, small_phantom_dicom.rtstruct_path]
        command = "evaluate"
    else:
        argv = ["influence", small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path]
        argv += ["--target", "CentralTarget", "--out", tmp_path / "m.h5", "--no-progress"]
        argv += ["--beams", "3"]
        command = "influence"
    if how == "flag":
        argv += ["--limit", f"{name}={value}"]
    else:
        monkeypatch.setenv(f"RTPLAN_LIMIT_{name.upper()}", value)
    code, err = run_cli(capsys, argv)
    assert code == status
    assert_names(err, rf"^rtplan {command}: error: ", pattern)
    assert files_under(tmp_path) == set()
    if how == "flag":  # the override lasts for one command only
        assert f"RTPLAN_LIMIT_{name.upper()}" not in os.environ


@pytest.mark.parametrize("how", ["flag", "env", "api"])
def test_hu_limit_raised_on_purpose_loads_the_pixel(
    how, small_phantom_dicom, tmp_path, capsys, monkeypatch
):
    ct = copy_ct(small_phantom_dicom.ct_dir, tmp_path / "ct")
    ds_path = first_slice(ct)

    def high(ds):
        arr = ds.pixel_array.copy()
        arr[3, 4] = 30000
        ds.PixelData = arr.tobytes()

    edit(ds_path, high)
    slope_intercept = read_ct(small_phantom_dicom.ct_dir).image.array[0, 3, 4]
    with pytest.raises(Exception, match=r"RTPLAN_LIMIT_HU_MIN/MAX"):
        read_ct(ct)
    if how == "api":
        img = read_ct(ct, hu_limits=(-1100, 40000)).image
    elif how == "env":
        monkeypatch.setenv("RTPLAN_LIMIT_HU_MAX", "40000")
        img = read_ct(ct).image
    else:
        code, err = run_cli(
            capsys, ["inspect", ct, small_phantom_dicom.rtstruct_path, "--limit", "hu_max=40000"]
        )
        assert code == 0, err
        monkeypatch.setenv("RTPLAN_LIMIT_HU_MAX", "40000")  # read it the same way
        img = read_ct(ct).image
    assert slope_intercept != img.array[0, 3, 4]
    assert img.array[0, 3, 4] == 30000 - 1024  # stored value with the phantom's intercept


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("grid_voxel=4e9", r"NAME one of image_voxels"),
        ("grid_voxels", r"expected NAME=VALUE"),
        ("grid_voxels=lots", r"'lots' is not a number"),
        ("beams=0", r"finite and positive"),
        ("beams=-5", r"finite and positive"),
        ("hu_max=nan", r"finite"),
    ],
)
def test_bad_limit_flag_is_exit_2(item, pattern, small_phantom_dicom, capsys):
    code, err = run_cli(
        capsys,
        ["inspect", small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path, "--limit", item],
    )
    assert code == 2
    assert_names(err, r"^rtplan inspect: error: --limit", pattern)


@pytest.mark.parametrize(
    ("var", "text"), [("RTPLAN_LIMIT_HU_MIN", "air"), ("RTPLAN_LIMIT_HU_MAX", "-2000")]
)
def test_bad_hu_limit_variable_is_named(var, text, small_phantom_dicom, monkeypatch):
    monkeypatch.setenv(var, text)
    with pytest.raises(InputError) as exc:
        read_ct(small_phantom_dicom.ct_dir)
    assert_names(str(exc.value), var)


# ---------------------------------------------------------------------------------------
# rtplan batch: every patient's output checked before any work or cluster


@pytest.fixture
def no_cluster(monkeypatch):
    import rtplan.planning._batch as batch

    def boom(*args, **kwargs):
        raise AssertionError("a Dask cluster was started before the outputs were checked")

    monkeypatch.setattr(batch, "dask_client", boom)


def _write_manifest(tmp_path, outs):
    text = "".join(
        f'[[patient]]\nct_dir = "ct"\nrtstruct = "rs.dcm"\nprotocol = "p"\nout = "{o}"\n\n'
        for o in outs
    )
    (tmp_path / "m.toml").write_text(text)
    return tmp_path / "m.toml"


@pytest.mark.parametrize(
    ("setup", "force", "status", "pattern"),
    [
        ("file", False, 4, r"Batch patient 1: out '.*blocker/x' cannot be created: .* is a file"),
        ("exists", False, 2, r"'.*plans/b' already exists"),
        ("read-only", True, 4, r"Batch patient 1: out .* is not writable"),
        ("kind", True, 4, r"Batch patient 1: out '.*plans/b' exists and is not a folder"),
    ],
)
def test_batch_outputs_checked_before_the_cluster(
    setup, force, status, pattern, tmp_path, capsys, no_cluster
):
    (tmp_path / "plans").mkdir()
    out_b = "plans/b"
    if setup == "file":
        (tmp_path / "blocker").write_text("x")
        out_b = "blocker/x"
    elif setup == "exists":
        (tmp_path / "plans" / "b").mkdir()
    elif setup == "read-only":
        out_b = "/proc/rtplan-out"  # a read-only file system, whoever runs the test
    elif setup == "kind":
        (tmp_path / "plans" / "b").write_text("x")
    argv = ["batch", _write_manifest(tmp_path, ["plans/a", out_b])]
    before = files_under(tmp_path)
    code, err = run_cli(capsys, [*argv, "--force"] if force else argv)
    assert code == status
    assert_names(err, r"^rtplan batch: error: ", pattern)
    assert files_under(tmp_path) == before  # patient 0 was not planned either


def test_plan_batch_api_refuses_shared_outputs_without_a_manifest(tmp_path, no_cluster):
    entries = [
        BatchEntry("ct", "rs.dcm", "p", str(tmp_path / "plans" / "x")),
        BatchEntry("ct", "rs.dcm", "p", str(tmp_path / "plans" / ".." / "plans" / "x")),
    ]
    with pytest.raises(InputError) as exc:
        plan_batch(entries, overwrite=True)
    assert_names(str(exc.value), r"^Batch: patients 0 and 1 write to the same folder")


def test_plan_batch_api_existing_output_is_refused(tmp_path, no_cluster):
    (tmp_path / "a").mkdir()
    entries = [BatchEntry("ct", "rs.dcm", "p", str(tmp_path / "a"))]
    with pytest.raises(OutputExistsError):
        plan_batch(entries)
    with pytest.raises(OutputError):  # a folder under a file, even with overwrite
        (tmp_path / "f").write_text("x")
        plan_batch([BatchEntry("ct", "rs.dcm", "p", str(tmp_path / "f" / "x"))], overwrite=True)
