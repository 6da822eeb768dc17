"""Planning goals: metric strings, goal specifications and their evaluation on a dose.

Metric grammar
--------------
Case-insensitive; spaces and underscores are ignored (``"D_95 %"`` is ``"D95%"``).

=================  ===========================================================  =========
metric             meaning                                                      quantity
=================  ===========================================================  =========
``D95%``, ``D95``  minimum dose to the hottest 95 % of the volume (a bare          dose
                   number is a percentage, as in AAPM TG-119)
``D2cc``           minimum dose to the hottest 2 cm³                              dose
``Dmean``          volume-weighted mean dose                                      dose
``Dmax``           near-maximum ``D0.03cc``                                       dose
``Dmin``           minimum voxel dose                                             dose
``V20Gy``          volume receiving at least 20 Gy (``V2000cGy`` also accepted)   volume
``V95%Rx``         volume receiving at least 95 % of the prescription             volume
``HI``             ICRU 83 homogeneity index (D2 − D98)/D50                       index
``CI``             Paddick conformity index at the prescription                   index
``GI``             Paddick–Lippitz gradient index                                 index
=================  ===========================================================  =========

Levels carry a unit: dose metrics take ``Gy``, ``cGy`` (stored as Gy) or ``%`` (of the
prescription); volume metrics ``%`` (of the structure) or ``cc``; indices none.  DVH
conventions (partial voxels, interpolation) are those of :mod:`rtplan.evaluation._dvh`.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from dose_engine import Grid

from .._internal.arguments import NUMBER, TEXT, check_arguments, require_instance
from ..errors import InputError, ProtocolError
from ._dvh import DMAX_VOLUME_CC, DVH, DVHCollection, check_dose_values, dvh
from ._metrics import (
    check_prescription_gy,
    gradient_index,
    homogeneity_index,
    paddick_conformity_index,
)

__all__ = [
    "goal_dose_level_gy",
    "Goal",
    "GoalResult",
    "GoalTable",
    "Metric",
    "evaluate_goals",
    "parse_goal",
    "parse_metric",
]

MetricKind = Literal[
    "dose_at_volume_percent",
    "dose_at_volume_cc",
    "mean",
    "max",
    "min",
    "volume_at_dose_gy",
    "volume_at_dose_rx_percent",
    "hi",
    "ci",
    "gi",
]
Comparison = Literal["<=", ">="]
GoalStatus = Literal["pass", "acceptable", "fail"]

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_RE_D_PERCENT = re.compile(rf"^D{_NUM}%?$", re.I)
_RE_D_CC = re.compile(rf"^D{_NUM}CC$", re.I)
_RE_V_GY = re.compile(rf"^V{_NUM}(C?GY)$", re.I)
_RE_V_RX = re.compile(rf"^V{_NUM}%(RX)?$", re.I)
_NAMED = {"DMEAN": "mean", "DMAX": "max", "DMIN": "min", "HI": "hi", "CI": "ci", "GI": "gi"}

_OPS = {
    "<=": "<=",
    "≤": "<=",
    "<": "<=",
    "max": "<=",
    ">=": ">=",
    "≥": ">=",
    ">": ">=",
    "min": ">=",
}
_UNITS = {"gy": "Gy", "cgy": "cGy", "%": "%", "cc": "cc", "cm3": "cc", "cm³": "cc", "": ""}


@dataclass(frozen=True)
class Metric:
    """A parsed metric string (see the module's grammar table).

    Attributes
    ----------
    text : str
        Canonical spelling, e.g. ``"D95%"``, ``"D2cc"``, ``"V20Gy"``, ``"Dmax"``.
    kind : str
        One of ``dose_at_volume_percent``, ``dose_at_volume_cc``, ``mean``, ``max``,
        ``min``, ``volume_at_dose_gy``, ``volume_at_dose_rx_percent``, ``hi``, ``ci``, ``gi``.
    value : float or None
        The number in the metric (95 for D95%, 20 for V20Gy, in Gy even if written in cGy).
    """

    text: str
    kind: MetricKind
    value: float | None = None

    @property
    def quantity(self) -> Literal["dose", "volume", "index"]:
        """What the metric measures: ``"dose"``, ``"volume"`` or ``"index"``."""
        if self.kind.startswith("volume"):
            return "volume"
        if self.kind in ("hi", "ci", "gi"):
            return "index"
        return "dose"

    def __str__(self) -> str:
        return self.text


def _fmt(x: float) -> str:
    return f"{x:g}"


@check_arguments(text=TEXT)
def parse_metric(text: str, *, goal: str = "") -> Metric:
    """Parse a metric string such as ``"D95%"``, ``"D2cc"``, ``"V20Gy"`` or ``"Dmax"``.

    Parameters
    ----------
    text : str
        The metric (grammar in the module docstring).
    goal : str, optional
        Description of the goal being parsed, named in error messages.

    Returns
    -------
    Metric

    Raises
    ------
    ProtocolError
        The string is not a known metric; the message names the goal and the bad token
        and lists the accepted forms.

    Examples
    --------
    >>> parse_metric("D95").text, parse_metric("v2000cGy").value
    ('D95%', 20.0)
    """
    where = f" in goal {goal}" if goal else ""
    if not isinstance(text, str):
        raise ProtocolError(f"Metric{where} must be a string like 'D95%'; got {text!r}.")
    t = re.sub(r"[\s_]+", "", text)
    accepted = (
        "D<x>% (or D<x>), D<x>cc, Dmean, Dmax (=D0.03cc), Dmin, V<x>Gy, V<x>cGy, "
        "V<x>%Rx, HI, CI, GI"
    )
    if t.upper() in _NAMED:
        kind = _NAMED[t.upper()]
        canon = {"mean": "Dmean", "max": "Dmax", "min": "Dmin"}.get(kind, kind.upper())
        return Metric(canon, kind)
    if m := _RE_D_CC.match(t):
        v = float(m.group(1))
        return Metric(f"D{_fmt(v)}cc", "dose_at_volume_cc", v)
    if m := _RE_D_PERCENT.match(t):
        v = float(m.group(1))
        if v > 100:
            raise ProtocolError(
                f"Metric '{text}'{where}: the volume {_fmt(v)} % exceeds 100 %; "
                "write D<x>cc for an absolute volume."
            )
        return Metric(f"D{_fmt(v)}%", "dose_at_volume_percent", v)
    if m := _RE_V_GY.match(t):
        v = float(m.group(1)) * (0.01 if m.group(2).upper() == "CGY" else 1.0)
        return Metric(f"V{_fmt(v)}Gy", "volume_at_dose_gy", v)
    if m := _RE_V_RX.match(t):
        v = float(m.group(1))
        return Metric(f"V{_fmt(v)}%Rx", "volume_at_dose_rx_percent", v)
    # find the offending token for the message
    bad = t
    if t[:1].upper() in ("D", "V") and len(t) > 1:
        m = re.match(rf"^[DV]{_NUM}(.*)$", t, re.I)
        bad = m.group(2) if (m and m.group(2)) else t
    hint = ""
    if re.fullmatch(rf"V{_NUM}", t, re.I):
        hint = f" A volume metric needs its dose unit: {t}Gy, {t}cGy or {t}%Rx."
    raise ProtocolError(
        f"Cannot parse metric '{text}'{where}: unexpected token '{bad}'.{hint} "
        f"Accepted forms: {accepted}."
    )


def _norm_unit(unit: Any, *, goal: str) -> str:
    key = "" if unit is None else str(unit).strip().lower()
    if key not in _UNITS:
        raise ProtocolError(
            f"Goal {goal}: unknown level unit '{unit}'; expected one of Gy, cGy, %, cc, "
            "or none for HI/CI/GI."
        )
    return _UNITS[key]


@dataclass(frozen=True)
class Goal:
    """One planning goal: ``<metric> of <structure> <comparison> <level> <unit>``.

    Parameters
    ----------
    structure : str
        Structure name as in the RT-STRUCT (3006,0026) *ROIName*.
    metric : str or Metric
        Metric string (grammar in the module docstring); stored parsed as :class:`Metric`.
    comparison : {"<=", ">="}
        ``"<="`` for an upper limit (also accepted: ``"≤"``, ``"<"``, ``"max"``),
        ``">="`` for a lower limit (``"≥"``, ``">"``, ``"min"``).
    level : float
        The (ideal) level, in ``unit``.
    unit : {"Gy", "cGy", "%", "cc", ""}
        Unit of ``level``: for dose metrics Gy, cGy (converted to Gy) or % of the
        prescription; for volume metrics % of the structure or cc; "" for indices.
        Defaults: Gy for dose metrics, % for volume metrics, "" for indices.
    priority : int, default 1
        1 is the most important; used by the planner and shown in the tables.
    acceptable_level : float, optional
        A looser level, same unit: a goal missing ``level`` but meeting this one is
        ``"acceptable"`` rather than ``"fail"``.
    label : str, optional
        Free text shown in tables.

    Raises
    ------
    ProtocolError
        Unknown metric, unit or comparison, a unit that does not fit the metric, a
        non-finite level, or an acceptable level stricter than the ideal one.  The
        message names the goal.

    Examples
    --------
    >>> Goal("PTV", "D95%", ">=", 60.0)
    Goal('PTV' D95% >= 60 Gy)
    >>> Goal("Cord", "Dmax", "<=", 4500, unit="cGy").level
    45.0
    """

    structure: str
    metric: Metric
    comparison: Comparison
    level: float
    unit: str | None = None
    priority: int = 1
    acceptable_level: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        desc = (
            f"'{self.structure} {getattr(self.metric, 'text', self.metric)} "
            f"{self.comparison} {self.level}{' ' + self.unit if self.unit else ''}'"
        )
        if not isinstance(self.structure, str) or not self.structure.strip():
            raise ProtocolError(f"Goal {desc}: `structure` must be a non-empty name.")
        metric = (
            self.metric if isinstance(self.metric, Metric) else parse_metric(self.metric, goal=desc)
        )
        op = _OPS.get(str(self.comparison).strip().lower())
        if op is None:
            raise ProtocolError(
                f"Goal {desc}: unknown comparison '{self.comparison}'; expected '<=' (max) "
                "or '>=' (min)."
            )
        try:
            level = float(self.level)
        except (TypeError, ValueError):
            raise ProtocolError(f"Goal {desc}: level '{self.level}' is not a number.") from None
        if not math.isfinite(level):
            raise ProtocolError(f"Goal {desc}: level must be finite; got {self.level!r}.")
        default = {"dose": "Gy", "volume": "%", "index": ""}[metric.quantity]
        unit = default if self.unit is None else _norm_unit(self.unit, goal=desc)
        allowed = {"dose": ("Gy", "cGy", "%"), "volume": ("%", "cc"), "index": ("",)}
        if unit not in allowed[metric.quantity]:
            raise ProtocolError(
                f"Goal {desc}: unit '{unit or 'none'}' does not fit the {metric.quantity} "
                f"metric {metric.text}; use one of "
                f"{', '.join(u or 'none' for u in allowed[metric.quantity])}."
            )
        acc = self.acceptable_level
        if acc is not None:
            try:
                acc = float(acc)
            except (TypeError, ValueError):
                raise ProtocolError(
                    f"Goal {desc}: acceptable level '{acc}' is not a number."
                ) from None
        if unit == "cGy":
            unit, level = "Gy", level / 100.0
            acc = None if acc is None else acc / 100.0
        if acc is not None and ((op == "<=" and acc < level) or (op == ">=" and acc > level)):
            raise ProtocolError(
                f"Goal {desc}: the acceptable level {_fmt(acc)} is stricter than the ideal "
                f"level {_fmt(level)}; for a '{op}' goal it must be "
                f"{'at least' if op == '<=' else 'at most'} the ideal level."
            )
        try:
            priority = int(self.priority)
        except (TypeError, ValueError):
            raise ProtocolError(
                f"Goal {desc}: priority '{self.priority}' is not an integer."
            ) from None
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "comparison", op)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "acceptable_level", acc)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "structure", self.structure.strip())

    @property
    def text(self) -> str:
        """Readable one-line form, e.g. ``"PTV D95% >= 60 Gy"``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.structure} {self.metric.text} {self.comparison} {_fmt(self.level)}{unit}"

    def __repr__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"Goal({self.structure!r} {self.metric.text} {self.comparison} "
            f"{_fmt(self.level)}{unit})"
        )

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any], *, dose_unit: str = "Gy") -> Goal:
        """Build a goal from a protocol table entry (as read from TOML).

        Keys: ``structure``, ``metric``, then either ``min`` or ``max`` (the level; or
        ``comparison`` + ``level``), and optionally ``unit``, ``priority``,
        ``acceptable``, ``label``.  A level without ``unit`` on a dose metric is in
        ``dose_unit``; on a volume metric in %.

        Examples
        --------
        >>> Goal.from_mapping({"structure": "CentralTarget", "metric": "D99", "min": 5000},
        ...                   dose_unit="cGy")
        Goal('CentralTarget' D99% >= 50 Gy)
        """
        desc = ", ".join(f"{k}={v!r}" for k, v in spec.items())
        desc = f"{{{desc}}}"
        known = {
            "structure",
            "metric",
            "min",
            "max",
            "comparison",
            "level",
            "unit",
            "priority",
            "acceptable",
            "label",
        }
        extra = set(spec) - known
        if extra:
            raise ProtocolError(
                f"Goal {desc}: unknown key(s) {', '.join(sorted(extra))}; accepted keys are "
                f"{', '.join(sorted(known))}."
            )
        for key in ("structure", "metric"):
            if key not in spec:
                raise ProtocolError(f"Goal {desc}: missing key '{key}'.")
        given = [k for k in ("min", "max", "level") if k in spec]
        if len(given) != 1 or ("level" in spec) != ("comparison" in spec):
            raise ProtocolError(
                f"Goal {desc}: give exactly one of 'min = <level>', 'max = <level>' or "
                "'comparison' with 'level'."
            )
        key = given[0]
        comparison = {"min": ">=", "max": "<="}.get(key, spec.get("comparison"))
        metric = parse_metric(spec["metric"], goal=desc)
        unit = spec.get("unit")
        if unit is None and metric.quantity == "dose":
            unit = dose_unit
        return cls(
            structure=spec["structure"],
            metric=metric,
            comparison=comparison,
            level=spec[key],
            unit=unit,
            priority=spec.get("priority", 1),
            acceptable_level=spec.get("acceptable"),
            label=str(spec.get("label", "")),
        )


