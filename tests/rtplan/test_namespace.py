"""The top-level namespace: every public name visible to ``dir`` and resolvable, the heavy
sub-packages imported only on first use, and the packages marked as typed (PEP 561)."""

import ast
import importlib
import subprocess
import sys
from importlib import resources

import pytest

import rtplan


def test_dir_lists_every_public_name_including_the_lazy_ones():
    names = dir(rtplan)
    assert set(rtplan.__all__) <= set(names)
    assert {"plan_patient", "load_protocol", "PlanResult", "phantoms"} <= set(names)


@pytest.mark.parametrize("name", rtplan.__all__)
def test_every_public_name_resolves(name):
    assert getattr(rtplan, name) is not None


def test_lazy_names_are_imported_on_first_access_only():
    code = (
        "import sys, rtplan; "
        "before = 'rtplan.planning' in sys.modules; "
        "rtplan.plan_patient; "
        "sys.exit(0 if (not before and 'rtplan.planning' in sys.modules) else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="has no attribute 'plan_pateint'"):
        rtplan.plan_pateint  # noqa: B018


@pytest.mark.parametrize("package", ["rtplan", "dose_engine", "optimizers"])
def test_packages_are_marked_typed(package):
    assert resources.files(package).joinpath("py.typed").is_file()


def _stub_imports():
    """(module, name, bound name) of every import in rtplan/__init__.pyi, and its __all__."""
    tree = ast.parse(resources.files("rtplan").joinpath("__init__.pyi").read_text("utf-8"))
    imports, stub_all = [], None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = "rtplan" + ("." + node.module if node.module else "")
            if not node.level:
                module = node.module
            imports += [(module, a.name, a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.Assign) and node.targets[0].id == "__all__":
            stub_all = ast.literal_eval(node.value)
    return imports, stub_all


def test_the_stub_declares_exactly_the_public_names():
    imports, stub_all = _stub_imports()
    assert stub_all == rtplan.__all__
    assert sorted(bound for _, _, bound in imports) == sorted(rtplan.__all__)


@pytest.mark.parametrize(("module", "name", "bound"), _stub_imports()[0])
def test_every_name_of_the_stub_is_the_object_rtplan_gives(module, name, bound):
    """The stub tells the truth: each name it declares is what ``rtplan.<name>`` resolves to
    (the lazy ones included)."""
    assert getattr(rtplan, bound) is getattr(importlib.import_module(module), name)
