"""The safety layer: plausibility of a protocol, implicit goals, and checks of a plan.

One place decides what is plausible and what is dangerous (``docs/protocols.md``,
"Safety nets"); the settings come from the protocol's ``[safety]`` table
(:class:`rtplan.protocols.SafetySettings`):

- at protocol load, :func:`check_protocol_plausibility` refuses a prescription outside
  the plausible range and a dose goal far above the highest prescription level (e.g. a
  goal typed in cGy), naming the goal;
- :func:`implicit_goals` adds the goals every plan gets without asking: each target's
  floor (``D99%``), an upper limit for targets the protocol leaves without one (on the
  part of the target outside higher-level targets and their transition margin) and the
  global hot spot (body ``D0.03cc``);
- :func:`nto_bands` lists the shells of the normal-tissue objective (dose fall-off from the
  targets' surface) and their caps (planning builds the shells as helper structures);
- after planning, :func:`plan_warnings` turns an optimiser that stopped with a hard goal
  violated, a capped normalisation, an unbalanced beam set, a machine limit the plan
  breaks (:func:`deliverability_warning`) and failed implicit goals into
  :class:`SafetyWarning` records, whose ``message`` is printed by the CLI and written
  verbatim to plan.json and report.html.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from ..evaluation import Goal, goal_dose_level_gy

__all__ = [
    "IMPLICIT_LABEL",
    "SafetyWarning",
    "beam_balance_warning",
    "check_protocol_plausibility",
    "convergence_warning",
    "deliverability_warning",
    "implicit_goals",
    "normalization_warning",
    "nto_bands",
    "plan_warnings",
    "target_helper_names",
]

#: Label prefix of the implicit goals (shown in the goal table, plan.json and the report).
IMPLICIT_LABEL = "implicit"


@dataclass(frozen=True)
class SafetyWarning:
    """One warning of the safety layer.

    Attributes
    ----------
    code : str
        ``"solver_not_converged"``, ``"normalization_cap"``, ``"beam_balance"``,
        ``"implicit_goal"``, ``"solver_switched"`` (a custom term made the planner use
        the other solver, :func:`rtplan.planning.plan_patient`), ``"hu_clamped"`` or
        ``"metal"`` or ``"ct_truncated"`` (:func:`rtplan.safety.ct_calibration_warnings`) or
        ``"custom_term_final_dose"`` (a hard custom term violated on the delivered dose),
        ``"pencil_beam_lung"`` (a pencil-beam final dose of a body with lung) or
        ``"ccc_not_commissioned"`` (``final_algorithm = "auto"`` fell back to the pencil
        beam; :mod:`rtplan.planning._final_algorithm`) or ``"deliverability"`` (the
        plan breaks a limit of its machine, :func:`deliverability_warning`) or
        ``"beam_model_synthetic"`` (a beam computed with a model fitted to synthetic data,
        the shipped 10X and 6FFF; :func:`rtplan.safety.synthetic_model_warnings`).
    message : str
        The sentence shown everywhere (CLI, plan.json, report.html).
    """

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}


# ------------------------------------------------------------------ protocol load
def check_protocol_plausibility(protocol) -> None:
    """Refuse an implausible prescription or goal of ``protocol`` (at load).

    Raises
    ------
    rtplan.errors.ProtocolError
        The total dose or the dose per fraction is outside the ``[safety]`` range, or a
        dose goal (or the dose of a ``V_x`` goal) exceeds ``allow_goal_above_rx_pct`` of
        the highest level; the message names the file, the goal and the key to change.
    """
    s, rx, src = protocol.safety, protocol.prescription, protocol.source
    checks = (
        ("total_dose_gy", rx.total_dose_gy, s.min_total_dose_gy, s.max_total_dose_gy, "total"),
        (
            "dose per fraction",
            rx.dose_per_fraction_gy,
            s.min_dose_per_fraction_gy,
            s.max_dose_per_fraction_gy,
            "dose_per_fraction",
        ),
    )
    for what, value, lo, hi, key in checks:
        if not lo <= value <= hi:
            raise ProtocolError(
                f"Protocol {src}: [prescription] {what} {value:g} Gy is outside the plausible "
                f"range {lo:g}-{hi:g} Gy; if it is meant, set [safety] min_{key}_gy / "
                f"max_{key}_gy."
            )
    highest = max(protocol.target_levels_gy.values())
    limit = s.allow_goal_above_rx_pct
    for spec in protocol.goals:
        goal = spec.goal
        if goal.metric.quantity == "index":
            continue
        dose_gy = goal_dose_level_gy(goal, rx.total_dose_gy)
        pct = 100.0 * dose_gy / highest
        if pct > limit:
            raise ProtocolError(
                f"Protocol {src}: goal {spec.index} ({spec.label}) asks for {dose_gy:g} Gy, "
                f"{pct:.0f} % of the highest prescription level ({highest:g} Gy), above the "
                f'plausible {limit:g} %; was it typed in cGy (write unit = "cGy")? If it is '
                "meant, raise [safety] allow_goal_above_rx_pct."
            )


# --------------------------------------------------------------- implicit goals
def target_helper_names(target: str) -> tuple[str, str]:
    """Names of the helpers of a lower-level target: the part outside higher-level
    targets and their transition margin, and the transition (gradient) zone."""
    return f"z{target}_low", f"z{target}_gradient"


def _higher(levels: Mapping[str, float], target: str) -> list[str]:
    return [t for t, lv in levels.items() if lv > levels[target]]


def implicit_goals(
    protocol,
    present: Sequence[str],
    *,
    helpers: Sequence[str] = (),
    body: str | None = None,
    gradient_levels_gy: Mapping[str, float] | None = None,
) -> list[Any]:
    """The implicit goals of a plan, as :class:`rtplan.evaluation.Goal` (protocol names).

    Parameters
    ----------
    protocol : rtplan.protocols.Protocol
    present : sequence of str
        Protocol structure names present in the patient.
    helpers : sequence of str
        Helper structures built (``z<T>_low`` exists for lower-level targets).
    body : str, optional
        Structure name of the body for the hot-spot goal; ``None``: no hot-spot goal.
    gradient_levels_gy : mapping of str to float, Gy, optional
        Relaxed level of each gradient band ``z<T>_gradient_<L>Gy``: with it, a target
        with the implicit limit also gets ``z<T>_gradient D2% <= target_max_pct`` % of
        the highest of its bands' levels (the highest level within the margin). The
        optimiser's caps are per band (:func:`rtplan.planning.build_levels`), so the
        planning levels are built without it.

    Returns
    -------
    list of rtplan.evaluation.Goal
        Priority 1, label starting with :data:`IMPLICIT_LABEL`:
        ``<T> D99% >= target_floor_pct % of its level`` unless a protocol goal on ``<T>``
        (a minimum, or ``D_v% >=`` with ``v >= 99``, at least as high) implies it; for a
        target without any upper goal ``<T or z<T>_low> D2% <= target_max_pct % of its
        level``; ``<body> Dmax <= hotspot_pct %`` of the prescription (the highest level); with
        ``gradient_levels_gy``, ``z<T>_gradient D2% <= target_max_pct %`` of the highest
        level within the transition margin.
    """
    s = protocol.safety
    levels = {t: lv for t, lv in protocol.target_levels_gy.items() if t in present}
    with_upper = {g.structure for g in protocol.goals if g.sense == "<="}
    out = []
    for t, level in levels.items():
        floor_gy = round(s.target_floor_pct / 100.0 * level, 4)
        if s.target_floor_pct > 0 and not _floor_implied(protocol, t, floor_gy):
            out.append(
                Goal(
                    t,
                    "D99%",
                    ">=",
                    floor_gy,
                    unit="Gy",
                    label=f"{IMPLICIT_LABEL}: target floor {s.target_floor_pct:g} % of "
                    f"{level:g} Gy",
                )
            )
        if s.implicit_target_limits and t not in with_upper:
            low = target_helper_names(t)[0]
            where = low if _higher(levels, t) and low in helpers else t
            out.append(_d2_limit(where, s.target_max_pct, level, "target maximum"))
            grad = target_helper_names(t)[1]
            bands = [
                lv
                for name, lv in (gradient_levels_gy or {}).items()
                if name.startswith(grad + "_") and name in helpers
            ]
            if bands and grad in helpers:
                top = max(bands)
                out.append(_d2_limit(grad, s.target_max_pct, top, "gradient-zone maximum"))
    if body is not None and s.hotspot_pct > 0:
        out.append(
            Goal(
                body,
                "Dmax",
                "<=",
                s.hotspot_pct,
                unit="%",
                label=f"{IMPLICIT_LABEL}: global hot spot",
            )
        )
    return out


def _d2_limit(structure: str, pct: float, level_gy: float, what: str):
    """The implicit goal ``<structure> D2% <= pct % of level_gy`` (Gy), labelled ``what``."""
    return Goal(
        structure,
        "D2%",
        "<=",
        round(pct / 100.0 * level_gy, 4),
        unit="Gy",
        label=f"{IMPLICIT_LABEL}: {what} {pct:g} % of {level_gy:g} Gy",
    )


def _floor_implied(protocol, target: str, floor_gy: float) -> bool:
    """True when a protocol goal on ``target`` already implies ``D99% >= floor_gy``: a
    minimum dose, or ``D_v% >=`` with ``v >= 99``, at a level of at least ``floor_gy``
    (a second, weaker term would only shift the optimiser's balance)."""
    rx = protocol.prescription.total_dose_gy
    for spec in protocol.goals:
        g = spec.goal
        if spec.structure != target or g.comparison != ">=":
            continue
        deep = g.metric.kind == "min" or (
            g.metric.kind == "dose_at_volume_percent" and float(g.metric.value) >= 99.0
        )
        if deep and goal_dose_level_gy(g, rx) >= floor_gy:
            return True
    return False


# ------------------------------------------------------- normal-tissue objective
#: Edges (mm from the targets' surface) of the shells of the normal-tissue objective; each
#: shell is capped at the fall-off curve's value at its inner edge.  Beyond the last edge
#: the ``[helpers]`` normal tissue (default 20-50 mm, 60 % of Rx) shapes the dose.
NTO_EDGES_MM = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0)


