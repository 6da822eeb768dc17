"""The safety layer: plausibility of a protocol at load, the implicit goals every plan
gets, and the checks of a finished plan (see :mod:`._checks` and docs/protocols.md,
"Safety nets"; the CT against the HU table: :mod:`._ct_calibration`)."""

from ._beam_models import synthetic_model_warnings
from ._checks import (
    IMPLICIT_LABEL,
    SafetyWarning,
    beam_balance_warning,
    check_protocol_plausibility,
    convergence_warning,
    deliverability_warning,
    implicit_goals,
    normalization_warning,
    nto_bands,
    plan_warnings,
    target_helper_names,
)
from ._ct_calibration import LOW_TOLERANCE_HU, METAL_HU, ct_calibration_warnings

__all__ = [
    "IMPLICIT_LABEL",
    "LOW_TOLERANCE_HU",
    "METAL_HU",
    "SafetyWarning",
    "beam_balance_warning",
    "check_protocol_plausibility",
    "convergence_warning",
    "ct_calibration_warnings",
    "deliverability_warning",
    "implicit_goals",
    "normalization_warning",
    "nto_bands",
    "plan_warnings",
    "synthetic_model_warnings",
    "target_helper_names",
]
