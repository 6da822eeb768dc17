"""``rtplan influence --algorithm ccc``: per-beamlet collapsed-cone influence matrices.

- On the TG-119 C-shape (water in air) the collapsed-cone matrix has the pencil-beam
  matrix's format and beamlets, says which engine made it, and an open fluence gives the
  same PTV median dose as the pencil-beam matrix within 3 % (both engines are
  commissioned to the same measured data; they are different engines, not copies).
- Refused before any work, exit 2, nothing written: ``--cones`` below 48 or odd,
  ``--cache-dir`` with the collapsed cone, a beam model with no collapsed-cone
  commissioning.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from dose_engine import load_beam_model, load_influence_matrix
from rtplan import read_patient
from rtplan.cli import main
from rtplan.phantoms import write_phantom


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("influence_ccc")
    written = write_phantom(
        "cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0, n_slices=21
    )
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    return types.SimpleNamespace(root=root, written=written, patient=patient)


def _argv(case, out, *extra):
    w = case.written
    return [
        "influence", str(w.ct_dir), str(w.rtstruct_path), "--target", "PTV", "--gantry", "0,180",
        "--dose-grid-mm", "6", "--beamlet-mm", "10", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_ccc_matrix_has_the_pencil_beam_format_and_dose(case, tmp_path, capsys):
    pb_out, cc_out = tmp_path / "pb.h5", tmp_path / "ccc.h5"
    assert main(_argv(case, pb_out)) == 0
    assert "algorithm pencil_beam" in capsys.readouterr().out
    assert main(_argv(case, cc_out, "--algorithm", "ccc")) == 0
    assert "algorithm ccc" in capsys.readouterr().out
    pb, cc = load_influence_matrix(pb_out), load_influence_matrix(cc_out)
    assert cc.settings["algorithm"] == "ccc" and cc.settings["cones"] == 48
    assert cc.shape == pb.shape and cc.matrix.dtype == np.float32
    np.testing.assert_array_equal(cc.beamlets.x_mm, pb.beamlets.x_mm)
    ones = np.ones(cc.shape[1])
    d_pb, d_cc = pb.dose(ones), cc.dose(ones)
    ptv = case.patient.structure("PTV").mask(cc.dose_grid)
    assert np.median(d_cc[ptv]) == pytest.approx(np.median(d_pb[ptv]), rel=0.03)
    assert not np.allclose(d_cc, d_pb, rtol=1e-3)


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--cones", "47"], "`cones` must be an even integer ≥ 48"),
        (["--cones", "24"], "`cones` must be an even integer ≥ 48"),
        (["--cache-dir", "CACHE"], "`cache_dir` caches pencil-beam influence matrices only"),
    ],
)
def test_bad_ccc_options_are_refused_first(case, tmp_path, capsys, extra, pattern):
    out = tmp_path / "ccc.h5"
    extra = [str(tmp_path / "cache") if a == "CACHE" else a for a in extra]
    assert main(_argv(case, out, "--algorithm", "ccc", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0], err
    assert not out.exists()


def test_uncommissioned_model_is_refused(case, tmp_path, capsys):
    params = dict(load_beam_model().parameters, name="clinic 10 MV")
    model_file = tmp_path / "clinic10.json"
    model_file.write_text(json.dumps(params))
    out = tmp_path / "ccc.h5"
    assert main(_argv(case, out, "--algorithm", "ccc", "--beam-model", str(model_file))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clinic 10 MV" in err[0] and "collapsed-cone" in err[0], err
    assert not out.exists()