def nto_bands(settings) -> list[tuple[str, float, float, float]]:
    """The shells of the normal-tissue objective and their caps.

    The cap follows the form of Varian Eclipse's normal tissue objective: ``start`` at
    the targets' surface, falling exponentially towards ``end``,
    ``cap(d) = end + (start - end) exp(-k d)`` (``[safety]`` ``nto_start_pct``,
    ``nto_end_pct``, ``nto_falloff_per_mm``), taken at each shell's inner edge.

    Parameters
    ----------
    settings : rtplan.protocols.SafetySettings

    Returns
    -------
    list of (name, inner_mm, outer_mm, cap_pct)
        ``"zNTO_<a>-<b>mm"``, the shell ``a < d <= b`` mm and its cap, % of the highest
        prescription level; empty when ``nto_weight`` is 0.
    """
    if not settings.nto_weight > 0:
        return []
    start, end, k = settings.nto_start_pct, settings.nto_end_pct, settings.nto_falloff_per_mm
    return [
        (f"zNTO_{a:g}-{b:g}mm", a, b, end + (start - end) * math.exp(-k * a))
        for a, b in zip(NTO_EDGES_MM[:-1], NTO_EDGES_MM[1:], strict=True)
    ]


# ------------------------------------------------------------------ plan checks
def convergence_warning(result, hard_labels: Sequence[str], *, tol: float) -> SafetyWarning | None:
    """A warning when the optimiser stopped with a hard goal violated beyond ``tol``.

    Parameters
    ----------
    result : optimizers.OptimizationResult
        The last level's solve (``extras["violations"]``: relative violation per hard
        constraint; ``extras["certificate"]``: the evidence that they do not contradict
        each other, when the first-order solver looked for it).
    hard_labels : sequence of str
        Labels of the protocol's hard goals.
    tol : float
        Relative violation above which a hard goal counts as not met.
    """
    violations = result.extras.get("violations") or {}
    bad = {k: v for k, v in violations.items() if k in set(hard_labels) and v > tol}
    if not bad:
        return None
    listing = "; ".join(f"'{k}' violated by {100 * v:.1f} %" for k, v in bad.items())
    cert = result.extras.get("certificate")
    evidence = (
        cert["message"]
        if cert
        else f"the solver reports '{result.status}', not an infeasible problem"
    )
    return SafetyWarning(
        "solver_not_converged",
        f"OPTIMISER DID NOT CONVERGE: {listing} after {result.n_iter} iterations "
        f"(status {result.status}). The hard goals were not shown to contradict each "
        f"other ({evidence}). The plan is written for review only: raise [optimization] "
        "max_iterations or relax the goal.",
    )


