"""The safety layer: plausibility of a protocol at load, the implicit goals every plan
gets, and the checks of a finished plan (see :mod:`._checks` and docs/protocols.md,
"Safety nets")."""

from ._checks import (
    IMPLICIT_LABEL,
    SafetyWarning,
    beam_balance_warning,
    check_protocol_plausibility,
    convergence_warning,
    implicit_goals,
    normalization_warning,
    plan_warnings,
    target_helper_names,
)

__all__ = [
    "IMPLICIT_LABEL",
    "SafetyWarning",
    "beam_balance_warning",
    "check_protocol_plausibility",
    "convergence_warning",
    "implicit_goals",
    "normalization_warning",
    "plan_warnings",
    "target_helper_names",
]
