"""Every exception and warning class of rtplan is defined in ``rtplan/errors.py`` and
exported there (issue 14); the packages that raise them re-export the same objects."""

import importlib
import inspect
import pkgutil

import rtplan
import rtplan.errors


def _rtplan_modules():
    for info in pkgutil.walk_packages(rtplan.__path__, "rtplan."):
        if info.name.startswith("rtplan.cli.__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_rtplan_exception_class_is_defined_in_errors_py():
    elsewhere = {
        f"{obj.__module__}.{obj.__qualname__}"
        for module in _rtplan_modules()
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException)
        and obj.__module__.startswith("rtplan")
        and obj.__module__ != "rtplan.errors"
    }
    assert elsewhere == set()


def test_errors_py_exports_every_class_it_defines():
    defined = {
        name
        for name, obj in inspect.getmembers(rtplan.errors, inspect.isclass)
        if issubclass(obj, BaseException)
    }
    assert defined == set(rtplan.errors.__all__)


def test_the_domain_packages_re_export_the_same_classes():
    import rtplan.delivery
    import rtplan.sequencing

    assert rtplan.delivery.MachineError is rtplan.errors.MachineError
    assert rtplan.delivery.SegmentError is rtplan.errors.SegmentError
    assert rtplan.sequencing.SequencingError is rtplan.errors.SequencingError
    assert rtplan.MachineError is rtplan.errors.MachineError
    assert issubclass(rtplan.errors.SequencingError, rtplan.errors.InputError)
