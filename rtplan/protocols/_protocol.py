"""Planning protocols: a TOML description of how to plan one kind of case.

A protocol states the prescription, how protocol structure names find the patient's
structures (aliases and regular expressions, TG-263 style, case-insensitive), the
clinical goals with acceptance levels and priorities, the beam arrangement, the dose
grid, the optimisation settings and the automatic helper structures.  The format is
documented with a full example in ``docs/protocols.md``.

The metric strings of the goals (``"D95%"``, ``"D2cc"``, ``"V20Gy"``, ``"Dmean"``,
``"Dmax"``) are parsed by :mod:`rtplan.evaluation`; this module checks the rest of
the goal (structure, bound, priority) and turns each one into an evaluation goal with
:meth:`Protocol.evaluation_goals`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .._internal.arguments import PATH, TEXT, check_arguments, optional, sequence_of
from .._internal.toml_files import read_named_toml
from ..errors import ProtocolError
from ..evaluation import Goal
from ..safety import check_protocol_plausibility
from ._derived import parse_derived
from ._structure_spec import StructureSpec

__all__ = [
    "ArcSpec",
    "BeamArrangement",
    "GoalSpec",
    "HelperSettings",
    "OptimizationSettings",
    "Prescription",
    "Protocol",
    "SafetySettings",
    "StructureSpec",
    "available_protocols",
    "load_protocol",
    "parse_mapping_overrides",
    "parse_protocol",
]

logger = logging.getLogger("rtplan.protocols")

_ROLES = ("target", "oar", "external")


_SOLVERS = ("first_order", "cvxpy")
_EXTERNAL_ALIASES = ("Body", "External", "BODY", "Skin", "Outline", "Patient")


# ----------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Prescription:
    """The prescription of a protocol.

    Parameters
    ----------
    total_dose_gy : float, Gy
        Total dose to the target over all fractions.
    fractions : int
        Number of fractions; the RT-PLAN stores per-fraction meterset.
    target : str
        Protocol name of the target structure the prescription refers to; it carries the
        highest dose level.
    levels_gy : tuple of (str, float), Gy
        Total dose level of other targets (``[prescription.levels]``, e.g.
        ``(("PTV56", 56.0),)``); a target not listed is at ``total_dose_gy``.
    """

    total_dose_gy: float
    fractions: int
    target: str
    levels_gy: tuple[tuple[str, float], ...] = ()

    @property
    def dose_per_fraction_gy(self) -> float:
        """Dose per fraction in Gy."""
        return self.total_dose_gy / self.fractions


@dataclass(frozen=True)
class GoalSpec:
    """One clinical goal of a protocol: an evaluation :class:`~rtplan.evaluation.Goal`
    on a protocol structure name, plus planning options.

    Parameters
    ----------
    index : int
        Position of the goal in the protocol file (0-based), used in messages.
    goal : rtplan.evaluation.Goal
        The goal as parsed by :meth:`rtplan.evaluation.Goal.from_mapping` (metric grammar,
        units and the ``acceptable`` level are the evaluation module's).
    hard : bool or None
        Force (``True``) or forbid (``False``) a hard constraint in the optimisation;
        ``None`` lets the planner decide (see :func:`rtplan.planning.build_levels`).
    note : str
        Free text, e.g. the source of the limit.
    """

    index: int
    goal: Any
    hard: bool | None = None
    note: str = ""

    @property
    def structure(self) -> str:
        """Protocol structure name."""
        return self.goal.structure

    @property
    def priority(self) -> int:
        """1 is the most important; priorities become lexicographic levels."""
        return self.goal.priority

    @property
    def sense(self) -> str:
        """``"<="`` (upper limit) or ``">="`` (lower limit)."""
        return self.goal.comparison

    @property
    def label(self) -> str:
        """Readable form, e.g. ``"PTV D95% >= 50 Gy"``."""
        return self.goal.text


#: ``[beams] technique`` values: static step-and-shoot beams, or arcs (VMAT).
TECHNIQUES = ("imrt", "vmat")
#: Default width of the arc sectors whose static beams the VMAT fluence is optimised on.
DEFAULT_ARC_SECTOR_DEG = 30.0


@dataclass(frozen=True)
class ArcSpec:
    """One arc of a VMAT protocol (``[[beams.arcs]]``).

    Parameters
    ----------
    start_deg, stop_deg : float, degrees
        IEC 61217 gantry angles of the arc's first and last control point, in [0, 360),
        distinct (a full arc is e.g. 181 to 179 CW).
    direction : {"CW", "CC"}
        (300A,011F) *GantryRotationDirection*.
    collimator_deg : float or None, degrees
        ``None``: the machine's ``arc.collimator_angle_deg`` (the second arc of the default
        pair: 360 minus it).
    couch_deg : float, degrees
    """

    start_deg: float
    stop_deg: float
    direction: str
    collimator_deg: float | None = None
    couch_deg: float = 0.0


#: Two full arcs, clockwise then counter-clockwise (collimators from the machine).
DEFAULT_ARCS = (ArcSpec(181.0, 179.0, "CW"), ArcSpec(179.0, 181.0, "CC"))


@dataclass(frozen=True)
class BeamArrangement:
    """Beam arrangement of a protocol.

    Parameters
    ----------
    gantry_angles_deg : tuple of float, degrees
        IEC 61217 gantry angles, one per beam.
    collimator_angle_deg, couch_angle_deg : float, degrees
        Same for every beam.
    machine : str
        Machine model name (:func:`rtplan.available_machines`: ``"VarianMLC120"``,
        ``"AgilityMLC160"``; the short names ``"varian_120"`` and ``"agility"`` also work)
        or a path to a machine TOML.
    beamlet_width_mm, beamlet_height_mm : float, mm
        Beamlet size in the isocentre plane (height = MLC leaf width).
    margin_mm : float, mm
        Beamlets cover the target's projection plus this margin.
    technique : {"imrt", "vmat"}
        ``"imrt"``: static beams at :attr:`gantry_angles_deg`; ``"vmat"``: the arcs of
        :attr:`arcs` (the static angles are then not used).

        .. versionadded:: 0.1.0
    arcs : tuple of ArcSpec
        The arcs of a VMAT plan (default: two full arcs, CW 181 to 179 and CC 179 to 181).
    arc_sector_deg : float, degrees
        Width of the sectors each arc is optimised on (one static beam at each sector's
        centre; docs/vmat.md).
    """

    gantry_angles_deg: tuple[float, ...]
    collimator_angle_deg: float = 0.0
    couch_angle_deg: float = 0.0
    machine: str = "VarianMLC120"
    beamlet_width_mm: float = 5.0
    beamlet_height_mm: float = 5.0
    margin_mm: float = 5.0
    technique: str = "imrt"
    arcs: tuple[ArcSpec, ...] = DEFAULT_ARCS
    arc_sector_deg: float = DEFAULT_ARC_SECTOR_DEG

    @property
    def n_beams(self) -> int:
        """Number of beams."""
        return len(self.gantry_angles_deg)


@dataclass(frozen=True)
class OptimizationSettings:
    """Optimisation and sequencing settings of a protocol.

    Parameters
    ----------
    solver : {"first_order", "cvxpy"}
        Fluence optimiser.
    cvxpy_solver : str
        CVXPY back-end when ``solver == "cvxpy"`` (``"CLARABEL"``, ``"OSQP"``, ``"SCS"``...).
    slip : float
        Relative slip allowed on each earlier level's objective when a later level is
        optimised (0.05 = 5 %).
    slip_abs : float
        Absolute slip added to the relative one (objective units).
    max_iterations : int
        Iteration limit of the first-order solver per level.
    sequencing_levels : int
        Number of intensity levels for step-and-shoot leaf sequencing.
    smoothness_weight : float
        Weight of the fluence-smoothness term (last level).
    mu_weight : float
        Weight of the total-MU term (last level).
    normalize : bool
        Scale the final (aperture) dose so that the prescription target's first
        coverage goal is met exactly (common clinical normalisation).
    target_aim, oar_aim : float
        Relative margins the optimiser aims inside target and organ-at-risk goals
        (0.02 = aim 2 % above a minimum / below a maximum on targets).
    target_weight : float
        Weight of target goals relative to organ-at-risk goals of the same priority
        (2 = a target's dose deviation counts twice an organ's; both in units of Rx).
    cvxpy_compression_threshold : float
        With ``solver = "cvxpy"`` on a large matrix: entries below this fraction of their
        beamlet's largest entry leave the sparse part of the compressed matrix
        (:class:`optimizers.Compression` ``rel_threshold``; ``0 <= t < 1``, 0 keeps every
        entry).
    cvxpy_compression_rank : int
        Rank of the low-rank part that carries those dropped entries (``0 <= k <= 512``;
        0 drops them).
    cvxpy_helper_stride : int
        With ``solver = "cvxpy"``: rings and normal-tissue shells are sampled on every
        ``k``-th voxel along y and x (``1 <= k <= 8``; 1 keeps every voxel).
    cvxpy_active_set : bool
        With ``solver = "cvxpy"``: solve on the beamlets the first-order solver's fluence
        uses and let in every other beamlet whose reduced cost would lower the objective,
        until none would (``optimizers.solve_cvxpy(..., active_set=True)``); ``false``:
        every beamlet in one solve.
    final_dose_corrections : int
        Re-optimisations on the final dose (0 to :data:`MAX_FINAL_DOSE_CORRECTIONS`; 0:
        none): each re-optimises with ``d = D x + (d_final(x0) - D x0)`` from the last
        plan's fluence ``x0`` and its final aperture dose, then sequences again.
    final_dose_tolerance_pct : float
        The corrections stop early when no goal's value (on the final dose, before
        normalisation) moved by more than this percentage of its level.
    leaf_refinement : bool
        After the segment weights, move the leaves of every open pair and the segment
        meterset together against the segment stage's dose fit
        (:func:`rtplan.delivery.refine_leaf_positions`, direct aperture optimisation;
        docs/protocols.md, "Leaf-position refinement").
    leaf_refinement_iterations : int
        Projected-gradient steps of the leaf refinement at most (1 to
        :data:`MAX_LEAF_REFINEMENT_ITERATIONS`).
    leaf_refinement_goal_weight : float
        Weight of the protocol's own optimisation terms (every level's soft dose terms,
        as the first-order solver sees them) beside the dose fit in the refinement's
        objective, each divided by its value at the sequenced segments (0: the fit alone).
    transmission_model : bool
        With the first-order solver and static beams: the optimiser's dose holds the MLC
        leaf transmission as a dose that follows each beam's smoothed sweep meterset
        (:mod:`rtplan.planning._transmission`; docs/protocols.md, "The MLC transmission
        in the optimiser"), calibrated on the last plan's segments in the correction
        loop. Ignored with ``solver = "cvxpy"`` and for arcs.

    Notes
    -----
    .. versionadded:: 0.1.0
       ``cvxpy_compression_threshold``, ``cvxpy_compression_rank``, ``cvxpy_helper_stride``,
       ``cvxpy_active_set``, ``final_dose_corrections`` and ``final_dose_tolerance_pct``.
    .. versionadded:: 0.1.0
       ``leaf_refinement``, ``leaf_refinement_iterations`` and
       ``leaf_refinement_goal_weight``.
    .. versionadded:: 0.1.0
       ``transmission_model``.
    """

    solver: str = "first_order"
    cvxpy_solver: str = "CLARABEL"
    slip: float = 0.05
    slip_abs: float = 0.0
    max_iterations: int = 300
    sequencing_levels: int = 7
    smoothness_weight: float = 1e-3
    mu_weight: float = 0.0
    normalize: bool = True
    target_aim: float = 0.02
    oar_aim: float = 0.10
    target_weight: float = 2.0
    cvxpy_compression_threshold: float = 0.01
    cvxpy_compression_rank: int = 32
    cvxpy_helper_stride: int = 2
    cvxpy_active_set: bool = True
    final_dose_corrections: int = 1
    final_dose_tolerance_pct: float = 0.5
    leaf_refinement: bool = False
    leaf_refinement_iterations: int = 40
    leaf_refinement_goal_weight: float = 0.0
    transmission_model: bool = False


#: Largest ``[optimization] cvxpy_compression_rank``: the low-rank factors are dense
#: (rows x rank and rank x beamlets, float64) and the solver's beamlet block grows with it.
MAX_CVXPY_COMPRESSION_RANK = 512
#: Largest ``[optimization] cvxpy_helper_stride`` (a ring 15 mm wide keeps a few rows).
MAX_CVXPY_HELPER_STRIDE = 8
#: Largest ``[optimization] final_dose_corrections``: each loop re-runs the optimisation,
#: the sequencing and the final dose.
MAX_FINAL_DOSE_CORRECTIONS = 5
#: Largest ``[optimization] leaf_refinement_iterations`` (each step is two products with
#: the influence matrix and a pass over every segment's fluence).
MAX_LEAF_REFINEMENT_ITERATIONS = 1000


@dataclass(frozen=True)
class HelperSettings:
    """Automatic optimisation helper structures (see :mod:`rtplan.planning._helper_structures`).

    Parameters
    ----------
    ring : bool
        Add a ring around the targets from ``ring_inner_mm`` to ``ring_outer_mm``.
    ring_inner_mm, ring_outer_mm : float, mm
        Ring distances from the target surface.
    ring_max_percent : float
        Dose cap of the ring as a percentage of the prescription.
    normal_tissue : bool
        Add "body minus (targets + ``normal_tissue_margin_mm``)".
    normal_tissue_margin_mm : float, mm
    normal_tissue_outer_mm : float, mm
        The normal tissue reaches this far from the targets (0 = the whole body).
    normal_tissue_max_percent : float
        Dose cap of the normal-tissue structure, % of prescription.
    overlap : bool
        Split targets and OARs where they overlap ("PTV minus OAR", "OAR minus PTV").
    """

    ring: bool = True
    ring_inner_mm: float = 5.0
    ring_outer_mm: float = 20.0
    ring_max_percent: float = 80.0
    normal_tissue: bool = True
    normal_tissue_margin_mm: float = 20.0
    normal_tissue_outer_mm: float = 50.0
    normal_tissue_max_percent: float = 60.0
    overlap: bool = True


@dataclass(frozen=True)
class SafetySettings:
    """Safety nets of a protocol (``[safety]``; see :mod:`rtplan.safety`).

    Parameters
    ----------
    min_total_dose_gy, max_total_dose_gy : float, Gy
        Plausible range of the prescription's total dose (protocol load refuses others).
    min_dose_per_fraction_gy, max_dose_per_fraction_gy : float, Gy
        Plausible range of the dose per fraction.
    allow_goal_above_rx_pct : float, %
        A dose goal (or the dose of a ``V_x`` goal) above this percentage of the highest
        prescription level is refused at load (e.g. a goal typed in cGy).
    implicit_target_limits : bool
        Give every target without an upper-limit goal an implicit one, and pull lower-level
        targets towards their level (see ``docs/protocols.md``).
    target_max_pct : float, %
        The implicit upper limit: ``D2% <= target_max_pct`` % of the target's level
        (>= 100).
    transition_margin_mm : float, mm
        Gradient zone around higher-level targets (> 0), where a lower-level target's
        limit is relaxed linearly from the higher level's at their surface to its own at
        this distance (``docs/protocols.md``, "Safety nets").
    target_floor_pct : float, %
        Implicit floor of every target: ``D99% >= target_floor_pct`` % of its level
        (0 = off).
    hotspot_pct : float, %
        Implicit global hot-spot limit: body ``D0.03cc <=`` this percentage of the highest
        level (0 = off).
    alara_weight : float
        Weight of the "as low as reasonably achievable" mean-dose term of every organ at
        risk, relative to an organ goal (0 = off).
    nto_weight : float
        Weight of the normal-tissue objective (dose fall-off from the targets' surface, in
        the first level), relative to an organ goal (0 = off).
    nto_start_pct, nto_end_pct : float, %
        Its cap at the targets' surface and far from them, % of the highest level
        (``nto_end_pct <= nto_start_pct``).
    nto_falloff_per_mm : float, 1/mm
        Its exponential fall-off rate: cap ``end + (start - end) exp(-k d)`` at ``d`` mm.
    normalization_cap_pct : float, %
        Largest change of the dose by normalisation; a plan needing more is normalised
        only to the cap and flagged.
    beam_balance_max_pct : float, %
        Flag a plan of at least ``beam_balance_min_beams`` beams in which one beam carries
        more than this share of the MU.
    beam_balance_min_beams : int
    """

    min_total_dose_gy: float = 0.5
    max_total_dose_gy: float = 100.0
    min_dose_per_fraction_gy: float = 0.5
    max_dose_per_fraction_gy: float = 25.0
    allow_goal_above_rx_pct: float = 130.0
    implicit_target_limits: bool = True
    target_max_pct: float = 107.0
    transition_margin_mm: float = 10.0
    target_floor_pct: float = 90.0
    hotspot_pct: float = 110.0
    alara_weight: float = 0.005
    nto_weight: float = 0.1
    nto_start_pct: float = 105.0
    nto_end_pct: float = 60.0
    nto_falloff_per_mm: float = 0.05
    normalization_cap_pct: float = 5.0
    beam_balance_max_pct: float = 40.0
    beam_balance_min_beams: int = 5


@dataclass(frozen=True)
class Protocol:
    """A parsed planning protocol.  Build one with :func:`load_protocol`.

    Attributes
    ----------
    name, description : str
    references : tuple of str
        Literature the goals come from.
    prescription : Prescription
    structures : tuple of StructureSpec
        Every structure the protocol names (declared or used by a goal).
    goals : tuple of GoalSpec
    beams : BeamArrangement
    dose_grid_mm : tuple of float, mm
        Dose-grid spacing ``(dx, dy, dz)``.
    optimization : OptimizationSettings
    helpers : HelperSettings
    safety : SafetySettings
    source : str
        File the protocol came from (or ``"<dict>"``).
    derived : tuple of DerivedSpec
        ``[[structures.derived]]`` entries in dependency order (their names are also in
        :attr:`structures`); see :mod:`rtplan.protocols._derived`.
    reported : tuple of GoalSpec
        ``[[reported]]`` entries: values evaluated and shown beside their reference level,
        never optimised and never counted as a goal met or failed.
    density_table : str or None
        ``[dose] density_table``: the scanner's CT-to-density calibration file (CSV, TOML
        or JSON; :func:`dose_engine.load_hu_table`), resolved against the protocol file's
        folder by :func:`load_protocol`; ``None``: the shipped generic table.
    final_algorithm : {"auto", "ccc", "pencil_beam"}
        ``[dose] final_algorithm``: the dose engine of the plan's final dose and RT-DOSE
        (:data:`FINAL_ALGORITHMS`); ``"auto"`` (default): the collapsed cone when the body
        holds lung or bone, else the pencil beam (docs/dose_algorithms.md).

        .. versionadded:: 0.1.0
    influence_algorithm : {"pencil_beam", "ccc"}
        ``[dose] influence_algorithm``: the engine of the beamlet influence matrices the
        optimisation runs on (:data:`INFLUENCE_ALGORITHMS`); ``"pencil_beam"`` (default,
        fast and cached) or ``"ccc"``, per-beamlet collapsed-cone doses
        (:func:`dose_engine.compute_ccc_influence_matrix`: one transport per beamlet,
        minutes, never cached).

        .. versionadded:: 0.1.0
    """

    name: str
    description: str
    references: tuple[str, ...]
    prescription: Prescription
    structures: tuple[StructureSpec, ...]
    goals: tuple[GoalSpec, ...]
    beams: BeamArrangement
    dose_grid_mm: tuple[float, float, float]
    optimization: OptimizationSettings = field(default_factory=OptimizationSettings)
    helpers: HelperSettings = field(default_factory=HelperSettings)
    safety: SafetySettings = field(default_factory=SafetySettings)
    source: str = "<dict>"
    derived: tuple = ()
    reported: tuple[GoalSpec, ...] = ()
    density_table: str | None = None
    final_algorithm: str = "auto"
    influence_algorithm: str = "pencil_beam"

    # ------------------------------------------------------------------ lookup
    def structure(self, name: str) -> StructureSpec:
        """The :class:`StructureSpec` of protocol structure ``name``."""
        for s in self.structures:
            if s.name == name:
                return s
        raise ProtocolError(
            f"Protocol '{self.name}' has no structure '{name}'; it has "
            f"{[s.name for s in self.structures]}."
        )

    @property
    def targets(self) -> tuple[str, ...]:
        """Protocol names of the target structures (prescription target first)."""
        names = [self.prescription.target]
        names += [s.name for s in self.structures if s.role == "target" and s.name not in names]
        return tuple(names)

    @property
    def target_levels_gy(self) -> dict[str, float]:
        """Total dose level (Gy) of every target, prescription target first."""
        given = dict(self.prescription.levels_gy)
        return {t: given.get(t, self.prescription.total_dose_gy) for t in self.targets}

    @property
    def external(self) -> str | None:
        """Protocol name of the external (body) structure, if declared."""
        for s in self.structures:
            if s.role == "external":
                return s.name
        return None

    def with_overrides(
        self,
        *,
        dose_grid_mm: float | tuple[float, float, float] | None = None,
        gantry_angles_deg: Iterable[float] | None = None,
        n_beams: int | None = None,
        solver: str | None = None,
        final_algorithm: str | None = None,
        influence_algorithm: str | None = None,
        technique: str | None = None,
        **optimization: Any,
    ) -> Protocol:
        """A copy with some settings replaced (grid, beams, solver, optimisation options).

        Parameters
        ----------
        dose_grid_mm : float or (3,) tuple of float, mm, optional
        gantry_angles_deg : sequence of float, optional
        n_beams : int, optional
            Equispaced coplanar beams starting at gantry 0.
        solver : {"first_order", "cvxpy"}, optional
        final_algorithm : {"auto", "ccc", "pencil_beam"}, optional
            The final dose's engine (``[dose] final_algorithm``).
        influence_algorithm : {"pencil_beam", "ccc"}, optional
            The influence matrices' engine (``[dose] influence_algorithm``).
        technique : {"imrt", "vmat"}, optional
            ``[beams] technique``: static beams or the protocol's arcs (default two full
            arcs).
        **optimization
            Any field of :class:`OptimizationSettings`.
        """
        new = self
        if dose_grid_mm is not None:
            new = replace(new, dose_grid_mm=_grid_triple(dose_grid_mm, self.source))
        if final_algorithm is not None:
            new = replace(
                new,
                final_algorithm=_final_algorithm(self.source, "`final_algorithm`", final_algorithm),
            )
        if influence_algorithm is not None:
            new = replace(
                new,
                influence_algorithm=_choice(
                    self.source,
                    "`influence_algorithm`",
                    influence_algorithm,
                    INFLUENCE_ALGORITHMS,
                ),
            )
        if technique is not None:
            new = replace(
                new,
                beams=replace(
                    new.beams, technique=_technique(self.source, "`technique`", technique)
                ),
            )
        if new.beams.technique == "vmat" and (n_beams is not None or gantry_angles_deg):
            raise ProtocolError(
                f"Protocol {self.source}: `n_beams` / `gantry_angles_deg` set static beams but "
                "the plan is VMAT ([beams] technique = 'vmat' or technique='vmat'); give the "
                "arcs in [[beams.arcs]] or plan with technique 'imrt'."
            )
        if n_beams is not None:
            gantry_angles_deg = _equispaced(int(n_beams), 0.0, self.source)
        if gantry_angles_deg is not None:
            angles = tuple(_angle(self.source, "`gantry_angles_deg`", a) for a in gantry_angles_deg)
            if not angles:
                raise ProtocolError("`gantry_angles_deg` is empty; give at least one beam.")
            new = replace(new, beams=replace(new.beams, gantry_angles_deg=angles))
        opt = dict(optimization)
        if solver is not None:
            opt["solver"] = solver
        if opt:
            unknown = set(opt) - set(OptimizationSettings.__dataclass_fields__)
            if unknown:
                raise ProtocolError(
                    f"Unknown optimisation option(s) {sorted(unknown)}; accepted: "
                    f"{sorted(OptimizationSettings.__dataclass_fields__)}."
                )
            new = replace(new, optimization=replace(new.optimization, **opt))
            _check_optimization(new.optimization, self.source)
        return new

    # -------------------------------------------------------------- structures
    def resolve_structures(
        self,
        patient_structure_names: Iterable[str],
        *,
        overrides: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Map every protocol structure to a patient structure name.

        Order of precedence: ``overrides`` (the CLI's ``--map PTV=OuterTarget``), then
        the protocol name and aliases (exact, case-insensitive), then the regular
        expressions (``re.fullmatch``, case-insensitive; exactly one patient structure
        must match).

        Parameters
        ----------
        patient_structure_names : iterable of str
            Names of the patient's structures (RT-STRUCT ROI names).
        overrides : mapping of str to str, optional
            Protocol name → patient structure name, used verbatim (case-insensitive).

        Returns
        -------
        mapping : dict of str to str
            Protocol name → patient structure name, for every structure found.
            Optional structures (``required = false``) that are absent are left out.

        Raises
        ------
        ProtocolError
            A required structure is missing (the message lists the patient's structures
            and the names and patterns tried), a pattern matches several structures, or
            an override names an unknown protocol or patient structure.
        """
        names = list(patient_structure_names)
        by_fold = {n.casefold(): n for n in names}
        overrides = dict(overrides or {})
        known = {s.name for s in self.structures}
        for key, value in overrides.items():
            if key not in known:
                raise ProtocolError(
                    f"--map {key}={value}: protocol '{self.name}' has no structure '{key}'; "
                    f"its structures are {sorted(known)}."
                )
            if value.casefold() not in by_fold:
                raise ProtocolError(
                    f"--map {key}={value}: the patient has no structure '{value}'; "
                    f"available: {names}."
                )
        mapping: dict[str, str] = {}
        for spec in self.structures:
            if spec.name in overrides:
                mapping[spec.name] = by_fold[overrides[spec.name].casefold()]
                continue
            found = next(
                (by_fold[c.casefold()] for c in spec.candidates() if c.casefold() in by_fold), None
            )
            if found is None and spec.patterns:
                hits = [
                    n
                    for n in names
                    if any(re.fullmatch(p, n, flags=re.IGNORECASE) for p in spec.patterns)
                ]
                if len(hits) > 1:
                    raise ProtocolError(
                        f"Protocol '{self.name}': structure '{spec.name}' is ambiguous: patterns "
                        f"{list(spec.patterns)} match {hits}; choose one with "
                        f"--map {spec.name}=<name>."
                    )
                found = hits[0] if hits else None
            if found is None:
                if spec.required:
                    raise ProtocolError(
                        f"Protocol '{self.name}' needs structure '{spec.name}' but the patient "
                        f"has none matching it (names tried: {list(spec.candidates())}, "
                        f"patterns: {list(spec.patterns)}); the patient's structures are "
                        f"{names}. Map it explicitly with --map {spec.name}=<patient name>."
                    )
                logger.info("optional structure %s not found; its goals are skipped", spec.name)
                continue
            mapping[spec.name] = found
        used: dict[str, str] = {}
        for proto_name, patient_name in mapping.items():
            if patient_name in used:
                raise ProtocolError(
                    f"Protocol '{self.name}': structures '{used[patient_name]}' and "
                    f"'{proto_name}' both resolve to the patient structure '{patient_name}'; "
                    "fix the aliases or use --map."
                )
            used[patient_name] = proto_name
        return mapping

    # ------------------------------------------------------------------- goals
    def evaluation_goals(self, mapping: Mapping[str, str] | None = None) -> list[Any]:
        """The goals as :class:`rtplan.evaluation.Goal` objects on patient structure names.

        Parameters
        ----------
        mapping : mapping of str to str, optional
            Result of :meth:`resolve_structures`; goals on structures absent from the
            mapping (optional structures) are dropped.  Without a mapping the protocol
            names are kept.

        Returns
        -------
        list of rtplan.evaluation.Goal
            Ready for :func:`rtplan.evaluation.evaluate_goals` (with
            ``prescription_gy=protocol.prescription.total_dose_gy``).
        """
        return _on_patient(self.goals, mapping)

    def reported_goals(self, mapping: Mapping[str, str] | None = None) -> list[Any]:
        """The ``[[reported]]`` values as :class:`rtplan.evaluation.Goal` objects (their
        limit is the reference level shown beside the value); same ``mapping`` rule as
        :meth:`evaluation_goals`."""
        return _on_patient(self.reported, mapping)

    def goals_not_evaluated(self, mapping: Mapping[str, str]) -> list[tuple[Any, str]]:
        """The goals :meth:`evaluation_goals` drops, each with the reason.

        Parameters
        ----------
        mapping : mapping of str to str
            Result of :meth:`resolve_structures`.

        Returns
        -------
        list of (rtplan.evaluation.Goal, str)
            Goals (on protocol names) whose structure is absent from ``mapping``.
        """
        return [
            (g.goal, self._absence(g.structure, mapping))
            for g in self.goals
            if g.structure not in mapping
        ]

    def _absence(self, name: str, mapping: Mapping[str, str]) -> str:
        """Why the optional structure ``name`` is absent (a derived one names the absent
        structures it is built from)."""
        derived = next((d for d in self.derived if d.name == name), None)
        if derived is None:
            return f"structure '{name}' not found in the patient (optional in the protocol)"
        missing = [n for n in (*derived.union, *derived.intersect) if n not in mapping]
        return (
            f"derived structure '{name}' not built: {', '.join(repr(n) for n in missing)} "
            "not found in the patient (optional in the protocol)"
        )