def normalization_warning(
    needed: float, applied: float, cap_pct: float, goal_text: str, before: float, after: float
) -> SafetyWarning | None:
    """A warning when the normalisation needed (``needed``) exceeds the cap (``applied``
    is the capped factor); ``before``/``after`` are the coverage goal's values."""
    if needed == applied:
        return None
    return SafetyWarning(
        "normalization_cap",
        f"NORMALISATION CAPPED: meeting '{goal_text}' needs the dose x {needed:.3f}, beyond "
        f"the +/-{cap_pct:g} % cap; the plan is scaled x {applied:.3f} only "
        f"({before:.4g} -> {after:.4g}). The optimised plan does not meet its coverage goal: "
        "review the goals, beams and structures before use.",
    )


def beam_balance_warning(beam_mu: Mapping[str, float], settings) -> SafetyWarning | None:
    """A warning when one beam carries more than ``beam_balance_max_pct`` % of the MU of
    a plan of at least ``beam_balance_min_beams`` beams."""
    total = float(sum(beam_mu.values()))
    if len(beam_mu) < settings.beam_balance_min_beams or not total > 0:
        return None
    name, mu = max(beam_mu.items(), key=lambda kv: kv[1])
    pct = 100.0 * mu / total
    if pct <= settings.beam_balance_max_pct:
        return None
    return SafetyWarning(
        "beam_balance",
        f"BEAM BALANCE: beam {name} carries {pct:.0f} % of the plan's MU (limit "
        f"{settings.beam_balance_max_pct:g} % for {len(beam_mu)} beams); the dose enters "
        "mostly through one beam.",
    )


