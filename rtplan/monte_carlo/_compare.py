"""Our dose against the Monte Carlo dose: gamma pass rate and DVH differences."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..evaluation import dvh

__all__ = ["DoseComparison", "compare_with_monte_carlo"]

#: Gamma criteria: global dose difference (% of the Monte Carlo maximum), distance (mm),
#: and the lowest dose evaluated (% of the maximum).
GAMMA_PERCENT, GAMMA_MM, GAMMA_CUTOFF_PERCENT = 3.0, 3.0, 10.0
#: The gamma search stops here (only γ ≤ 1 is counted): it bounds the search radius and so
#: the run time.
GAMMA_SEARCH_MAX = 1.1


@dataclass(frozen=True)
class DoseComparison:
    """The comparison of a dose with the Monte Carlo dose.

    Attributes
    ----------
    gamma_pass_rate : float
        Fraction of the evaluated voxels (above 10 % of the Monte Carlo maximum) with
        γ ≤ 1 at 3 % (global) / 3 mm.
    structures : dict of str to dict
        Per structure: ``{"D95": (ours, mc), "Dmean": ..., "D2": ...}`` in Gy.
    """

    gamma_pass_rate: float
    structures: dict

    def as_dict(self) -> dict:
        """JSON-ready: the pass rate and each structure's metrics with their difference."""
        return {
            "gamma": {
                "criteria": f"{GAMMA_PERCENT:g} % global / {GAMMA_MM:g} mm, "
                f"cut-off {GAMMA_CUTOFF_PERCENT:g} %",
                "pass_rate": self.gamma_pass_rate,
            },
            "structures": {
                name: {
                    k: {"ours_gy": a, "monte_carlo_gy": b, "difference_gy": a - b}
                    for k, (a, b) in metrics.items()
                }
                for name, metrics in self.structures.items()
            },
        }


def compare_with_monte_carlo(
    dose_gy: np.ndarray, mc_dose_gy: np.ndarray, grid, occupancies: Mapping[str, np.ndarray]
) -> DoseComparison:
    """Gamma (pymedphys) and D95 / Dmean / D2 of each structure, ours against Monte Carlo.

    Parameters
    ----------
    dose_gy, mc_dose_gy : (nz, ny, nx) ndarray, Gy
        Our dose and the Monte Carlo dose, on ``grid``.
    grid : dose_engine.Grid
    occupancies : mapping name → (nz, ny, nx) ndarray
        Fractional occupancy of each structure on ``grid``; empty ones are left out.

    Raises
    ------
    rtplan.errors.InputError
        pymedphys is not installed, or the shapes differ.
    """
    try:
        import pymedphys
    except ImportError as exc:
        raise InputError(
            "The Monte Carlo comparison needs pymedphys (gamma index): pip install 'rtplan[mc]'."
        ) from exc
    ours = np.asarray(dose_gy, dtype=np.float64)
    mc = np.asarray(mc_dose_gy, dtype=np.float64)
    if ours.shape != mc.shape or ours.shape != tuple(grid.shape):
        raise InputError(
            f"The doses' shapes differ: ours {ours.shape}, Monte Carlo {mc.shape}, grid "
            f"{tuple(grid.shape)}."
        )
    axes = grid.zyx_axes_mm()
    gamma = pymedphys.gamma(
        axes,
        mc,
        axes,
        ours,
        dose_percent_threshold=GAMMA_PERCENT,
        distance_mm_threshold=GAMMA_MM,
        lower_percent_dose_cutoff=GAMMA_CUTOFF_PERCENT,
        max_gamma=GAMMA_SEARCH_MAX,
        interp_algo="scipy",  # pymedphys's own 3-D interpolation needs numba
    )
    valid = np.isfinite(gamma)
    rate = float(np.mean(gamma[valid] <= 1.0)) if valid.any() else float("nan")
    structures = {}
    for name, occ in occupancies.items():
        occ = np.asarray(occ)
        if not np.any(occ > 0):
            continue
        a = dvh(ours, occ, voxel_volume_cc=grid.voxel_volume_cc, name=name)
        b = dvh(mc, occ, voxel_volume_cc=grid.voxel_volume_cc, name=name)
        structures[name] = {
            "D95": (a.d95_gy, b.d95_gy),
            "Dmean": (a.mean_gy, b.mean_gy),
            "D2": (a.d2_gy, b.d2_gy),
        }
    return DoseComparison(rate, structures)
