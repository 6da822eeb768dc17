"""HDF5 storage and a content-addressed cache of influence matrices (h5py).

File layout (one group per object, numbers in SI-free planning units: mm, Gy/MU):

``/matrix``        ``data`` (float32), ``indices`` and ``indptr`` (int32/int64) of the CSR
                   matrix; attribute ``shape``.
``/dose_grid``     attributes ``shape`` (nz, ny, nx), ``origin_mm`` and ``spacing_mm`` (x, y, z).
``/beams``         ``gantry_angle_deg``, ``collimator_angle_deg``, ``couch_angle_deg``,
                   ``sad_mm``, ``isocenter_mm`` (n, 3), ``patient_position`` (strings).
``/beamlets``      the :class:`Beamlets` columns and ``map_origin_mm``, ``map_shapes``.
root attributes    ``model_provenance`` and ``settings`` (JSON), ``cache_key``, ``format``,
                   ``arrays_sha256`` (sha256 over the matrix and beamlet arrays as written).

A file is verified before it is used (:func:`load_influence_matrix`): its checksum, finite
non-negative entries, and shapes and indices consistent with the dose grid and the
beamlets.  The cache treats any file that fails as a miss: it warns and recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._arguments import ARRAY, PATH, check_arguments, sequence_of
from ._backend import get_backend, to_numpy
from ._beam import Beam
from ._beamlets import Beamlets
from ._grid import Grid
from ._influence import (
    CODE_VERSION,
    DEFAULT_LATERAL_CUTOFF_MM,
    DEFAULT_RELATIVE_THRESHOLD,
    InfluenceMatrix,
    compute_influence_matrix,
)
from ._model import BeamModel, load_beam_model
from .errors import DoseEngineError, DoseEngineWarning

__all__ = [
    "cached_influence_matrix",
    "influence_cache_key",
    "load_influence_matrix",
    "save_influence_matrix",
]

logger = logging.getLogger("rtplan.dose_engine")

FORMAT = "rtplan-influence-1"
_BEAMLET_FIELDS = ("beam_index", "x_mm", "y_mm", "width_mm", "height_mm", "row", "col")


def _arrays_sha256(matrix_arrays: Sequence[np.ndarray], beamlets: Beamlets) -> str:
    """sha256 over the CSR arrays (data, indices, indptr) and the beamlet columns."""
    h = hashlib.sha256()
    for a in (*matrix_arrays, *(getattr(beamlets, n) for n in _BEAMLET_FIELDS)):
        a = np.ascontiguousarray(to_numpy(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes() if a.size == 0 else memoryview(a).cast("B"))  # type: ignore[arg-type]
    return h.hexdigest()


def _verify(path: Path, attrs, matrix_arrays, shape, grid: Grid, beams, beamlets) -> None:
    """Raise :class:`DoseEngineError` naming what is inconsistent in a stored matrix."""
    data, indices, indptr = matrix_arrays
    stored = str(attrs.get("arrays_sha256", ""))
    if not stored:
        raise DoseEngineError(f"{path}: no arrays_sha256 checksum; the file cannot be verified.")
    if _arrays_sha256(matrix_arrays, beamlets) != stored:
        raise DoseEngineError(f"{path}: the arrays do not match their sha256 checksum.")
    n_rows, n_cols = shape
    problems = []
    if n_rows != grid.voxel_count:
        problems.append(f"{n_rows} rows for a dose grid of {grid.voxel_count} voxels")
    if n_cols != len(beamlets.x_mm):
        problems.append(f"{n_cols} columns for {len(beamlets.x_mm)} beamlets")
    if indptr.shape != (n_rows + 1,) or indptr[0] != 0 or indptr[-1] != data.size:
        problems.append("indptr does not span the data")
    elif np.any(np.diff(indptr) < 0):
        problems.append("indptr decreases")
    if indices.shape != data.shape:
        problems.append("indices and data differ in length")
    elif indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        problems.append("column indices out of range")
    if not np.all(np.isfinite(data)):
        problems.append(f"{int((~np.isfinite(data)).sum())} non-finite entries")
    elif data.size and data.min() < 0:
        problems.append("negative entries")
    if beamlets.beam_index.size and (
        beamlets.beam_index.min() < 0 or beamlets.beam_index.max() >= len(beams)
    ):
        problems.append("beamlets refer to beams the file does not hold")
    if problems:
        raise DoseEngineError(f"{path}: inconsistent influence matrix: {'; '.join(problems)}.")


def influence_cache_key(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beams: Sequence[Beam],
    beamlets: Beamlets,
    model: BeamModel,
    *,
    voxel_mask=None,
    lateral_cutoff_mm: float,
    relative_threshold: float,
    wide_mask=None,
    wide_lateral_cutoff_mm: float | None = None,
    wide_relative_threshold: float | None = None,
) -> str:
    """sha256 over everything the matrix depends on.

    The density (CT) bytes, both grids, every beam, the beamlet table, the model parameters,
    the code version, the truncation settings and the voxel masks (with the wide rows'
    settings).  Structures enter through
    the voxel mask and the beamlets (which cover the target).
    """
    h = hashlib.sha256()
    dens = np.ascontiguousarray(to_numpy(density), dtype=np.float32)
    h.update(b"density")
    h.update(str(dens.shape).encode())
    h.update(dens.tobytes())
    for g in (ct_grid, dose_grid):
        h.update(repr((g.shape, g.origin_mm, g.spacing_mm)).encode())
    for b in beams:
        h.update(
            repr(
                (
                    b.gantry_angle_deg,
                    b.collimator_angle_deg,
                    b.couch_angle_deg,
                    b.isocenter_mm,
                    b.sad_mm,
                    b.patient_position,
                )
            ).encode()
        )
    for name in _BEAMLET_FIELDS:
        h.update(np.ascontiguousarray(getattr(beamlets, name)).tobytes())
    h.update(np.ascontiguousarray(beamlets.map_origin_mm).tobytes())
    h.update(repr(beamlets.map_shapes).encode())
    h.update(model.fingerprint().encode())
    h.update(repr((CODE_VERSION, float(lateral_cutoff_mm), float(relative_threshold))).encode())
    for name, mask in (("mask", voxel_mask), ("wide", wide_mask)):
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            h.update((name + str(m.shape)).encode() + np.packbits(m.ravel()).tobytes())
    if wide_mask is not None:
        wide = (wide_lateral_cutoff_mm or 0.0, wide_relative_threshold or 0.0)
        h.update(repr(tuple(float(v) for v in wide)).encode())
    return h.hexdigest()


@check_arguments(im="dose_engine._influence:InfluenceMatrix", path=PATH)
def save_influence_matrix(
    im: InfluenceMatrix, path: str | Path, *, cache_key: str = "", overwrite: bool = False
) -> Path:
    """Write ``im`` to an HDF5 file atomically (temporary file in the same folder, then rename).

    Raises
    ------
    DoseEngineError
        If ``path`` exists and ``overwrite`` is False.
    """
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise DoseEngineError(f"{path} already exists; pass overwrite=True (CLI: --force).")
    path.parent.mkdir(parents=True, exist_ok=True)
    m = im.matrix
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["cache_key"] = cache_key
            f.attrs["model_provenance"] = json.dumps(im.model_provenance, default=str)
            f.attrs["settings"] = json.dumps(im.settings, default=str)
            f.attrs["arrays_sha256"] = _arrays_sha256((m.data, m.indices, m.indptr), im.beamlets)
            g = f.create_group("matrix")
            g.attrs["shape"] = np.asarray(m.shape, np.int64)
            g.create_dataset("data", data=to_numpy(m.data))
            g.create_dataset("indices", data=to_numpy(m.indices))
            g.create_dataset("indptr", data=to_numpy(m.indptr))
            dg = f.create_group("dose_grid")
            dg.attrs["shape"] = np.asarray(im.dose_grid.shape)
            dg.attrs["origin_mm"] = np.asarray(im.dose_grid.origin_mm)
            dg.attrs["spacing_mm"] = np.asarray(im.dose_grid.spacing_mm)
            bg = f.create_group("beams")
            for name in ("gantry_angle_deg", "collimator_angle_deg", "couch_angle_deg", "sad_mm"):
                bg.create_dataset(name, data=np.asarray([getattr(b, name) for b in im.beams]))
            bg.create_dataset("isocenter_mm", data=np.asarray([b.isocenter_mm for b in im.beams]))
            bg.create_dataset(
                "patient_position",
                data=np.asarray([b.patient_position for b in im.beams], dtype="S3"),
            )
            lg = f.create_group("beamlets")
            for name in _BEAMLET_FIELDS:
                lg.create_dataset(name, data=getattr(im.beamlets, name))
            lg.create_dataset("map_origin_mm", data=im.beamlets.map_origin_mm)
            lg.create_dataset("map_shapes", data=np.asarray(im.beamlets.map_shapes, np.int64))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@check_arguments(path=PATH)
def load_influence_matrix(path: str | Path, *, backend: str = "numpy") -> InfluenceMatrix:
    """Read a file written by :func:`save_influence_matrix`.

    Raises
    ------
    DoseEngineError
        If the file is missing or not an rtplan influence-matrix file.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DoseEngineError(f"{path}: cannot open as HDF5 ({exc}).") from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            raise DoseEngineError(
                f"{path}: not an rtplan influence-matrix file (format attribute "
                f"{f.attrs.get('format')!r}, expected {FORMAT!r})."
            )
        try:
            return _read_verified(path, f, backend)
        except DoseEngineError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, OSError) as exc:
            raise DoseEngineError(
                f"{path}: incomplete or corrupt influence-matrix file ({type(exc).__name__}: "
                f"{exc})."
            ) from exc


