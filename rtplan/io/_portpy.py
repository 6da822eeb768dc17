"""Reader for patient folders in PortPy's on-disk format (JSON metadata + HDF5).

Layout (PortPy 1.x, https://github.com/PortPy-Project/PortPy): in the patient folder,
``CT_MetaData.json`` + ``CT_Data.h5`` (``ct_hu_3d``, ``(nz, ny, nx)``),
``StructureSet_MetaData.json`` (a list of ``{name, structure_mask_3d_File, ...}``) +
``StructureSet_Data.h5``, ``OptimizationVoxels_MetaData.json`` +
``OptimizationVoxels_Data.h5`` (``ct_to_dose_voxel_map``, -1 outside the optimisation
voxels), ``PlannerBeams.json`` (``{"IDs": [...]}``) and ``Beams/Beam_{id}_MetaData.json`` +
``Beams/Beam_{id}_Data.h5`` (beamlet columns stored as ``(N, 1)`` arrays and the sparse
influence matrix as ``(row, col, value)`` triplets, shape ``(nnz, 3)``). References to HDF5
data are strings ``"FILE.h5/dataset/path"`` under keys ending in ``_File``.

This module only reads; it never imports PortPy (whose licence forbids copying its code).
Error messages name the file (relative to the patient folder) and the key, never the
patient folder's name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from dose_engine import Grid

from .._internal.arguments import PATH, TEXT, check_arguments
from ..errors import InputError
from ._portpy_beamlets import PORTPY_BEAMLET_MARGIN_MM, portpy_beamlet_selection

__all__ = ["PortPyBeam", "PortPyPatient", "read_portpy_patient"]

logger = logging.getLogger("rtplan.io")

_BEAMLET_KEYS = ("id", "width_mm", "height_mm", "position_x_mm", "position_y_mm", "MLC_leaf_idx")


@dataclass(frozen=True)
class PortPyBeam:
    """One beam of a PortPy patient.

    Attributes
    ----------
    beam_id : int
        PortPy beam ID.
    gantry_angle_deg, collimator_angle_deg, couch_angle_deg : float
        IEC 61217 angles, degrees (PortPy ``gantry_angle``, ...).
    isocenter_mm : (3,) tuple of float
        Isocentre ``(x, y, z)``, mm, in the CT's patient coordinates.
    beamlets : dict of str to (n,) ndarray
        Beamlet table of the beamlets read: ``id``, ``width_mm``, ``height_mm``,
        ``position_x_mm``, ``position_y_mm`` (centre in the isocentre plane, mm) and
        ``MLC_leaf_idx`` where present.
    beamlet_indices : (n,) ndarray of int64
        Position of each beamlet read in the file's beamlet table (and column of the file's
        influence matrix of this beam), ascending.
    selection : str
        ``"bev"`` (PortPy's selection around the target), ``"all"`` (asked for), or
        ``"all (no beam's-eye-view outline of <target>)"``.
    columns : slice
        Columns of this beam's beamlets in :attr:`PortPyPatient.influence_matrix`.
    metadata : dict
        The beam's JSON metadata as read.
    """

    beam_id: int
    gantry_angle_deg: float
    collimator_angle_deg: float
    couch_angle_deg: float
    isocenter_mm: tuple[float, float, float]
    beamlets: dict[str, np.ndarray]
    columns: slice
    metadata: dict = field(repr=False)
    beamlet_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    selection: str = "all"

    @property
    def n_beamlets(self) -> int:
        """Number of beamlets."""
        return self.columns.stop - self.columns.start


@dataclass(frozen=True, repr=False)
class PortPyPatient:
    """A PortPy patient folder, read.

    Attributes
    ----------
    ct_hu : (nz, ny, nx) ndarray
        CT in HU, indexed ``[z, y, x]``.
    ct_grid : dose_engine.Grid
        Grid of the CT (origin = centre of voxel ``[0, 0, 0]``, spacing ``(dx, dy, dz)`` mm).
    structure_masks : dict of str to (nz, ny, nx) ndarray of bool
        Structure masks on the CT grid, file order.
    ct_to_dose_voxel : (nz, ny, nx) ndarray of int64
        Optimisation (dose) voxel index of every CT voxel, -1 outside.
    dose_voxel_spacing_mm : (3,) tuple of float
        Size of a dose voxel ``(dx, dy, dz)``, mm.
    beams : tuple of PortPyBeam
        Beams, in ``beam_ids`` order.
    influence_matrix : (n_dose_voxels, n_beamlets) scipy.sparse CSR of float32
        Sparse influence matrix in PortPy's unit (dose per unit beamlet intensity); rows are
        optimisation voxels, columns the beamlets of all beams in beam order.
    structure_voxels : dict of str to (n_s,) ndarray of int64
        Dose-voxel (row) indices touched by each structure.
    structure_fractions : dict of str to (n_s,) ndarray of float64
        Fraction of each of those dose voxels' CT voxels that lie in the structure (use as
        ``voxel_weights`` in :class:`optimizers.Problem`).
    """

    ct_hu: np.ndarray
    ct_grid: Grid
    structure_masks: dict[str, np.ndarray]
    ct_to_dose_voxel: np.ndarray
    dose_voxel_spacing_mm: tuple[float, float, float]
    beams: tuple[PortPyBeam, ...]
    influence_matrix: sp.csr_matrix
    structure_voxels: dict[str, np.ndarray]
    structure_fractions: dict[str, np.ndarray]

    @property
    def n_dose_voxels(self) -> int:
        """Number of optimisation (dose) voxels."""
        return int(self.influence_matrix.shape[0])

    def __repr__(self) -> str:
        a = self.influence_matrix
        return (
            f"PortPyPatient(ct={self.ct_hu.shape}, structures={list(self.structure_masks)}, "
            f"beams={[b.beam_id for b in self.beams]}, influence_matrix={a.shape} "
            f"nnz={a.nnz})"
        )


class _Folder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._h5: dict[str, Any] = {}

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def json(self, name: str) -> Any:
        path = self.root / name
        if not path.is_file():
            raise InputError(
                f"PortPy folder: `{name}` is missing; a PortPy patient folder holds "
                "CT_MetaData.json, StructureSet_MetaData.json, OptimizationVoxels_MetaData.json, "
                "PlannerBeams.json and Beams/."
            )
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"PortPy folder: `{name}` is not valid JSON ({exc}).") from None

    @staticmethod
    def key(meta: Any, key: str, where: str) -> Any:
        if not isinstance(meta, dict) or key not in meta:
            have = ", ".join(sorted(meta)) if isinstance(meta, dict) else type(meta).__name__
            raise InputError(f"PortPy folder: `{where}` lacks the key `{key}` (found: {have}).")
        return meta[key]

    def h5_location(self, ref: str, where: str, base: Path, kind: str) -> tuple[Path, str]:
        """The HDF5 file and the path inside it named by ``"FILE.h5/inner"`` (relative to
        ``base``); ``kind`` ("group", "dataset") words the error of a malformed reference."""
        if not isinstance(ref, str) or ".h5/" not in ref:
            raise InputError(
                f"PortPy folder: `{where}` refers to {ref!r}; expected 'FILE.h5/{kind}'."
            )
        fname, inner = ref.split(".h5/", 1)
        path = base / (fname + ".h5")
        if not path.is_file():
            raise InputError(f"PortPy folder: `{self.rel(path)}` (named in `{where}`) is missing.")
        return path, inner

    def outlines(self, ref: str, structure: str, where: str, base: Path) -> list[np.ndarray]:
        """The ``(m, 2)`` outlines of ``structure`` in the group ``"FILE.h5/group"``
        (PortPy's ``BEV_structure_contour_points``: one dataset per segment), or ``[]``
        when the group has no entry for ``structure``."""
        import h5py

        path, inner = self.h5_location(ref, where, base, "group")
        with h5py.File(path, "r") as f:
            group = f.get(f"{inner}/{structure}")
            if group is None:
                return []
            return [np.asarray(group[k][()], dtype=np.float64).reshape(-1, 2) for k in group]

    def dataset(self, ref: str, where: str, base: Path | None = None) -> np.ndarray:
        """Read ``"FILE.h5/path/in/file"`` relative to ``base`` (default: the folder)."""
        import h5py

        path, inner = self.h5_location(ref, where, self.root if base is None else base, "dataset")
        try:
            with h5py.File(path, "r") as f:
                if inner not in f:
                    raise InputError(
                        f"PortPy folder: `{self.rel(path)}` has no dataset `{inner}` (named in "
                        f"`{where}`)."
                    )
                return np.asarray(f[inner][()])
        except OSError as exc:
            raise InputError(
                f"PortPy folder: `{self.rel(path)}` is not readable HDF5 ({exc})."
            ) from None


@check_arguments(data_dir=PATH, patient_id=TEXT, target=TEXT)
def read_portpy_patient(
    data_dir: str | Path,
    patient_id: str,
    *,
    beam_ids: list[int] | None = None,
    all_beamlets: bool = False,
    target: str = "PTV",
    beamlet_margin_mm: float = PORTPY_BEAMLET_MARGIN_MM,
) -> PortPyPatient:
    """Read a patient folder written in PortPy's format, as PortPy plans it.

    The file holds every beamlet of each field; PortPy's pipeline optimises only those in
    the beam's-eye view of the target plus a margin, and so does this reader by default
    (the rule: :mod:`rtplan.io._portpy_beamlets`; a beam whose file has no beam's-eye-view
    outline of ``target`` keeps all its beamlets, logged and recorded in
    :attr:`PortPyBeam.selection`). The rows are PortPy's optimisation voxels
    (``ct_to_dose_voxel_map``).

    Parameters
    ----------
    data_dir : str or Path
        Folder holding the patient folders.
    patient_id : str
        Name of the patient's folder in ``data_dir``.
    beam_ids : list of int, optional
        Beams to load, in this order (default: ``PlannerBeams.json`` ``IDs``).
    all_beamlets : bool, optional
        Read every beamlet of the file instead of PortPy's selection (default False).

        .. versionadded:: 0.1.0
    target : str, optional
        Structure whose beam's-eye-view outline selects the beamlets (default ``"PTV"``,
        as PortPy).
    beamlet_margin_mm : float, mm, optional
        Margin around that outline (default 3 mm, PortPy's ``opt_beamlets_PTV_margin_mm``).

    Returns
    -------
    PortPyPatient

    Raises
    ------
    InputError
        A file or key is missing, a reference does not resolve, array shapes disagree, or
        the influence matrix refers to voxels or beamlets that do not exist; the message
        names the file (relative to the patient folder) and the key.

    Examples
    --------
    A patient of PortPy's data set (``data/Lung_Patient_1``, downloaded with PortPy; not
    shipped with rtplan, so this example is not run; ``tests/rtplan/_portpy_synth.py``
    writes a synthetic folder of the same format, read in ``tests/rtplan/io``) becomes an
    optimisation problem on its own influence matrix:

    .. code-block:: python

        import optimizers
        from rtplan.io import read_portpy_patient

        p = read_portpy_patient("data", "Lung_Patient_1")
        terms = [optimizers.Underdose("PTV", 60.0), optimizers.MaxDose("CORD", 50.0, hard=True)]
        prob = optimizers.Problem(
            p.influence_matrix, p.structure_voxels, terms, voxel_weights=p.structure_fractions
        )
        fluence_mu = optimizers.solve(prob).x
    """
    margin = float(beamlet_margin_mm)
    if not np.isfinite(margin) or margin < 0:
        raise InputError(f"`beamlet_margin_mm` must be a finite margin >= 0 mm, got {margin!r}.")
    root = Path(data_dir) / str(patient_id)
    if not root.is_dir():
        raise InputError(
            f"PortPy data: the patient folder is missing under `{data_dir}`; check `data_dir` "
            "and `patient_id`."
        )
    fo = _Folder(root)

    # CT ------------------------------------------------------------------------------
    ct_meta = fo.json("CT_MetaData.json")
    ct = fo.dataset(
        fo.key(ct_meta, "ct_hu_3d_File", "CT_MetaData.json"), "CT_MetaData.json: ct_hu_3d_File"
    )
    if ct.ndim != 3:
        raise InputError(
            f"PortPy folder: CT `ct_hu_3d` has shape {ct.shape}; expected (nz, ny, nx)."
        )
    origin = np.asarray(fo.key(ct_meta, "origin_xyz_mm", "CT_MetaData.json"), dtype=float)
    res = np.asarray(fo.key(ct_meta, "resolution_xyz_mm", "CT_MetaData.json"), dtype=float)
    direction = ct_meta.get("direction")
    if direction is not None and not np.allclose(
        np.abs(np.asarray(direction, float)), [1, 0, 0, 0, 1, 0, 0, 0, 1]
    ):
        raise InputError(
            f"PortPy folder: `CT_MetaData.json` direction {direction} is not axial; only axial "
            "CTs (direction = identity) are supported."
        )
    grid = Grid(shape=ct.shape, origin_mm=tuple(origin), spacing_mm=tuple(res))

    # structures ------------------------------------------------------------------------
    ss_meta = fo.json("StructureSet_MetaData.json")
    if not isinstance(ss_meta, list):
        raise InputError(
            "PortPy folder: `StructureSet_MetaData.json` must be a list of structures."
        )
    masks: dict[str, np.ndarray] = {}
    for i, entry in enumerate(ss_meta):
        where = f"StructureSet_MetaData.json[{i}]"
        name = str(fo.key(entry, "name", where))
        m = fo.dataset(
            fo.key(entry, "structure_mask_3d_File", where), where + ": structure_mask_3d_File"
        )
        if m.shape != ct.shape:
            raise InputError(
                f"PortPy folder: mask of structure `{name}` has shape {m.shape}, CT has {ct.shape}."
            )
        masks[name] = m.astype(bool)

    # optimisation voxels ---------------------------------------------------------------
    ov_meta = fo.json("OptimizationVoxels_MetaData.json")
    vmap = fo.dataset(
        fo.key(ov_meta, "ct_to_dose_voxel_map_File", "OptimizationVoxels_MetaData.json"),
        "OptimizationVoxels_MetaData.json: ct_to_dose_voxel_map_File",
    ).astype(np.int64)
    if vmap.shape != ct.shape:
        raise InputError(
            f"PortPy folder: `ct_to_dose_voxel_map` has shape {vmap.shape}, CT has {ct.shape}."
        )
    inside = vmap >= 0
    n_dose = int(vmap.max()) + 1 if inside.any() else 0
    dose_res = tuple(float(v) for v in ov_meta.get("dose_voxel_resolution_xyz_mm", res))
    total = np.bincount(vmap[inside], minlength=n_dose).astype(np.float64)
    voxels, fractions = {}, {}
    for name, m in masks.items():
        cnt = np.bincount(vmap[m & inside], minlength=n_dose)
        idx = np.nonzero(cnt)[0]
        voxels[name] = idx.astype(np.int64)
        fractions[name] = cnt[idx] / total[idx]

    # beams ------------------------------------------------------------------------------
    if beam_ids is None:
        beam_ids = fo.key(fo.json("PlannerBeams.json"), "IDs", "PlannerBeams.json")
    beams = []
    blocks = []
    col = 0
    for bid in beam_ids:
        mname = f"Beams/Beam_{bid}_MetaData.json"
        meta = fo.json(mname)
        bl_refs = fo.key(meta, "beamlets", mname)
        table = {}
        for k in _BEAMLET_KEYS:
            ref = bl_refs.get(k + "_File") if isinstance(bl_refs, dict) else None
            if ref is None:
                if k == "MLC_leaf_idx":
                    continue
                fo.key(bl_refs, k + "_File", mname + ": beamlets")
            table[k] = fo.dataset(ref, f"{mname}: beamlets.{k}_File", base=root / "Beams").reshape(
                -1
            )
        nb = table["id"].size
        for k, v in table.items():
            if v.size != nb:
                raise InputError(
                    f"PortPy folder: `{mname}` beamlet column `{k}` has {v.size} entries, "
                    f"`id` has {nb}."
                )
        trip = fo.dataset(
            fo.key(meta, "influenceMatrixSparse_File", mname),
            f"{mname}: influenceMatrixSparse_File",
            base=root / "Beams",
        )
        if trip.ndim != 2 or trip.shape[1] != 3:
            raise InputError(
                f"PortPy folder: influence matrix of beam {bid} has shape {trip.shape}; expected "
                "(nnz, 3) (row, column, value) triplets."
            )
        rows = trip[:, 0].astype(np.int64)
        cols = trip[:, 1].astype(np.int64)
        vals = trip[:, 2].astype(np.float32)
        if rows.size and (rows.min() < 0 or rows.max() >= n_dose):
            raise InputError(
                f"PortPy folder: influence matrix of beam {bid} refers to dose voxel "
                f"{int(rows.max())}, but the voxel map has {n_dose} voxels."
            )
        if cols.size and (cols.min() < 0 or cols.max() >= nb):
            raise InputError(
                f"PortPy folder: influence matrix of beam {bid} refers to beamlet "
                f"{int(cols.max())}, but the beam has {nb} beamlets."
            )
        if not np.all(np.isfinite(vals)) or (vals.size and vals.min() < 0):
            raise InputError(
                f"PortPy folder: influence matrix of beam {bid} holds NaN or negative values."
            )
        blk = sp.csr_matrix((vals, (rows, cols)), shape=(n_dose, nb), dtype=np.float32)
        keep, selection = _selected_beamlets(
            fo, meta, mname, table, root / "Beams", all_beamlets, target, margin
        )
        if keep.size < nb:
            blk = blk[:, keep]
            table = {k: v[keep] for k, v in table.items()}
        blk.eliminate_zeros()
        blocks.append(blk)
        iso = fo.key(meta, "iso_center", mname)
        beams.append(
            PortPyBeam(
                beam_id=int(bid),
                gantry_angle_deg=float(fo.key(meta, "gantry_angle", mname)),
                collimator_angle_deg=float(meta.get("collimator_angle", 0.0)),
                couch_angle_deg=float(meta.get("couch_angle", 0.0)),
                isocenter_mm=tuple(
                    float(fo.key(iso, k, mname + ": iso_center")) for k in ("x_mm", "y_mm", "z_mm")
                ),
                beamlets=table,
                columns=slice(col, col + keep.size),
                metadata=meta,
                beamlet_indices=keep,
                selection=selection,
            )
        )
        col += keep.size
    matrix = (
        sp.hstack(blocks, format="csr", dtype=np.float32)
        if blocks
        else sp.csr_matrix((n_dose, 0), dtype=np.float32)
    )
    matrix.sort_indices()
    if matrix.nnz < np.iinfo(np.int32).max:
        matrix.indices = matrix.indices.astype(np.int32, copy=False)
        matrix.indptr = matrix.indptr.astype(np.int32, copy=False)
    logger.info(
        "read PortPy patient: %d dose voxels, %d beamlets (%s), %d non-zeros",
        n_dose,
        matrix.shape[1],
        "all" if all_beamlets else f"beam's-eye view of {target} + {margin:g} mm",
        matrix.nnz,
    )
    return PortPyPatient(
        ct_hu=ct,
        ct_grid=grid,
        structure_masks=masks,
        ct_to_dose_voxel=vmap,
        dose_voxel_spacing_mm=dose_res,
        beams=tuple(beams),
        influence_matrix=matrix,
        structure_voxels=voxels,
        structure_fractions=fractions,
    )


def _selected_beamlets(fo, meta, mname, table, beams_dir, all_beamlets, target, margin):
    """``(indices, selection)``: the beamlets of one beam PortPy's pipeline optimises
    (ascending positions in the file's table) and how they were chosen."""
    nb = table["id"].size
    everything = np.arange(nb, dtype=np.int64)
    if all_beamlets:
        return everything, "all"
    ref = meta.get("BEV_structure_contour_points_File")
    outlines = [] if ref is None else fo.outlines(ref, target, mname, beams_dir)
    if not outlines:
        logger.warning(
            "%s has no beam's-eye-view outline of %s: all %d beamlets read", mname, target, nb
        )
        return everything, f"all (no beam's-eye-view outline of {target})"
    keep = portpy_beamlet_selection(
        table["position_x_mm"], table["position_y_mm"], outlines, margin
    )
    return np.flatnonzero(keep).astype(np.int64), "bev"
