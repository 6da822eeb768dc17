"""What a linac delivers: machine models (MLC, jaws), MLC segments with monitor units,
deliverable beams and plans, segment-weight re-optimisation and leaf-position refinement
after sequencing.

Leaf sequencing (fluence maps → segments) is :mod:`rtplan.sequencing`.
"""

from ._arc import ArcBeam, ControlPoint
from ._arc_limits import ArcLimits
from ._deliverability import (
    BeamDeliverability,
    Deliverability,
    Violation,
    check_deliverability,
    modulation_complexity,
)
from ._deliverable import DeliverableBeam, DeliverablePlan, Segment, SegmentError
from ._leaf_refinement import LeafRefinementResult, dose_fit_objective, refine_leaf_positions
from ._machine import (
    JawModel,
    Machine,
    MachineError,
    MLCModel,
    available_machines,
    load_machine,
    parse_machine,
)
from ._segment_weights import (
    DoseComparison,
    SegmentWeightResult,
    compare_doses,
    reoptimize_segment_weights,
    segment_beamlet_matrix,
)

__all__ = [
    "ArcBeam",
    "ArcLimits",
    "BeamDeliverability",
    "ControlPoint",
    "Deliverability",
    "DeliverableBeam",
    "DeliverablePlan",
    "DoseComparison",
    "JawModel",
    "LeafRefinementResult",
    "MLCModel",
    "Machine",
    "MachineError",
    "Segment",
    "SegmentError",
    "SegmentWeightResult",
    "Violation",
    "available_machines",
    "check_deliverability",
    "compare_doses",
    "dose_fit_objective",
    "load_machine",
    "modulation_complexity",
    "parse_machine",
    "refine_leaf_positions",
    "reoptimize_segment_weights",
    "segment_beamlet_matrix",
]
