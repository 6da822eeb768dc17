"""Which engine computes a plan's final dose (``[dose] final_algorithm``, ``--final-dose``).

``"pencil_beam"`` and ``"ccc"`` (collapsed-cone convolution/superposition) are taken as
asked; ``"auto"`` takes the collapsed cone when the body holds lung or bone:

- the CT's density (the plan's CT-to-density table) is interpolated at the dose-grid
  voxel centres that lie inside the body (occupancy >= 0.5) at least :data:`SKIN_MM`
  from its surface and from the dose grid's faces (the partial-volume voxels of the skin
  are not tissue); the surface is taken half a voxel (the largest spacing) short of the
  nearest outside voxel's centre, so on any grid the outermost body voxels are skin;
- their volume below :data:`LOW_DENSITY` (lung, air cavities) and above
  :data:`HIGH_DENSITY` (bone) is summed; :data:`MIN_VOLUME_CC` or more of either
  selects the collapsed cone.

The TG-119 phantoms (water in air) hold none and keep the pencil beam (and its speed).
A beam model without a collapsed-cone commissioning is refused when ``"ccc"`` is asked
for (before any work) and makes ``"auto"`` fall back to the pencil beam with a
``ccc_not_commissioned`` warning.  A pencil-beam final dose of a body with lung gets the
``pencil_beam_lung`` warning (CLI, plan.json, report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dose_engine import BeamModel, BeamModelError, Grid

from ..safety import SafetyWarning
from ._helper_structures import distance_outside_mm

__all__ = [
    "HIGH_DENSITY",
    "LOW_DENSITY",
    "MIN_VOLUME_CC",
    "SKIN_MM",
    "FinalAlgorithmChoice",
    "choose_final_algorithm",
    "heterogeneity_volumes_cc",
    "require_ccc_commissioning",
]

#: Density relative to water below which body tissue counts as lung (or an air cavity):
#: the generic table gives 0.50 at -500 HU (CIRS "lung exhale"); inflated lung is 0.2-0.3.
LOW_DENSITY = 0.6
#: Density above which body tissue counts as bone: above soft tissue and iodine-contrast
#: blood (at most 1.19 at +300 HU with the generic table), below the vertebrae and ribs
#: of the thorax phantom (1.31-1.37 at +500 / +600 HU).
HIGH_DENSITY = 1.25
#: Voxels closer than this to the body's surface are not counted (their CT values mix
#: tissue with the air outside).
SKIN_MM = 10.0
#: Lung or bone volume from which ``"auto"`` takes the collapsed cone, cm³.
MIN_VOLUME_CC = 5.0


@dataclass(frozen=True)
class FinalAlgorithmChoice:
    """The final-dose engine of a plan and why.

    Attributes
    ----------
    requested : {"auto", "ccc", "pencil_beam"}
        What the protocol or the options asked for.
    algorithm : {"ccc", "pencil_beam"}
        The engine of the final dose and the RT-DOSE.
    low_density_cc, high_density_cc : float, cm³
        Body volume below :data:`LOW_DENSITY` / above :data:`HIGH_DENSITY` (more than
        :data:`SKIN_MM` inside the body).
    reason : str
        One sentence (plan.json, report).
    """

    requested: str
    algorithm: str
    low_density_cc: float
    high_density_cc: float
    reason: str

    @property
    def body_has_lung(self) -> bool:
        """At least :data:`MIN_VOLUME_CC` of the body below :data:`LOW_DENSITY`."""
        return self.low_density_cc >= MIN_VOLUME_CC

    def as_dict(self) -> dict[str, Any]:
        """The record written to plan.json (``plan.dose_algorithm.selection``)."""
        return {
            "requested": self.requested,
            "algorithm": self.algorithm,
            "low_density_cc": self.low_density_cc,
            "high_density_cc": self.high_density_cc,
            "low_density_below": LOW_DENSITY,
            "high_density_above": HIGH_DENSITY,
            "skin_mm": SKIN_MM,
            "min_volume_cc": MIN_VOLUME_CC,
            "reason": self.reason,
        }


def heterogeneity_volumes_cc(
    density, ct_grid: Grid, dose_grid: Grid, body_occupancy: np.ndarray
) -> tuple[float, float]:
    """Body volume of lung and of bone density, cm³ (see the module's criterion).

    Parameters
    ----------
    density : (nz, ny, nx) array on ``ct_grid``
        Density relative to water (:func:`dose_engine.hu_to_density`).
    ct_grid, dose_grid : dose_engine.Grid
    body_occupancy : (nz, ny, nx) ndarray on ``dose_grid``
        Fraction of each dose voxel inside the body.

    Returns
    -------
    low_cc, high_cc : float, cm³
        Volume of the counted dose voxels whose interpolated density is below
        :data:`LOW_DENSITY` / above :data:`HIGH_DENSITY`.
    """
    from dose_engine import to_numpy
    from dose_engine._resample import resample

    body = np.asarray(body_occupancy) >= 0.5
    if not body.any():
        return 0.0, 0.0
    # the grid's faces count as outside: a body cut by the grid (or the CT) is not eroded
    # from there otherwise, and its partial-volume voxels there would be counted
    outside = np.pad(~body, 1, constant_values=True)
    centres_mm = distance_outside_mm(outside, dose_grid.spacing_mm)[1:-1, 1:-1, 1:-1]
    # the surface lies half a voxel short of the nearest outside voxel's centre: without
    # that half voxel, the body's outermost voxels of a 10 mm grid were "10 mm" deep
    inside = centres_mm - 0.5 * max(dose_grid.spacing_mm) >= SKIN_MM
    rho = np.asarray(to_numpy(resample(density, ct_grid, dose_grid, order=1, fill_value=1.0)))
    voxel_cc = dose_grid.voxel_volume_cc
    low = float(np.count_nonzero(inside & (rho < LOW_DENSITY))) * voxel_cc
    high = float(np.count_nonzero(inside & (rho > HIGH_DENSITY))) * voxel_cc
    return low, high


def require_ccc_commissioning(model: BeamModel) -> None:
    """Refuse a beam model without a collapsed-cone commissioning (before any work).

    Raises
    ------
    dose_engine.BeamModelError
        The model has no commissioning file, or one made for other parameters (named).
    """
    from dose_engine._ccc_commission import load_ccc_commissioning

    load_ccc_commissioning(model)


def choose_final_algorithm(
    requested: str, low_cc: float, high_cc: float, model: BeamModel
) -> tuple[FinalAlgorithmChoice, list[SafetyWarning]]:
    """The final-dose engine for ``requested`` and a body of ``low_cc`` / ``high_cc``.

    Parameters
    ----------
    requested : {"auto", "ccc", "pencil_beam"}
    low_cc, high_cc : float, cm³
        From :func:`heterogeneity_volumes_cc`.
    model : dose_engine.BeamModel
        The plan's beam model (its collapsed-cone commissioning is looked up for
        ``"auto"``; ``"ccc"`` is checked by :func:`require_ccc_commissioning` before).

    Returns
    -------
    choice : FinalAlgorithmChoice
    warnings : list of rtplan.safety.SafetyWarning
        ``ccc_not_commissioned`` (``"auto"`` fell back to the pencil beam) and
        ``pencil_beam_lung`` (a pencil-beam final dose of a body with lung).
    """
    found = (
        f"{low_cc:.0f} cm³ of the body below {LOW_DENSITY:g} and {high_cc:.0f} cm³ above "
        f"{HIGH_DENSITY:g} relative density"
    )
    warnings: list[SafetyWarning] = []
    if requested != "auto":
        algorithm = requested
        reason = f"{requested} asked for ({found})"
    elif max(low_cc, high_cc) < MIN_VOLUME_CC:
        algorithm = "pencil_beam"
        reason = f"auto: no lung or bone ({found}; less than {MIN_VOLUME_CC:g} cm³ of either)"
    else:
        algorithm = "ccc"
        reason = f"auto: the body holds lung or bone ({found})"
        try:
            require_ccc_commissioning(model)
        except BeamModelError as exc:
            algorithm = "pencil_beam"
            reason += "; the beam model has no collapsed-cone commissioning: pencil beam"
            warnings.append(
                SafetyWarning(
                    "ccc_not_commissioned",
                    f"DOSE ALGORITHM: the body holds lung or bone, but the beam model "
                    f"'{model.name}' has no collapsed-cone commissioning ({exc}); the final "
                    "dose is a pencil-beam dose. Commission the collapsed cone for this "
                    "model (python -m dose_engine._ccc_commission).",
                )
            )
    choice = FinalAlgorithmChoice(requested, algorithm, low_cc, high_cc, reason)
    if algorithm == "pencil_beam" and choice.body_has_lung:
        warnings.append(
            SafetyWarning(
                "pencil_beam_lung",
                f"DOSE ALGORITHM: the dose shown is a pencil-beam dose, but the body holds "
                f"{low_cc:.0f} cm³ of lung (density below {LOW_DENSITY:g}); pencil beams "
                "overestimate the dose in and beyond lung by 5-12 % in small fields "
                "(docs/dose_algorithms.md). Plan with --final-dose ccc (or auto).",
            )
        )
    return choice, warnings
