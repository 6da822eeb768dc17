"""Arc (VMAT) delivery limits of a machine: the ``[arc]`` table of a machine file.

Every value is per fraction as the linac delivers it: meterset in MU, dose rate in MU/min,
gantry angles in degrees (IEC 61217), leaf travel in mm at the isocentre plane.

Keys of ``[arc]`` (all required when the table is present)
----------------------------------------------------------
``gantry_speed_deg_per_s``
    Maximum gantry speed (e.g. 6 °/s).
``max_dose_rate_mu_per_min``
    Maximum dose rate.
``dose_rate_steps_mu_per_min``
    The dose rates the machine can be set to ((300A,0115) *DoseRateSet*), increasing, the
    last one equal to ``max_dose_rate_mu_per_min``.
``continuous_dose_rate``
    ``true``: during delivery the dose rate varies continuously below the set rate
    (Varian-style); ``false``: the machine delivers only at the listed rates (binned dose
    rates, Elekta-style), so the lowest step is also the lowest dose rate.
``leaf_speed_mm_per_s``
    Maximum MLC leaf speed (e.g. 25 mm/s Millennium-style, 35 mm/s Agility-style).
``min_mu_per_control_point``
    Smallest meterset between two control points while the beam is on.
``control_point_spacing_deg``
    ``[min, max]`` gantry rotation between neighbouring control points of an arc.
``collimator_angle_deg``
    Collimator angle of arcs unless a protocol says otherwise.

A machine file without ``[arc]`` is a valid machine for static beams;
:meth:`rtplan.Machine.require_arc_limits` refuses it for arcs, naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MachineError

__all__ = ["ARC_KEYS", "ArcLimits", "parse_arc_limits"]

#: The keys of a machine file's ``[arc]`` table, in the order they are documented.
ARC_KEYS = (
    "gantry_speed_deg_per_s",
    "max_dose_rate_mu_per_min",
    "dose_rate_steps_mu_per_min",
    "continuous_dose_rate",
    "leaf_speed_mm_per_s",
    "min_mu_per_control_point",
    "control_point_spacing_deg",
    "collimator_angle_deg",
)


@dataclass(frozen=True)
class ArcLimits:
    """Delivery limits of arcs and dynamic beams (see the module docstring for each key).

    Parameters
    ----------
    gantry_speed_deg_per_s : float, degrees/s
    max_dose_rate_mu_per_min : float, MU/min
    dose_rate_steps_mu_per_min : tuple of float, MU/min
    continuous_dose_rate : bool
    leaf_speed_mm_per_s : float, mm/s
    min_mu_per_control_point : float, MU
    control_point_spacing_deg : (2,) tuple of float, degrees
    collimator_angle_deg : float, degrees

    Raises
    ------
    MachineError
        A speed, rate or spacing that is not positive and finite, steps that do not
        increase or do not end at the maximum dose rate, a spacing ``min > max``, a
        collimator angle outside [0, 360).
    """

    gantry_speed_deg_per_s: float
    max_dose_rate_mu_per_min: float
    dose_rate_steps_mu_per_min: tuple[float, ...]
    continuous_dose_rate: bool
    leaf_speed_mm_per_s: float
    min_mu_per_control_point: float
    control_point_spacing_deg: tuple[float, float]
    collimator_angle_deg: float

    def __post_init__(self) -> None:
        for key in ("gantry_speed_deg_per_s", "max_dose_rate_mu_per_min", "leaf_speed_mm_per_s"):
            v = float(getattr(self, key))
            if not (math.isfinite(v) and v > 0):
                raise MachineError(f"`arc.{key}` must be a finite number > 0; got {v!r}.")
            object.__setattr__(self, key, v)
        steps = tuple(float(v) for v in self.dose_rate_steps_mu_per_min)
        if (
            not steps
            or any(not (math.isfinite(v) and v > 0) for v in steps)
            or any(b <= a for a, b in zip(steps, steps[1:], strict=False))
            or abs(steps[-1] - self.max_dose_rate_mu_per_min) > 1e-9
        ):
            raise MachineError(
                "`arc.dose_rate_steps_mu_per_min` must be positive, increasing and end at "
                f"`arc.max_dose_rate_mu_per_min` ({self.max_dose_rate_mu_per_min:g}); got "
                f"{list(steps)!r}."
            )
        object.__setattr__(self, "dose_rate_steps_mu_per_min", steps)
        object.__setattr__(self, "continuous_dose_rate", bool(self.continuous_dose_rate))
        mu = float(self.min_mu_per_control_point)
        if not (math.isfinite(mu) and mu >= 0):
            raise MachineError(f"`arc.min_mu_per_control_point` must be ≥ 0; got {mu!r}.")
        object.__setattr__(self, "min_mu_per_control_point", mu)
        lo, hi = (float(v) for v in self.control_point_spacing_deg)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise MachineError(
                "`arc.control_point_spacing_deg` must be [min, max] with 0 < min ≤ max; got "
                f"{list(self.control_point_spacing_deg)!r}."
            )
        object.__setattr__(self, "control_point_spacing_deg", (lo, hi))
        coll = float(self.collimator_angle_deg)
        if not (math.isfinite(coll) and 0.0 <= coll < 360.0):
            raise MachineError(f"`arc.collimator_angle_deg` must be in [0, 360); got {coll!r}.")
        object.__setattr__(self, "collimator_angle_deg", coll)

    @property
    def min_dose_rate_mu_per_min(self) -> float:
        """Lowest dose rate the delivery can use while the beam is on, MU/min: 0 with a
        continuous dose rate, else the lowest step."""
        return 0.0 if self.continuous_dose_rate else self.dose_rate_steps_mu_per_min[0]


def parse_arc_limits(table: Mapping[str, Any], *, source: str) -> ArcLimits:
    """Build :class:`ArcLimits` from a machine file's ``[arc]`` table.

    Parameters
    ----------
    table : mapping
        The parsed ``[arc]`` table.
    source : str
        How messages name the file.

    Raises
    ------
    MachineError
        A key is missing, unknown, of the wrong type or out of range; the message names
        ``source`` and the key.
    """
    unknown = sorted(set(table) - set(ARC_KEYS))
    if unknown:
        raise MachineError(
            f"Machine file {source}: unknown key(s) {', '.join(f'`arc.{k}`' for k in unknown)}; "
            f"expected {', '.join(ARC_KEYS)}."
        )
    missing = [k for k in ARC_KEYS if k not in table]
    if missing:
        raise MachineError(f"Machine file {source}: missing key `arc.{missing[0]}`.")

    def number(key: str) -> float:
        v = table[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MachineError(f"Machine file {source}: `arc.{key}` must be a number; got {v!r}.")
        return float(v)

    def numbers(key: str, length: int | None = None) -> tuple[float, ...]:
        v = table[key]
        ok = isinstance(v, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
        )
        if not ok or (length is not None and len(v) != length):
            what = f"{length} numbers" if length else "a list of numbers"
            raise MachineError(f"Machine file {source}: `arc.{key}` must be {what}; got {v!r}.")
        return tuple(float(x) for x in v)

    if not isinstance(table["continuous_dose_rate"], bool):
        raise MachineError(
            f"Machine file {source}: `arc.continuous_dose_rate` must be true or false; got "
            f"{table['continuous_dose_rate']!r}."
        )
    try:
        return ArcLimits(
            gantry_speed_deg_per_s=number("gantry_speed_deg_per_s"),
            max_dose_rate_mu_per_min=number("max_dose_rate_mu_per_min"),
            dose_rate_steps_mu_per_min=numbers("dose_rate_steps_mu_per_min"),
            continuous_dose_rate=table["continuous_dose_rate"],
            leaf_speed_mm_per_s=number("leaf_speed_mm_per_s"),
            min_mu_per_control_point=number("min_mu_per_control_point"),
            control_point_spacing_deg=numbers("control_point_spacing_deg", 2),
            collimator_angle_deg=number("collimator_angle_deg"),
        )
    except MachineError as exc:
        raise MachineError(f"Machine file {source}: {exc}") from None
