"""Leaf-position refinement in the static planner: protocol key, PlanOptions, plan.json.

The tiny C-shape protocol (3 beams, 8 mm dose grid) is planned with the refinement on;
plan.json's record is checked against the written RT-PLAN (re-read, its MU and machine
limits checked by :func:`rtplan.delivery.check_deliverability`) and against the plan
without the refinement (same protocol, same everything else).
"""

from __future__ import annotations

import json

import pytest
from _tiny_protocol import tiny_cshape_protocol

from rtplan.delivery import check_deliverability
from rtplan.errors import ProtocolError
from rtplan.io import read_patient, read_rtplan_delivery
from rtplan.phantoms import write_phantom
from rtplan.planning import PlanOptions, plan_patient
from rtplan.protocols import load_protocol


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "cshape"
    written = write_phantom("cshape", out, pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    return read_patient(written.ct_dir, written.rtstruct_path)


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "p.toml"
    text = tiny_cshape_protocol(ring=False).replace(
        "[optimization]\n",
        "[optimization]\nleaf_refinement = true\nleaf_refinement_iterations = 15\n",
    )
    path.write_text(text)
    return path


def test_plan_json_records_the_refinement(patient, protocol_file, tmp_path):
    result = plan_patient(patient, protocol_file, progress=False)
    result.write(tmp_path / "plan")
    record = json.loads((tmp_path / "plan" / "plan.json").read_text())
    leaf = record["plan"]["leaf_refinement"]
    assert leaf == result.leaf_refinement
    assert leaf["objective_after"] < leaf["objective_before"]
    assert leaf["objective_change_pct"] == pytest.approx(
        100 * (leaf["objective_after"] / leaf["objective_before"] - 1)
    )
    assert 1 <= leaf["iterations"] <= 15 and leaf["evaluations"] >= leaf["iterations"]
    assert leaf["leaf_travel_mm"]["max"] > 0 and leaf["leaf_travel_mm"]["count"] > 0
    assert leaf["mu_unit"] == "MU per fraction"
    # the RT-PLAN written holds the refined meterset, scaled by the normalisation
    delivered = check_deliverability(read_rtplan_delivery(tmp_path / "plan" / "RTPLAN.dcm"))
    assert delivered.ok  # every machine limit holds in the written plan
    assert leaf["mu_after"] * record["plan"]["normalization"] == pytest.approx(
        delivered.total_mu, rel=1e-4
    )
    # without the refinement (PlanOptions overrides the protocol key): no record
    off = plan_patient(
        patient, protocol_file, options=PlanOptions(leaf_refinement=False), progress=False
    )
    assert off.leaf_refinement is None and off.plan_summary()["leaf_refinement"] is None


def test_protocol_keys_are_checked(tmp_path):
    text = tiny_cshape_protocol(ring=False)
    path = tmp_path / "p.toml"
    path.write_text(text.replace("[optimization]\n", "[optimization]\nleaf_refinement = 1\n"))
    with pytest.raises(ProtocolError, match="leaf_refinement"):
        load_protocol(path)
    path.write_text(
        text.replace("[optimization]\n", "[optimization]\nleaf_refinement_iterations = 0\n")
    )
    with pytest.raises(ProtocolError, match="leaf_refinement_iterations"):
        load_protocol(path)
    assert load_protocol("tg119_cshape").optimization.leaf_refinement in (True, False)
    on = PlanOptions(leaf_refinement=True).apply_to("tg119_prostate")
    assert on.optimization.leaf_refinement is True
