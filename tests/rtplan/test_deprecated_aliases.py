"""Public names that moved in the layout change (issue 14) still work for one release,
with a DeprecationWarning naming their new home, and are the very same objects."""

import importlib

import pytest

import rtplan.io

MOVED = [
    ("rtplan.phantoms", "write_patient", "rtplan.io"),
    ("rtplan.phantoms", "WrittenPatient", "rtplan.io"),
    ("rtplan.structures", "write_structure_set", "rtplan.io"),
    ("rtplan.structures", "has_generated_structures", "rtplan.io"),
    ("rtplan.sequencing", "aperture_dose", "rtplan.dose"),
    ("rtplan.sequencing", "plan_aperture_dose", "rtplan.dose"),
]

#: Renamed: (old module, old name, new module, new name).
RENAMED = [
    ("rtplan", "load_patient", "rtplan.io", "read_patient"),
    ("rtplan.io", "load_patient", "rtplan.io", "read_patient"),
    ("rtplan", "load_structure_set", "rtplan.io", "read_structure_set"),
    ("rtplan.io", "load_structure_set", "rtplan.io", "read_structure_set"),
    ("rtplan.io", "load_ct", "rtplan.io", "read_ct"),
    ("rtplan.io", "load_portpy_patient", "rtplan.io", "read_portpy_patient"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_name_warns_naming_its_new_home_and_is_the_same_object(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"^{old}\.{name} is now {new}\.{name};"):
        alias = getattr(module, name)
    assert alias is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_from_import_of_a_moved_name_warns(old, name, new):
    with pytest.warns(DeprecationWarning, match=rf"is now {new}\.{name}"):
        exec(f"from {old} import {name}", {})


@pytest.mark.parametrize("old", sorted({old for old, _, _ in MOVED} | {r[0] for r in RENAMED}))
def test_moved_names_are_not_advertised_and_unknown_names_still_fail(old):
    module = importlib.import_module(old)
    assert not {name for o, name, _ in MOVED if o == old} & set(module.__all__)
    assert not {r[1] for r in RENAMED if r[0] == old} & set(module.__all__)
    with pytest.raises(AttributeError, match=rf"module '{old}' has no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize(("old", "name", "new", "new_name"), RENAMED)
def test_renamed_function_warns_naming_the_new_name_and_is_the_same_object(
    old, name, new, new_name
):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"^{old}\.{name} is now {new}\.{new_name};"):
        alias = getattr(module, name)
    assert alias is getattr(importlib.import_module(new), new_name)
    assert name not in module.__all__ and new_name.startswith("read_")


def test_the_new_homes_export_the_moved_names():
    assert {"write_patient", "WrittenPatient", "write_structure_set"} <= set(rtplan.io.__all__)
