"""``rtplan demo --phantom thorax``: the thorax phantom planned end to end (issue 16).

Coarse for the suite: the phantom written at 8 mm (13 slices; ``write_phantom`` wrapped),
10 mm dose grid, 3 beams, 30 iterations.  The written RT-DOSE is the
collapsed-cone dose (``auto``: the body holds lung and bone), recomputed from the written
RT-PLAN by :func:`rtplan.compute_plan_dose` within 1 % of its maximum, and plan.json and
the RT-DOSE name the algorithm.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pydicom

from rtplan import compute_plan_dose, read_patient
from rtplan.cli import main
from rtplan.io import read_rtdose
from rtplan.io._rtplan_read import read_rtplan_beams
from rtplan.protocols import load_protocol


def test_demo_plans_the_thorax_on_the_collapsed_cone(tmp_path, capsys, monkeypatch):
    import rtplan.planning._workflow as workflow

    coarse = functools.partial(
        workflow.write_phantom, pixel_spacing_mm=8.0, slice_spacing_mm=8.0, n_slices=13
    )
    monkeypatch.setattr(workflow, "write_phantom", coarse)
    out = tmp_path / "demo"
    argv = ["demo", str(out), "--phantom", "thorax", "--dose-grid-mm", "10", "--beams", "3"]
    assert main([*argv, "--max-iterations", "30", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(load_protocol("lung_60gy_30fx").name + ":")
    record = json.loads((out / "plan" / "plan.json").read_text())
    assert record["plan"]["dose_algorithm"]["algorithm"] == "ccc"
    ds = pydicom.dcmread(out / "plan" / "RTDOSE.dcm")
    assert "collapsed cone" in ds.SeriesDescription
    written, grid, _ = read_rtdose(out / "plan" / "RTDOSE.dcm")
    patient = read_patient(out / "input" / "CT", out / "plan" / "RS_derived.dcm")
    plan = read_rtplan_beams(out / "plan" / "RTPLAN.dcm", patient)
    again = compute_plan_dose(plan, patient, dose_grid=grid, algorithm="ccc").dose_gy
    assert np.max(np.abs(np.asarray(again) - written)) <= 0.01 * written.max()
