"""The top-level namespace: every public name visible to ``dir`` and resolvable, the heavy
sub-packages imported only on first use, and the packages marked as typed (PEP 561)."""

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
