"""A derived ROI: a :class:`~rtplan.Structure` whose occupancy is an expression's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose_engine import Grid

from .._internal.arguments import TEXT, check_arguments, either
from ..errors import StructureError
from ._algebra import DEFAULT_RESOLUTION_MM, Expr, _as_expr, evaluate_block, odd_factors
from ._contours import contours_from_occupancy
from ._structure import Structure

__all__ = ["DerivedStructure", "derive_structure", "roi_name_problem"]

#: (3006,0026) ROIName is a DICOM LO: at most 64 characters, no backslash or control codes.
ROI_NAME_MAX = 64


def roi_name_problem(name: object) -> str:
    """Why ``name`` cannot be an RT-STRUCT (3006,0026) *ROIName*, or "" when it can."""
    if not isinstance(name, str) or not name.strip():
        return "a structure name must be a non-empty string."
    if len(name) > ROI_NAME_MAX:
        return f"(3006,0026) ROIName holds at most {ROI_NAME_MAX} characters; this has {len(name)}."
    if "\\" in name or any(ord(c) < 32 for c in name):
        return "(3006,0026) ROIName may not hold a backslash or control characters."
    return ""


#: Display colours (RGB) given to derived ROIs in turn (matplotlib's tab10 without grey).
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True, eq=False, repr=False)
class DerivedStructure(Structure):
    """A structure defined by an expression of other structures (no contours of its own).

    It is used like any :class:`~rtplan.Structure`: :meth:`occupancy`, :meth:`mask`,
    :meth:`volume_cc` ... evaluate the expression on the grid asked for (see
    :mod:`rtplan.structures._algebra` for the method and its accuracy); the ``subsamples``
    argument of those methods is ignored.  :meth:`to_structure` traces contours on a CT
    grid for writing to an RT-STRUCT.

    Attributes
    ----------
    expression : Expr
    sources : dict of str to Structure
        The structures the expression names (a snapshot taken by :func:`derive_structure`).
    resolution_mm : float, mm
        Finest spacing of the evaluation.
    """

    expression: Expr | None = None
    sources: dict = field(default_factory=dict)
    resolution_mm: float = DEFAULT_RESOLUTION_MM

    def _block(self, grid: Grid, subsamples: int):
        key = (grid, "derived")
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = evaluate_block(
                self.expression, grid, self.sources, resolution_mm=self.resolution_mm
            )
            hit[1].setflags(write=False)
            with self._lock:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = hit
        return hit

    @property
    def is_empty(self) -> bool:
        """True when the expression's bounding box is empty (e.g. disjoint intersection)."""
        return self.expression.bounds_mm(self.sources) is None

    @property
    def is_point(self) -> bool:
        return False

    @property
    def bounding_box(self):
        """A box (LPS mm) that holds the structure, from its sources' boxes and margins
        (conservative: a difference keeps its first operand's box)."""
        box = self.expression.bounds_mm(self.sources)
        if box is None:
            return None
        return tuple(float(v) for v in box[0]), tuple(float(v) for v in box[1])

    def to_structure(self, grid: Grid, *, number: int | None = None) -> Structure:
        """A plain :class:`~rtplan.Structure` with contours traced on every slice of ``grid``
        (the CT grid, so that each contour lies on a CT slice).

        The occupancy is traced in-plane at ``resolution_mm`` (the grid subdivided by an odd
        factor), so that the contour does not cut the corners of coarse pixels.
        """
        _, fy, fx = odd_factors(grid.spacing_mm, self.resolution_mm)
        nz, ny, nx = grid.shape
        dx, dy, dz = grid.spacing_mm
        x0, y0, z0 = grid.origin_mm
        plane = Grid(
            (nz, ny * fy, nx * fx),
            (x0 - dx / fx * (fx // 2), y0 - dy / fy * (fy // 2), z0),
            (dx / fx, dy / fy, dz),
        )
        contours = contours_from_occupancy(self.occupancy(plane), plane)
        return Structure(
            name=self.name,
            number=self.number if number is None else int(number),
            roi_type=self.roi_type,
            color_rgb=self.color_rgb,
            contours=contours,
        )

    def __repr__(self) -> str:
        return f"DerivedStructure({self.name!r} = {self.expression!r})"


@check_arguments(
    structures="collections.abc:Mapping",
    name=TEXT,
    expression=either("rtplan.structures._algebra:Expr", TEXT),
)
def derive_structure(
    structures: dict[str, Any],
    name: str,
    expression: Expr | str,
    *,
    roi_type: str = "",
    color_rgb: tuple[int, int, int] | None = None,
    resolution_mm: float = DEFAULT_RESOLUTION_MM,
) -> DerivedStructure:
    """A :class:`DerivedStructure` called ``name`` over ``structures`` (name → Structure).

    Raises
    ------
    StructureError
        ``name`` is empty or already taken, or the expression names a structure that is
        not in ``structures`` (the message lists the available names).
    """
    expr = _as_expr(expression)
    problem = roi_name_problem(name)
    if problem:
        raise StructureError(f"Cannot derive {name!r}: {problem}")
    if name in structures:
        raise StructureError(
            f"Cannot derive {name!r}: the patient already has a structure of that name."
        )
    missing = [n for n in expr.names() if n not in structures]
    if missing:
        raise StructureError(
            f"Cannot derive {name!r} = {expr!r}: no structure named "
            f"{', '.join(repr(n) for n in missing)}; available: "
            f"{', '.join(repr(n) for n in structures) or '(none)'}."
        )
    if not (np.isfinite(resolution_mm) and resolution_mm > 0):
        raise StructureError(f"`resolution_mm` must be positive; got {resolution_mm!r}.")
    number = max((int(s.number) for s in structures.values()), default=0) + 1
    n_derived = sum(isinstance(s, DerivedStructure) for s in structures.values())
    return DerivedStructure(
        name=name,
        number=number,
        roi_type=roi_type,
        color_rgb=color_rgb or PALETTE[n_derived % len(PALETTE)],
        expression=expr,
        sources={n: structures[n] for n in expr.names()},
        resolution_mm=float(resolution_mm),
    )
