"""``rtplan influence`` and ``rtplan.dose._influence``: DICOM in, HDF5 influence matrix out."""

import numpy as np
import pytest

from dose_engine import Beam, field_dose, hu_to_density, load_influence_matrix
from rtplan.cli import main
from rtplan.io import read_patient


def _argv(dicom, gantry: str, *options: str) -> list[str]:
    """``rtplan influence`` of the small phantom's CentralTarget on a 10 mm grid."""
    return [
        "influence",
        str(dicom.ct_dir),
        str(dicom.rtstruct_path),
        "--target",
        "CentralTarget",
        "--gantry",
        gantry,
        "--dose-grid-mm",
        "10",
        "--no-progress",
        *options,
    ]


def test_cli_writes_matrix(tmp_path, small_phantom_dicom, capsys):
    out = tmp_path / "m.h5"
    argv = _argv(small_phantom_dicom, "0,120,240", "--out", str(out))
    assert main(argv) == 0
    assert "Gy/MU" in capsys.readouterr().out
    im = load_influence_matrix(out)
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    grid = patient.ct.grid.with_spacing(10.0)
    assert im.dose_grid == grid and im.matrix.shape[0] == grid.voxel_count
    assert [b.gantry_angle_deg for b in im.beams] == [0.0, 120.0, 240.0]
    # isocentre at the target centroid (within a voxel of the structure's own centroid)
    centroid = np.asarray(patient.structures["CentralTarget"].centroid_mm(grid))
    np.testing.assert_allclose(im.beams[0].isocenter_mm, centroid, atol=5.0)
    # rows only inside the body
    body = patient.structures["Body"].occupancy(grid) > 0
    rows = np.flatnonzero(np.diff(im.matrix.indptr))
    assert rows.size and np.all(body.ravel()[rows])
    # beam 0 with every beamlet open at 1 MU ~ field_dose of the same beamlets (defaults lose
    # at most 3 % of the maximum to the lateral cut-off and threshold)
    sl = im.beamlets.beam_slice(0)
    total = np.asarray(im.matrix[:, sl].sum(axis=1)).reshape(grid.shape)
    ref = field_dose(
        hu_to_density(patient.ct.array),
        patient.ct.grid,
        grid,
        im.beams[0],
        im.beamlets.rectangles_mm(0),
        1.0,
        voxel_mask=body,
    )
    assert np.max(np.abs(total - ref)) <= 0.03 * ref.max()


def test_cli_refuses_existing_output_and_bad_target(tmp_path, small_phantom_dicom, capsys):
    out = tmp_path / "m.h5"
    out.write_bytes(b"keep me")
    base = [
        "influence",
        str(small_phantom_dicom.ct_dir),
        str(small_phantom_dicom.rtstruct_path),
        "--gantry",
        "0",
        "--dose-grid-mm",
        "10",
        "--no-progress",
    ]
    assert main(base + ["--target", "CentralTarget", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    other = tmp_path / "n.h5"
    assert main(base + ["--target", "Nope", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "Nope" in err and "CentralTarget" in err
    assert not other.exists() and not list(tmp_path.glob(".*part"))
    assert main(base + ["--target", "CentralTarget", "--gantry", "a,b", "--out", str(other)]) == 2
    assert not other.exists()


def test_python_api_in_a_few_lines(small_phantom_patient, tmp_path):
    import rtplan

    im = rtplan.influence_matrix(
        small_phantom_patient,
        target="CentralTarget",
        n_beams=2,
        dose_grid_mm=10,
        cache_dir=tmp_path,
        progress=False,
    )
    again = rtplan.influence_matrix(
        small_phantom_patient,
        target="CentralTarget",
        n_beams=2,
        dose_grid_mm=10,
        cache_dir=tmp_path,
        progress=False,
    )
    assert im.settings["cache_hit"] is False and again.settings["cache_hit"] is True
    assert im.beams == (
        Beam(0.0, isocenter_mm=im.beams[0].isocenter_mm),
        Beam(180.0, isocenter_mm=im.beams[0].isocenter_mm),
    )
    with pytest.raises(Exception, match="Nope"):
        rtplan.influence_matrix(small_phantom_patient, target="Nope", progress=False)


def test_cli_beam_model_scales_the_matrix_and_a_bad_one_writes_nothing(
    tmp_path, small_phantom_dicom, capsys
):
    # a commissioned model with 1.10x the shipped output per MU gives exactly 1.10x the matrix
    import json

    from dose_engine import load_beam_model

    params = dict(load_beam_model().parameters)
    params["normalisation_gy_per_mu"] *= 1.10
    model = tmp_path / "strong.json"
    model.write_text(json.dumps(params))
    base = [
        "influence",
        str(small_phantom_dicom.ct_dir),
        str(small_phantom_dicom.rtstruct_path),
        "--target",
        "CentralTarget",
        "--gantry",
        "0,180",
        "--dose-grid-mm",
        "12",
        "--no-progress",
    ]
    assert main([*base, "--out", str(tmp_path / "a.h5")]) == 0
    assert main([*base, "--out", str(tmp_path / "b.h5"), "--beam-model", str(model)]) == 0
    a = load_influence_matrix(tmp_path / "a.h5").matrix
    b = load_influence_matrix(tmp_path / "b.h5").matrix
    assert (a != 0).nnz == (b != 0).nnz
    np.testing.assert_allclose(b.toarray(), 1.10 * a.toarray(), rtol=1e-5, atol=1e-9)
    capsys.readouterr()
    missing = tmp_path / "nope.json"
    assert main([*base, "--out", str(tmp_path / "c.h5"), "--beam-model", str(missing)]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()


def test_cli_hu_table_sets_the_density_of_the_matrix(tmp_path, small_phantom_dicom, capsys):
    # a scanner table giving soft tissue 1.12: beam 0's matrix is field_dose on that density
    from dose_engine import load_hu_table

    table = tmp_path / "scanner.csv"
    table.write_text("-1000, 0.001\n0, 1.12\n1000, 1.8\n")
    out = tmp_path / "m.h5"
    argv = _argv(small_phantom_dicom, "0", "--hu-table", str(table), "--out", str(out))
    assert main(argv) == 0
    im = load_influence_matrix(out)
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    grid = im.dose_grid
    body = patient.structures["Body"].occupancy(grid) > 0
    total = np.asarray(im.matrix.sum(axis=1)).reshape(grid.shape)
    args = (patient.ct.grid, grid, im.beams[0], im.beamlets.rectangles_mm(0), 1.0)
    denser = field_dose(
        hu_to_density(patient.ct.array, load_hu_table(table)), *args, voxel_mask=body
    )
    shipped = field_dose(hu_to_density(patient.ct.array), *args, voxel_mask=body)
    off_denser = np.max(np.abs(total - denser))
    assert off_denser <= 0.03 * denser.max()
    assert off_denser < 0.5 * np.max(np.abs(total - shipped))  # the table, not the shipped one
    bad = tmp_path / "bad.csv"
    bad.write_text("0, 1.0\n")
    argv[argv.index("--hu-table") + 1] = str(bad)
    argv[argv.index("--out") + 1] = str(tmp_path / "n.h5")
    capsys.readouterr()
    assert main(argv) == 2
    assert "bad.csv" in capsys.readouterr().err and not (tmp_path / "n.h5").exists()
