"""Shared fixtures for rtplan tests: TG-119 phantoms in memory and written as DICOM.

Fixture names say what they hold:

- ``cshape_patient``: ``make_phantom("cshape")`` in memory (2.5 mm voxels), session-wide.
- ``cshape_dicom``: that patient written once per session with
  :func:`rtplan.io.write_patient` (a :class:`WrittenPatient`: ``ct_dir``,
  ``ct_files``, ``rtstruct_path``).  Treat the folder as read-only; copy it to mutate.
- ``small_phantom_dicom``: a small (40 x 40 x 12) multitarget phantom written as DICOM,
  cheap to copy for bad-input tests.
- ``dicompyler``: dicompyler-core's ``dvhcalc``, the independent DVH of cross-checks.
"""

from __future__ import annotations

import importlib
import warnings

import pytest

from rtplan.io import write_patient
from rtplan.phantoms import make_phantom


@pytest.fixture(scope="session")
def cshape_patient():
    return make_phantom("cshape")


@pytest.fixture(scope="session")
def cshape_dicom(tmp_path_factory, cshape_patient):
    return write_patient(cshape_patient, tmp_path_factory.mktemp("cshape") / "cshape")


@pytest.fixture(scope="session")
def small_phantom_patient():
    return make_phantom(
        "multitarget", pixel_spacing_mm=5.0, slice_spacing_mm=5.0, matrix_size=40, n_slices=12
    )


@pytest.fixture(scope="session")
def small_phantom_dicom(tmp_path_factory, small_phantom_patient):
    return write_patient(small_phantom_patient, tmp_path_factory.mktemp("small") / "small")


@pytest.fixture(scope="module")
def dicompyler():
    """dicompyler-core's ``dvhcalc`` (the independent DVH), importable under pydicom 3."""
    import pydicom.dicomio

    mp = pytest.MonkeyPatch()
    if not hasattr(pydicom.dicomio, "read_file"):
        mp.setattr(pydicom.dicomio, "read_file", pydicom.dcmread, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pydicom-2 era imports warn under pydicom 3
        dvhcalc = importlib.import_module("dicompylercore.dvhcalc")
        importlib.import_module("dicompylercore.dicomparser")
    yield dvhcalc
    mp.undo()
