"""A warning for beams computed with a beam model fitted to synthetic data.

The shipped 10X and 6FFF models are representative beams fitted to synthetic clinics
(docs/commissioning.md), not to measurements of any linac: a dose computed with them is
indicative, never a second check of a clinic's machine.  Every plan and every ``rtplan
dose`` that uses one says so (``beam_model_synthetic``, exit status 1).
"""

from __future__ import annotations

from collections.abc import Mapping

from dose_engine import BeamModel

from ..dose._models import beam_model_key, fitted_to_synthetic_data, key_label
from ._checks import SafetyWarning

__all__ = ["synthetic_model_warnings"]


def synthetic_model_warnings(models_by_beam: Mapping[int, BeamModel]) -> list[SafetyWarning]:
    """One ``beam_model_synthetic`` warning per model fitted to synthetic data.

    Parameters
    ----------
    models_by_beam : mapping of int to dose_engine.BeamModel
        Each beam's model, keyed by beam number.

    Returns
    -------
    list of SafetyWarning
        Empty when every model was fitted to measurements.
    """
    beams: dict[str, tuple[BeamModel, list[int]]] = {}
    for number, model in models_by_beam.items():
        if fitted_to_synthetic_data(model):
            beams.setdefault(model.fingerprint(), (model, []))[1].append(number)
    warnings = []
    for model, numbers in beams.values():
        label = key_label(beam_model_key(model))
        which = ", ".join(str(n) for n in sorted(numbers))
        warnings.append(
            SafetyWarning(
                "beam_model_synthetic",
                f"BEAM MODEL: beam{'s' if len(numbers) > 1 else ''} {which} computed with "
                f"'{model.name}', a representative {label} model fitted to a synthetic "
                "clinic, not to measurements of any linac: the dose is indicative only. "
                f"Commission your machine's {label} model (python -m dose_engine.fit) and "
                "pass it with --beam-model.",
            )
        )
    return warnings
