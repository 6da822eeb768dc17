"""Structures: :class:`Structure` (RT-STRUCT contours → fractional masks on any grid, by
the even-odd rasteriser of :mod:`._rasterize`), and derived structures: margins, booleans,
rings and the body outline.

Build expressions from ROI names and attach them to a patient::

    import rtplan
    from rtplan.structures import expand, roi
    patient = rtplan.read_patient("CT/", "RS.dcm")
    patient = patient.derive("PTV", expand("GTV", 5.0))
    patient = patient.derive("Lungs-PTV", (roi("Lung_L") | roi("Lung_R")) - "PTV")
    patient.structure("PTV").volume_cc(patient.grid)

Derived structures are :class:`~rtplan.Structure` objects evaluated lazily on any grid
(CT or dose grid) with fractional occupancy; protocols define them in
``[[structures.derived]]`` (docs/protocols.md) and :func:`rtplan.io.write_structure_set`
writes them to a new RT-STRUCT beside the original ROIs.
"""

from .._internal.deprecation import moved_names
from ._algebra import (
    DEFAULT_RESOLUTION_MM,
    Expr,
    difference,
    expand,
    intersection,
    ring,
    roi,
    shrink,
    union,
)
from ._body import (
    BODY_OUTLINE_NAME,
    body_grid,
    body_outline,
    body_outline_mask,
    body_structure,
)
from ._contours import contours_from_occupancy
from ._derived import DerivedStructure, derive_structure
from ._margins import Margin, dilate_mm, erode_mm
from ._structure import Structure

#: Deprecated aliases (one release): the RT-STRUCT writer is ``rtplan.io``'s.
__getattr__ = moved_names(
    __name__,
    {
        "has_generated_structures": "rtplan.io:has_generated_structures",
        "write_structure_set": "rtplan.io:write_structure_set",
    },
)

__all__ = [
    "BODY_OUTLINE_NAME",
    "body_grid",
    "body_outline",
    "body_outline_mask",
    "body_structure",
    "DEFAULT_RESOLUTION_MM",
    "DerivedStructure",
    "Expr",
    "Margin",
    "Structure",
    "contours_from_occupancy",
    "derive_structure",
    "difference",
    "dilate_mm",
    "erode_mm",
    "expand",
    "intersection",
    "ring",
    "roi",
    "shrink",
    "union",
]