def _read_verified(path: Path, f, backend: str) -> InfluenceMatrix:
    """The matrix of an open HDF5 file, verified by :func:`_verify` before it is built."""
    import scipy.sparse

    g = f["matrix"]
    shape = tuple(int(v) for v in g.attrs["shape"])
    arrays = (g["data"][()], g["indices"][()], g["indptr"][()])
    dg = f["dose_grid"].attrs
    nz, ny, nx = (int(v) for v in dg["shape"])
    grid = Grid((nz, ny, nx), tuple(dg["origin_mm"]), tuple(dg["spacing_mm"]))
    bg = f["beams"]
    beams = tuple(
        Beam(
            float(ga),
            collimator_angle_deg=float(co),
            couch_angle_deg=float(cu),
            isocenter_mm=(float(iso[0]), float(iso[1]), float(iso[2])),
            sad_mm=float(sad),
            patient_position=pos.decode(),
        )
        for ga, co, cu, iso, sad, pos in zip(
            bg["gantry_angle_deg"][()],
            bg["collimator_angle_deg"][()],
            bg["couch_angle_deg"][()],
            bg["isocenter_mm"][()],
            bg["sad_mm"][()],
            bg["patient_position"][()],
            strict=True,
        )
    )
    lg = f["beamlets"]
    beamlets = Beamlets(
        **{name: lg[name][()] for name in _BEAMLET_FIELDS},
        map_origin_mm=lg["map_origin_mm"][()],
        map_shapes=tuple((int(r), int(c)) for r, c in lg["map_shapes"][()]),
    )
    _verify(path, f.attrs, arrays, shape, grid, beams, beamlets)
    matrix = scipy.sparse.csr_matrix(arrays, shape=shape)
    prov = json.loads(f.attrs["model_provenance"])
    settings = json.loads(f.attrs["settings"])
    settings["cache_key"] = str(f.attrs.get("cache_key", ""))
    if backend != "numpy":
        matrix = get_backend(backend).csr_matrix(matrix)
    return InfluenceMatrix(matrix, grid, beams, beamlets, prov, settings)


