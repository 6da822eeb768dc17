"""Planning protocols: prescription, structure matching, clinical goals, beams and
optimisation settings in a TOML file.

The format is documented with a full example in ``docs/protocols.md``.  Shipped
protocols (``rtplan.protocols.available_protocols()``): the four AAPM TG-119 cases
(Ezzell et al. 2009, doi:10.1118/1.3238104), the C-shape also at its easier level, and
clinical starting points with their references: conventional prostate (78 Gy / 39 fx),
head and neck with two dose levels (70 / 56 Gy), conventional lung (60 Gy / 30 fx) and
whole left breast (40 Gy / 15 fx).
"""

from ._derived import DerivedSpec, apply_derived
from ._protocol import (
    ArcSpec,
    BeamArrangement,
    GoalSpec,
    HelperSettings,
    OptimizationSettings,
    Prescription,
    Protocol,
    StructureSpec,
    available_protocols,
    load_protocol,
    parse_mapping_overrides,
    parse_protocol,
)

__all__ = [
    "ArcSpec",
    "BeamArrangement",
    "DerivedSpec",
    "apply_derived",
    "GoalSpec",
    "HelperSettings",
    "OptimizationSettings",
    "Prescription",
    "Protocol",
    "StructureSpec",
    "available_protocols",
    "load_protocol",
    "parse_mapping_overrides",
    "parse_protocol",
]
