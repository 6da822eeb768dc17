"""CT number (HU) to relative electron density through a piecewise-linear table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace

from ._arguments import ARRAY, PATH, check_arguments, optional
from ._data_files import read_json_data
from ._density_files import TEXT_SUFFIXES, read_density_text
from .errors import BeamModelError

__all__ = ["HUTable", "hu_to_density", "load_hu_table"]

_DEFAULT_NAME = "hu_to_density.json"


@check_arguments(hu=ARRAY, density=ARRAY)
@dataclass(frozen=True)
class HUTable:
    """Piecewise-linear CT calibration.

    Attributes
    ----------
    hu : (n,) ndarray of float64
        CT numbers, strictly increasing.
    density : (n,) ndarray of float64
        Electron density relative to water, non-decreasing, > 0.
    source : str
        Where the table comes from.
    path : str
        File it was read from (for messages).
    quantity : {"relative_electron_density", "mass_density"}
        What the density column holds (the engine scales path lengths by it either way).
    """

    hu: np.ndarray
    density: np.ndarray
    source: str = ""
    path: str = "<memory>"
    quantity: str = "relative_electron_density"

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, float).ravel()
        rho = np.asarray(self.density, float).ravel()
        if hu.size < 2 or hu.shape != rho.shape:
            raise BeamModelError(
                f"HU table {self.path}: needs at least 2 rows of (hu, density); got {hu.size} HU "
                f"and {rho.size} density values."
            )
        for i in range(1, hu.size):
            if not hu[i] > hu[i - 1]:
                raise BeamModelError(
                    f"HU table {self.path}: row {i} has HU {hu[i]:g} after {hu[i - 1]:g}; the HU "
                    "column must increase strictly. Sort the rows and remove duplicates."
                )
            if rho[i] < rho[i - 1]:
                raise BeamModelError(
                    f"HU table {self.path}: row {i} has density {rho[i]:g} below the previous "
                    f"row's {rho[i - 1]:g}; the table must be monotonic (non-decreasing)."
                )
        if not np.all(np.isfinite(rho)) or rho[0] <= 0:
            raise BeamModelError(f"HU table {self.path}: densities must be finite and > 0.")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "density", rho)


@check_arguments(path=optional(PATH))
def load_hu_table(path: str | Path | None = None) -> HUTable:
    """Read an HU → density table: the shipped one, or a clinic's CSV, TOML or JSON file.

    Parameters
    ----------
    path : str or Path, optional
        ``.csv`` / ``.txt`` (two columns, ``#`` comments, optional header ``hu,
        relative_electron_density`` or ``hu, mass_density``), ``.toml`` (``table =
        [[hu, density], ...]``, optional ``source`` and ``quantity``; see
        :mod:`dose_engine._density_files`) or JSON with a ``table`` of [hu, density];
        default: the table shipped in ``dose_engine/data/hu_to_density.json``.

    Raises
    ------
    BeamModelError
        If the file is unreadable or malformed, not monotonic, or gives water (0 HU) a
        density outside 0.85-1.15; the message names the file and the line or row.
    """
    if path is not None and Path(path).suffix.lower() in TEXT_SUFFIXES:
        hu, rho, source, quantity = read_density_text(Path(path))
        return HUTable(hu, rho, source, str(path), quantity)
    data, name = read_json_data(path, _DEFAULT_NAME, what="HU table")
    try:
        rows = np.asarray(data["table"], dtype=float)
    except (KeyError, TypeError, ValueError) as exc:
        raise BeamModelError(
            f"HU table {name}: expected JSON with a 'table' list of [hu, density] rows ({exc})."
        ) from exc
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise BeamModelError(f"HU table {name}: 'table' rows must be [hu, density] pairs.")
    return HUTable(rows[:, 0], rows[:, 1], str(data.get("source", "")), name)


@check_arguments(hu=ARRAY, table=optional("dose_engine._density:HUTable"))
def hu_to_density(hu, table: HUTable | None = None):
    """Relative electron density of each voxel.

    Parameters
    ----------
    hu : (nz, ny, nx) array (any array-API namespace), HU
    table : HUTable, optional
        Default: :func:`load_hu_table` ``()``.

    Returns
    -------
    density : array like ``hu``, float32, relative to water; clamped to the table's ends.

    Examples
    --------
    Air, water and dense bone with the default table:

    >>> import numpy as np
    >>> from dose_engine import hu_to_density
    >>> [round(float(d), 3) for d in hu_to_density(np.array([-1000.0, 0.0, 1000.0]))]
    [0.001, 1.0, 1.6]
    """
    xp = array_namespace(hu)
    table = load_hu_table() if table is None else table
    hu_t = np.asarray(table.hu, dtype=float)
    rho_t = np.asarray(table.density, dtype=float)
    n = hu_t.size
    # clamped to the table's ends (a NaN HU is taken as below it)
    h = xp.astype(hu, xp.float32)
    h = xp.where(xp.isnan(h), xp.asarray(-np.inf, dtype=xp.float32), h)
    h = xp.clip(h, float(hu_t[0]), float(hu_t[-1]))
    # each voxel's segment: k starts at or below its HU (0 below the table, n at or above
    # its end), then the segment's start HU, start density and slope, each rounded to
    # float32 as the arithmetic ``r0 + (h - h0) * slope`` of a float32 array rounds them
    # (one lookup instead of a pass over the CT per segment; the same density to the bit)
    h0 = np.zeros(n + 1, dtype=np.float32)
    r0 = np.zeros(n + 1, dtype=np.float32)
    slope = np.zeros(n + 1, dtype=np.float32)
    h0[1:n] = hu_t[:-1]
    r0[:n] = np.concatenate([rho_t[:1], rho_t[:-1]])
    r0[n] = rho_t[-1]
    slope[1:n] = np.diff(rho_t) / np.diff(hu_t)
    k = xp.searchsorted(xp.asarray(hu_t.astype(np.float32)), xp.reshape(h, (-1,)), side="right")

    def at(values: np.ndarray):
        return xp.reshape(xp.take(xp.asarray(values), k), h.shape)

    return at(r0) + (h - at(h0)) * at(slope)
