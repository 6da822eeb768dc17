"""Plan warnings about the CT against the clinic's CT-to-density calibration.

The dose engine clamps CT numbers outside the table to its end rows
(:func:`dose_engine.hu_to_density`): a table that stops below the CT's dense bone or
implant, or a CT with numbers below the table's air row, is computed with the end density.
:func:`ct_calibration_warnings` counts such voxels inside the body and flags metal (CT
numbers above :data:`METAL_HU`, whatever the table says: its artefacts make the dose near
it unreliable), naming the structures that hold them.  It also flags a patient cut by the
CT's field of view: tissue inside the body on the image's edge (a reconstruction field of
view smaller than the patient, common on real CTs), where beams pass through tissue the CT
does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

from ..structures._body import BODY_THRESHOLD_HU
from ._checks import SafetyWarning

__all__ = ["LOW_TOLERANCE_HU", "METAL_HU", "ct_calibration_warnings"]

#: CT numbers above this are metal (cortical bone reaches about 2000 HU at 120 kVp).
METAL_HU = 3000.0
#: Below the table's first row by less than this is CT noise about air (-1024 HU in a
#: table that starts at -1000 HU) and is not reported.
LOW_TOLERANCE_HU = 50.0
#: Tissue: CT numbers above this on the image's edge inside the body mean the field of
#: view cuts the patient (the body outline's threshold).
TISSUE_HU = BODY_THRESHOLD_HU
#: Image edges in LPS: column 0 is the patient's right, row 0 anterior.
_EDGES = (("right", 2, 0), ("left", 2, -1), ("anterior", 1, 0), ("posterior", 1, -1))
#: Structures named in a message, most affected first.
MAX_NAMED = 5


def _in_body(mask: np.ndarray, ct_grid, dose_grid, body) -> tuple[np.ndarray, np.ndarray]:
    """The CT voxels of ``mask`` inside ``body`` (dose-grid occupancy, nearest dose voxel):
    their CT indices ``(n, 3)`` and the flat dose-grid index of each."""
    zyx = np.argwhere(mask)
    idx = np.rint(dose_grid.point_to_index(ct_grid.index_to_point(zyx))).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(dose_grid.shape)), axis=1)
    zyx, idx = zyx[inside], idx[inside]
    flat = np.ravel_multi_index(tuple(idx.T), tuple(dose_grid.shape))
    keep = np.asarray(body).ravel()[flat] > 0
    return zyx[keep], flat[keep]


def _file_name(path) -> str:
    """The table's file name only: a warning goes into plan.json and the report, which
    carry no folder of the machine the plan ran on."""
    return PurePath(str(path)).name or str(path)


def _where(flat: np.ndarray, structures: Mapping[str, np.ndarray]) -> str:
    counts = {
        name: int(np.count_nonzero(np.asarray(occ).ravel()[flat] > 0))
        for name, occ in structures.items()
    }
    named = sorted(((n, c) for n, c in counts.items() if c), key=lambda nc: (-nc[1], nc[0]))
    if not named:
        return "in no planning structure"
    more = len(named) - MAX_NAMED
    text = ", ".join(f"{n} {c}" for n, c in named[:MAX_NAMED])
    return f"in {text}" + (f" and {more} more structures" if more > 0 else "")


def ct_calibration_warnings(
    hu, ct_grid, table, dose_grid, body, structures: Mapping[str, np.ndarray]
) -> list[SafetyWarning]:
    """Warnings for CT voxels inside the body outside the table's range, and for metal.

    Parameters
    ----------
    hu : (nz, ny, nx) ndarray, HU
        The CT, on ``ct_grid``.
    ct_grid, dose_grid : dose_engine.Grid
    table : dose_engine.HUTable
        The calibration the dose is computed with.
    body : ndarray on ``dose_grid``
        Body occupancy (> 0 inside); voxels outside it are not counted.
    structures : mapping name → ndarray on ``dose_grid``
        Occupancies of the planning structures, to say where the voxels are.

    Returns
    -------
    list of SafetyWarning
        ``"hu_clamped"`` (CT voxels below the table's first row by more than
        :data:`LOW_TOLERANCE_HU` or above its last row: their density was clamped) and
        ``"metal"`` (CT voxels above :data:`METAL_HU`); counts are CT voxels inside the body,
        the structures' counts are those inside each structure.  ``"ct_truncated"``: CT
        voxels above :data:`TISSUE_HU` inside the body on the first or last row or column
        of their slice (the field of view cuts the patient), with the edges and slices.
    """
    hu = np.asarray(hu)
    lo, hi = float(table.hu[0]), float(table.hu[-1])
    out = []
    zyx, flat = _in_body((hu < lo - LOW_TOLERANCE_HU) | (hu > hi), ct_grid, dose_grid, body)
    if flat.size:
        found = hu[tuple(zyx.T)]
        out.append(
            SafetyWarning(
                "hu_clamped",
                f"CT calibration: {flat.size} CT voxels inside the body have CT numbers "
                f"outside the table {_file_name(table.path)} ({lo:g} to {hi:g} HU; found "
                f"{found.min():g} "
                f"to {found.max():g} HU), {_where(flat, structures)}; their density was "
                "clamped to the table's end row. Extend the table (--hu-table) to cover them.",
            )
        )
    zyx, flat = _in_body(hu > METAL_HU, ct_grid, dose_grid, body)
    if flat.size:
        out.append(
            SafetyWarning(
                "metal",
                f"CT calibration: {flat.size} CT voxels inside the body are above "
                f"{METAL_HU:g} HU (metal, highest {float(hu[tuple(zyx.T)].max()):g} HU), "
                f"{_where(flat, structures)}; the dose near them carries the CT's metal "
                "artefacts and the table's density for that CT number. Check the plan there "
                "(override the artefacts' density or avoid beams through the metal).",
            )
        )
    truncated = _truncation(hu, ct_grid, dose_grid, body)
    if truncated is not None:
        out.append(truncated)
    return out


def _truncation(hu: np.ndarray, ct_grid, dose_grid, body) -> SafetyWarning | None:
    """The ``ct_truncated`` warning, or None when no tissue of the body lies on an edge."""
    edge = np.zeros(hu.shape, dtype=bool)
    for _, axis, end in _EDGES:
        index = [slice(None)] * 3
        index[axis] = end  # type: ignore[call-overload]
        edge[tuple(index)] = True
    zyx, _ = _in_body(edge & (hu > TISSUE_HU), ct_grid, dose_grid, body)
    if not len(zyx):
        return None
    n = hu.shape
    sides = [
        side
        for side, axis, end in _EDGES
        if np.any(zyx[:, axis] == (end if end >= 0 else n[axis] - 1))
    ]
    slices = np.unique(zyx[:, 0])
    z = ct_grid.zyx_axes_mm()[0][slices]
    return SafetyWarning(
        "ct_truncated",
        f"CT FIELD OF VIEW: the body reaches the {', '.join(sides)} edge of the CT image on "
        f"{len(slices)} of {n[0]} slices (z {z.min():g} to {z.max():g} mm; {len(zyx)} CT "
        f"voxels above {TISSUE_HU:g} HU on the edge): the reconstruction field of view cuts "
        "the patient, so beams entering there pass through tissue the CT does not hold and "
        "the dose behind it is computed too high per MU. Reconstruct the CT with a larger "
        "field of view before clinical use.",
    )