#: Violations named one by one in the ``deliverability`` warning (plan.json lists all).
_VIOLATIONS_NAMED = 5


def deliverability_warning(deliverability) -> SafetyWarning | None:
    """A warning when the plan breaks a limit of its machine.

    Parameters
    ----------
    deliverability : rtplan.delivery.Deliverability
        :func:`rtplan.delivery.check_deliverability` of the plan as written.

    Returns
    -------
    SafetyWarning or None
        Code ``"deliverability"``, naming the first violations (beam, control point,
        value, machine-file key) and how many there are; ``None`` when every limit holds.
    """
    found = deliverability.violations
    if not found:
        return None
    named = "; ".join(f"{v} [{v.limit}]" for v in found[:_VIOLATIONS_NAMED])
    more = len(found) - _VIOLATIONS_NAMED
    rest = f"; and {more} more (plan.json 'deliverability' lists every one)" if more > 0 else ""
    return SafetyWarning(
        "deliverability",
        f"MACHINE LIMIT VIOLATED: {len(found)} violation(s) of the machine's limits: "
        f"{named}{rest}. The machine may refuse or mis-deliver this plan; it is written "
        "for review only.",
    )


def plan_warnings(
    goal_table,
    *,
    beam_mu: Mapping[str, float],
    settings,
    normalization=None,
    solver=None,
    deliverability=None,
) -> list[SafetyWarning]:
    """Every warning of a finished plan, in a fixed order: optimiser not converged,
    normalisation, beam balance, machine limits (``deliverability``: a
    :class:`rtplan.delivery.Deliverability`, optional), failed implicit goals."""
    limits = None if deliverability is None else deliverability_warning(deliverability)
    first = (solver, normalization, beam_balance_warning(beam_mu, settings), limits)
    out = [w for w in first if w is not None]
    for r in goal_table:
        if r.passed or not r.goal.label.startswith(IMPLICIT_LABEL):
            continue
        u = f" {r.goal.unit}" if r.goal.unit else ""
        out.append(
            SafetyWarning(
                "implicit_goal",
                f"SAFETY GOAL FAILED: {r.goal.text} ({r.goal.label}) is {r.value:.4g}{u}.",
            )
        )
    return out
