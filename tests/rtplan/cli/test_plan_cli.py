"""End-to-end ``rtplan plan`` on a small, coarse C-shape phantom: files, exit codes, and
nothing written on bad input."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pydicom
import pytest

from rtplan.cli import main
from rtplan.evaluation import evaluate_goals
from rtplan.io import read_patient, read_rtdose
from rtplan.phantoms import write_phantom
from rtplan.planning import PLAN_FILES
from rtplan.protocols import load_protocol

# A fast version of the TG-119 C-shape protocol: 4 beams, 8 mm dose grid, few iterations
# (the plan quality is not the point here; benches/bench_tg119.py measures it).
SMALL = """
name = "small C-shape"
[prescription]
total_dose_gy = 50.0
fractions = 25
target = "PTV"
[structures.PTV]
role = "target"
aliases = ["OuterTarget"]
[structures.Core]
aliases = ["CentralCore"]
[structures.Body]
role = "external"
required = false
[beams]
count = 4
[grid]
dose_grid_mm = 8.0
[optimization]
max_iterations = 60
sequencing_levels = 5
[helpers]
ring_inner_mm = 8.0
ring_outer_mm = 24.0
normal_tissue_outer_mm = 40.0
[safety]                      # a 4-beam, 8 mm plan: looser safety nets than the defaults
allow_goal_above_rx_pct = 400.0
hotspot_pct = 300.0
target_floor_pct = 50.0
normalization_cap_pct = 50.0
{extra}
"""

LOOSE_GOALS = """
[[goals]]
structure = "PTV"
metric = "D95%"
min = 50.0
priority = 1
[[goals]]
structure = "PTV"
metric = "Dmax"
max = 400
unit = "%"
priority = 2
[[goals]]
structure = "Core"
metric = "Dmean"
max = 45.0
priority = 2
"""

STRICT_GOALS = (
    LOOSE_GOALS
    + """
[[goals]]
structure = "Core"
metric = "Dmax"
max = 0.5
priority = 1
"""
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "cshape"
    return write_phantom("cshape", out, pixel_spacing_mm=5.0, slice_spacing_mm=5.0)


def _protocol(tmp_path, goals: str, extra: str = "", name: str = "p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(SMALL.format(extra=extra)) + goals)
    return path


def _run(phantom, protocol, out, *more):
    return main(
        [
            "plan",
            str(phantom.ct_dir),
            str(phantom.rtstruct_path),
            "--protocol",
            str(protocol),
            "--out",
            str(out),
            "--no-progress",
            *more,
        ]
    )


def test_plan_writes_four_files_and_goals_match_written_dose(phantom, tmp_path, capsys):
    proto = _protocol(tmp_path, LOOSE_GOALS)
    out = tmp_path / "plan"
    cache = tmp_path / "cache"
    assert _run(phantom, proto, out, "--cache-dir", str(cache)) == 0
    assert len(list(cache.glob("influence-*.h5"))) == 1  # organ and helper rows, one pass
    assert sorted(p.name for p in out.iterdir()) == sorted(PLAN_FILES)
    assert "goals met" in capsys.readouterr().out
    record = json.loads((out / "plan.json").read_text())
    # Independent check: re-evaluate the goals on the RT-DOSE read back from disk.
    dose, grid, refs = read_rtdose(out / "RTDOSE.dcm")
    patient = read_patient(phantom.ct_dir, phantom.rtstruct_path)
    p = load_protocol(proto)
    goals = p.evaluation_goals(p.resolve_structures(patient.structures))
    table = evaluate_goals(dose, patient.structures, goals, grid, prescription_gy=50.0)
    achieved = [g["value"] for g in record["goals"]][: len(table)]  # implicit goals follow
    np.testing.assert_allclose(achieved, [r.value for r in table], rtol=2e-3, atol=0.05)
    assert [g["label"][:8] for g in record["goals"][len(table) :]] == ["implicit"] * 2
    # normalisation: PTV D95 equals the prescription (first coverage goal met exactly)
    assert table[0].value == pytest.approx(50.0, rel=3e-3)
    plan = pydicom.dcmread(out / "RTPLAN.dcm")
    assert plan.Modality == "RTPLAN" and len(plan.BeamSequence) >= 3
    assert (
        refs.referenced_plan_uid == plan.SOPInstanceUID
        if hasattr(refs, "referenced_plan_uid")
        else True
    )
    assert plan.FractionGroupSequence[0].NumberOfFractionsPlanned == 25
    assert not list(tmp_path.glob(".plan.*"))  # no temporary folder left


def test_exit_status_one_when_a_goal_fails_and_force(phantom, tmp_path):
    proto = _protocol(tmp_path, STRICT_GOALS)
    out = tmp_path / "plan"
    assert _run(phantom, proto, out) == 1  # core Dmax <= 0.5 Gy is impossible
    record = json.loads((out / "plan.json").read_text())
    failed = [g for g in record["goals"] if not g["passed"] and g["label"][:8] != "implicit"]
    assert [g["metric"] for g in failed] == ["Dmax"]
    # existing output: refused (2) unless --force
    assert _run(phantom, proto, out) == 2
    assert _run(phantom, proto, out, "--force") == 1


def test_bad_input_writes_nothing(phantom, tmp_path, capsys):
    out = tmp_path / "plan"
    missing = _protocol(
        tmp_path,
        LOOSE_GOALS
        + """