@check_arguments(
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
    beams=sequence_of("dose_engine._beam:Beam"),
    beamlets="dose_engine._beamlets:Beamlets",
    cache_dir=PATH,
)
def cached_influence_matrix(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beams: Sequence[Beam],
    beamlets: Beamlets,
    model: BeamModel | None = None,
    *,
    cache_dir: str | Path,
    voxel_mask=None,
    backend: str = "numpy",
    lateral_cutoff_mm: float = DEFAULT_LATERAL_CUTOFF_MM,
    relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD,
    wide_mask=None,
    wide_lateral_cutoff_mm: float | None = None,
    wide_relative_threshold: float | None = None,
    progress: bool = True,
) -> InfluenceMatrix:
    """:func:`compute_influence_matrix`, or its stored result when the inputs are unchanged.

    The file ``cache_dir/influence-<sha256>.h5`` is keyed by :func:`influence_cache_key`;
    the returned matrix's ``settings["cache_hit"]`` tells whether it was loaded.
    """
    model = load_beam_model() if model is None else model
    key = influence_cache_key(
        density,
        ct_grid,
        dose_grid,
        beams,
        beamlets,
        model,
        voxel_mask=voxel_mask,
        lateral_cutoff_mm=lateral_cutoff_mm,
        relative_threshold=relative_threshold,
        wide_mask=wide_mask,
        wide_lateral_cutoff_mm=wide_lateral_cutoff_mm,
        wide_relative_threshold=wide_relative_threshold,
    )
    path = Path(cache_dir) / f"influence-{key[:40]}.h5"
    if path.is_file():
        try:
            im = load_influence_matrix(path, backend=backend)
        except (DoseEngineError, OSError, KeyError, ValueError) as exc:
            warnings.warn(
                f"Influence-matrix cache file not used, recomputing: {exc}",
                DoseEngineWarning,
                stacklevel=2,
            )
        else:
            if im.settings.get("cache_key") == key:
                logger.info("influence matrix loaded from cache %s", path)
                im.settings["cache_hit"] = True
                return im
            warnings.warn(
                f"Influence-matrix cache file {path} holds another key; recomputing.",
                DoseEngineWarning,
                stacklevel=2,
            )
    im = compute_influence_matrix(
        density,
        ct_grid,
        dose_grid,
        beams,
        beamlets,
        model,
        backend=backend,
        voxel_mask=voxel_mask,
        lateral_cutoff_mm=lateral_cutoff_mm,
        relative_threshold=relative_threshold,
        wide_mask=wide_mask,
        wide_lateral_cutoff_mm=wide_lateral_cutoff_mm,
        wide_relative_threshold=wide_relative_threshold,
        progress=progress,
    )
    save_influence_matrix(im, path, cache_key=key, overwrite=True)
    im.settings["cache_hit"] = False
    im.settings["cache_key"] = key
    return im
