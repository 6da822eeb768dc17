"""Pencil-beam doses of a plan's gantry angles as Dask tasks (``rtplan dose --scheduler``).

An arc is computed as one static beam per gantry angle of its control points,
sub-sampled every 2 degrees (:func:`static_parts`): a two-arc VMAT plan is about 360
pencil-beam doses at about 180 gantry angles.  Here each ray frame (gantry angle; the
parts of both arcs at that angle, :func:`frame_groups`) is one task on a Dask cluster
(``pip install "rtplan[dask]"``); the CT's density and the voxel mask are sent to every
worker once.  Each task is :func:`frame_group_doses`, the serial computation of its
group, and the results are taken in the groups' order, so the plan's dose equals the
serial dose to the last bit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dose_engine import BeamModel, Grid, to_numpy

from ._aperture import FramePart, frame_group_doses

__all__ = ["distributed_group_doses"]


def _group_task(
    group: Sequence[FramePart],
    models: Sequence[BeamModel],
    density: np.ndarray,
    ct_grid: Grid,
    dose_grid: Grid,
    backend: str,
    voxel_mask: np.ndarray,
) -> list[np.ndarray]:
    """One task: the doses of one group's parts, float32 Gy on the host."""
    doses = frame_group_doses(
        group, models, density, ct_grid, dose_grid, backend=backend, voxel_mask=voxel_mask
    )
    return [np.asarray(to_numpy(d), dtype=np.float32) for d in doses]


def distributed_group_doses(
    groups: Sequence[Sequence[FramePart]],
    density: np.ndarray,
    ct_grid: Grid,
    dose_grid: Grid,
    models: Sequence[BeamModel],
    *,
    client: Any,
    backend: str = "numpy",
    voxel_mask: np.ndarray,
) -> Iterator[list[np.ndarray]]:
    """:func:`frame_group_doses` of every group, each a task on ``client``.

    Parameters
    ----------
    groups : sequence of groups of :func:`frame_groups`
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Relative electron density.
    ct_grid, dose_grid : dose_engine.Grid
    models : sequence of dose_engine.BeamModel
        The beam model of each beam, by beam index (:meth:`rtplan.dose.BeamModels.for_beam`).
    client : distributed.Client, keyword-only
        A client of the cluster that runs the tasks (:func:`rtplan.planning._dask.dask_client`).
    backend : {"numpy", "cupy"}, keyword-only
        The workers' array backend.
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, keyword-only
        The voxels to compute.

    Yields
    ------
    list of (nz, ny, nx) ndarray of float32, Gy
        Each group's part doses, in the order of ``groups`` (sum them with
        :func:`~rtplan.dose._aperture.beam_doses_by_frame`).

    Raises
    ------
    rtplan.errors.InputError
        The dose engine refuses an angle (e.g. an isocentre outside the CT); the message
        names the beam and the gantry angle.
    """
    density_future, mask_future = client.scatter([density, voxel_mask], broadcast=True)
    futures = client.map(
        _group_task,
        list(groups),
        models=list(models),
        density=density_future,
        ct_grid=ct_grid,
        dose_grid=dose_grid,
        backend=backend,
        voxel_mask=mask_future,
        pure=False,
    )
    pending = deque(futures)
    del futures
    while pending:  # each result released on the cluster once taken
        yield pending.popleft().result()