_RE_GOAL = re.compile(
    r"^\s*(?P<structure>.+?)\s*[:\s]\s*(?P<metric>[A-Za-z][\w.%]*)\s*"
    r"(?P<op><=|>=|≤|≥|<|>)\s*(?P<level>[-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(?P<unit>[a-zA-Z%³0-9]*)"
    r"\s*(?:\(\s*acceptable\s+(?P<acc>[-+]?\d+(?:\.\d*)?)\s*\w*%?\s*\))?\s*$"
)


@check_arguments(text=TEXT)
def parse_goal(text: str, *, priority: int = 1) -> Goal:
    """Parse a one-line goal such as ``"PTV D95% >= 60 Gy"``.

    Form: ``<structure>[:] <metric> <op> <level> [<unit>] [(acceptable <level>)]``; the
    structure name may contain spaces when followed by a colon (``"Parotid L: Dmean <= 26
    Gy"``).

    Raises
    ------
    ProtocolError
        The line does not follow the form, or the goal is invalid (see :class:`Goal`).

    Examples
    --------
    >>> parse_goal("Rectum: V70Gy <= 15 % (acceptable 20)").acceptable_level
    20.0
    """
    if not isinstance(text, str):
        raise ProtocolError(f"Goal must be a string like 'PTV D95% >= 60 Gy'; got {text!r}.")
    if ":" in text:
        structure, rest = text.split(":", 1)
        m = _RE_GOAL.match(f"x {rest}")
    else:
        structure, m = None, _RE_GOAL.match(text)
    if m is None:
        raise ProtocolError(
            f"Cannot parse goal '{text}': expected '<structure> <metric> <= or >= <level> "
            "<unit>', e.g. 'PTV D95% >= 60 Gy' or 'Parotid L: Dmean <= 26 Gy'."
        )
    return Goal(
        structure=(structure if structure is not None else m.group("structure")).strip(),
        metric=m.group("metric"),
        comparison=m.group("op"),
        level=m.group("level"),
        unit=m.group("unit") or None,
        priority=priority,
        acceptable_level=m.group("acc"),
    )


