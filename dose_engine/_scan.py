"""One measured water-tank scan (:class:`MeasuredScan`), whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CURVES", "MeasuredScan", "field_label", "point_label", "sorted_unique"]

CURVES = ("PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE", "DIAGONAL_PROFILE")


@dataclass(frozen=True)
class MeasuredScan:
    """One water-tank scan.

    Attributes
    ----------
    curve : {"PDD", "INPLANE_PROFILE", "CROSSPLANE_PROFILE", "DIAGONAL_PROFILE"}
    field_mm : float
        Field side along BLD x (crossplane, ``FIELD_CROSSPLANE``) at the isocentre, mm.
    ssd_mm : float
    depth_mm : float or None
        Scan depth of a profile (None for a PDD), mm.
    position_mm : (n,) ndarray of float64
        Depth (PDD) or off-axis position at the scan depth (profiles; along a diagonal the
        signed distance from the central axis along ``direction``), mm, increasing.
    value : (n,) ndarray of float64
        Detector reading (relative).
    field_inplane_mm : float
        Field side along BLD y (inplane, ``FIELD_INPLANE``), mm; equals ``field_mm`` when the
        header lacks it.
    offaxis_mm : float
        Position of the profile line along the other lateral axis (``SCAN_OFFAXIS_INPLANE``
        of a crossplane profile, ``SCAN_OFFAXIS_CROSSPLANE`` of an inplane one), mm.
    sad_mm : float
        Source-axis distance (``ISOCENTER``), mm.
    energy_mv : float or None
        Nominal energy (``ENERGY``), MV.
    source : str
        ``"<file>, scan <n>"``, for messages.
    direction : (float, float) or None
        Unit vector of a ``DIAGONAL_PROFILE`` line in BLD (x, y), x component > 0; None for
        other curves.
    """

    curve: str
    field_mm: float
    ssd_mm: float
    depth_mm: float | None
    position_mm: np.ndarray
    value: np.ndarray
    field_inplane_mm: float | None = None
    offaxis_mm: float = 0.0
    sad_mm: float = 1000.0
    energy_mv: float | None = None
    source: str = ""
    direction: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.field_inplane_mm is None:
            object.__setattr__(self, "field_inplane_mm", self.field_mm)

    @property
    def field(self) -> tuple[float, float]:
        """``(x, y)`` field sides at the isocentre (crossplane, inplane), mm."""
        inplane = self.field_mm if self.field_inplane_mm is None else self.field_inplane_mm
        return (float(self.field_mm), float(inplane))


def field_label(field: tuple[float, float]) -> str:
    """``"100x100"`` for a ``(x, y)`` field in mm."""
    return f"{field[0]:g}x{field[1]:g}"


def point_label(point: dict) -> str:
    """``"100x100 SSD 900 depth 100mm"`` for an ``absolute_dose`` entry."""
    return f"{field_label(point['field_mm'])} SSD {point['ssd_mm']:g} depth {point['depth_mm']:g}mm"


def sorted_unique(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted increasing; readings at a repeated position averaged."""
    pos, inverse, counts = np.unique(arr[:, 0], return_inverse=True, return_counts=True)
    if pos.size == arr.shape[0]:
        order = np.argsort(arr[:, 0])
        return arr[order, 0], arr[order, 1]
    return pos, np.bincount(inverse, weights=arr[:, 1]) / counts
