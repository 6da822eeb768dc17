"""Automatic protocol-driven planning: :func:`plan_patient`, ``rtplan plan``, ``demo``
and ``batch`` (Dask).

See :mod:`rtplan.planning._plan` for the stages and :mod:`rtplan.planning._levels` for
how protocol goals become prioritised optimisation levels.
"""

from ._batch import BatchEntry, BatchOutcome, plan_batch, read_manifest
from ._final_algorithm import FinalAlgorithmChoice
from ._levels import PlanningLevel, build_levels, smoothness_pairs
from ._options import PlanOptions
from ._plan import DERIVED_RTSTRUCT_FILE, PLAN_FILES, PlanResult, plan_patient
from ._workflow import plan_and_write, run_demo
from ._written import WrittenPlan

__all__ = [
    "DERIVED_RTSTRUCT_FILE",
    "PLAN_FILES",
    "BatchEntry",
    "BatchOutcome",
    "FinalAlgorithmChoice",
    "PlanResult",
    "PlanningLevel",
    "PlanOptions",
    "build_levels",
    "plan_and_write",
    "plan_batch",
    "plan_patient",
    "read_manifest",
    "run_demo",
    "smoothness_pairs",
    "WrittenPlan",
]
