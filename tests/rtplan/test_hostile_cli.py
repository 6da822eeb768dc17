"""Hostile input, classes "traceback where an error belongs" and "lost data" (issue 13).

Exit status 1 means "written, but a goal failed" and nothing else: every other failure is
one line on stderr with its own status (2 bad input, 3 internal, 4 I/O, 5 limit, 6 the
Dask scheduler, 130 interrupted), output paths are checked before any work, wrong
argument types in the Python API are TypeErrors naming the argument, and a crashed
``--force`` replacement leaves the old or the new plan in place.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pydicom
import pytest
from _hostile import assert_names, edit, files_under, raw, two_beam_plan
from _tiny_protocol import tiny_cshape_protocol

import rtplan
from rtplan._internal.atomic import atomic_directory, backup_path, check_output_path
from rtplan._internal.exit_status import EXIT_STATUSES
from rtplan.cli import COMMANDS, build_parser, main
from rtplan.errors import InputError, OutputError, ResourceLimitError
from rtplan.io import read_patient, read_rtplan, write_rtplan
from rtplan.phantoms import make_phantom
from rtplan.planning import PlanOptions, plan_patient, read_manifest


@pytest.fixture(scope="module")
def phantom(small_phantom_dicom, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(tiny_cshape_protocol(ring=False))
    return small_phantom_dicom, root / "tiny.toml"


@pytest.fixture
def no_planning(monkeypatch):
    """Make any planning or dose computation fail loudly: refusals must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("computation started before the output paths were checked")

    import rtplan.cli._dose
    import rtplan.cli._influence
    import rtplan.planning._workflow

    # where the commands look them up (module-level imports)
    monkeypatch.setattr(rtplan.planning._workflow, "plan_patient", boom)
    monkeypatch.setattr(rtplan.cli._dose, "compute_plan_dose", boom)
    monkeypatch.setattr(rtplan.cli._influence, "influence_matrix", boom)


def run_cli(capsys, argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _plan_argv(phantom, out):
    written, protocol = phantom
    return ["plan", written.ct_dir, written.rtstruct_path, "--protocol", protocol, "--out", out]


# ---------------------------------------------------------------------------------------
# Output paths checked before any work (exit 4), existing outputs (exit 2)


@pytest.mark.parametrize(
    "where",
    ["under-a-file", "deep-under-a-file", "read-only-fs", "existing-file-with-force"],
)
def test_plan_out_unusable_is_refused_before_planning(
    where, phantom, tmp_path, capsys, no_planning
):
    (tmp_path / "afile").write_text("x")
    out, extra = {
        "under-a-file": (tmp_path / "afile" / "out", []),
        "deep-under-a-file": (tmp_path / "afile" / "a" / "b" / "out", []),
        "read-only-fs": ("/proc/rtplan-out", []),
        "existing-file-with-force": (tmp_path / "afile", ["--force"]),
    }[where]
    before = files_under(tmp_path)
    status, _, err = run_cli(capsys, [*_plan_argv(phantom, out), *extra])
    assert status == 4
    assert_names(err, r"^rtplan plan: error: ", r"--out", str(out))
    assert files_under(tmp_path) == before


def test_plan_existing_out_is_bad_input(phantom, tmp_path, capsys, no_planning):
    (tmp_path / "out").mkdir()
    status, _, err = run_cli(capsys, _plan_argv(phantom, tmp_path / "out"))
    assert status == 2
    assert_names(err, r"already exists", r"--force")


@pytest.mark.parametrize("kind", ["file", "under-a-file", "read-only-fs"])
def test_cache_dir_unusable_is_refused_before_planning(
    kind, phantom, tmp_path, capsys, no_planning
):
    (tmp_path / "afile").write_text("x")
    cache = {
        "file": tmp_path / "afile",
        "under-a-file": tmp_path / "afile" / "cache",
        "read-only-fs": "/proc/rtplan-cache",
    }[kind]
    argv = [*_plan_argv(phantom, tmp_path / "out"), "--cache-dir", cache]
    status, _, err = run_cli(capsys, argv)
    assert status == 4
    assert_names(err, r"--cache-dir", str(cache))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["under-a-file", "is-a-folder", "read-only-fs"])