[[goals]]
structure = "Lung"
metric = "V20Gy"
max = 30
""",
        name="missing.toml",
    )
    assert _run(phantom, missing, out) == 2
    err = capsys.readouterr().err
    assert "needs structure 'Lung'" in err and "Core" in err and "--map Lung=" in err
    assert not out.exists()
    # hard constraints that contradict each other: every PTV voxel >= 50 Gy and <= 40 Gy
    infeasible = _protocol(
        tmp_path,
        """
[[goals]]
structure = "PTV"
metric = "Dmin"
min = 50.0
priority = 1
hard = true
[[goals]]
structure = "PTV"
metric = "Dmax"
max = 40.0
priority = 1
hard = true
""",
        name="infeasible.toml",
    )
    assert _run(phantom, infeasible, out) == 2
    err = capsys.readouterr().err
    assert "error" in err and "PTV" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".plan.*"))
    # physically infeasible (no static contradiction): the optimiser cannot keep the core,
    # 5 mm from the PTV, below 0.5 Gy while every PTV voxel gets 50 Gy
    physics = _protocol(
        tmp_path,
        """
[[goals]]
structure = "PTV"
metric = "Dmin"
min = 50.0
priority = 1
hard = true
[[goals]]
structure = "Core"
metric = "Dmax"
max = 0.5
priority = 1
hard = true
[[goals]]
structure = "Core"
metric = "Dmean"
max = 30.0
priority = 2
""",
        name="physics.toml",
    )
    assert _run(phantom, physics, out) == 2
    err = capsys.readouterr().err
    assert "Core" in err and ("hard constraints" in err or "infeasib" in err.lower())
    assert not out.exists()
    malformed = tmp_path / "malformed.toml"
    malformed.write_text(SMALL.format(extra="") + '[[goals]]\nstructure = "PTV"\nmetric = "D95%"\n')
    assert _run(phantom, malformed, out) == 2
    assert "goal 0 (PTV D95%)" in capsys.readouterr().err
    assert not out.exists()


def test_map_option_resolves_renamed_structure(phantom, tmp_path):
    proto = tmp_path / "renamed.toml"
    text = textwrap.dedent(SMALL.format(extra="")).replace(
        '[structures.Core]\naliases = ["CentralCore"]', "[structures.Avoid]\naliases = []"
    ) + LOOSE_GOALS.replace('"Core"', '"Avoid"')
    proto.write_text(text)
    out = tmp_path / "plan"
    assert _run(phantom, proto, out) == 2  # no structure "Avoid" in the patient
    assert not out.exists()
    assert _run(phantom, proto, out, "--map", "Avoid=Core") == 0
    record = json.loads((out / "plan.json").read_text())
    protocol_goals = [g for g in record["goals"] if g["label"][:8] != "implicit"]
    assert {g["structure"] for g in protocol_goals} == {"PTV", "Core"}


def test_demo_writes_phantom_and_plan(tmp_path, capsys):
    out = tmp_path / "demo"
    status = main(
        [
            "demo",
            str(out),
            "--dose-grid-mm",
            "10",
            "--beams",
            "3",
            "--max-iterations",
            "30",
            "--no-progress",
        ]
    )
    assert status == 0  # the demo exits 0 when the plan is produced, goals shown not fatal
    text = capsys.readouterr().out
    assert "GoalTable" in text and "[  REPORTED]    Core D5% <= 10 Gy" in text
    record = json.loads((out / "plan" / "plan.json").read_text())
    (d5,) = record["reported"]  # the stricter core reading: reported, not a goal
    (d10,) = [
        g for g in record["goals"] if g["label"].startswith("TG-119") and g["structure"] == "Core"
    ]
    assert d5["metric"] == "D5%" and d5["status"] == "reported" and d5["passed"] is None
    assert d5["within_reference"] == (d5["value"] <= 10.0)
    assert d5["value"] >= d10["value"]  # D5 >= D10 on any dose
    assert not [g for g in record["goals"] if g["metric"] == "D5%"]
    assert (out / "input" / "RS.dcm").is_file() and any((out / "input" / "CT").iterdir())
    assert sorted(p.name for p in (out / "plan").iterdir()) == sorted(PLAN_FILES)
    plan = pydicom.dcmread(out / "plan" / "RTPLAN.dcm")
    rs = pydicom.dcmread(out / "input" / "RS.dcm")
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert main(["demo", str(out), "--no-progress"]) == 2  # exists: refused, untouched


def test_safety_warning_in_the_same_words_everywhere(phantom, tmp_path, capsys):
    """A normalisation beyond the cap (0 % here): plan written, exit 1, the same warning sentence in
    the CLI output, plan.json and report.html; coverage before and after recorded."""
    import html

    proto = _protocol(tmp_path, LOOSE_GOALS)
    proto.write_text(
        proto.read_text().replace("normalization_cap_pct = 50.0", "normalization_cap_pct = 0.0")
    )
    out = tmp_path / "plan"
    assert _run(phantom, proto, out) == 1
    stdout = capsys.readouterr().out
    record = json.loads((out / "plan.json").read_text())
    (warning,) = [w for w in record["warnings"] if w["code"] == "normalization_cap"]
    assert warning["message"].startswith("NORMALISATION CAPPED: meeting 'PTV D95% >= 50 Gy'")
    assert f"WARNING: {warning['message']}" in stdout
    assert html.escape(warning["message"]) in (out / "report.html").read_text()
    norm = record["plan"]["normalization_detail"]
    assert norm["factor"] == 1.0 and norm["needed"] != 1.0  # a 0 % cap: no scaling at all
    assert norm["value_after"] == pytest.approx(norm["value_before"] * norm["factor"], rel=0.01)
    assert record["plan"]["normalization"] == pytest.approx(norm["factor"])


@pytest.mark.slow
def test_contradictory_hard_goals_exit_2_with_a_certificate_gh12(phantom, tmp_path, capsys):
    """Every PTV voxel >= 50 Gy inside an organ (the PTV grown by 8 mm) whose every voxel
    must stay <= 40 Gy: no static check sees it (two structures); the optimiser proves it
    with the reduced linear programme and the CLI exits 2, nothing written."""
    proto = _protocol(
        tmp_path,
        """