def _on_patient(specs: Iterable[GoalSpec], mapping: Mapping[str, str] | None) -> list[Any]:
    """The goals of ``specs`` renamed to patient structures; absent structures dropped."""
    if mapping is None:
        return [g.goal for g in specs]
    return [
        replace(g.goal, structure=mapping[g.structure]) for g in specs if g.structure in mapping
    ]


# --------------------------------------------------------------------------- parsing
#: Accepted ``[dose] final_algorithm`` values: ``"auto"`` (the collapsed cone when the
#: body holds lung or bone, :mod:`rtplan.planning._final_algorithm`), ``"ccc"``
#: (collapsed-cone convolution/superposition) and ``"pencil_beam"``.
FINAL_ALGORITHMS: tuple[str, ...] = ("auto", "ccc", "pencil_beam")


#: Accepted ``[dose] influence_algorithm`` values: the engine of the beamlet influence
#: matrices of the optimisation.
INFLUENCE_ALGORITHMS: tuple[str, ...] = ("pencil_beam", "ccc")


def _final_algorithm(source: str, where: str, value: Any) -> str:
    """``value`` if it is one of :data:`FINAL_ALGORITHMS`, else a ProtocolError naming it."""
    return _choice(source, where, value, FINAL_ALGORITHMS)


def _choice(source: str, where: str, value: Any, accepted: tuple[str, ...]) -> str:
    """``value`` if it is one of ``accepted``, else a ProtocolError naming it."""
    if not isinstance(value, str) or value not in accepted:
        raise _err(source, where, f"expected one of {', '.join(accepted)}, found {value!r}.")
    return value