def test_dose_out_unusable_is_refused_before_computing(
    kind, plan_files, tmp_path, capsys, no_planning
):
    written, rp = plan_files
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    out = {
        "under-a-file": tmp_path / "afile" / "RD.dcm",
        "is-a-folder": tmp_path / "folder",
        "read-only-fs": "/proc/RD.dcm",
    }[kind]
    extra = ["--force"] if kind == "is-a-folder" else []
    argv = ["dose", written.ct_dir, written.rtstruct_path, rp, "--out", out, *extra]
    status, _, err = run_cli(capsys, argv)
    assert status == 4
    assert_names(err, r"^rtplan dose: error: ", str(out))


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_influence_paths_are_checked_first(flag, phantom, tmp_path, capsys, no_planning):
    written, _ = phantom
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "m.h5" if flag == "--out" else tmp_path / "m.h5"
    argv = ["influence", written.ct_dir, written.rtstruct_path, "--target", "CentralTarget"]
    argv += ["--out", out]
    if flag == "--cache-dir":
        argv += ["--cache-dir", tmp_path / "afile"]
    status, _, err = run_cli(capsys, argv)
    assert status == 4
    assert_names(err, flag)


@pytest.mark.parametrize(
    ("extra", "status", "pattern"),
    [
        (["--algorithm", "ccc", "--cones", "47"], 2, r"`cones` must be an even integer"),
        (["--algorithm", "ccc", "--cache-dir", "CACHE"], 2, r"caches pencil-beam"),
    ],
)
def test_influence_algorithm_options_are_checked_first(
    extra, status, pattern, phantom, tmp_path, capsys, no_planning
):
    written, _ = phantom
    out = tmp_path / "m.h5"
    argv = ["influence", written.ct_dir, written.rtstruct_path, "--target", "CentralTarget"]
    argv += ["--out", out, *[tmp_path / "cache" if a == "CACHE" else a for a in extra]]
    got, _, err = run_cli(capsys, argv)
    assert got == status
    assert_names(err, r"^rtplan influence: error: ", pattern)
    assert not out.exists()


def test_demo_out_under_a_file_is_refused(tmp_path, capsys, no_planning):
    (tmp_path / "afile").write_text("x")
    status, _, err = run_cli(capsys, ["demo", tmp_path / "afile" / "demo"])
    assert status == 4 and not list(tmp_path.glob(".*"))
    assert_names(err, r"^rtplan demo: error: ", r"is a file")


# ---------------------------------------------------------------------------------------
# Unexpected exceptions: one line, their own status, traceback only on request


@pytest.fixture
def phantom_cmd(tmp_path):
    return ["phantom", "water_box", tmp_path / "ph", "--slices", "3", "--matrix-size", "20"]


@pytest.mark.parametrize(
    ("exc", "status", "pattern"),
    [
        (AttributeError("'NoneType' object has no attribute 'x'"), 3, r"internal error.*--debug"),
        (RuntimeError("boom"), 3, r"internal error \(RuntimeError: boom\)"),
        (ZeroDivisionError("division by zero"), 3, r"internal error"),
        (KeyError("k"), 3, r"internal error"),
        (ValueError("plain"), 3, r"internal error"),
        (OSError(errno.ENOSPC, "No space left on device", "RTPLAN.dcm"), 4, r"No space left"),
        (PermissionError(errno.EACCES, "Permission denied", "x"), 4, r"Permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), 4, r"Read-only"),
        (MemoryError(), 5, r"out of memory"),
        (ResourceLimitError("too big: 600 GiB"), 5, r"too big: 600 GiB"),
        (OutputError("cannot write"), 4, r"cannot write"),
        (InputError("bad\nsecond line"), 2, r"bad second line"),
        (KeyboardInterrupt(), 130, r"interrupted"),
    ],
)
def test_every_exception_is_one_line_with_its_status(
    exc, status, pattern, monkeypatch, capsys, phantom_cmd, tmp_path
):
    import rtplan.cli._phantom

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(rtplan.cli._phantom, "write_phantom", fail)
    got, out, err = run_cli(capsys, phantom_cmd)
    assert got == status and got != 1
    assert_names(err, r"^rtplan phantom: error: ", pattern)
    assert not (tmp_path / "ph").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys, phantom_cmd):
    import rtplan.cli._phantom

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rtplan.cli._phantom, "write_phantom", fail)
    argv = phantom_cmd
    if how == "flag":
        argv = ["--debug", *phantom_cmd]
    else:
        monkeypatch.setenv("RTPLAN_DEBUG", "1")
    status, _, err = run_cli(capsys, argv)
    assert status == 3
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert err.rstrip().splitlines()[-1].startswith("rtplan phantom: error: internal error")


