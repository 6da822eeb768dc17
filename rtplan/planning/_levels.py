"""Automatic translation of protocol goals into prioritised optimisation levels.

No weights are tuned by hand: every goal becomes a term measured in units of the
prescription (dimensionless ``(excess / Rx)²``), goals of the same priority share a level, and the
levels are optimised lexicographically (each later level keeps the earlier levels'
objectives within their slip).  The rules (also in ``docs/protocols.md``):

=====================  ============================  ===================================
goal                   ``first_order`` solver        ``cvxpy`` solver
=====================  ============================  ===================================
target ``D_v% >= L``   DVHUnderdose(T, L·(1+a_t),    MinDVH(T, L·(1+a_t), v) (CVaR)
                       100 − κ(100 − v))
target ``D_v% <= L``   DVHOverdose(T, L·(1−a_t), κv) MaxDVH(T, L·(1−a_t), v) (CVaR),
                       in the first level            in the first level
OAR ``D_v% <= L``,     DVHOverdose(O, L·(1−a_o), κv) MaxDVH(O, L·(1−a_o), v) (CVaR)
``D_xcc``, ``V_x<=y%``                               (``V_x <= y %`` is ``D_y% <= x``)
``Dmax <= L``          Overdose(O, L·(1−a_o))        same
``Dmin >= L``          Underdose(T, L·(1+a_t))       same
``Dmean <= L`` in a    MaxDVH(O, L·(1−a_o), 99.9)    same
coverage level         (CVaR ≈ mean, one-sided)
``Dmean <= L``,        MeanDose(O) (linear)          same
other levels
``hard = true``        MinDose/MaxDose/MeanDose      MinDVH/MaxDVH/MaxDose/MeanDose hard
=====================  ============================  ===================================

``T`` is the target (or the structure given in ``effective``), ``O`` the organ minus the
overlapping targets where such a helper structure was built; ``a_t``/``a_o`` are the aims
(:attr:`~rtplan.protocols.OptimizationSettings.target_aim`, ``oar_aim``) that make the
optimiser aim slightly inside each goal so that sequencing losses do not tip it over.
The dose-volume quadratics (Wu & Mohan 2000) leave out the part of the structure the goal
allows to miss its level, so the optimiser chooses where that part lies (e.g. the rim of a
target next to an organ with a low limit); ``κ`` = :data:`DVH_ALLOWANCE_USED` keeps some of
the allowance in reserve for sequencing.
Weights are ``1 / Rx²`` for organ goals and ``target_weight / Rx²`` for target goals
(:attr:`~rtplan.protocols.OptimizationSettings.target_weight`; ``1 / Rx`` for the linear
mean-dose term). A ``Dmean <= L`` goal in a level that holds target coverage (a target's
minimum-dose goal, or the first level, with the safety floors) is a one-sided quadratic
on the mean: the upper CVaR of :data:`MEAN_VOLUME_PCT` % of the organ (the mean of all but
its coldest 0.1 %, never below the mean) above ``L·(1−a_o)``; it pushes only while the
mean is above that aim.  A linear "minimise the mean" term there traded coverage against
organ dose far below its limit (issue 12: a lung mean of 5.6 Gy against 20 Gy left the
PTV rim in lung at 19 Gy).  In a later level the mean is minimised (linear): the earlier
levels' slip keeps the coverage, as lexicographic planning intends.
If the protocol has no minimum-dose goal on the prescription target,
``Underdose(target, Rx)`` is added to the first level. The helper structures (ring and
normal tissue as overdose above their caps, weight ``HELPER_WEIGHT / Rx²``), fluence smoothness and
total MU join the last level: a separate helper level would double the optimisation time
for terms that only shape the low-dose region.

The safety nets (:mod:`rtplan.safety`, protocol table ``[safety]``) add, in the
first level: each target's floor ``Underdose(T, floor·L_T·(1+a_t))`` (weight
``HELPER_WEIGHT·target_weight/Rx²``) with the implicit
``D99% >= floor`` goal; the implicit upper limit ``D2% <= target_max·L_T`` of a target
without an upper goal (on ``z<T>_low`` for a lower-level target), with a pull of that
part towards its level, ``Overdose(z<T>_low, L_T·(1+a_t))``, and caps
``Overdose(z<T>_gradient_<L>Gy, target_max·L)`` on the bands of the gradient zone around
higher levels, ``L`` the band's relaxed level (linear from the higher level at its
surface to ``L_T`` at the transition margin,
:func:`rtplan.planning._helper_structures.gradient_level_gy`); the global hot-spot cap
``Overdose(S, hotspot·Rx·(1−a_t))`` (:func:`hotspot_cap_gy`) on every structure ``S`` the
optimiser reads, the correction loop's ``zHotSpot`` included (weight ``1/Rx²``, a limit
like an organ goal; the floor is gentle, it shapes what the goals leave free). The last
level gets an "as low as reasonably achievable" ``MeanDose(O)`` of weight
``alara_weight/Rx`` for every organ at risk, and the normal-tissue objective:
``Overdose(zNTO_<a>-<b>mm, cap(a)·Rx)`` of weight ``nto_weight/Rx²`` on shells around the
targets, ``cap`` falling exponentially from ``nto_start_pct`` at their surface
(:func:`rtplan.safety.nto_bands`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._internal.arguments import check_arguments
from ..errors import ProtocolError
from ..evaluation import goal_dose_level_gy
from ..safety import implicit_goals, nto_bands, target_helper_names

__all__ = ["PlanningLevel", "build_levels", "hotspot_cap_gy", "smoothness_pairs", "volume_pct"]

logger = logging.getLogger("rtplan.planning")

#: Share of a dose-volume goal's allowance (the ``100 − v %`` of a target that may be cold,
#: the ``v %`` of an organ that may be hot) that the first-order translation exempts; the
#: rest is kept in reserve for the sequencing and aperture-dose losses.
DVH_ALLOWANCE_USED = 0.8

#: Weight of the ring and normal-tissue caps relative to an organ goal: they shape the
#: low-dose region and must not outvote the protocol's goals.
HELPER_WEIGHT = 0.1

#: Volume (%) of the upper CVaR that stands for the mean in a ``Dmean <= L`` goal: the
#: CVaR terms need a volume strictly below 100 %, and the mean of the hottest 99.9 % is at
#: most 0.1 % of the dose range above the mean (never below it, so the goal is kept).
MEAN_VOLUME_PCT = 99.9

#: Softplus smoothing of that CVaR in the first-order solver, per Gy of prescription:
#: ``optimizers.smooth_cvar`` clips ``(d - z) / tau`` at 500, so a dose range above
#: ``500 tau`` would be cut short (with the default 0.05 Gy, an organ spanning 0-60 Gy reads
#: a mean of 20 Gy for 30 Gy); ``0.004 Rx`` covers twice the prescription and overstates the
#: mean by at most ``0.004 Rx ln 2`` (0.17 Gy at 60 Gy), on the safe side.
MEAN_TAU_PER_RX_GY = 0.004


@dataclass(frozen=True)
class PlanningLevel:
    """One lexicographic level.

    Attributes
    ----------
    priority : int
        Protocol priority of the goals in this level.
    terms : tuple of optimizers.Term
    goal_indices : tuple of int
        Protocol goal indices translated into this level.
    """

    priority: int
    terms: tuple[Any, ...]
    goal_indices: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """``"priority 1"``, ``"priority 2"``, ..."""
        return f"priority {self.priority}"


def volume_pct(goal, volume_cc: float) -> float | None:
    """The volume percentage ``v`` of a DVH goal, or None for max/min/mean goals."""
    kind = goal.metric.kind
    if kind == "dose_at_volume_percent":
        return float(goal.metric.value)
    if kind == "dose_at_volume_cc":
        return 100.0 * float(goal.metric.value) / max(volume_cc, 1e-9)
    if kind in ("volume_at_dose_gy", "volume_at_dose_rx_percent"):
        if goal.unit == "cc":
            return 100.0 * goal.level / max(volume_cc, 1e-9)
        return float(goal.level)
    return None


@check_arguments(beamlets="dose_engine._beamlets:Beamlets")
def smoothness_pairs(beamlets) -> np.ndarray:
    """Neighbouring beamlet pairs ``(j, k)`` along leaf travel and across leaf pairs.

    Parameters
    ----------
    beamlets : dose_engine.Beamlets

    Returns
    -------
    (m, 2) ndarray of int64
        Column indices of horizontally and vertically adjacent beamlets of the same beam.
    """
    pairs = []
    for b in range(beamlets.n_beams):
        sl = beamlets.beam_slice(b)
        idx = np.arange(sl.start, sl.stop)
        if idx.size == 0:
            continue
        rows, cols = beamlets.row[sl], beamlets.col[sl]
        shape = beamlets.fluence_map_shape(b)
        lut = np.full(shape, -1, dtype=np.int64)
        lut[rows, cols] = idx
        right = lut[:, :-1], lut[:, 1:]
        down = lut[:-1, :], lut[1:, :]
        for a, c in (right, down):
            ok = (a >= 0) & (c >= 0)
            pairs.append(np.stack([a[ok], c[ok]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(pairs).astype(np.int64)


def _check_contradictions(by_priority: Mapping[int, list]) -> None:
    """Refuse hard voxel-wise bounds on one structure that contradict each other."""
    hard = [t for terms in by_priority.values() for t in terms if t.hard]
    lows = [t for t in hard if getattr(t, "sense", "") == ">=" and getattr(t, "per_voxel", False)]
    highs = [
        t
        for t in hard
        if getattr(t, "sense", "") == "<="
        and (getattr(t, "per_voxel", False) or type(t).__name__ == "MeanDose")
    ]
    for lo in lows:
        for hi in highs:
            if lo.structure == hi.structure and lo.dose_gy > hi.dose_gy:
                raise ProtocolError(
                    f"Infeasible prescription: '{lo.label}' asks every voxel of "
                    f"'{lo.structure}' for at least {lo.dose_gy:g} Gy but '{hi.label}' allows "
                    f"at most {hi.dose_gy:g} Gy; relax one of these hard goals."
                )


@check_arguments(
    protocol="rtplan.protocols._protocol:Protocol",
    roles="collections.abc:Mapping",
    volumes_cc="collections.abc:Mapping",
)
def build_levels(
    protocol,
    *,
    roles: Mapping[str, str],
    volumes_cc: Mapping[str, float],
    effective: Mapping[str, str] | None = None,
    helpers: Sequence[str] = (),
    solver: str = "first_order",
    n_beamlets: int | None = None,
    pairs: np.ndarray | None = None,
    mu_scale: float = 1.0,
    ring_levels_gy: Mapping[str, float] | None = None,
    gradient_levels_gy: Mapping[str, float] | None = None,
) -> list[PlanningLevel]:
    """Translate a protocol's goals into lexicographic optimisation levels.

    Parameters
    ----------
    protocol : rtplan.protocols.Protocol
    roles : mapping of str to str
        Protocol structure name → ``"target"``, ``"oar"`` or ``"external"`` for every
        structure present in the optimisation problem (absent optional structures are
        left out; their goals are skipped).
    volumes_cc : mapping of str to float, cm³
        Structure volumes (converts ``D_xcc`` goals to a volume percentage).
    effective : mapping of str to str, optional
        Structure whose voxels a goal's term reads instead of the goal's own structure
        (e.g. ``{"PTV": "zPTV-Core", "Core": "zCore-PTV"}``).
    helpers : sequence of str
        Helper structures present: ``"zRing"``, ``"zNormalTissue"`` get dose caps.
    solver : {"first_order", "cvxpy"}
        Which term family to use (the first-order solver needs smooth terms).
    n_beamlets : int, optional
    pairs : (m, 2) ndarray of int, optional
        Neighbouring beamlets for the smoothness term (:func:`smoothness_pairs`).
    mu_scale : float, MU
        Typical beamlet fluence (e.g. the uniform fluence that gives the prescription in
        the target); the smoothness and MU terms are normalised by it so that their
        weights are dimensionless.
    ring_levels_gy : mapping of str to float, Gy, optional
        Dose level of each ring helper (``"zRing_<L>Gy"``); a ring is capped at
        ``ring_max_percent`` of its level.  Default: every ring at the prescription.
    gradient_levels_gy : mapping of str to float, Gy, optional
        Relaxed level of each gradient-zone band (``"z<T>_gradient_<L>Gy"`` helpers of
        kind ``target_gradient_band``); each is capped at ``target_max_pct`` of it.

    Returns
    -------
    list of PlanningLevel
        In priority order; the last one also holds the helper, smoothness and MU terms.

    Raises
    ------
    ProtocolError
        A goal cannot be expressed in the optimisation (e.g. an index goal such as HI made
        ``hard``).
    """
    import optimizers as opt

    rx = protocol.prescription.total_dose_gy
    settings = protocol.optimization
    effective = dict(effective or {})
    cvx = solver == "cvxpy"
    w_o = 1.0 / rx**2  # every dose deviation counts in units of the prescription
    w_t = settings.target_weight * w_o
    by_priority: dict[int, list] = {}
    idx_by_priority: dict[int, list[int]] = {}
    first_priority = min((s.priority for s in protocol.goals if s.structure in roles), default=1)
    # levels that hold target coverage (and the first, with the safety floors): a mean
    # goal there is one-sided, elsewhere its mean is minimised (module docstring)
    coverage_priorities = {first_priority} | {
        s.priority
        for s in protocol.goals
        if roles.get(s.structure) == "target" and s.sense == ">=" and not s.hard
    }
    for spec in protocol.goals:
        goal = spec.goal
        name = spec.structure
        if name not in roles:
            continue
        if goal.metric.quantity == "index":
            if spec.hard:
                raise ProtocolError(
                    f"Protocol {protocol.source}: goal {spec.index} ({spec.label}): index "
                    "metrics (HI, CI, GI) cannot be hard constraints; remove `hard = true`."
                )
            logger.info("goal %s is evaluated but not optimised (index metric)", spec.label)
            continue
        is_target = roles[name] == "target"
        vpct = volume_pct(goal, volumes_cc.get(name, 0.0))
        if vpct is not None and not (0.0 < vpct < 100.0):
            vpct = None if vpct <= 0 else 99.9
        label = f"goal {spec.index}: {spec.label}"
        if spec.hard:
            term = _hard_term(goal, name, vpct, cvx, label + " [hard]", rx)
        else:
            term = _soft_term(
                goal,
                effective.get(name, name),
                vpct,
                cvx,
                label,
                rx,
                aim=settings.target_aim if is_target else settings.oar_aim,
                weight=w_t if is_target else w_o,
                minimise_mean=spec.priority not in coverage_priorities,
            )
        priority = spec.priority
        if is_target and goal.comparison == "<=" and not spec.hard:
            # target homogeneity is decided with target coverage, in the first level
            priority = min(priority, first_priority)
        by_priority.setdefault(priority, []).append(term)
        idx_by_priority.setdefault(priority, []).append(spec.index)

    _check_contradictions(by_priority)
    target = protocol.prescription.target
    has_cover = any(
        s.structure == target and s.sense == ">=" and s.structure in roles for s in protocol.goals
    )
    first = min(by_priority) if by_priority else 1
    if not has_cover:
        t_eff = effective.get(target, target)
        by_priority.setdefault(first, []).insert(
            0, opt.Underdose(t_eff, rx, weight=w_t, label=f"coverage: {target} >= {rx:g} Gy")
        )
    by_priority.setdefault(first, []).extend(
        _safety_terms(
            protocol,
            roles,
            effective,
            helpers,
            dict(gradient_levels_gy or {}),
            cvx=cvx,
            w_t=w_t,
            w_o=w_o,
        )
    )
    levels = [
        PlanningLevel(p, tuple(by_priority[p]), tuple(idx_by_priority.get(p, ())))
        for p in sorted(by_priority)
    ]
    hs = protocol.helpers
    last: list = []
    rings = dict(ring_levels_gy or {})
    caps = [(n, hs.ring_max_percent, rings.get(n, rx), "ring") for n in helpers if n in rings]
    if "zRing" not in rings:
        caps.append(("zRing", hs.ring_max_percent, rx, "ring"))
    caps.append(("zNormalTissue", hs.normal_tissue_max_percent, rx, "normal tissue"))
    for name, percent, level_gy, what in caps:
        if name in helpers:
            cap = percent / 100.0 * level_gy
            last.append(
                opt.Overdose(name, cap, weight=HELPER_WEIGHT * w_o, label=f"{what} <= {cap:.3g} Gy")
            )
    for name, _, _, pct in nto_bands(protocol.safety):  # Rx is the highest level
        if name in helpers:
            cap = pct / 100.0 * rx
            last.append(
                opt.Overdose(
                    name,
                    cap,
                    weight=protocol.safety.nto_weight * w_o,
                    label=f"normal-tissue objective: {name} <= {cap:.4g} Gy",
                )
            )
    if protocol.safety.alara_weight > 0:
        for name, role in roles.items():
            if role == "oar":
                last.append(
                    opt.MeanDose(
                        effective.get(name, name),
                        weight=protocol.safety.alara_weight / rx,
                        label=f"ALARA: {name} mean dose",
                    )
                )
    if pairs is not None and len(pairs) and settings.smoothness_weight > 0:
        last.append(
            opt.Smoothness(
                pairs=pairs,
                n_beamlets=n_beamlets,
                weight=settings.smoothness_weight / mu_scale**2,
                label="fluence smoothness",
            )
        )
    if settings.mu_weight > 0 and n_beamlets:
        last.append(
            opt.TotalMU(weight=settings.mu_weight / (mu_scale * n_beamlets), label="total MU")
        )
    if last:  # there is always a first level: it holds at least the coverage term
        final = levels[-1]
        levels[-1] = PlanningLevel(final.priority, final.terms + tuple(last), final.goal_indices)
    return levels


def _safety_terms(
    protocol, roles, effective, helpers, gradient_levels, *, cvx: bool, w_t: float, w_o: float
):
    """The first-level terms of the safety nets (module docstring): target floors,
    implicit target maxima with the pull of lower levels and the caps of their gradient
    bands (``gradient_levels``: band name → relaxed level, Gy), and the global hot-spot
    cap."""
    import optimizers as opt

    s = protocol.safety
    rx = protocol.prescription.total_dose_gy
    aim = protocol.optimization.target_aim
    levels = {t: lv for t, lv in protocol.target_levels_gy.items() if t in roles}
    terms = []
    # without gradient levels: the gradient zone gets its caps per band below, not a goal
    for goal in implicit_goals(protocol, list(roles), helpers=helpers):
        name = goal.structure
        target = next(t for t in levels if name in (t, target_helper_names(t)[0]))
        label = f"{goal.label}: {goal.text}"
        if goal.comparison == ">=":  # floor: every voxel, not only 99 %, gently, aimed
            terms.append(  # inside like the goals (sequencing must not tip it over)
                opt.Underdose(
                    effective.get(name, name),
                    goal.level * (1.0 + aim),
                    weight=HELPER_WEIGHT * w_t,
                    label=label,
                )
            )
            continue
        terms.append(_soft_term(goal, name, 2.0, cvx, label, rx, aim=aim, weight=w_t))
        if name != target:  # a lower-level target: pulled to its level outside the margin
            level = levels[target]
            terms.append(
                opt.Overdose(
                    name,
                    level * (1.0 + aim),
                    weight=w_t,
                    label=f"{IMPLICIT_PULL}: {name} towards {level:g} Gy",
                )
            )
            prefix = target_helper_names(target)[1] + "_"
            for band, band_gy in gradient_levels.items():
                if band in helpers and band.startswith(prefix):
                    cap = s.target_max_pct / 100.0 * band_gy
                    terms.append(
                        opt.Overdose(
                            band, cap, weight=w_t, label=f"{IMPLICIT_PULL}: {band} <= {cap:.4g} Gy"
                        )
                    )
    if s.hotspot_pct > 0:
        cap = hotspot_cap_gy(protocol)
        seen = []
        for name, role in roles.items():
            if role in ("target", "oar"):
                seen.append(effective.get(name, name))
        seen += [
            h for h in helpers if h.startswith(("zRing", "zNormalTissue", "zBody", "zHotSpot"))
        ]
        for name in dict.fromkeys(seen):
            terms.append(
                opt.Overdose(
                    name,
                    cap,
                    weight=w_o,
                    label=f"global hot spot: {name} <= {cap:.4g} Gy",
                )
            )
    return terms


def hotspot_cap_gy(protocol) -> float:
    """The optimiser's level of the implicit global hot-spot limit, Gy: ``[safety]
    hotspot_pct`` % of the prescription × (1 − ``target_aim``), aimed inside the goal
    ``Dmax <= hotspot_pct %`` (:func:`rtplan.safety.implicit_goals`) like the protocol's
    goals; 0 when the limit is off."""
    s = protocol.safety
    if s.hotspot_pct <= 0:
        return 0.0
    rx = protocol.prescription.total_dose_gy
    return s.hotspot_pct / 100.0 * rx * (1.0 - protocol.optimization.target_aim)


#: Label prefix of the terms that pull a lower-level target towards its level.
IMPLICIT_PULL = "implicit level"


def _hard_term(goal, name: str, vpct: float | None, cvx: bool, label: str, rx: float):
    """The hard constraint of a ``hard = true`` goal (exact level, no aim)."""
    import optimizers as opt

    level_gy = goal_dose_level_gy(goal, rx)
    if goal.comparison == ">=":
        if cvx and vpct is not None:
            return opt.MinDVH(name, level_gy, vpct, hard=True, label=label)
        return opt.MinDose(name, level_gy, hard=True, label=label)
    if goal.metric.kind == "mean":
        return opt.MeanDose(name, level_gy, hard=True, label=label)
    if cvx and vpct is not None:
        return opt.MaxDVH(name, level_gy, vpct, hard=True, label=label)
    return opt.MaxDose(name, level_gy, hard=True, label=label)


def _soft_term(
    goal,
    structure: str,
    vpct: float | None,
    cvx: bool,
    label: str,
    rx: float,
    *,
    aim: float,
    weight: float,
    minimise_mean: bool = False,
):
    """The objective term of a soft goal (see the module table); ``minimise_mean``: a
    ``Dmean <= L`` goal is the linear mean (a level without target coverage), else
    one-sided above its aim."""
    import optimizers as opt

    level_gy = goal_dose_level_gy(goal, rx)
    if goal.comparison == ">=":
        dose = level_gy * (1.0 + aim)
        if vpct is None:
            return opt.Underdose(structure, dose, weight=weight, label=label)
        if cvx:
            return opt.MinDVH(structure, dose, vpct, weight=weight, label=label)
        exempt_pct = DVH_ALLOWANCE_USED * (100.0 - vpct)
        return opt.DVHUnderdose(structure, dose, 100.0 - exempt_pct, weight=weight, label=label)
    if goal.metric.kind == "mean" and minimise_mean:
        return opt.MeanDose(structure, weight=1.0 / rx, label=label)
    dose = level_gy * (1.0 - aim)
    if goal.metric.kind == "mean":  # one-sided on the mean (module docstring)
        term = opt.MaxDVH(structure, dose, MEAN_VOLUME_PCT, weight=weight, label=label)
        term.tau_gy = MEAN_TAU_PER_RX_GY * rx
        return term
    if vpct is None:
        return opt.Overdose(structure, dose, weight=weight, label=label)
    if cvx:
        return opt.MaxDVH(structure, dose, vpct, weight=weight, label=label)
    return opt.DVHOverdose(structure, dose, DVH_ALLOWANCE_USED * vpct, weight=weight, label=label)
