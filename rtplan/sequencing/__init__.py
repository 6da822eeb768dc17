"""Leaf sequencing: fluence maps to deliverable step-and-shoot MLC segments.

See :mod:`rtplan.sequencing._sweep` for the algorithm and its references.
"""

from ._plan import (
    PlanSequencing,
    aperture_dose,
    beam_map_edges_mm,
    plan_aperture_dose,
    sequence_plan,
)
from ._sweep import (
    SequencingError,
    SequencingResult,
    fluence_from_segments,
    leaf_units,
    sequence_fluence,
    sweep_levels,
)

__all__ = [
    "PlanSequencing",
    "aperture_dose",
    "beam_map_edges_mm",
    "plan_aperture_dose",
    "sequence_plan",
    "SequencingError",
    "SequencingResult",
    "fluence_from_segments",
    "leaf_units",
    "sequence_fluence",
    "sweep_levels",
]
