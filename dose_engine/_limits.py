"""Memory and work limits, checked from the inputs before anything is allocated.

A CT header claiming 65,535 × 65,535 pixels, a 0.01 mm dose grid, a 0.001 mm beamlet or
100,000 beams must be refused in milliseconds with the estimate in the message, not
discovered after minutes of swapping.  Each limit has a documented default
(``docs/input_checks.md``) and can be raised on purpose with an environment variable
``RTPLAN_LIMIT_<NAME>`` (e.g. ``RTPLAN_LIMIT_GRID_VOXELS=2e9``), which the CLI, the Python
API and Dask workers all see.
"""

from __future__ import annotations

import os

from .errors import ResourceLimitError

__all__ = ["DEFAULT_LIMITS", "check_limit", "limit"]

#: name -> (default, what is counted).  The defaults leave room for clinical data
#: (a 1024 × 1024 × 1000 CT, 1 mm dose grids, 2.5 mm beamlets over large fields) on a
#: machine with tens of GiB.
DEFAULT_LIMITS: dict[str, tuple[float, str]] = {
    "image_voxels": (2**30, "voxels of one image volume (CT or RT-DOSE; 4 bytes each)"),
    "grid_voxels": (2**30, "voxels of a computation grid (dose grid, resampled grid)"),
    "beams": (1000, "beams of one plan"),
    "beamlet_map_cells": (2_000_000, "beamlet-map cells over all beams"),
    "influence_pairs": (2e10, "voxel × beamlet pairs of one influence matrix"),
    "dvh_bins": (1_000_000, "bins of one DVH (24 bytes each)"),
}


def limit(name: str) -> float:
    """The current value of limit ``name``: ``RTPLAN_LIMIT_<NAME>`` or the default."""
    default, _ = DEFAULT_LIMITS[name]
    env = f"RTPLAN_LIMIT_{name.upper()}"
    text = os.environ.get(env, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise ResourceLimitError(f"{env}={text!r} is not a number.") from None
    if not value > 0:
        raise ResourceLimitError(f"{env}={text!r} must be positive.")
    return value


def check_limit(name: str, estimate: float, what: str, *, hint: str = "") -> None:
    """Raise :class:`ResourceLimitError` if ``estimate`` exceeds limit ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`DEFAULT_LIMITS`.
    estimate : float
        The count the job would need, computed from its inputs.
    what : str
        What asked for it, e.g. ``"dose grid of 0.01 mm over the CT"``.
    hint : str
        How to shrink the job (appended to the message).
    """
    cap = limit(name)
    if estimate > cap:
        unit = DEFAULT_LIMITS[name][1]
        raise ResourceLimitError(
            f"{what} needs {estimate:.3g} {unit}; the limit is {cap:.3g}. "
            f"{hint + ' ' if hint else ''}To allow it on purpose set "
            f"RTPLAN_LIMIT_{name.upper()}."
        )
