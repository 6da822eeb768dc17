"""Output factors with separate X and Y jaw settings (the collimator-exchange table).

A linac vendor's output-factor table lists the X jaw setting across and the Y jaw setting
down; this is that table as a text file, comma-, semicolon-, tab- or space-separated::

    # 6X output factors, SSD 950 mm, depth 50 mm      (# starts a comment)
    Y\\X mm,   30,    50,   100,   200
    30,     0.823, 0.842, 0.861, 0.874
    50,     0.839, 0.878, 0.905, 0.921
    100,    0.852, 0.899, 1.000, 1.029
    200,    0.861, 0.913, 1.024, 1.067

The corner cell names the unit of the jaw settings, ``mm`` or ``cm`` (a table without it is
refused: a cm/mm mix-up would put every factor on another field).  Jaw settings are full
field sides at the isocentre; an empty cell or ``-`` is a combination not measured.  The
factors keep whatever normalisation the table has (the fit uses ratios to the reference
field).  ``commissioning.toml`` names the file as ``output_factors.table``
(:mod:`dose_engine._measured`).
"""

from __future__ import annotations

import math
from pathlib import Path

from ._arguments import PATH, check_arguments
from ._scan_points import read_scan_text
from .errors import BeamModelError

__all__ = ["read_output_factor_table"]

_UNIT_MM = {"mm": 1.0, "cm": 10.0}


def _cells(line: str) -> list[str]:
    """The cells of a line: split at commas, semicolons or tabs (empty cells kept, so a
    missing factor keeps its column), else at spaces."""
    text = line.split("#")[0].strip()
    for sep in (",", ";", "\t"):
        if sep in text:
            return [c.strip() for c in text.split(sep)]
    return text.split()


@check_arguments(path=PATH)
def read_output_factor_table(path: str | Path) -> dict[tuple[float, float], float]:
    """Read an X-across, Y-down output-factor table (see the module docstring).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict (x_mm, y_mm) → float
        One entry per measured cell; jaw settings converted to mm.

    Raises
    ------
    BeamModelError
        If the file cannot be read, the corner cell names no unit, a jaw setting or factor is
        not a positive finite number, a row has more cells than the header, a setting
        repeats, or the table holds no factor.  The message names the file and the line.
    """
    path = Path(path)
    rows = [
        (k, _cells(line))
        for k, line in enumerate(read_scan_text(path).splitlines(), 1)
        if _cells(line)
    ]
    if len(rows) < 2:
        raise BeamModelError(
            f"{path}: expected a header row (unit, X jaw settings) and at least one row "
            "(Y jaw setting, factors)."
        )
    head_line, head = rows[0]
    unit = next((u for u in _UNIT_MM if u in head[0].lower()), None)
    if unit is None:
        raise BeamModelError(
            f"{path}, line {head_line}: the corner cell {head[0]!r} must name the unit of the "
            "jaw settings (mm or cm), e.g. 'Y\\X mm'."
        )
    scale = _UNIT_MM[unit]
    xs = [_positive(c, path, head_line, "X jaw setting") * scale for c in head[1:]]
    if len(set(xs)) != len(xs):
        raise BeamModelError(f"{path}, line {head_line}: an X jaw setting repeats.")
    table: dict[tuple[float, float], float] = {}
    seen_y: set[float] = set()
    for lineno, cells in rows[1:]:
        y = _positive(cells[0], path, lineno, "Y jaw setting") * scale
        if y in seen_y:
            raise BeamModelError(f"{path}, line {lineno}: Y jaw setting {cells[0]} repeats.")
        seen_y.add(y)
        if len(cells) - 1 > len(xs):
            raise BeamModelError(
                f"{path}, line {lineno}: {len(cells) - 1} factors but the header has "
                f"{len(xs)} X jaw settings."
            )
        for x, cell in zip(xs, cells[1:], strict=False):
            if cell not in ("", "-"):
                table[(x, y)] = _positive(cell, path, lineno, "output factor")
    if not table:
        raise BeamModelError(f"{path}: the table holds no output factor.")
    return table


def _positive(cell: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BeamModelError(f"{path}, line {lineno}: {what} {cell!r} is not a positive number.")
    return value