def _err(source: str, where: str, msg: str) -> ProtocolError:
    return ProtocolError(f"Protocol {source}: {where}: {msg}")


def _number(
    source: str, where: str, value: Any, *, positive: bool = False, nonneg: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(source, where, f"expected a number, found {value!r}.")
    if positive and value <= 0:
        raise _err(source, where, f"expected a positive number, found {value!r}.")
    if nonneg and value < 0:
        raise _err(source, where, f"expected a number >= 0, found {value!r}.")
    return float(value)


def _angle(source: str, where: str, value: Any) -> float:
    """An IEC 61217 angle in [0, 360) degrees; 400 or -40 is refused, never wrapped."""
    v = _number(source, where, value)
    if not 0.0 <= v < 360.0:
        raise _err(source, where, f"expected an angle in [0, 360) degrees, found {value!r}.")
    return v


def _table(source: str, data: Mapping[str, Any], key: str, *, required: bool) -> dict:
    value = data.get(key)
    if value is None:
        if required:
            raise _err(source, f"[{key}]", "this table is required but missing.")
        return {}
    if not isinstance(value, Mapping):
        raise _err(source, f"[{key}]", f"expected a table, found {type(value).__name__}.")
    return dict(value)


def _check_unknown(source: str, where: str, table: Mapping[str, Any], allowed: Iterable[str]):
    allowed = set(allowed)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _err(source, where, f"unknown key(s) {unknown}; accepted: {sorted(allowed)}.")


def _grid_triple(value: Any, source: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = _number(source, "[grid] dose_grid_mm", value, positive=True)
        return (v, v, v)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        vals = [_number(source, "[grid] dose_grid_mm", v, positive=True) for v in value]
        return (vals[0], vals[1], vals[2])
    raise _err(
        source,
        "[grid] dose_grid_mm",
        f"expected a number or 3 numbers (dx, dy, dz) in mm, found {value!r}.",
    )


def _equispaced(n: int, start: float, source: str) -> tuple[float, ...]:
    if n < 1:
        raise _err(source, "[beams] count", f"expected at least 1 beam, found {n}.")
    return tuple(round((start + 360.0 * i / n) % 360.0, 6) for i in range(n))


def _technique(source: str, where: str, value: Any) -> str:
    if value not in TECHNIQUES:
        raise _err(source, where, f"expected one of {list(TECHNIQUES)}, found {value!r}.")
    return str(value)


_ARC_KEYS = ("start_deg", "stop_deg", "direction", "collimator_deg", "couch_deg")


def _parse_arcs(source: str, beams_t: Mapping[str, Any]) -> tuple[ArcSpec, ...]:
    """``[[beams.arcs]]``: each arc's start, stop, direction, collimator and couch."""
    raw = beams_t.get("arcs")
    if raw is None:
        return DEFAULT_ARCS
    if not isinstance(raw, list) or not raw or not all(isinstance(a, Mapping) for a in raw):
        raise _err(
            source,
            "[[beams.arcs]]",
            f"expected a non-empty array of tables ([[beams.arcs]]), found {raw!r}.",
        )
    arcs = []
    for i, arc in enumerate(raw):
        where = f"[[beams.arcs]] #{i + 1}"
        _check_unknown(source, where, arc, _ARC_KEYS)
        for key in ("start_deg", "stop_deg", "direction"):
            if key not in arc:
                raise _err(source, f"{where} {key}", "this key is required but missing.")
        start = _angle(source, f"{where} start_deg", arc["start_deg"])
        stop = _angle(source, f"{where} stop_deg", arc["stop_deg"])
        if start == stop:
            raise _err(
                source,
                f"{where} stop_deg",
                f"the arc starts and stops at {start:g} degrees; give distinct angles (a full "
                "arc is e.g. 181 to 179 CW).",
            )
        direction = arc["direction"]
        if direction not in ("CW", "CC"):
            raise _err(source, f"{where} direction", f"expected 'CW' or 'CC', found {direction!r}.")
        coll = arc.get("collimator_deg")
        arcs.append(
            ArcSpec(
                start,
                stop,
                direction,
                None if coll is None else _angle(source, f"{where} collimator_deg", coll),
                _angle(source, f"{where} couch_deg", arc.get("couch_deg", 0.0)),
            )
        )
    return tuple(arcs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_optimization(opt: OptimizationSettings, source: str) -> None:
    if opt.solver not in _SOLVERS:
        raise _err(
            source,
            "[optimization] solver",
            f"expected one of {list(_SOLVERS)}, found {opt.solver!r}.",
        )
    if not 0 <= opt.slip < 1:
        raise _err(source, "[optimization] slip", f"expected 0 <= slip < 1, found {opt.slip!r}.")
    if opt.sequencing_levels < 1:
        raise _err(
            source,
            "[optimization] sequencing_levels",
            f"expected >= 1, found {opt.sequencing_levels!r}.",
        )
    if opt.max_iterations < 1:
        raise _err(
            source, "[optimization] max_iterations", f"expected >= 1, found {opt.max_iterations!r}."
        )
    if not _is_number(opt.cvxpy_compression_threshold) or not (
        0 <= opt.cvxpy_compression_threshold < 1
    ):
        raise _err(
            source,
            "[optimization] cvxpy_compression_threshold",
            f"expected 0 <= threshold < 1 (a fraction of each beamlet's largest entry), found "
            f"{opt.cvxpy_compression_threshold!r}.",
        )
    if not _is_int(opt.cvxpy_compression_rank) or not (
        0 <= opt.cvxpy_compression_rank <= MAX_CVXPY_COMPRESSION_RANK
    ):
        raise _err(
            source,
            "[optimization] cvxpy_compression_rank",
            f"expected an integer from 0 to {MAX_CVXPY_COMPRESSION_RANK}, found "
            f"{opt.cvxpy_compression_rank!r}.",
        )
    if not _is_int(opt.cvxpy_helper_stride) or not (
        1 <= opt.cvxpy_helper_stride <= MAX_CVXPY_HELPER_STRIDE
    ):
        raise _err(
            source,
            "[optimization] cvxpy_helper_stride",
            f"expected an integer from 1 to {MAX_CVXPY_HELPER_STRIDE}, found "
            f"{opt.cvxpy_helper_stride!r}.",
        )
    n = opt.final_dose_corrections
    if not _is_int(n) or not 0 <= n <= MAX_FINAL_DOSE_CORRECTIONS:
        raise _err(
            source,
            "[optimization] final_dose_corrections",
            f"expected an integer from 0 (off) to {MAX_FINAL_DOSE_CORRECTIONS}, found {n!r}.",
        )
    n = opt.leaf_refinement_iterations
    if not _is_int(n) or not 1 <= n <= MAX_LEAF_REFINEMENT_ITERATIONS:
        raise _err(
            source,
            "[optimization] leaf_refinement_iterations",
            f"expected an integer from 1 to {MAX_LEAF_REFINEMENT_ITERATIONS}, found {n!r}.",
        )
    tol = opt.final_dose_tolerance_pct
    if not _is_number(tol) or not 0 <= tol < 100:
        raise _err(
            source,
            "[optimization] final_dose_tolerance_pct",
            f"expected a percentage >= 0 and < 100, found {tol!r}.",
        )


def _parse_structures(source: str, data: Mapping[str, Any]) -> dict[str, StructureSpec]:
    table = _table(source, data, "structures", required=False)
    out: dict[str, StructureSpec] = {}
    for name, spec in table.items():
        if name == "derived":  # [[structures.derived]]: parse_derived
            continue
        where = f"[structures.{name}]"
        if not isinstance(spec, Mapping):
            raise _err(source, where, f"expected a table, found {spec!r}.")
        _check_unknown(source, where, spec, ("role", "aliases", "patterns", "required"))
        role = spec.get("role", "oar")
        if role not in _ROLES:
            raise _err(source, f"{where} role", f"expected one of {list(_ROLES)}, found {role!r}.")
        aliases = spec.get("aliases", [])
        patterns = spec.get("patterns", [])
        for key, val in (("aliases", aliases), ("patterns", patterns)):
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise _err(source, f"{where} {key}", f"expected a list of strings, found {val!r}.")
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise _err(
                    source, f"{where} patterns", f"bad regular expression {p!r}: {exc}."
                ) from None
        required = spec.get("required", True)
        if not isinstance(required, bool):
            raise _err(source, f"{where} required", f"expected true or false, found {required!r}.")
        if role == "external" and not aliases:
            aliases = list(_EXTERNAL_ALIASES)
        out[name] = StructureSpec(name, role, tuple(aliases), tuple(patterns), required)
    return out


def _derived_structures(
    source: str, data: Mapping[str, Any], structures: dict[str, StructureSpec], target: str
) -> tuple:
    """Parse ``[[structures.derived]]`` and register each derived name as a structure."""
    table = _table(source, data, "structures", required=False)
    if "derived" not in table:
        return ()
    derived = parse_derived(source, table["derived"], declared=structures, target=target)
    for d in derived:
        # optional when its base (from / union / intersect) reads an optional structure:
        # absent with it (its goals "not evaluated"); an optional `minus` operand that is
        # absent subtracts nothing.  The prescription target is never optional.
        base = (*d.union, *d.intersect)
        optional = any(n in structures and not structures[n].required for n in base)
        structures[d.name] = StructureSpec(
            d.name, d.role, required=d.name == target or not optional
        )
    return derived


def _parse_goal(source: str, i: int, goal: Any, table: str = "goal") -> GoalSpec:
    where = f"{table} {i}"
    if not isinstance(goal, Mapping):
        raise _err(
            source,
            where,
            'expected a table like { structure = "PTV", metric = '
            f'"D95%", min = 50 }}, found {goal!r}.',
        )
    structure = goal.get("structure")
    if not isinstance(structure, str) or not structure:
        raise _err(
            source, f"{where} field 'structure'", f"expected a structure name, found {structure!r}."
        )
    where = f"{table} {i} ({structure} {goal.get('metric', '?')})"
    hard = goal.get("hard")
    if hard is not None and not isinstance(hard, bool):
        raise _err(source, f"{where} field 'hard'", f"expected true or false, found {hard!r}.")
    note = goal.get("note", "")
    if not isinstance(note, str):
        raise _err(source, f"{where} field 'note'", f"expected a string, found {note!r}.")
    priority = goal.get("priority", 2)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
        raise _err(
            source,
            f"{where} field 'priority'",
            f"expected an integer >= 1 (1 = most important), found {priority!r}.",
        )
    for key in ("min", "max", "level", "acceptable"):
        if key in goal:
            v = goal[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _err(source, f"{where} field '{key}'", f"expected a number, found {v!r}.")
    spec = {k: v for k, v in goal.items() if k not in ("hard", "note")}
    spec["priority"] = priority
    spec.setdefault("label", note)
    try:
        parsed = Goal.from_mapping(spec, dose_unit="Gy")
    except ProtocolError as exc:
        raise _err(source, where, str(exc)) from None
    return GoalSpec(i, parsed, hard, note)


def _parse_reported(source: str, raw: Any) -> tuple[GoalSpec, ...]:
    """``[[reported]]``: goals' grammar without ``hard`` or ``priority`` (never optimised)."""
    if not isinstance(raw, list):
        raise _err(
            source,
            "reported",
            f"expected an array of tables ([[reported]]), found {type(raw).__name__}.",
        )
    for i, entry in enumerate(raw):
        for key in ("hard", "priority"):
            if isinstance(entry, Mapping) and key in entry:
                raise _err(
                    source,
                    f"reported {i} field '{key}'",
                    "a reported value is never optimised; move it to [[goals]] to plan for it.",
                )
    return tuple(_parse_goal(source, i, g, table="reported") for i, g in enumerate(raw))


def _parse_levels(
    source: str, rx: Mapping[str, Any], total_gy: float, target: str, structures: dict
) -> tuple[tuple[str, float], ...]:
    """``[prescription.levels]``: dose level (Gy) per target; adds undeclared targets."""
    table = rx.get("levels", {})
    where = "[prescription.levels]"
    if not isinstance(table, Mapping):
        raise _err(source, where, f"expected a table of target = level in Gy, found {table!r}.")
    out = []
    for name, value in table.items():
        level = _number(source, f"{where} {name}", value, positive=True)
        if name == target and level != total_gy:
            raise _err(
                source,
                f"{where} {name}",
                f"the prescription target's level is total_dose_gy ({total_gy:g} Gy), "
                f"found {level:g} Gy.",
            )
        if level > total_gy:
            raise _err(
                source,
                f"{where} {name}",
                f"{level:g} Gy exceeds the prescription ({total_gy:g} Gy to {target}); the "
                "prescription target must carry the highest level.",
            )
        spec = structures.get(name)
        if spec is None:
            structures[name] = StructureSpec(name, "target")
        elif spec.role != "target":
            raise _err(source, f"{where} {name}", f'expected a target, found role "{spec.role}".')
        out.append((name, level))
    return tuple(out)


def _parse_safety(source: str, data: Mapping[str, Any]) -> SafetySettings:
    """``[safety]``: every key of :class:`SafetySettings`, typed as its default."""
    table = _table(source, data, "safety", required=False)
    _check_unknown(source, "[safety]", table, SafetySettings.__dataclass_fields__)
    defaults = SafetySettings()
    kw: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        where = f"[safety] {key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _err(source, where, f"expected true or false, found {value!r}.")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _err(source, where, f"expected an integer >= 1, found {value!r}.")
        else:
            value = _number(source, where, value, nonneg=True)
        kw[key] = value
    if not kw.get("transition_margin_mm", defaults.transition_margin_mm) > 0:
        raise _err(
            source,
            "[safety] transition_margin_mm",
            f"expected a positive distance in mm (the gradient zone between dose levels), "
            f"found {kw['transition_margin_mm']!r}.",
        )
    if kw.get("target_max_pct", defaults.target_max_pct) < 100:
        raise _err(
            source,
            "[safety] target_max_pct",
            f"expected >= 100 (an upper limit below a target's own level contradicts its "
            f"coverage), found {kw['target_max_pct']!r}; to switch the implicit limits off "
            "set implicit_target_limits = false.",
        )
    start = kw.get("nto_start_pct", defaults.nto_start_pct)
    end = kw.get("nto_end_pct", defaults.nto_end_pct)
    if end > start:
        raise _err(
            source,
            "[safety] nto_end_pct",
            f"expected at most nto_start_pct ({start!r}: the normal-tissue cap falls off "
            f"with distance from the targets), found {end!r}.",
        )
    return SafetySettings(**kw)


@check_arguments(data="collections.abc:Mapping")
def parse_protocol(data: Mapping[str, Any], *, source: str = "<dict>") -> Protocol:
    """Build a :class:`Protocol` from a parsed TOML document.

    Parameters
    ----------
    data : mapping
        The TOML document (as from :func:`tomllib.load`).
    source : str
        File name used in error messages.

    Raises
    ------
    ProtocolError
        Naming the table, goal index and field that is malformed, and what was expected.
    """
    top_keys = (
        "name",
        "description",
        "references",
        "prescription",
        "structures",
        "goals",
        "reported",
        "beams",
        "grid",
        "dose",
        "optimization",
        "helpers",
        "safety",
    )
    if not isinstance(data, Mapping):
        raise ProtocolError(f"Protocol {source}: expected a TOML document (table).")
    _check_unknown(source, "top level", data, top_keys)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _err(source, "name", f"expected a protocol name, found {name!r}.")
    description = data.get("description", "")
    references = data.get("references", [])
    if isinstance(references, str):
        references = [references]

    rx = _table(source, data, "prescription", required=True)
    _check_unknown(source, "[prescription]", rx, ("total_dose_gy", "fractions", "target", "levels"))
    total = _number(source, "[prescription] total_dose_gy", rx.get("total_dose_gy"), positive=True)
    fractions = rx.get("fractions")
    if isinstance(fractions, bool) or not isinstance(fractions, int) or fractions < 1:
        raise _err(
            source, "[prescription] fractions", f"expected a positive integer, found {fractions!r}."
        )
    target = rx.get("target")
    if not isinstance(target, str) or not target:
        raise _err(source, "[prescription] target", f"expected a structure name, found {target!r}.")
    structures = _parse_structures(source, data)
    derived = _derived_structures(source, data, structures, target)
    prescription = Prescription(
        total, fractions, target, _parse_levels(source, rx, total, target, structures)
    )
    if target not in structures:
        structures[target] = StructureSpec(target, "target")
    elif structures[target].role != "target":
        raise _err(
            source,
            f"[structures.{target}] role",
            f'the prescription target must have role "target", found {structures[target].role!r}.',
        )

    goals_raw = data.get("goals", [])
    if not isinstance(goals_raw, list):
        raise _err(
            source,
            "goals",
            f"expected an array of tables ([[goals]]), found {type(goals_raw).__name__}.",
        )
    goals = tuple(_parse_goal(source, i, g) for i, g in enumerate(goals_raw))
    reported = _parse_reported(source, data.get("reported", []))
    for g in goals + reported:
        if g.structure not in structures:
            structures[g.structure] = StructureSpec(g.structure, "oar")

    beams_t = _table(source, data, "beams", required=False)
    _check_unknown(
        source,
        "[beams]",
        beams_t,
        (
            "count",
            "start_deg",
            "gantry_deg",
            "collimator_deg",
            "couch_deg",
            "machine",
            "beamlet_width_mm",
            "beamlet_height_mm",
            "margin_mm",
            "technique",
            "arcs",
            "arc_sector_deg",
        ),
    )
    if "gantry_deg" in beams_t and "count" in beams_t:
        raise _err(
            source,
            "[beams]",
            "give either `count` (equispaced beams) or `gantry_deg` (a list), not both.",
        )
    if "gantry_deg" in beams_t:
        g = beams_t["gantry_deg"]
        if not isinstance(g, list) or not g:
            raise _err(
                source,
                "[beams] gantry_deg",
                f"expected a non-empty list of angles in degrees, found {g!r}.",
            )
        angles = tuple(_angle(source, "[beams] gantry_deg", a) for a in g)
    else:
        count = beams_t.get("count", 9)
        if isinstance(count, bool) or not isinstance(count, int):
            raise _err(source, "[beams] count", f"expected an integer, found {count!r}.")
        start = _number(source, "[beams] start_deg", beams_t.get("start_deg", 0.0))
        angles = _equispaced(count, start, source)
    machine = beams_t.get("machine", "VarianMLC120")
    if not isinstance(machine, str):
        raise _err(
            source, "[beams] machine", f"expected a machine name or file, found {machine!r}."
        )
    beams = BeamArrangement(
        gantry_angles_deg=angles,
        collimator_angle_deg=_number(
            source, "[beams] collimator_deg", beams_t.get("collimator_deg", 0.0)
        ),
        couch_angle_deg=_number(source, "[beams] couch_deg", beams_t.get("couch_deg", 0.0)),
        machine=machine,
        beamlet_width_mm=_number(
            source, "[beams] beamlet_width_mm", beams_t.get("beamlet_width_mm", 5.0), positive=True
        ),
        beamlet_height_mm=_number(
            source,
            "[beams] beamlet_height_mm",
            beams_t.get("beamlet_height_mm", 5.0),
            positive=True,
        ),
        margin_mm=_number(source, "[beams] margin_mm", beams_t.get("margin_mm", 5.0), nonneg=True),
        technique=_technique(source, "[beams] technique", beams_t.get("technique", "imrt")),
        arcs=_parse_arcs(source, beams_t),
        arc_sector_deg=_number(
            source,
            "[beams] arc_sector_deg",
            beams_t.get("arc_sector_deg", DEFAULT_ARC_SECTOR_DEG),
            positive=True,
        ),
    )
    if beams.technique != "vmat" and "arcs" in beams_t:
        raise _err(
            source,
            "[[beams.arcs]]",
            f'arcs need `technique = "vmat"` in [beams] (found technique {beams.technique!r}).',
        )

    grid_t = _table(source, data, "grid", required=False)
    _check_unknown(source, "[grid]", grid_t, ("dose_grid_mm",))
    dose_grid = _grid_triple(grid_t.get("dose_grid_mm", 3.0), source)
    dose_t = _table(source, data, "dose", required=False)
    _check_unknown(
        source, "[dose]", dose_t, ("density_table", "final_algorithm", "influence_algorithm")
    )
    final_algorithm = _final_algorithm(
        source, "[dose] final_algorithm", dose_t.get("final_algorithm", "auto")
    )
    influence_algorithm = _choice(
        source,
        "[dose] influence_algorithm",
        dose_t.get("influence_algorithm", "pencil_beam"),
        INFLUENCE_ALGORITHMS,
    )
    density_table = dose_t.get("density_table")
    if density_table is not None and (not isinstance(density_table, str) or not density_table):
        raise _err(
            source, "[dose] density_table", f"expected a file name, found {density_table!r}."
        )

    opt_t = _table(source, data, "optimization", required=False)
    _check_unknown(source, "[optimization]", opt_t, OptimizationSettings.__dataclass_fields__)
    defaults = OptimizationSettings()
    kw: dict[str, Any] = {}
    for key, value in opt_t.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _err(
                    source, f"[optimization] {key}", f"expected true or false, found {value!r}."
                )
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _err(
                    source, f"[optimization] {key}", f"expected an integer, found {value!r}."
                )
        elif isinstance(default, float):
            value = _number(source, f"[optimization] {key}", value, nonneg=True)
        elif not isinstance(value, str):
            raise _err(source, f"[optimization] {key}", f"expected a string, found {value!r}.")
        kw[key] = value
    optimization = OptimizationSettings(**kw)
    _check_optimization(optimization, source)

    help_t = _table(source, data, "helpers", required=False)
    _check_unknown(source, "[helpers]", help_t, HelperSettings.__dataclass_fields__)
    hdef = HelperSettings()
    hkw: dict[str, Any] = {}
    for key, value in help_t.items():
        if isinstance(getattr(hdef, key), bool):
            if not isinstance(value, bool):
                raise _err(source, f"[helpers] {key}", f"expected true or false, found {value!r}.")
            hkw[key] = value
        else:
            hkw[key] = _number(source, f"[helpers] {key}", value, nonneg=True)
    helpers = HelperSettings(**hkw)
    if helpers.normal_tissue_outer_mm and not (
        helpers.normal_tissue_outer_mm > helpers.normal_tissue_margin_mm
    ):
        raise _err(
            source,
            "[helpers] normal_tissue_outer_mm",
            f"must exceed normal_tissue_margin_mm ({helpers.normal_tissue_margin_mm:g} mm) "
            f"or be 0 (whole body), found {helpers.normal_tissue_outer_mm:g} mm.",
        )
    if helpers.ring and not helpers.ring_outer_mm > helpers.ring_inner_mm:
        raise _err(
            source,
            "[helpers] ring_outer_mm",
            f"must exceed ring_inner_mm ({helpers.ring_inner_mm:g} mm), "
            f"found {helpers.ring_outer_mm:g} mm.",
        )

    if not any(g.structure in {target} and g.sense == ">=" for g in goals):
        logger.info(
            "protocol %s has no minimum-dose goal on %s; coverage of the prescription is used",
            name,
            target,
        )

    protocol = Protocol(
        name=name,
        description=str(description),
        references=tuple(str(r) for r in references),
        prescription=prescription,
        structures=tuple(structures.values()),
        goals=goals,
        reported=reported,
        beams=beams,
        dose_grid_mm=dose_grid,
        optimization=optimization,
        helpers=helpers,
        safety=_parse_safety(source, data),
        source=source,
        derived=derived,
        density_table=density_table,
        final_algorithm=final_algorithm,
        influence_algorithm=influence_algorithm,
    )

    check_protocol_plausibility(protocol)
    return protocol


def _shipped_protocols() -> dict[str, Any]:
    """Shipped protocol files by name (file stem)."""
    files = resources.files(__package__).joinpath("data").iterdir()
    return {f.name[: -len(".toml")]: f for f in files if f.name.endswith(".toml")}


def available_protocols() -> tuple[str, ...]:
    """Names of the protocols shipped with rtplan (usable as ``--protocol NAME``)."""
    return tuple(sorted(_shipped_protocols()))


@check_arguments(name_or_path=PATH)
def load_protocol(name_or_path: str | os.PathLike) -> Protocol:
    """Load a shipped protocol by name, or a protocol TOML file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`available_protocols` (e.g. ``"tg119_cshape"``) or the path of
        a ``.toml`` file.

    Raises
    ------
    ProtocolError
        Unknown name (the message lists the shipped ones), unreadable or malformed file.

    Examples
    --------
    >>> from rtplan.protocols import load_protocol
    >>> p = load_protocol("tg119_cshape")
    >>> p.prescription.total_dose_gy
    50.0
    """
    data, source = read_named_toml(
        name_or_path,
        _shipped_protocols(),
        kind="protocol",
        listed=available_protocols(),
        error=ProtocolError,
    )
    protocol = parse_protocol(data, source=source)
    table = protocol.density_table
    if table is not None and not Path(table).is_absolute() and Path(name_or_path).is_file():
        protocol = replace(protocol, density_table=str(Path(name_or_path).parent / table))
    return protocol


@check_arguments(items=optional(sequence_of(TEXT)))
def parse_mapping_overrides(items: Iterable[str] | None) -> dict[str, str]:
    """Parse ``["PTV=OuterTarget", ...]`` (the CLI's ``--map``) into a dict.

    Raises
    ------
    ProtocolError
        An item is not of the form ``PROTOCOL_NAME=PATIENT_NAME``.
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ProtocolError(
                f"--map {item!r}: expected PROTOCOL_NAME=PATIENT_NAME, e.g. --map PTV=OuterTarget."
            )
        out[key.strip()] = value.strip()
    return out
