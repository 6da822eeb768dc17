"""Pencil-beam doses of a plan's gantry angles as Dask tasks (``rtplan dose --scheduler``).

An arc read from another planning system is computed as one static beam per gantry
angle of its control points, sub-sampled every 2 degrees (:func:`static_parts`): a
two-arc VMAT plan is about 360 independent pencil-beam doses.  Here each angle is one
task on a Dask cluster (``pip install "rtplan[dask]"``); the CT's density and the voxel
mask are sent to every worker once.  The doses come back in the plan's order and are
summed in the order :func:`aperture_dose` sums them, so the result equals the serial
dose to the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dose_engine import BeamModel, Grid, to_numpy

from ..delivery._deliverable import DeliverableBeam
from ._aperture import named_aperture_dose, static_parts

__all__ = ["distributed_beam_doses"]


def _angle_dose(
    part: DeliverableBeam,
    model: BeamModel,
    density: np.ndarray,
    ct_grid: Grid,
    dose_grid: Grid,
    backend: str,
    voxel_mask: np.ndarray,
) -> np.ndarray:
    """One task: the dose of one static part (one gantry angle), float32 Gy on the host."""
    dose = named_aperture_dose(
        part,
        density,
        ct_grid,
        dose_grid,
        model,
        what=f"beam {part.number} ({part.name!r}) at gantry {part.beam.gantry_angle_deg:g} deg",
        backend=backend,
        voxel_mask=voxel_mask,
    )
    return np.asarray(to_numpy(dose), dtype=np.float32)


def distributed_beam_doses(
    dbeams: Sequence[DeliverableBeam],
    density: np.ndarray,
    ct_grid: Grid,
    dose_grid: Grid,
    models: Sequence[BeamModel],
    *,
    client: Any,
    backend: str = "numpy",
    voxel_mask: np.ndarray,
) -> list[np.ndarray]:
    """Each beam's pencil-beam dose, its gantry angles computed as tasks on ``client``.

    Parameters
    ----------
    dbeams : sequence of DeliverableBeam
        Static beams (one task each) and arcs (one task per gantry angle).
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Relative electron density.
    ct_grid, dose_grid : dose_engine.Grid
    models : sequence of dose_engine.BeamModel
        The beam model of each beam, in the order of ``dbeams``
        (:meth:`rtplan.dose.BeamModels.for_beam`).
    client : distributed.Client, keyword-only
        A client of the cluster that runs the tasks (:func:`rtplan.planning._dask.dask_client`).
    backend : {"numpy", "cupy"}, keyword-only
        The workers' array backend.
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, keyword-only
        The voxels to compute.

    Returns
    -------
    list of (nz, ny, nx) ndarray of float32, Gy
        One per beam, in the order of ``dbeams``: total dose over all fractions, equal to
        :func:`aperture_dose` of the beam.

    Raises
    ------
    rtplan.errors.InputError
        The dose engine refuses an angle (e.g. an isocentre outside the CT); the message
        names the beam and the gantry angle.
    """
    parts = [(index, part) for index, dbeam in enumerate(dbeams) for part in static_parts(dbeam)]
    density_future, mask_future = client.scatter([density, voxel_mask], broadcast=True)
    futures = client.map(
        _angle_dose,
        [part for _, part in parts],
        [models[index] for index, _ in parts],  # mapped with the parts (keywords are not)
        density=density_future,
        ct_grid=ct_grid,
        dose_grid=dose_grid,
        backend=backend,
        voxel_mask=mask_future,
        pure=False,
    )
    doses: list[np.ndarray | None] = [None] * len(dbeams)
    for (index, _), dose in zip(parts, client.gather(futures), strict=True):
        total = doses[index]
        doses[index] = dose if total is None else total + dose
    return [np.zeros(dose_grid.shape, dtype=np.float32) if d is None else d for d in doses]