[[structures.derived]]
name = "Shell"
from = "PTV"
margin_mm = 8.0
role = "oar"
[[goals]]
structure = "PTV"
metric = "Dmin"
min = 50.0
hard = true
[[goals]]
structure = "Shell"
metric = "Dmax"
max = 40.0
hard = true
[[goals]]
structure = "Core"
metric = "Dmean"
max = 45.0
priority = 2
""",
    )
    out = tmp_path / "plan"
    assert _run(phantom, proto, out) == 2
    err = capsys.readouterr().err
    assert "contradict each other" in err and "no fluence x >= 0 meets them" in err
    # 50 Gy against 40 Gy in the same voxels: at least 20 % of the PTV floor must give
    assert "PTV" in err and "Shell" in err
    assert not out.exists()


def test_unconverged_hard_goal_is_not_infeasible_gh12(phantom, tmp_path, capsys):
    """A feasible hard goal (core Dmax <= 30 Gy: no beam at all meets it) with an iteration
    budget far too small: the plan is written with exit 1 and an 'OPTIMISER DID NOT
    CONVERGE' warning carrying the residual and the evidence, never exit 2."""
    proto = _protocol(
        tmp_path,
        LOOSE_GOALS
        + """
[[goals]]
structure = "Core"
metric = "Dmax"
max = 30.0
hard = true
""",
    )
    proto.write_text(proto.read_text().replace("max_iterations = 60", "max_iterations = 2"))
    out = tmp_path / "plan"
    assert _run(phantom, proto, out) == 1
    stdout = capsys.readouterr().out
    record = json.loads((out / "plan.json").read_text())
    (warning,) = [w for w in record["warnings"] if w["code"] == "solver_not_converged"]
    assert warning["message"].startswith("OPTIMISER DID NOT CONVERGE: 'goal 3: Core Dmax")
    assert f"WARNING: {warning['message']}" in stdout
    status = record["plan"]["optimization_status"]
    assert not status["converged"] and status["status"] == "iteration_limit"
    assert status["message"].startswith("Did not converge")
    assert status["certificate"]["verdict"] == "feasible"  # the evidence: x = 0 meets it
    violated = float(warning["message"].split("violated by ")[1].split(" %")[0])
    assert violated > 100 * 0.02
