"""Plan reports: the self-contained ``report.html`` and the machine-readable ``plan.json``.

matplotlib is imported only when a report is rendered.
"""

from ._html import PLAN_JSON_SCHEMA, plan_json, software_versions, write_plan_json, write_report
from ._tables import DEFAULT_ISODOSE_PCT

__all__ = [
    "DEFAULT_ISODOSE_PCT",
    "PLAN_JSON_SCHEMA",
    "plan_json",
    "software_versions",
    "write_plan_json",
    "write_report",
]
