"""Dose for a :class:`~rtplan.Patient`: the rtplan side of :mod:`dose_engine`.

- :func:`influence_matrix` — beamlet dose-influence matrices (voxels × beamlets, Gy/MU);
- :func:`compute_plan_dose` — the dose of a deliverable plan from its apertures;
- :func:`resolve_beam_model` — a beam model from a shipped name, a path or ``None``.
"""

from ._influence import body_mask, influence_matrix
from ._plan_dose import PlanDose, compute_plan_dose, resolve_beam_model

__all__ = ["PlanDose", "body_mask", "compute_plan_dose", "influence_matrix", "resolve_beam_model"]