@dataclass(frozen=True)
class GoalResult:
    """The outcome of one goal on one dose (frozen).

    Attributes
    ----------
    goal : Goal
    value : float
        Achieved value in the goal's unit (Gy, % or cc; dimensionless for indices).
    status : {"pass", "acceptable", "fail"}
        ``"acceptable"`` when only the acceptable level is met.  A value within 1 ppm
        (relative) of a level meets it, so float32 rounding of a dose normalised exactly
        to a goal does not fail that goal.
    """

    goal: Goal
    value: float
    status: GoalStatus

    @property
    def passed(self) -> bool:
        """True when the ideal or the acceptable level is met."""
        return self.status != "fail"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record of the goal and its outcome."""
        g = self.goal
        return {
            "structure": g.structure,
            "metric": g.metric.text,
            "comparison": g.comparison,
            "level": g.level,
            "acceptable_level": g.acceptable_level,
            "unit": g.unit,
            "priority": g.priority,
            "label": g.label,
            "value": self.value,
            "status": self.status,
            "passed": self.passed,
        }


def _goal_row(
    g: Goal,
    acceptable: str,
    achieved: str,
    priority: str,
    result: str,
    note: str,
    *,
    css: str,
    background: str,
) -> str:
    """One ``<tr>`` of :meth:`GoalTable._repr_html_` (plain-text cells, escaped here)."""
    u = f" {g.unit}" if g.unit else ""
    cells = [g.structure, g.metric.text, g.comparison, f"{_fmt(g.level)}{u}", acceptable]
    cells += [achieved, priority]
    tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
    return (
        f'<tr class="{css}" style="background:{background}">{tds}'
        f"<td><b>{html.escape(result)}</b></td><td>{html.escape(note)}</td></tr>"
    )


_WITHIN = {True: "within the reference", False: "beyond the reference"}
_COLOURS = {"pass": "#c8e6c9", "acceptable": "#fff3c4", "fail": "#ffcdd2"}


@dataclass(frozen=True, repr=False)
class GoalTable:
    """Results of :func:`evaluate_goals`, in goal order (frozen, iterable).

    Attributes
    ----------
    results : tuple of GoalResult
    dvhs : DVHCollection
        The DVHs the values were read from.
    prescription_gy : float or None
    not_evaluated : tuple of (Goal, str)
        Goals that could not be evaluated and why (e.g. an optional structure absent
        from the patient); listed in every table, never counted as met or failed.
    reported : tuple of GoalResult
        Values reported beside a reference level (a protocol's ``[[reported]]``), never
        counted as met or failed.
    """

    results: tuple[GoalResult, ...]
    dvhs: DVHCollection = field(default_factory=DVHCollection)
    prescription_gy: float | None = None
    not_evaluated: tuple[tuple[Goal, str], ...] = ()
    reported: tuple[GoalResult, ...] = ()

    def __iter__(self) -> Iterator[GoalResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> GoalResult:
        return self.results[i]

    @property
    def all_passed(self) -> bool:
        """True when no goal has status ``"fail"``."""
        return all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        """Number of goals with status ``"fail"``."""
        return sum(not r.passed for r in self.results)

    def as_records(self) -> list[dict[str, Any]]:
        """One :meth:`GoalResult.as_dict` per evaluated goal."""
        return [r.as_dict() for r in self.results]

    def not_evaluated_records(self) -> list[dict[str, Any]]:
        """One record per goal not evaluated: the goal's fields, ``"status":
        "not_evaluated"``, ``"value": None``, ``"passed": None`` and the ``"reason"``."""
        out = []
        for g, reason in self.not_evaluated:
            rec = GoalResult(g, float("nan"), "fail").as_dict()
            rec.update(value=None, status="not_evaluated", passed=None, reason=reason)
            out.append(rec)
        return out

    def reported_records(self) -> list[dict[str, Any]]:
        """One record per reported value: :meth:`GoalResult.as_dict` with ``"status":
        "reported"``, ``"passed": None`` and ``"within_reference"`` (bool)."""
        out = []
        for r in self.reported:
            rec = r.as_dict()
            rec.update(status="reported", passed=None, within_reference=r.status == "pass")
            out.append(rec)
        return out

    def summary_line(self) -> str:
        """E.g. ``"8/9 goals met, 1 not evaluated: Parotid_L Dmean <= 26 Gy (...)"``."""
        n = len(self.results)
        line = f"{n - self.n_failed}/{n} goals met"
        if self.not_evaluated:
            listing = "; ".join(f"{g.text} ({why})" for g, why in self.not_evaluated)
            line += f", {len(self.not_evaluated)} not evaluated: {listing}"
        return line

    def __repr__(self) -> str:
        lines = [f"GoalTable: {self.summary_line()}"]
        for r in self.results:
            u = f" {r.goal.unit}" if r.goal.unit else ""
            lines.append(
                f"  [{r.status.upper():>10}] P{r.goal.priority} {r.goal.text:<40} "
                f"achieved {r.value:.4g}{u}{'  (' + r.goal.label + ')' if r.goal.label else ''}"
            )
        for g, why in self.not_evaluated:
            lines.append(f"  [NOT EVALUATED] P{g.priority} {g.text:<40} {why}")
        for r in self.reported:
            u = f" {r.goal.unit}" if r.goal.unit else ""
            lines.append(
                f"  [  REPORTED]    {r.goal.text:<40} achieved {r.value:.4g}{u}"
                f"  (reference, not a goal: {_WITHIN[r.status == 'pass']})"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for r in self.results:
            g = r.goal
            u = f" {g.unit}" if g.unit else ""
            acc = "" if g.acceptable_level is None else f"{_fmt(g.acceptable_level)}{u}"
            rows.append(
                _goal_row(
                    g,
                    acc,
                    f"{r.value:.4g}{u}",
                    str(g.priority),
                    r.status.upper(),
                    g.label,
                    css=f"goal-{r.status}",
                    background=_COLOURS[r.status],
                )
            )
        for g, why in self.not_evaluated:
            rows.append(
                _goal_row(
                    g,
                    "",
                    "—",
                    str(g.priority),
                    "NOT EVALUATED",
                    why,
                    css="goal-not-evaluated",
                    background="#e0e0e0",
                )
            )
        for r in self.reported:
            u = f" {r.goal.unit}" if r.goal.unit else ""
            rows.append(
                _goal_row(
                    r.goal,
                    "",
                    f"{r.value:.4g}{u}",
                    "—",
                    f"REPORTED ({_WITHIN[r.status == 'pass']})",
                    r.goal.label,
                    css="goal-reported",
                    background="#eeeeee",
                )
            )
        heads = [
            "Structure",
            "Metric",
            "",
            "Goal",
            "Acceptable",
            "Achieved",
            "Priority",
            "Result",
            "Note",
        ]
        th = "".join(f"<th>{h}</th>" for h in heads)
        cap = html.escape(self.summary_line())
        return (
            f'<table class="rtplan-goals"><caption>{cap}</caption>'
            f"<thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )


#: Relative tolerance of the goal comparison: a value within 1 ppm of the level meets it, so
#: a dose normalised to a goal exactly and stored as float32 is not failed by rounding.
GOAL_RTOL = 1e-6


def _status(goal: Goal, value: float) -> GoalStatus:
    tol = GOAL_RTOL * max(1.0, abs(goal.level))

    def meets(level: float) -> bool:
        return value <= level + tol if goal.comparison == "<=" else value >= level - tol

    if meets(goal.level):
        return "pass"
    if goal.acceptable_level is not None and meets(goal.acceptable_level):
        return "acceptable"
    return "fail"


def _occupancy_of(obj, grid, name: str) -> np.ndarray:
    if hasattr(obj, "occupancy"):
        return np.asarray(obj.occupancy(grid))
    arr = np.asarray(obj)
    if arr.shape != tuple(grid.shape):
        raise InputError(
            f"Occupancy of structure '{name}' has shape {arr.shape} but the dose grid is "
            f"{tuple(grid.shape)}; rasterise it with structure.occupancy(dose_grid)."
        )
    return arr


def evaluate_goals(
    dose_gy,
    structures: Mapping[str, Any],
    goals: Sequence[Goal],
    grid,
    *,
    prescription_gy: float | None = None,
    body: str | None = None,
    bin_width_gy: float = 0.01,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> GoalTable:
    """Evaluate planning goals on a dose distribution.

    Parameters
    ----------
    dose_gy : (Z, Y, X) array_like of float, Gy
        Total plan dose at the voxel centres of ``grid``.
    structures : mapping of str to (Z, Y, X) ndarray or Structure
        Fractional occupancy per structure name on ``grid`` (or objects with an
        ``occupancy(grid)`` method, e.g. :class:`rtplan.Structure`).
    goals : sequence of Goal
    grid : dose_engine.Grid
        The dose grid (gives the voxel volume and shape).
    prescription_gy : float, optional, Gy
        Needed by goals in % of the prescription, ``V<x>%Rx``, ``CI`` and ``GI``.
    body : str, optional
        Structure in which the isodose volumes of CI/GI are measured; default the whole
        dose grid.
    bin_width_gy : float, default 0.01
        Bin width of the DVH arrays kept in ``GoalTable.dvhs`` (metrics do not depend on it).
    colors : mapping of str to (3,) tuple of int, optional
        Display colours per structure; taken from ``Structure.color_rgb`` when available.

    Returns
    -------
    GoalTable

    Raises
    ------
    ProtocolError
        A goal names a structure that is not given (the message lists those available), or
        needs a prescription that is not given.
    InputError
        The dose does not match ``grid``; it holds a NaN, infinite or negative value; the
        prescription is not a finite positive dose.
    TypeError
        An argument of the wrong type (named).
    """
    require_instance(grid, "grid", Grid, "a dose_engine.Grid (the dose grid)")
    if not isinstance(structures, Mapping):
        raise TypeError(
            f"`structures` must be a mapping of names to structures or occupancy arrays; got "
            f"{type(structures).__name__}."
        )
    if prescription_gy is not None:
        prescription_gy = check_prescription_gy(prescription_gy)
    try:
        dose = np.asarray(dose_gy, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"`dose_gy` must be a numeric (Z, Y, X) array in Gy; got {type(dose_gy).__name__}."
        ) from None
    if dose.shape != tuple(grid.shape):
        raise InputError(
            f"`dose_gy` has shape {dose.shape} but `grid` describes {tuple(grid.shape)} voxels."
        )
    check_dose_values(dose, "`dose_gy`")
    goals = list(goals)
    for g in goals:
        if not isinstance(g, Goal):
            raise ProtocolError(f"`goals` must hold Goal objects; got {g!r}.")
    colors = dict(colors or {})
    vv = grid.voxel_volume_cc
    cache: dict[str, DVH] = {}

    def get_dvh(name: str, goal: Goal | None) -> DVH:
        if name not in cache:
            if name not in structures:
                who = f"Goal '{goal.text}'" if goal else "`body`"
                raise ProtocolError(
                    f"{who} names structure '{name}', which is not in the structure set; "
                    f"available: {', '.join(structures) or 'none'}."
                )
            obj = structures[name]
            color = colors.get(name, getattr(obj, "color_rgb", None))
            cache[name] = dvh(
                dose,
                _occupancy_of(obj, grid, name),
                voxel_volume_cc=vv,
                bin_width_gy=bin_width_gy,
                name=name,
                color_rgb=color,
            )
        return cache[name]

    body_cache: list[DVH] = []

    def get_body() -> DVH:
        if not body_cache:
            if body is not None:
                body_cache.append(get_dvh(body, None))
            else:
                body_cache.append(
                    dvh(
                        dose,
                        np.ones(dose.shape, dtype=np.float32),
                        voxel_volume_cc=vv,
                        bin_width_gy=bin_width_gy,
                        name="dose grid",
                    )
                )
        return body_cache[0]

    def need_rx(goal: Goal) -> float:
        if prescription_gy is None:
            raise ProtocolError(
                f"Goal '{goal.text}' needs the prescription dose; pass `prescription_gy`."
            )
        return float(prescription_gy)

    results = []
    for g in goals:
        d = get_dvh(g.structure, g)
        m = g.metric
        k = m.kind
        if k == "dose_at_volume_percent":
            value = d.dose_at_volume(m.value)
        elif k == "dose_at_volume_cc":
            value = d.dose_at_volume_cc(m.value)
        elif k == "mean":
            value = d.mean_gy
        elif k == "max":
            value = d.dose_at_volume_cc(DMAX_VOLUME_CC)
        elif k == "min":
            value = d.min_gy
        elif k in ("volume_at_dose_gy", "volume_at_dose_rx_percent"):
            level_gy = m.value if k == "volume_at_dose_gy" else m.value / 100.0 * need_rx(g)
            value = d.volume_at_dose(level_gy, percent=(g.unit == "%"))
        elif k == "hi":
            value = homogeneity_index(d)
        elif k == "ci":
            value = paddick_conformity_index(d, get_body(), prescription_gy=need_rx(g))
        else:  # gi
            value = gradient_index(get_body(), prescription_gy=need_rx(g))
        if m.quantity == "dose" and g.unit == "%":
            value = 100.0 * value / need_rx(g)
        results.append(GoalResult(goal=g, value=float(value), status=_status(g, value)))
    return GoalTable(
        results=tuple(results),
        dvhs=DVHCollection(cache),
        prescription_gy=None if prescription_gy is None else float(prescription_gy),
    )


@check_arguments(goal="rtplan.evaluation._goals:Goal", prescription_gy=NUMBER)
def goal_dose_level_gy(goal: Goal, prescription_gy: float) -> float:
    """The dose (Gy) a goal is about: the level of a dose metric (``%`` of Rx converted),
    the dose of a ``V_x`` metric.

    Parameters
    ----------
    goal : Goal
    prescription_gy : float, Gy
        Total prescription dose, for goals in ``%`` of it.

    Returns
    -------
    float, Gy
    """
    kind = goal.metric.kind
    if kind == "volume_at_dose_gy":
        return float(goal.metric.value)
    if kind == "volume_at_dose_rx_percent":
        return float(goal.metric.value) / 100.0 * prescription_gy
    if goal.unit == "%":
        return goal.level / 100.0 * prescription_gy
    return float(goal.level)
