"""``[[structures.derived]]`` in protocols: parsing, refusals, and a plan that uses them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest

import rtplan
from rtplan.cli import main
from rtplan.errors import ProtocolError
from rtplan.phantoms import make_phantom
from rtplan.planning import DERIVED_RTSTRUCT_FILE, PLAN_FILES, plan_patient
from rtplan.protocols import apply_derived, parse_protocol
from rtplan.structures import BODY_OUTLINE_NAME, DerivedStructure, derive_structure, expand, roi

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from _tiny_protocol import tiny_cshape_protocol

DERIVED = """
[[structures.derived]]
name = "Core-PTV2"
from = "Core"
minus = ["PTV2"]

[[structures.derived]]
name = "PTV2"
from = "CTV"
margin_mm = {anterior = 3, posterior = 3, left = 3, right = 3, superior = 5, inferior = 5}

[[structures.derived]]
name = "zRingPTV2"
from = "PTV2"
ring = {inner_mm = 0, outer_mm = 10}

[structures.CTV]
aliases = ["PTV"]
role = "target"
"""


def protocol_text(derived: str = DERIVED, target: str = "PTV2") -> str:
    text = tiny_cshape_protocol(ring=False).replace('target = "PTV"', f'target = "{target}"')
    text = text.replace('structure = "PTV"', f'structure = "{target}"')
    return text.replace("[structures.Core]", derived + "\n[structures.Core]")


def load(text: str, source: str = "lung.toml"):
    return parse_protocol(tomllib.loads(text), source=source)


def test_parse_orders_by_dependency_and_registers_names():
    p = load(protocol_text())
    assert [d.name for d in p.derived] == ["PTV2", "Core-PTV2", "zRingPTV2"]
    roles = {s.name: s.role for s in p.structures}
    assert roles["PTV2"] == "target" and roles["Core-PTV2"] == "oar"
    d = {x.name: x for x in p.derived}
    assert d["PTV2"].roi_type == "PTV" and d["zRingPTV2"].roi_type == "CONTROL"
    assert str(d["Core-PTV2"]) == "Core-PTV2 = difference(roi('Core'), roi('PTV2'))"
    assert repr(d["zRingPTV2"].expression({})) == "ring(roi('PTV2'), inner_mm=0, outer_mm=10)"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'name = "A"\nfrom = "Core"\nmargin = 5',
            r"entry 0 \('A'\): unknown key\(s\) \['margin'\]",
        ),
        ('name = "A"\nfrom = "Core"\nunion = ["PTV"]', "exactly one of `from`"),
        ('name = "A"\nfrom = "Core"\nmargin_mm = {cranial = 5}', r"margin_mm: Unknown margin"),
        ('name = "A"\nfrom = "Core"\nmargin_mm = -2', r"margin_mm: Margin `anterior` must be >= 0"),
        ('name = "A"\nfrom = "Core"\nring = {inner_mm = 5, outer_mm = 2}', "0 <= a < b"),
        ('name = "A"\nfrom = "A"', "derived from itself"),
        ('name = "Core"\nfrom = "PTV"', r"also declared as \[structures.Core\]"),
        ('name = "A"\nfrom = []', "non-empty list of structure names"),
        (f'name = "{"x" * 65}"\nfrom = "Core"', "at most 64 characters"),
        ('name = "A\\\\B"\nfrom = "Core"', "may not hold a backslash"),
    ],
)
def test_malformed_entries_are_refused_with_file_entry_and_key(entry, message):
    text = protocol_text(f"[[structures.derived]]\n{entry}\n", target="PTV")
    with pytest.raises(ProtocolError, match=r"Protocol lung\.toml: \[\[structures\.derived\]\].*"):
        load(text)
    with pytest.raises(ProtocolError, match=message):
        load(text)


def test_cycles_are_refused_naming_the_cycle():
    cyc = (
        '[[structures.derived]]\nname = "A"\nfrom = "B"\n'
        '[[structures.derived]]\nname = "B"\nunion = ["Core", "A"]\n'
    )
    with pytest.raises(ProtocolError, match=r"form a cycle: A -> B -> A"):
        load(protocol_text(cyc, target="PTV"))


def test_missing_source_roi_names_file_entry_and_roi():
    text = protocol_text(
        '[[structures.derived]]\nname = "PTV2"\nfrom = "GTV"\nmargin_mm = 5\n', target="PTV2"
    )
    p = load(text)
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    with pytest.raises(
        ProtocolError,
        match=r"Protocol lung\.toml: \[\[structures\.derived\]\] entry 0 \('PTV2'\): .*"
        r"needs structure 'GTV'.*\['Body', 'PTV', 'Core'\]",
    ):
        apply_derived(patient, p)


def test_a_derived_name_the_patient_already_has_is_refused():
    text = protocol_text('[[structures.derived]]\nname = "ptv"\nfrom = "Core"\n', target="PTV")
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    with pytest.raises(ProtocolError, match=r"already has a structure 'PTV'.*--map ptv=PTV"):
        apply_derived(patient, load(text))


def test_applied_structures_equal_the_python_api():
    patient = make_phantom("cshape", pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    p = load(protocol_text())
    got = apply_derived(patient, p)
    m = {"anterior": 3, "posterior": 3, "left": 3, "right": 3, "superior": 5, "inferior": 5}
    ref = patient.derive("PTV2", expand("PTV", m)).derive("Core-PTV2", roi("Core") - "PTV2")
    g = patient.grid.with_spacing(3.0)
    for name in ("PTV2", "Core-PTV2"):
        assert isinstance(got.structure(name), DerivedStructure)
        np.testing.assert_array_equal(
            got.structure(name).occupancy(g), ref.structure(name).occupancy(g)
        )


@pytest.mark.slow
def test_plan_with_derived_target_and_body_outline_writes_rs_derived(tmp_path, capsys):
    full = make_phantom("cshape", pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    patient = replace(full, structures={n: s for n, s in full.structures.items() if n != "Body"})
    p = load(protocol_text())
    result = plan_patient(patient, p, progress=False)
    names = set(result.patient.structures)
    assert {"PTV2", "Core-PTV2", "zRingPTV2", BODY_OUTLINE_NAME} <= names
    assert result.mapping["PTV2"] == "PTV2"
    assert any(r.goal.structure == "PTV2" for r in result.goal_table)
    out = result.write(tmp_path / "plan")
    files = sorted(f.name for f in out.iterdir())
    assert files == sorted((*PLAN_FILES, DERIVED_RTSTRUCT_FILE))
    rs = pydicom.dcmread(out / DERIVED_RTSTRUCT_FILE)
    rp = pydicom.dcmread(out / "RTPLAN.dcm")  # the plan refers to the structure set of its target
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    record = json.loads((out / "plan.json").read_text())
    assert record["plan"]["derived_structures"]["PTV2"].startswith("expand(roi('PTV')")
    from rtplan.io import write_patient

    w = write_patient(patient, tmp_path / "in")
    again = rtplan.read_patient(w.ct_dir, out / DERIVED_RTSTRUCT_FILE)
    g = patient.grid
    want = result.patient.structure("PTV2").volume_cc(g)
    # 4 mm slices: one contour per CT slice cannot hold the partial-slice volume at the
    # superior/inferior ends of the 5 mm margins
    assert again.structure("PTV2").volume_cc(g) == pytest.approx(want, rel=0.02)
    assert again.structure(BODY_OUTLINE_NAME).volume_cc(g) == pytest.approx(
        full.structure("Body").volume_cc(g), rel=0.01
    )
    # rtplan evaluate derives what the RT-STRUCT lacks, and keeps what RS_derived.dcm has
    toml = tmp_path / "lung.toml"
    toml.write_text(protocol_text())
    goals = {}
    for rs in (w.rtstruct_path, out / DERIVED_RTSTRUCT_FILE):
        rc = main(["evaluate", str(out / "RTDOSE.dcm"), str(rs), "--protocol", str(toml), "--json"])
        record = json.loads(capsys.readouterr().out)
        goals[rs.name] = {(x["structure"], x["metric"]): x["value"] for x in record["goals"]}
        assert rc in (0, 1)
    a, b = goals.values()
    assert a.keys() == b.keys() and ("PTV2", "D95%") in a
    for key in a:  # lazily derived vs traced contours: within the partial-volume tolerance
        assert a[key] == pytest.approx(b[key], rel=0.03, abs=0.3), key
    assert a[("PTV2", "D95%")] == pytest.approx(
        next(r.value for r in result.goal_table if r.goal.structure == "PTV2"), rel=0.01
    )


def test_derived_from_the_external_uses_the_body_outline_when_there_is_no_body():
    from rtplan.planning._plan import _Context, stage_structures

    full = make_phantom("cshape", pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    patient = replace(full, structures={n: s for n, s in full.structures.items() if n != "Body"})
    extra = (
        '[[structures.derived]]\nname = "Body-PTV2"\nfrom = "Body"\nminus = "PTV2"\n'
        '[structures.Body]\nrole = "external"\nrequired = false\n'
    )
    p = load(protocol_text(DERIVED + extra))
    ctx = _Context(patient, p, "numpy", None, False, {}, None)
    stage_structures(ctx)
    assert ctx.mapping["Body"] == BODY_OUTLINE_NAME
    s = ctx.patient.structures
    assert s["Body-PTV2"].expression.names() == (BODY_OUTLINE_NAME, "PTV2")
    g = ctx.dose_grid
    # Body-PTV2 and PTV2 tile the outline on the evaluation lattice (a plain Structure's
    # occupancy has no partial volume along z, so the lattice body is the reference)
    lattice_body = derive_structure(s, "B", roi(BODY_OUTLINE_NAME)).volume_cc(g)
    tiles = s["Body-PTV2"].volume_cc(g) + s["PTV2"].volume_cc(g)
    assert tiles == pytest.approx(lattice_body, rel=1e-6)
    body = s[BODY_OUTLINE_NAME].volume_cc(g)
    assert body == pytest.approx(full.structure("Body").volume_cc(g), rel=0.01)


OPTIONAL_LUNGS = """
[structures.Lung_L]
required = false

