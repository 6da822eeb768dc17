"""Dose for a :class:`~rtplan.Patient`: the rtplan side of :mod:`dose_engine`.

- :func:`influence_matrix` — beamlet dose-influence matrices (voxels × beamlets, Gy/MU);
- :func:`aperture_dose` — the dose of one beam's MLC apertures (the one segment →
  rectangles → dose path); :func:`compute_plan_dose` — of a whole deliverable plan;
- :func:`resolve_beam_model` — a beam model from a shipped name, a path or ``None``;
  :class:`BeamModels`, :func:`resolve_beam_models`, :func:`shipped_beam_models` — the
  models of a machine, one per nominal energy and fluence mode, chosen for each beam;
  :func:`resolve_mlc_parameters` — the MLC and jaw parameters of a machine and model.
"""

from ._aperture import (
    aperture_dose,
    beam_rectangles_mm,
    plan_aperture_dose,
    resolve_mlc_parameters,
)
from ._influence import body_mask, influence_matrix
from ._models import BeamModels, resolve_beam_models, shipped_beam_models
from ._plan_dose import (
    PlanDose,
    beam_model_fluence_mode,
    compute_plan_dose,
    resolve_beam_model,
    resolve_density_table,
)

__all__ = [
    "BeamModels",
    "PlanDose",
    "aperture_dose",
    "beam_model_fluence_mode",
    "beam_rectangles_mm",
    "body_mask",
    "compute_plan_dose",
    "influence_matrix",
    "plan_aperture_dose",
    "resolve_beam_model",
    "resolve_beam_models",
    "resolve_density_table",
    "resolve_mlc_parameters",
    "shipped_beam_models",
]
