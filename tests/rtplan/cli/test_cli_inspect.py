"""``rtplan inspect`` and ``rtplan phantom``: output, JSON, exit status on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from rtplan.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_text(capsys, cshape_dicom):
    code, out, err = run(capsys, "inspect", cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    assert code == 0 and err == ""
    assert "LPS" in out and "Grid (nz, ny, nx) = (81, 96, 136)" in out
    assert "Patient position (0018,5100): HFS" in out
    core = next(line for line in out.splitlines() if " Core " in line)
    volume = float(core.split()[3])
    assert volume == pytest.approx(np.pi * 1.0**2 * 10.0, rel=0.01)  # cm3, analytic


def test_inspect_json(capsys, cshape_dicom):
    code, out, err = run(
        capsys, "inspect", cshape_dicom.ct_dir, cshape_dicom.rtstruct_path, "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["grid"]["shape_zyx"] == [81, 96, 136]
    assert doc["grid"]["spacing_mm_xyz"] == [2.5, 2.5, 2.5]
    assert doc["patient_position"] == "HFS"
    assert doc["image_orientation_patient"] == [1, 0, 0, 0, 1, 0]
    s = {d["name"]: d for d in doc["structures"]}
    assert list(s) == ["Body", "PTV", "Core"]
    assert s["Body"]["type"] == "EXTERNAL"
    assert s["Core"]["volume_cc"] == pytest.approx(31.42, rel=0.01)
    # Core: r 10 mm disc on 2.5 mm pixels -> about pi*4^2 = 50 voxels per slice, 40 slices.
    assert s["Core"]["voxel_count"] == pytest.approx(np.pi * 16 * 40, rel=0.05)
    bb = s["Core"]["bounding_box_mm_xyz"]
    np.testing.assert_allclose(bb["min"][:2], [-10, -10], atol=0.05)
    np.testing.assert_allclose(bb["max"][:2], [10, 10], atol=0.05)
    assert bb["min"][2] == -50.0


def test_inspect_structure_set_alone(capsys):
    code, out, err = run(capsys, "inspect", get_testdata_file("rtstruct.dcm"), "--json")
    assert code == 0
    assert "without its CT" in err
    doc = json.loads(out)
    s = {d["number"]: d for d in doc["structures"]}
    assert (s[1]["name"], s[1]["type"], s[1]["kind"]) == ("patient", "EXTERNAL", "closed_planar")
    assert s[1]["volume_cc"] == pytest.approx(3600.0, rel=1e-3)
    for n in (2, 3):
        assert s[n]["type"] == "ISOCENTER" and s[n]["kind"] == "point"
        assert s[n]["points_mm_xyz"] == [[0.0, 0.0, 0.0]]


# ------------------------------------------------------------------ bad input → exit 2
def _mutate_all(folder, fn):
    for i, p in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(p)
        fn(ds, i)
        ds.save_as(p)


def _missing_slice(ct, rs, tmp):
    sorted(ct.glob("*.dcm"))[6].unlink()
    return "Missing slice"


def _two_series(ct, rs, tmp):
    src = sorted(ct.glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(ct / "x.dcm")
    return "mixes 2 CT series"


def _oblique(ct, rs, tmp):
    _mutate_all(
        ct,
        lambda ds, i: setattr(
            ds, "ImageOrientationPatient", ["0.9962", "0.0872", "0", "-0.0872", "0.9962", "0"]
        ),
    )
    return "not axial"


def _truncated(ct, rs, tmp):
    f = sorted(ct.glob("*.dcm"))[2]
    f.write_bytes(f.read_bytes()[:-999])
    return "truncated"


def _fake_dcm(ct, rs, tmp):
    (ct / "notes.dcm").write_text("hello " * 100)
    return "not a DICOM file"


def _other_frame(ct, rs, tmp):
    shutil.copy(get_testdata_file("rtstruct.dcm"), rs)
    return "frame of reference"


def _two_points(ct, rs, tmp):
    ds = pydicom.dcmread(rs)
    item = ds.ROIContourSequence[1].ContourSequence[0]
    item.ContourData = item.ContourData[:6]
    item.NumberOfContourPoints = 2
    ds.save_as(rs)
    return r"contour 0 has 2 point"


@pytest.mark.parametrize(
    "breaker",
    [_missing_slice, _two_series, _oblique, _truncated, _fake_dcm, _other_frame, _two_points],
)
def test_inspect_bad_input_exits_2_with_one_line(breaker, capsys, small_phantom_dicom, tmp_path):
    ct = tmp_path / "CT"
    shutil.copytree(small_phantom_dicom.ct_dir, ct)
    rs = tmp_path / "RS.dcm"
    shutil.copy(small_phantom_dicom.rtstruct_path, rs)
    expected = breaker(ct, rs, tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run(capsys, "inspect", ct, rs)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("rtplan inspect: error: ")
    import re

    assert re.search(expected, err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


# ------------------------------------------------------------------ rtplan phantom
def test_phantom_cli_writes_and_refuses_existing(capsys, tmp_path):
    out_dir = tmp_path / "mt"
    code, out, err = run(
        capsys,
        "phantom",
        "multitarget",
        out_dir,
        "--pixel-spacing-mm",
        "8",
        "--slice-spacing-mm",
        "8",
    )
    assert code == 0, err
    n = len(list((out_dir / "CT").glob("CT.*.dcm")))
    assert n == 2 * round(220 / 2 / 8) + 1 and (out_dir / "RS.dcm").is_file()
    stamp = (out_dir / "RS.dcm").stat().st_mtime_ns
    code, out, err = run(capsys, "phantom", "multitarget", out_dir)
    assert code == 2 and "already exists" in err and "--force" in err
    assert (out_dir / "RS.dcm").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mt"]  # no temp folders left
    code, out, err = run(
        capsys,
        "phantom",
        "multitarget",
        out_dir,
        "--force",
        "--pixel-spacing-mm",
        "10",
        "--slice-spacing-mm",
        "10",
    )
    assert code == 0
    assert len(list((out_dir / "CT").glob("CT.*.dcm"))) == 2 * round(220 / 2 / 10) + 1


def test_phantom_cli_rejects_unknown_name(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "liver", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()


def test_inspect_recursive_prints_warnings_on_one_line(capsys, small_phantom_dicom, tmp_path):
    nested = tmp_path / "study" / "series"
    shutil.copytree(small_phantom_dicom.ct_dir, nested)
    (nested / "CT.0099.dcm").write_bytes(b"")  # a failed transfer: skipped with a warning
    code, out, err = run(capsys, "inspect", tmp_path / "study", small_phantom_dicom.rtstruct_path)
    assert code == 2 and "pass recursive=True" in err
    code, out, err = run(
        capsys,
        "inspect",
        tmp_path / "study",
        small_phantom_dicom.rtstruct_path,
        "--recursive",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["grid"]["shape_zyx"] == [12, 40, 40]
    assert err.startswith("rtplan inspect: warning: Skipped 1 empty (0-byte) file(s)")
    assert len(err.strip().splitlines()) == 1
