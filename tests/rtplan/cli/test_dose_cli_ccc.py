"""``rtplan dose --algorithm ccc``: the collapsed-cone recalculation of an RT-PLAN.

- On the TG-119 C-shape (water-equivalent body, no lung or bone) it runs, and its PTV dose
  agrees with the pencil-beam recalculation of the same RT-PLAN within 3 % (both engines
  are commissioned to the same measured data); the RT-DOSE and the printed summary name
  the algorithm.
- A beam model with no collapsed-cone commissioning is refused before anything is
  written: exit 2, one line naming the model.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pydicom
import pytest

from dose_engine import load_beam_model
from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine, read_patient
from rtplan.cli import main
from rtplan.io import read_rtdose, write_rtplan
from rtplan.phantoms import write_phantom

VARIAN = load_machine("VarianMLC120")


def _segment(x1, x2, y1, y2, mu):
    c = VARIAN.mlc.leaf_centers_mm
    inside = (c > y1) & (c < y2)
    leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
    return Segment(leaves, {"X": (x1, x2), "Y": (y1, y2)}, mu, VARIAN.mlc.leaf_boundaries_mm)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("dose_ccc")
    written = write_phantom("cshape", root / "cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = patient.structure("PTV").centroid_mm(patient.ct.grid)
    beams = [
        DeliverableBeam(
            n, f"G{g:g}", Beam(g, isocenter_mm=iso), VARIAN,
            (_segment(-45.0, 45.0, -45.0, 45.0, 80.0), _segment(-30.0, 12.5, -20.0, 35.0, 40.0)),
        )
        for n, g in enumerate((0.0, 120.0, 240.0), start=1)
    ]  # fmt: skip
    plan = DeliverablePlan(beams, 3, 2.0, "PTV")
    rp = root / "RP.dcm"
    write_rtplan(rp, plan, patient)
    return types.SimpleNamespace(root=root, written=written, patient=patient, rp=rp)


def _argv(case, out, *extra):
    w = case.written
    return ["dose", str(w.ct_dir), str(w.rtstruct_path), str(case.rp), "--out", str(out), *extra]


def test_ccc_recalculation_agrees_with_the_pencil_beam_in_water(case, tmp_path, capsys):
    pb_out, cc_out = tmp_path / "RD_pb.dcm", tmp_path / "RD_ccc.dcm"
    assert main(_argv(case, pb_out, "--dose-grid-mm", "5")) == 0
    assert "algorithm pencil_beam" in capsys.readouterr().out
    assert main(_argv(case, cc_out, "--dose-grid-mm", "5", "--algorithm", "ccc")) == 0
    assert "algorithm ccc" in capsys.readouterr().out
    ds = pydicom.dcmread(cc_out)
    assert "collapsed cone" in ds.SeriesDescription and "collapsed cone" in ds.DoseComment
    assert "pencil beam" in pydicom.dcmread(pb_out).SeriesDescription
    pb, grid, _ = read_rtdose(pb_out)
    cc, grid2, _ = read_rtdose(cc_out)
    assert grid == grid2
    ptv = case.patient.structure("PTV").mask(grid)
    assert np.median(cc[ptv]) == pytest.approx(np.median(pb[ptv]), rel=0.03)
    assert not np.allclose(cc, pb, rtol=1e-3)  # a different engine, not a copy


def test_uncommissioned_model_is_refused(case, tmp_path, capsys):
    params = dict(load_beam_model().parameters, name="clinic 10 MV")
    model_file = tmp_path / "clinic10.json"
    model_file.write_text(json.dumps(params))
    out = tmp_path / "RD.dcm"
    argv = _argv(case, out, "--algorithm", "ccc", "--beam-model", str(model_file))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clinic 10 MV" in err[0] and "collapsed-cone" in err[0], err
    assert not out.exists()
