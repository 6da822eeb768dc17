"""Leaf sequencing: fluence maps to deliverable step-and-shoot MLC segments, and arc
sequencing: fluence maps of gantry sectors to the control points of an arc
(:mod:`rtplan.sequencing._arc_sequencing`).

See :mod:`rtplan.sequencing._sweep` for the algorithm and its references.  The dose of
the resulting apertures is :func:`rtplan.dose.aperture_dose`.
"""

from .._internal.deprecation import moved_names
from ._arc_fluence import control_point_fluence
from ._arc_sequencing import ArcSequencingResult, arc_sectors, sequence_arc
from ._plan import PlanSequencing, beam_map_edges_mm, sequence_plan
from ._sweep import (
    SequencingError,
    SequencingResult,
    fluence_from_segments,
    leaf_units,
    sequence_fluence,
    sweep_levels,
)

__all__ = [
    "ArcSequencingResult",
    "arc_sectors",
    "control_point_fluence",
    "sequence_arc",
    "PlanSequencing",
    "beam_map_edges_mm",
    "sequence_plan",
    "SequencingError",
    "SequencingResult",
    "fluence_from_segments",
    "leaf_units",
    "sequence_fluence",
    "sweep_levels",
]

#: Deprecated aliases (one release): dose from apertures is ``rtplan.dose``'s.
__getattr__ = moved_names(
    __name__,
    {
        "aperture_dose": "rtplan.dose:aperture_dose",
        "plan_aperture_dose": "rtplan.dose:plan_aperture_dose",
    },
)
