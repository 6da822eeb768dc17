# Type stub of the lazy top-level namespace (rtplan/__init__.py): the names it imports on
# first access (planning, protocols, phantoms, plan_patient, PlanResult, Protocol,
# load_protocol) are declared here like the eager ones, so IDEs and type checkers see every
# name of ``__all__`` (tests/rtplan/test_namespace.py checks the two agree).

from dose_engine import Grid as Grid

from . import errors as errors
from . import phantoms as phantoms
from . import planning as planning
from . import protocols as protocols
from ._internal.version import __version__ as __version__
from .delivery import DeliverableBeam as DeliverableBeam
from .delivery import DeliverablePlan as DeliverablePlan
from .delivery import DoseComparison as DoseComparison
from .delivery import JawModel as JawModel
from .delivery import Machine as Machine
from .delivery import MachineError as MachineError
from .delivery import MLCModel as MLCModel
from .delivery import Segment as Segment
from .delivery import SegmentError as SegmentError
from .delivery import SegmentWeightResult as SegmentWeightResult
from .delivery import available_machines as available_machines
from .delivery import compare_doses as compare_doses
from .delivery import load_machine as load_machine
from .delivery import reoptimize_segment_weights as reoptimize_segment_weights
from .dose import PlanDose as PlanDose
from .dose import aperture_dose as aperture_dose
from .dose import compute_plan_dose as compute_plan_dose
from .dose import influence_matrix as influence_matrix
from .dose import plan_aperture_dose as plan_aperture_dose
from .evaluation import DVH as DVH
from .evaluation import DVHCollection as DVHCollection
from .evaluation import Goal as Goal
from .evaluation import GoalTable as GoalTable
from .evaluation import dvh as dvh
from .evaluation import evaluate_goals as evaluate_goals
from .evaluation import parse_goal as parse_goal
from .evaluation import parse_metric as parse_metric
from .io import read_patient as read_patient
from .io import read_rtdose as read_rtdose
from .io import read_rtplan as read_rtplan
from .io import read_structure_set as read_structure_set
from .io import write_rtdose as write_rtdose
from .io import write_rtplan as write_rtplan
from .patient import Image as Image
from .patient import Patient as Patient
from .patient import ssd_mm as ssd_mm
from .planning import PlanResult as PlanResult
from .planning import plan_patient as plan_patient
from .protocols import Protocol as Protocol
from .protocols import load_protocol as load_protocol
from .report import plan_json as plan_json
from .report import write_plan_json as write_plan_json
from .report import write_report as write_report
from .sequencing import PlanSequencing as PlanSequencing
from .sequencing import SequencingError as SequencingError
from .sequencing import SequencingResult as SequencingResult
from .sequencing import sequence_fluence as sequence_fluence
from .sequencing import sequence_plan as sequence_plan
from .structures import Structure as Structure

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

def __dir__() -> list[str]: ...
