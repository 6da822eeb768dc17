"""Plan evaluation: dose-volume histograms, dose metrics, plan-quality indices and goals.

See :mod:`rtplan.evaluation._dvh` for how partial voxels count and the interpolation
convention every metric shares, and :mod:`rtplan.evaluation._goals` for the metric grammar.
"""

from ._dvh import DMAX_VOLUME_CC, DVH, DVHCollection, dvh
from ._goals import (
    Goal,
    GoalResult,
    GoalTable,
    Metric,
    evaluate_goals,
    goal_dose_level_gy,
    parse_goal,
    parse_metric,
)
from ._metrics import (
    gradient_index,
    homogeneity_index,
    paddick_conformity_index,
    quality_indices,
)

__all__ = [
    "DMAX_VOLUME_CC",
    "DVH",
    "DVHCollection",
    "Goal",
    "GoalResult",
    "GoalTable",
    "Metric",
    "dvh",
    "evaluate_goals",
    "goal_dose_level_gy",
    "gradient_index",
    "homogeneity_index",
    "paddick_conformity_index",
    "parse_goal",
    "parse_metric",
    "quality_indices",
]
