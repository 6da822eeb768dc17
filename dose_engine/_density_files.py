"""A clinic's CT calibration as a text file: two columns, HU → density (CSV or TOML).

CSV (``.csv``, ``.txt``; comma, semicolon, tab or space separated; ``#`` starts a
comment; an optional header line names the columns)::

    # Scanner X, 120 kVp, CIRS 062M, 2026-01-12
    hu, relative_electron_density
    -1000, 0.001
    0, 1.000
    1000, 1.600

TOML (``.toml``)::

    source = "Scanner X, 120 kVp, CIRS 062M, 2026-01-12"
    quantity = "relative_electron_density"   # or "mass_density"
    table = [[-1000, 0.001], [0, 1.0], [1000, 1.6]]

Checks (each refusal names the file and the line, or the row of ``table``): two finite
numbers per row, HU strictly increasing, density non-decreasing and positive, at most
:data:`MAX_DENSITY`, and water (0 HU) between 0.85 and 1.15 (a table in per cent, g/l
or shifted by 1000 HU fails there).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

import numpy as np

from .errors import BeamModelError

__all__ = ["TEXT_SUFFIXES", "read_density_text"]

#: File suffixes read by :func:`read_density_text` (others are JSON).
TEXT_SUFFIXES = (".csv", ".txt", ".toml")
#: Highest plausible density relative to water (gold is 19.3 g/cm³).
MAX_DENSITY = 25.0
#: Density of water (0 HU) a calibration must give.
WATER_RANGE = (0.85, 1.15)
QUANTITIES = ("relative_electron_density", "mass_density")
_SPLIT = re.compile(r"[,;\t ]+")


def read_density_text(path: Path) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Read and check a CSV or TOML calibration.

    Returns
    -------
    hu, density : (n,) ndarray of float64
    source : str
        The TOML ``source`` or the CSV's first comment line.
    quantity : {"relative_electron_density", "mass_density"}

    Raises
    ------
    BeamModelError
        Unreadable file, a malformed row or a table that fails a check; the message names
        the file and the line (CSV) or the row of ``table`` (TOML).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BeamModelError(f"HU table {path} cannot be read ({exc}).") from exc
    if path.suffix.lower() == ".toml":
        rows, where, source, quantity = _toml_rows(text, path)
    else:
        rows, where, source, quantity = _csv_rows(text, path)
    if len(rows) < 2:
        raise BeamModelError(f"HU table {path}: needs at least 2 rows of (hu, density).")
    hu = np.array([r[0] for r in rows])
    rho = np.array([r[1] for r in rows])
    for i in range(len(rows)):
        if rho[i] <= 0 or rho[i] > MAX_DENSITY:
            raise BeamModelError(
                f"HU table {path}, {where[i]}: density {rho[i]:g} is outside (0, {MAX_DENSITY:g}]"
                " (relative to water)."
            )
        if i and not hu[i] > hu[i - 1]:
            raise BeamModelError(
                f"HU table {path}, {where[i]}: HU {hu[i]:g} after {hu[i - 1]:g}; the HU column "
                "must increase strictly (sort the rows, remove duplicates)."
            )
        if i and rho[i] < rho[i - 1]:
            raise BeamModelError(
                f"HU table {path}, {where[i]}: density {rho[i]:g} below the previous row's "
                f"{rho[i - 1]:g}; the density must not decrease with HU."
            )
    water = float(np.interp(0.0, hu, rho))
    if not WATER_RANGE[0] <= water <= WATER_RANGE[1]:
        raise BeamModelError(
            f"HU table {path}: water (0 HU) gets density {water:g}; expected "
            f"{WATER_RANGE[0]:g}-{WATER_RANGE[1]:g} relative to water (is the table in per "
            "cent, in g/l, or in CT numbers offset by 1000?)."
        )
    return hu, rho, source, quantity


def _number(token: str, path: Path, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise BeamModelError(
            f"HU table {path}, {where}: {token!r} is not a number; expected two numbers "
            "(hu, density) per row."
        ) from None
    if not math.isfinite(value):
        raise BeamModelError(f"HU table {path}, {where}: {token!r} is not finite.")
    return value


def _csv_rows(text: str, path: Path):
    rows: list[tuple[float, float]] = []
    where: list[str] = []
    source, quantity = "", QUANTITIES[0]
    header_seen = False
    for n, raw in enumerate(text.splitlines(), start=1):
        line, _, comment = raw.partition("#")
        if not source and comment.strip() and not rows:
            source = comment.strip()
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if not fields:
            continue
        if not rows and not header_seen and not _looks_numeric(fields[0]):
            header_seen = True
            named = fields[1].lower() if len(fields) == 2 else ""
            if len(fields) != 2 or named not in QUANTITIES:
                raise BeamModelError(
                    f"HU table {path}, line {n}: header {raw.strip()!r}; expected two columns, "
                    f"hu and one of {', '.join(QUANTITIES)}."
                )
            quantity = named
            continue
        if len(fields) != 2:
            raise BeamModelError(
                f"HU table {path}, line {n}: {len(fields)} values; expected two numbers "
                "(hu, density)."
            )
        rows.append((_number(fields[0], path, f"line {n}"), _number(fields[1], path, f"line {n}")))
        where.append(f"line {n}")
    return rows, where, source, quantity


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _toml_rows(text: str, path: Path):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BeamModelError(f"HU table {path} is not valid TOML ({exc}).") from exc
    unknown = sorted(set(data) - {"table", "source", "quantity", "description"})
    if unknown:
        raise BeamModelError(
            f"HU table {path}: unknown keys {unknown}; expected table, source, quantity."
        )
    quantity = str(data.get("quantity", QUANTITIES[0]))
    if quantity not in QUANTITIES:
        raise BeamModelError(
            f"HU table {path}: quantity = {quantity!r}; expected one of {', '.join(QUANTITIES)}."
        )
    table = data.get("table")
    if not isinstance(table, list):
        raise BeamModelError(f"HU table {path}: expected `table = [[hu, density], ...]`.")
    rows, where = [], []
    for i, row in enumerate(table, start=1):
        w = f"row {i} of `table`"
        if not isinstance(row, list) or len(row) != 2:
            raise BeamModelError(f"HU table {path}, {w}: {row!r}; expected [hu, density].")
        rows.append(tuple(_number(str(v), path, w) for v in row))
        where.append(w)
    return rows, where, str(data.get("source", "")), quantity
