"""Real DICOM-RT and CT data for the benches, fetched from PyPI sdists (issue 12).

Two public source distributions carry real data (the machine reaches package registries
only):

* ``pydosert==1.5.0`` (MIT): ``examples/data/mr_alderson.zip``, an Alderson
  anthropomorphic pelvis *phantom* (not a patient): 160 CT slices, a RayStation RT-STRUCT,
  a RayStation 10 MV VMAT RT-PLAN and its RT-DOSEs.
* ``pyradiomics==3.1.0`` (BSD-3): ``data/lung2_image.nrrd`` + ``lung2_label.nrrd``, a
  real chest CT (512 × 512 × 61, 0.627 × 0.627 × 5 mm) with one tumour label and no
  organ contours.

:func:`fetch` runs ``pip download`` (the ordinary client) into a cache folder
(``$RTPLAN_REAL_DATA``, else the pytest cache), checks the sdist's sha256 and unpacks
it; the benches skip with a clear message when the registry cannot be reached.  Nothing
is committed and ``tests/`` never calls this.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sdist:
    """One PyPI source distribution holding data: name, version, file and its sha256."""

    name: str
    version: str
    filename: str
    sha256: str
    #: Download from this address instead of by ``name==version`` (the sdist's own metadata
    #: names another version, so pip's resolver discards it).
    url: str = ""


PYDOSERT = Sdist(
    "pydosert",
    "1.5.0",
    "pydosert-1.5.0.tar.gz",
    "bd7b1b150c894ffd0175926a9ec1efa35161ea257362f1fbda05f3c163038409",
)
PYRADIOMICS = Sdist(
    "pyradiomics",
    "3.1.0",
    "pyradiomics-3.1.0.tar.gz",
    "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
    # its PKG-INFO says 3.0.1a1: ``pyradiomics==3.1.0`` is discarded as inconsistent
    "https://files.pythonhosted.org/packages/03/c1/"
    "20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz",
)


class DataUnavailable(RuntimeError):
    """The registry could not be reached or the download failed (the bench skips)."""


def cache_dir(default: Path) -> Path:
    """``$RTPLAN_REAL_DATA`` if set, else ``default`` (created)."""
    folder = Path(os.environ.get("RTPLAN_REAL_DATA") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_folder(request, tmp_path_factory) -> Path:
    """The download folder of a bench: ``$RTPLAN_REAL_DATA``, else pytest's cache, else
    (``-p no:cacheprovider``) a temporary folder of the session."""
    cache = getattr(request.config, "cache", None)
    if os.environ.get("RTPLAN_REAL_DATA") or cache is None:
        return cache_dir(tmp_path_factory.mktemp("rtplan-real-data"))
    return cache_dir(cache.mkdir("rtplan-real-data"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(sdist: Sdist, folder: Path) -> Path:
    archive = folder / sdist.filename
    if not archive.exists():
        # pip prepares an sdist's metadata before saving it: with build isolation, so that
        # its build requirements (versioneer, ...) need not be installed here
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", sdist.name]
        if sdist.url:
            cmd.append(f"{sdist.url}#sha256={sdist.sha256}")
        else:
            cmd.append(f"{sdist.name}=={sdist.version}")
        cmd += ["-d", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if not archive.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise DataUnavailable(
                f"pip download {sdist.name}=={sdist.version} failed (registry unreachable?): "
                + " | ".join(tail)
            )
    digest = _sha256(archive)
    if digest != sdist.sha256:
        raise ValueError(f"{archive}: sha256 {digest}, expected {sdist.sha256}; delete it.")
    return archive


def fetch(sdist: Sdist, folder: Path) -> Path:
    """Download (once), verify and unpack ``sdist`` under ``folder``; the unpacked root."""
    root = folder / f"{sdist.name}-{sdist.version}"
    if (root / ".complete").exists():
        return root
    archive = _download(sdist, folder)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: no path escapes
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)
    (root / ".complete").touch()
    return root


def alderson(folder: Path) -> Path:
    """The unpacked ``mr_alderson`` DICOM-RT set (CT/, RS/, RP/, RD/ inside)."""
    target = folder / "mr_alderson"
    if not (target / ".complete").exists():
        with zipfile.ZipFile(fetch(PYDOSERT, folder) / "examples/data/mr_alderson.zip") as z:
            z.extractall(target)
        (target / ".complete").touch()
    return target


def lung2(folder: Path) -> tuple[Path, Path]:
    """The ``lung2`` chest CT and its tumour label (NRRD files)."""
    data = fetch(PYRADIOMICS, folder) / "data"
    return data / "lung2_image.nrrd", data / "lung2_label.nrrd"
