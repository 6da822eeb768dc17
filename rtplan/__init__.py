"""rtplan: radiation therapy planning from CT + RT-STRUCT to a deliverable DICOM RT-PLAN.

``import rtplan`` stays light: CVXPY, CuPy, matplotlib and the report back-end are
imported only by the code that needs them.  IDEs and type checkers read the names,
the lazy ones included, from ``__init__.pyi``.
"""

from dose_engine import Grid

from . import errors
from ._internal.deprecation import moved_names
from ._internal.version import __version__
from .delivery import (
    DeliverableBeam,
    DeliverablePlan,
    DoseComparison,
    JawModel,
    Machine,
    MachineError,
    MLCModel,
    Segment,
    SegmentError,
    SegmentWeightResult,
    available_machines,
    compare_doses,
    load_machine,
    reoptimize_segment_weights,
)
from .dose import (
    PlanDose,
    aperture_dose,
    compute_plan_dose,
    influence_matrix,
    plan_aperture_dose,
)
from .evaluation import (
    DVH,
    DVHCollection,
    Goal,
    GoalTable,
    dvh,
    evaluate_goals,
    parse_goal,
    parse_metric,
)
from .io import (
    read_patient,
    read_rtdose,
    read_rtplan,
    read_structure_set,
    write_rtdose,
    write_rtplan,
)
from .patient import Image, Patient, ssd_mm
from .report import plan_json, write_plan_json, write_report
from .sequencing import (
    PlanSequencing,
    SequencingError,
    SequencingResult,
    sequence_fluence,
    sequence_plan,
)
from .structures import Structure

__all__ = [
    "__version__",
    "aperture_dose",
    "available_machines",
    "compare_doses",
    "compute_plan_dose",
    "DeliverableBeam",
    "DeliverablePlan",
    "DoseComparison",
    "DVH",
    "dvh",
    "DVHCollection",
    "errors",
    "evaluate_goals",
    "Goal",
    "GoalTable",
    "Grid",
    "Image",
    "influence_matrix",
    "JawModel",
    "load_machine",
    "read_patient",
    "load_protocol",
    "read_structure_set",
    "Machine",
    "MachineError",
    "MLCModel",
    "parse_goal",
    "parse_metric",
    "Patient",
    "phantoms",
    "plan_aperture_dose",
    "plan_json",
    "plan_patient",
    "PlanDose",
    "planning",
    "PlanResult",
    "PlanSequencing",
    "Protocol",
    "protocols",
    "read_rtdose",
    "read_rtplan",
    "reoptimize_segment_weights",
    "Segment",
    "SegmentError",
    "SegmentWeightResult",
    "sequence_fluence",
    "sequence_plan",
    "SequencingError",
    "SequencingResult",
    "ssd_mm",
    "Structure",
    "write_plan_json",
    "write_report",
    "write_rtdose",
    "write_rtplan",
]

#: Names imported on first access, so ``import rtplan`` stays light.
_LAZY = {
    "phantoms": None,
    "planning": None,
    "protocols": None,
    "plan_patient": "planning",
    "PlanResult": "planning",
    "load_protocol": "protocols",
    "Protocol": "protocols",
}


def __dir__() -> list[str]:
    """Every public name, the lazy ones included (for ``dir(rtplan)`` and completion)."""
    return sorted(set(globals()) | set(__all__))


#: Deprecated names (one release), resolved with a warning naming the new one.
_moved = moved_names(
    __name__,
    {
        "load_patient": "rtplan.io:read_patient",
        "load_structure_set": "rtplan.io:read_structure_set",
    },
)


def __getattr__(name: str):
    """Import the heavy parts (planning, protocols, phantoms) on first access."""
    if name not in _LAZY:
        return _moved(name)
    import importlib

    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