[structures.Lung_R]
required = false

[structures.Heart]
required = false

[[structures.derived]]
name = "Lungs-PTV"
union = ["Lung_L", "Lung_R"]
minus = ["PTV"]

[[structures.derived]]
name = "Core-Heart"
from = "Core"
minus = ["Heart"]

[[goals]]
structure = "Lungs-PTV"
metric = "V20Gy"
max = 35.0

[[goals]]
structure = "Core-Heart"
metric = "Dmean"
max = 30.0
"""


def test_derived_from_absent_optional_structures_is_not_evaluated_with_the_reason():
    # a real CT contoured with a GTV only (issue 12): the total lung built from optional
    # lungs the patient lacks is left out (its goals "not evaluated", naming the missing
    # sources); an absent optional `minus` operand subtracts nothing
    p = load(protocol_text(OPTIONAL_LUNGS, target="PTV"))
    assert not p.structure("Lungs-PTV").required and p.structure("Core-Heart").required
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    got = apply_derived(patient, p)
    assert "Lungs-PTV" not in got.structures
    g = patient.grid
    ref = patient.derive("Core-Heart", roi("Core"))  # Core minus nothing
    np.testing.assert_array_equal(
        got.structure("Core-Heart").occupancy(g), ref.structure("Core-Heart").occupancy(g)
    )
    mapping = p.resolve_structures(list(got.structures))
    assert "Lungs-PTV" not in mapping and mapping["Core-Heart"] == "Core-Heart"
    ((goal, reason),) = p.goals_not_evaluated(mapping)
    assert goal.structure == "Lungs-PTV"
    assert reason == (
        "derived structure 'Lungs-PTV' not built: 'Lung_L', 'Lung_R' not found in the "
        "patient (optional in the protocol)"
    )
    # with one lung present the total lung is still not built from half of it
    lung = replace(patient.structure("Core"), name="Lung_R")
    half = replace(patient, structures={**patient.structures, "Lung_R": lung})
    assert "Lungs-PTV" not in apply_derived(half, p).structures


def test_a_derived_prescription_target_from_an_absent_optional_structure_is_refused():
    text = protocol_text(
        '[[structures.derived]]\nname = "PTV2"\nfrom = "GTV"\nmargin_mm = 5\n'
        '[structures.GTV]\nrole = "target"\nrequired = false\n',
        target="PTV2",
    )
    p = load(text)
    assert p.structure("PTV2").required
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    with pytest.raises(
        ProtocolError, match=r"entry 0 \('PTV2'\): it is built from 'GTV', which the patient lacks"
    ):
        apply_derived(patient, p)