def test_a_full_disk_while_writing_leaves_nothing(monkeypatch, capsys, phantom_cmd, tmp_path):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", full)
    status, _, err = run_cli(capsys, phantom_cmd)
    assert status == 4
    assert_names(err, r"No space left on device")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


def test_subprocess_exit_status_and_no_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "rtplan.cli", "phantom", "water_box", tmp_path / "afile" / "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_names(proc.stderr.strip().splitlines()[-1], r"^rtplan phantom: error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_the_exit_status_table(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices[command.replace("_", "-")].format_help()  # module check_mc: check-mc
    for code, meaning in EXIT_STATUSES:
        assert f"{code:>3}  {meaning}" in text


def test_top_level_help_has_the_table_too():
    text = build_parser().format_help()
    assert "exit status:" in text and "130  interrupted" in text


# ---------------------------------------------------------------------------------------
# The scheduler


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "nonsense://nowhere", "::::"])
def test_unreachable_scheduler_is_one_line(address, phantom, tmp_path, capsys, no_planning):
    pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        argv = [*_plan_argv(phantom, tmp_path / "out"), "--scheduler", address]
        status, _, err = run_cli(capsys, argv)
    assert status == 6
    assert_names(err, r"^rtplan plan: error: Cannot reach the Dask scheduler")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# RT-PLAN and one-slice CT through the CLI (exit 2, never 1)


@pytest.fixture(scope="module")
def plan_files(small_phantom_dicom, tmp_path_factory):
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    rp = tmp_path_factory.mktemp("rp") / "RP.dcm"
    write_rtplan(rp, two_beam_plan(patient), patient)
    return small_phantom_dicom, rp


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (lambda ds: delattr(ds.BeamSequence[0], "BeamNumber"), r"\(300A,00C0\) BeamNumber"),
        (
            lambda ds: raw(ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", b"a ", "IS"),
            r"\(300A,0078\) NumberOfFractionsPlanned",
        ),
        (
            lambda ds: setattr(ds.BeamSequence[0].ControlPointSequence[0], "GantryAngle", 400),
            r"GantryAngle is 400",
        ),
    ],
    ids=["no-beam-number", "fractions-a", "gantry-400"],
)
def test_dose_cli_bad_rtplan_is_exit_2(change, element, plan_files, tmp_path, capsys):
    written, src = plan_files
    rp = tmp_path / "RP.dcm"
    rp.write_bytes(src.read_bytes())
    edit(rp, change)
    argv = ["dose", written.ct_dir, written.rtstruct_path, rp, "--out", tmp_path / "RD.dcm"]
    status, _, err = run_cli(capsys, argv)
    assert status == 2
    assert_names(err, str(rp), element)
    assert not (tmp_path / "RD.dcm").exists()


def test_one_slice_ct_is_refused_before_planning(tmp_path, capsys):
    from rtplan.phantoms import write_phantom

    ph = write_phantom("cshape", tmp_path / "one", pixel_spacing_mm=5.0, n_slices=1)
    (tmp_path / "tiny.toml").write_text(tiny_cshape_protocol(ring=False))
    argv = ["plan", ph.ct_dir, ph.rtstruct_path, "--protocol", tmp_path / "tiny.toml"]
    status, _, err = run_cli(capsys, [*argv, "--out", tmp_path / "out"])
    assert status == 2
    assert_names(err, r"1 slice\(s\)", r"at least 3 slices")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["dose", "influence"])
def test_one_slice_ct_is_refused_for_any_dose(command, tmp_path, capsys):
    """A one-slice CT models the patient as a 3 mm slab: every dose on it would be wrong."""
    from rtplan.phantoms import write_phantom

    ph = write_phantom("cshape", tmp_path / "one", pixel_spacing_mm=5.0, n_slices=1)
    patient = read_patient(ph.ct_dir, ph.rtstruct_path)
    rp = tmp_path / "RP.dcm"
    write_rtplan(rp, two_beam_plan(patient), patient)
    argv = [command, ph.ct_dir, ph.rtstruct_path]
    argv += [rp] if command == "dose" else ["--target", "PTV"]
    status, _, err = run_cli(capsys, [*argv, "--out", tmp_path / "out.x"])
    assert status == 2
    assert_names(err, rf"^rtplan {command}: error: The CT has 1 slice\(s\)")
    assert not (tmp_path / "out.x").exists()


# ---------------------------------------------------------------------------------------
# Python API: wrong types name the argument


@pytest.fixture(scope="module")
def api_patient(small_phantom_dicom):
    return read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda p, rp: plan_patient(None, "tg119_cshape"), TypeError, "patient"),
        (lambda p, rp: plan_patient("CT/", "tg119_cshape"), TypeError, "patient"),
        (lambda p, rp: plan_patient(p, 5), TypeError, "protocol"),
        (lambda p, rp: plan_patient(p, None), TypeError, "protocol"),
        (lambda p, rp: plan_patient(p, "x", structure_map=["a=b"]), TypeError, "structure_map"),
        (lambda p, rp: rtplan.compute_plan_dose(None, p), TypeError, "plan"),
        (lambda p, rp: rtplan.compute_plan_dose(two_beam_plan(p), None), TypeError, "patient"),
        (
            lambda p, rp: rtplan.compute_plan_dose(two_beam_plan(p), p, dose_grid_mm="3"),
            TypeError,
            "dose_grid_mm",
        ),
        (
            lambda p, rp: rtplan.compute_plan_dose(two_beam_plan(p), p, dose_grid_mm=-3),
            InputError,
            "dose_grid_mm",
        ),
        (lambda p, rp: read_rtplan(None, p), TypeError, "path"),
        (lambda p, rp: read_rtplan(rp, None), TypeError, "patient"),
        (lambda p, rp: read_rtplan(rp, "patient"), TypeError, "patient"),
        (lambda p, rp: read_patient(None), TypeError, "ct_dir"),
        (lambda p, rp: read_patient(42), TypeError, "ct_dir"),
        (lambda p, rp: read_patient("", None), ValueError, "ct_dir"),
    ],
)
def test_api_wrong_argument_types_name_the_argument(call, error, name, api_patient, plan_files):
    with pytest.raises(error, match=f"`{name}`"):
        call(api_patient, plan_files[1])


def test_api_one_slice_patient_is_refused(tmp_path):
    one = make_phantom("cshape", pixel_spacing_mm=5.0, n_slices=1)
    with pytest.raises(InputError, match=r"1 slice\(s\)"):
        plan_patient(one, "tg119_cshape")


def test_api_cache_dir_that_is_a_file(api_patient, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        options = PlanOptions(cache_dir=tmp_path / "f")
        plan_patient(api_patient, "tg119_multitarget", options=options)


# ---------------------------------------------------------------------------------------
# Lost data: --force replacement survives a crash between its two renames


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import rtplan._internal.atomic as atomic

    calls = []
    real = os.replace

    def crashing(src, dst):
        calls.append(dst)
        if len(calls) == int(sys.argv[2]):
            os._exit(9)   # SIGKILL-like: no cleanup runs
        real(src, dst)

    atomic.os.replace = crashing
    with atomic.atomic_directory(Path(sys.argv[1]), overwrite=True) as tmp:
        (tmp / "plan.txt").write_text("new")
    """
)


def _old_plan(tmp_path):
    out = tmp_path / "plan"
    out.mkdir()
    (out / "plan.txt").write_text("old")
    return out


def _crash(out, at_call):
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(out), str(at_call)], capture_output=True
    )
    assert proc.returncode == 9, proc.stderr


def test_crash_between_the_renames_keeps_the_old_plan(tmp_path):
    out = _old_plan(tmp_path)
    _crash(out, 2)  # old -> backup done, new -> final never happened
    assert not out.exists() and (backup_path(out) / "plan.txt").read_text() == "old"
    # the next run restores the old plan before anything else (it is not deleted)
    check_output_path(out, overwrite=True)
    assert (out / "plan.txt").read_text() == "old" and not backup_path(out).exists()


def test_crash_before_the_renames_keeps_the_old_plan(tmp_path):
    out = _old_plan(tmp_path)
    _crash(out, 1)
    assert (out / "plan.txt").read_text() == "old"
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "plan.txt").write_text("newer")
    assert (out / "plan.txt").read_text() == "newer"


def test_leftover_backup_after_a_completed_replace_is_dropped(tmp_path):
    out = _old_plan(tmp_path)
    backup = backup_path(out)
    backup.mkdir()
    (backup / "plan.txt").write_text("older")
    with pytest.raises(rtplan.errors.OutputExistsError):
        check_output_path(out, overwrite=False)
    assert (out / "plan.txt").read_text() == "old" and not backup.exists()


def test_failure_between_the_renames_restores_the_old_plan_at_once(tmp_path, monkeypatch):
    import rtplan._internal.atomic as atomic

    out = _old_plan(tmp_path)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError):
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "plan.txt").write_text("new")
    monkeypatch.setattr(atomic.os, "replace", real)
    assert (out / "plan.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


def test_files_and_folders_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    import rtplan._internal.atomic as atomic

    synced, real_sync, real_replace = [], atomic._fsync_path, os.replace
    renamed = []

    def record_sync(p):
        synced.append((len(renamed), os.path.basename(p)))
        real_sync(p)

    def record_replace(src, dst):
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(atomic, "_fsync_path", record_sync)
    monkeypatch.setattr(atomic.os, "replace", record_replace)
    with atomic_directory(tmp_path / "plan") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.dcm").write_text("a")
        (tmp / "b.json").write_text("b")
    before = {name for n, name in synced if n == 0}
    assert {"a.dcm", "b.json", "sub"} <= before
    assert (1, tmp_path.name) in synced  # the parent folder after the rename


# ---------------------------------------------------------------------------------------
# Batch: resolved outputs, unknown keys


def _manifest(tmp_path, outs, extra=""):
    text = "".join(
        f'[[patient]]\nct_dir = "ct"\nrtstruct = "rs.dcm"\nprotocol = "p"\nout = "{o}"\n{extra}\n'
        for o in outs
    )
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "outs",
    [
        ["plans/x", "plans/../plans/x"],
        ["plans/x", "./plans/x/"],
        ["plans/x", "plans/x/y"],
        ["plans/x/y", "plans"],
        ["a", "b", "link/x"],
    ],
    ids=["dotdot", "dot-slash", "nested", "nested-reversed", "symlink"],
)
def test_batch_outputs_compared_resolved(outs, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    if outs[-1] == "link/x":
        outs = ["a/x", "b", "link/x"]
    manifest = _manifest(tmp_path, outs)
    with pytest.raises(InputError, match=r"same folder|nested folders"):
        read_manifest(manifest)
    status, _, err = run_cli(capsys, ["batch", manifest, "--force"])
    assert status == 2
    assert_names(err, r"^rtplan batch: error: .*m\.toml", r"patients \d and \d")


@pytest.mark.parametrize("key", ["beam_modle", "Out", "dose_grid_mm", "protocl"])
def test_batch_unknown_key_is_refused(key, tmp_path):
    manifest = _manifest(tmp_path, ["a", "b"], extra=f'{key} = "x"\n')
    with pytest.raises(InputError) as exc:
        read_manifest(manifest)
    assert_names(str(exc.value), rf"unknown key\(s\) '{key}'", r"patient 0", r"beam_model")


def test_batch_unknown_csv_column_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ct_dir,rtstruct,protocol,out,beam_modle\nct,rs.dcm,p,a,x.json\n")
    with pytest.raises(InputError, match=r"unknown key\(s\) 'beam_modle'"):
        read_manifest(path)


def test_batch_valid_manifest_is_read(tmp_path):
    entries = read_manifest(_manifest(tmp_path, ["plans/a", "plans/b"]))
    assert [os.path.basename(e.out) for e in entries] == ["a", "b"]
    assert np.all([e.protocol == "p" for e in entries])


def test_batch_cache_dir_that_is_a_file_is_refused_before_the_cluster(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a", "b"])
    (tmp_path / "cache").write_text("x")
    status, _, err = run_cli(capsys, ["batch", manifest, "--cache-dir", tmp_path / "cache"])
    assert status == 4
    assert_names(err, r"^rtplan batch: error: --cache-dir", r"is a file")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (RuntimeError("boom"), 3),
        (OSError(errno.EROFS, "Read-only file system"), 4),
        (MemoryError(), 5),
        (KeyboardInterrupt(), 130),
    ],
)
def test_dose_engine_fit_cli_maps_failures_like_rtplan(exc, status, monkeypatch, capsys, tmp_path):
    import dose_engine._commission_cli as fit_cli

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(fit_cli, "read_measured_data", fail)
    assert (
        fit_cli.main(["--measurements", str(tmp_path), "--out", str(tmp_path / "m.json")]) == status
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda p, rp, tmp: rtplan.io.read_rtdose(None), "path"),
        (lambda p, rp, tmp: rtplan.io.read_structure_set(3.5), "path"),
        (lambda p, rp, tmp: write_rtplan(None, two_beam_plan(p), p), "path"),
        (lambda p, rp, tmp: write_rtplan(tmp / "RP.dcm", "plan", p), "plan"),
        (lambda p, rp, tmp: write_rtplan(tmp / "RP.dcm", two_beam_plan(p), None), "patient"),
        (
            lambda p, rp, tmp: rtplan.io.write_rtdose(
                tmp / "RD.dcm", np.zeros(p.ct.grid.shape), None, p, plan_sop_instance_uid="1.2"
            ),
            "grid",
        ),
        (
            lambda p, rp, tmp: rtplan.io.write_rtdose(
                tmp / "RD.dcm", np.zeros(p.ct.grid.shape), p.ct.grid, {}, plan_sop_instance_uid="1"
            ),
            "patient",
        ),
    ],
)
def test_api_io_wrong_types_name_the_argument(call, name, api_patient, plan_files, tmp_path):
    with pytest.raises(TypeError, match=f"`{name}`"):
        call(api_patient, plan_files[1], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_readme_lists_every_exit_status_and_no_other():
    """The README's exit-status table is the one ``--help`` prints (issue 13)."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("### Exit statuses") :].split("\n\n")[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == [str(code) for code, _ in EXIT_STATUSES]


@pytest.mark.parametrize(
    ("goal", "pattern"),
    [
        ("min = 5000.0", r"goal 0 \(PTV D95% >= 5000 Gy\).*typed in cGy"),  # the issue's
        ("min = 100.0", r"goal 0 \(PTV D95% >= 100 Gy\).* 200 %"),  # 200 % of the Rx
    ],
    ids=["cGy", "200pct"],
)
def test_plan_with_implausible_goal_is_exit_2_before_planning(
    goal, pattern, phantom, tmp_path, capsys, no_planning
):
    written, _ = phantom
    protocol = tmp_path / "cgy.toml"
    protocol.write_text(tiny_cshape_protocol(ring=False).replace("min = 50.0", goal, 1))
    out = tmp_path / "out"
    argv = ["plan", written.ct_dir, written.rtstruct_path, "--protocol", protocol, "--out", out]
    status, _, err = run_cli(capsys, argv)
    assert status == 2
    assert_names(err, r"^rtplan plan: error: Protocol .*cgy\.toml", pattern)
    assert not out.exists()


def test_plan_unknown_technique_is_a_usage_error(phantom, tmp_path, capsys, no_planning):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, status 2
        main([str(a) for a in [*_plan_argv(phantom, out), "--technique", "tomo"]])
    assert exc.value.code == 2
    assert "argument --technique: invalid choice: 'tomo'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "beams", "pattern"),
    [
        (
            ["--technique", "vmat"],
            'arcs = [{start_deg = 10, stop_deg = 10, direction = "CW"}]\n',
            r"\[\[beams\.arcs\]\] #1 stop_deg: the arc starts and stops at 10 degrees",
        ),
        (
            [],
            'technique = "vmat"\narc_sector_deg = -5\n',
            r"\[beams\] arc_sector_deg: expected a positive number, found -5",
        ),
        (
            [],
            'technique = "vmat"\narcs = [{start_deg = 1, stop_deg = 90, direction = "XX"}]\n',
            r"\[\[beams\.arcs\]\] #1 direction: expected 'CW' or 'CC', found 'XX'",
        ),
    ],
    ids=["arc-stops-where-it-starts", "negative-sector", "bad-direction"],
)
def test_plan_bad_arcs_are_exit_2_before_planning(
    args, beams, pattern, phantom, tmp_path, capsys, no_planning
):
    written, _ = phantom
    protocol = tmp_path / "arcs.toml"
    protocol.write_text(tiny_cshape_protocol(ring=False).replace("[beams]\n", "[beams]\n" + beams))
    out = tmp_path / "out"
    argv = ["plan", written.ct_dir, written.rtstruct_path, "--protocol", protocol, "--out", out]
    status, _, err = run_cli(capsys, [*argv, *args])
    assert status == 2
    assert_names(err, r"^rtplan plan: error: Protocol .*arcs\.toml'?: ", pattern)
    assert not out.exists()
