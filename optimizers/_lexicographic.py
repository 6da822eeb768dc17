"""Prioritised (lexicographic) optimisation on top of either solver."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._cvxpy_levels import SharedLevels
from ._problem import Problem
from ._result import OptimizationResult, Status
from ._solve import DEFAULT_METHOD, solve
from ._terms import Term, _LevelBound
from .errors import InvalidProblemError

__all__ = ["LevelResult", "LexicographicResult", "solve_lexicographic"]

logger = logging.getLogger("rtplan.optimizers")


@dataclass(frozen=True)
class LevelResult:
    """Outcome of one priority level.

    Attributes
    ----------
    level : int
        Priority (0 = most important).
    labels : tuple of str
        Labels of the level's soft terms.
    achieved : float
        Weighted objective of the level at its own optimum.
    bound : float
        ``achieved`` plus the slip: the value later levels may not exceed.
    final : float
        Weighted objective of the level at the final solution (``final <= bound``).
    result : OptimizationResult
        The level's solve.
    """

    level: int
    labels: tuple[str, ...]
    achieved: float
    bound: float
    final: float
    result: OptimizationResult


@dataclass(frozen=True, repr=False)
class LexicographicResult:
    """Result of :func:`solve_lexicographic`.

    Attributes
    ----------
    x : (n_beamlets,) ndarray of float64, MU
        Fluence of the last level.
    levels : tuple of LevelResult
        Per-level achieved values, bounds and solves.
    final : OptimizationResult
        The last level's result (its ``term_values`` list every term of every level).
    solve_time_s : float
        Total wall time, s.
    status : Status
        ``optimal`` when every level is; ``optimal_inaccurate`` when every level succeeded
        and one is inaccurate; otherwise the status of the most important level that did
        not succeed (e.g. ``iteration_limit``).
    success : bool
        ``status`` is ``optimal`` or ``optimal_inaccurate`` (every level succeeded).
    message : str
        A readable sentence naming the level behind ``status``.

    Notes
    -----
    .. versionadded:: 0.1.0
       ``status`` and ``message``, in the vocabulary of :class:`OptimizationResult`.
    """

    x: np.ndarray
    levels: tuple[LevelResult, ...]
    final: OptimizationResult
    solve_time_s: float

    @property
    def status(self) -> Status:
        """Outcome of the whole run (see the class attributes)."""
        for lv in self.levels:
            if not lv.result.success:
                return lv.result.status
        inaccurate = any(lv.result.status == Status.OPTIMAL_INACCURATE for lv in self.levels)
        return Status.OPTIMAL_INACCURATE if inaccurate else Status.OPTIMAL

    @property
    def success(self) -> bool:
        """Every level solved successfully."""
        return self.status in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE)

    @property
    def message(self) -> str:
        """One sentence: the outcome and, when a level did not succeed, which one."""
        n = len(self.levels)
        for lv in self.levels:
            if not lv.result.success:
                status, why = lv.result.status, lv.result.message
                return f"Priority level {lv.level} of {n} ended {status}: {why}"
        if self.status == Status.OPTIMAL_INACCURATE:
            return f"All {n} priority levels solved, at least one inaccurately."
        return f"All {n} priority levels solved to optimality."

    def __repr__(self) -> str:
        rows = "\n".join(
            f"  level {lv.level}: achieved {lv.achieved:.6g}, bound {lv.bound:.6g}, "
            f"final {lv.final:.6g} ({lv.result.status.value})"
            for lv in self.levels
        )
        return (
            f"LexicographicResult(message={self.message!r}, success={self.success}, "
            f"status={self.status.value}, {len(self.levels)} levels, "
            f"{self.solve_time_s:.3f} s\n{rows}\n)"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{lv.level}</td><td>{', '.join(lv.labels)}</td><td>{lv.achieved:.6g}</td>"
            f"<td>{lv.bound:.6g}</td><td>{lv.final:.6g}</td></tr>"
            for lv in self.levels
        )
        return (
            "<table><tr><th>level</th><th>terms</th><th>achieved</th><th>bound</th>"
            f"<th>final</th></tr>{rows}</table>"
        )


def solve_lexicographic(
    matrix: Any,
    structures: Mapping[str, Any],
    levels: Sequence[Sequence[Term]],
    *,
    constraints: Sequence[Term] = (),
    voxel_weights: Mapping[str, Any] | None = None,
    method: str = DEFAULT_METHOD,
    slip_rel: float = 0.03,
    slip_abs: float = 0.0,
    matrix_dtype: Any = np.float64,
    dose_offset: Any = None,
    meterset_dose: Any = None,
    one_formulation: bool = False,
    **options: Any,
) -> LexicographicResult:
    """Optimise priority levels one after another without hand-tuned weights across levels.

    Level ``k`` minimises the weighted sum of its soft terms subject to the hard
    ``constraints``, the hard terms of levels ``0..k``, and, for every earlier level ``j``,
    ``objective_j(x) <= achieved_j + max(slip_rel * |achieved_j|, slip_abs)``.

    Parameters
    ----------
    matrix : (n_voxels, n_beamlets) scipy.sparse CSR matrix, Gy per MU
        Influence matrix.
    structures : dict of str to (n_s,) array of int
        Voxel indices per structure.
    levels : sequence of sequences of Term
        Terms of each priority level, most important first. Soft terms of a level form its
        objective; hard terms in a level become constraints from that level on.
    constraints : sequence of Term, optional
        Hard constraints applied at every level.
    voxel_weights : dict of str to array, optional
        Per-voxel weights (see :class:`Problem`).
    method : {"first_order", "cvxpy"}, optional
        Method of each level's solve (default ``"first_order"``, as in :func:`solve`);
        ``"cvxpy"`` solves the exact convex terms (CVaR DVH goals without smoothing).

        .. versionchanged:: 0.1.0
           The default was ``"cvxpy"``; it is now the default of :func:`solve`.
    slip_rel : float, optional
        Relative slip allowed on earlier levels' objectives (default 0.03 = 3 %).
    slip_abs : float, optional
        Absolute slip, in the level objective's unit (default 0).
    matrix_dtype : {numpy.float64, numpy.float32}, optional
        Precision of the solver's copy of the touched matrix rows (see :class:`Problem`);
        float32 halves the memory traffic of the first-order solver's products.
    dose_offset : (n_voxels,) array of float, Gy, optional
        A constant dose per voxel added to ``matrix @ x`` in every term of every level
        (see :class:`Problem`), e.g. the correction ``d_final(x0) - matrix @ x0`` that
        makes the optimiser's dose equal an accurate final dose at ``x0``.

        .. versionadded:: 0.1.0
    meterset_dose : MetersetDose, optional
        A dose part that follows each beam's sweep meterset (the MLC leaf transmission),
        added in every term of every level (see :class:`Problem`; first-order solver only).

        .. versionadded:: 0.1.0
    one_formulation : bool, optional
        With ``method="cvxpy"``: every level solves one compiled CVXPY problem whose
        weights and level bounds are parameters (:mod:`optimizers._cvxpy_levels`; compiled
        again only when the beamlet active set grows), when hard terms sit only in
        ``constraints`` or the first level. Default False (each level builds and compiles
        its own problem). Its dose offset is a constant unless ``corrections`` are asked
        for (a vector parameter made CVXPY's compilation grow with rows squared: 43.4 GiB
        asked on the TG-119 C-shape at 3 mm; see :class:`optimizers.CvxpyFormulation`).

        .. versionadded:: 0.1.0
    **options
        Passed to the solver. A first-order ``x0`` starts the first level; each later
        level starts from the level before it. With ``method="cvxpy"``, ``active_set``,
        ``compression``, ``solver`` and ``solver_options`` as in :func:`solve`.

    Returns
    -------
    LexicographicResult

    Raises
    ------
    InvalidProblemError
        Empty levels, a level without soft terms, negative slips.
    InfeasibleError
        Hard constraints contradict each other (named).

    References
    ----------
    J. J. Wilkens, J. R. Alaly, K. Zakarian, W. L. Thorstad, J. O. Deasy, "IMRT treatment
    planning based on prioritizing prescription goals", Phys. Med. Biol. 52 (2007) 1675,
    doi:10.1088/0031-9155/52/6/009.
    """
    t0 = time.perf_counter()
    if not isinstance(structures, Mapping):
        raise TypeError(
            f"`structures` must be a mapping of name -> voxel indices; got "
            f"{type(structures).__name__}."
        )
    if not isinstance(levels, Sequence) or not all(
        isinstance(lv, Sequence) and all(isinstance(t, Term) for t in lv) for lv in levels
    ):
        raise TypeError(
            "`levels` must be a sequence of sequences of optimizers terms (one per priority "
            f"level); got {repr(levels)[:80]}."
        )
    if not levels:
        raise InvalidProblemError("`levels` is empty; give at least one list of terms.")
    if slip_rel < 0 or slip_abs < 0:
        raise InvalidProblemError(
            f"`slip_rel` and `slip_abs` must be >= 0, got {slip_rel!r} and {slip_abs!r}."
        )
    levels = [list(lv) for lv in levels]
    # the first-order solver sees smooth surrogates (softplus CVaR): bound what it sees
    smooth = method == "first_order"
    for i, lv in enumerate(levels):
        if not any(not t.hard for t in lv):
            raise InvalidProblemError(
                f"Priority level {i} has no objective (soft) term; move its hard terms into "
                "`constraints` or add a goal."
            )
    all_terms = [t for lv in levels for t in lv] + list(constraints)
    base = Problem(
        matrix,
        structures,
        all_terms,
        voxel_weights=voxel_weights,
        matrix_dtype=matrix_dtype,
        dose_offset=dose_offset,
        meterset_dose=meterset_dose,
    )
    hard = list(constraints)
    bounds: list[_LevelBound] = []
    done: list[LevelResult] = []
    x_prev = None
    res: OptimizationResult | None = None
    shared = None
    if method == "cvxpy" and one_formulation and not any(t.hard for lv in levels[1:] for t in lv):
        shared = SharedLevels(base, [[t for t in lv if not t.hard] for lv in levels], **options)
    for i, lv in enumerate(levels):
        hard += [t for t in lv if t.hard]
        soft = [t for t in lv if not t.hard]
        prob = base.with_terms(hard + bounds + soft)
        opts = dict(options)
        if x_prev is not None and (method == "first_order" or opts.get("active_set")):
            # the caller's x0 started the first level; later levels start from (or seed
            # the CVXPY active set with) the level before
            opts["x0"] = x_prev
        if shared is not None:
            res = shared.solve(i, [b.bound for b in bounds], prob)
        else:
            res = solve(prob, method=method, **opts)
        d_lv = prob.union_dose(res.x)
        achieved = float(
            sum(t.weight * prob.term_objective(t, d_lv, res.x, smooth=smooth) for t in soft)
        )
        bound = achieved + max(slip_rel * abs(achieved), slip_abs)
        logger.info(
            "priority level %d: achieved %.6g, bound for later levels %.6g", i, achieved, bound
        )
        bounds.append(_LevelBound(soft, bound, i))
        done.append(LevelResult(i, tuple(t.label for t in soft), achieved, bound, achieved, res))
        x_prev = res.x
        del prob  # its row-sliced matrix is freed before the next level slices its own
    assert res is not None  # `levels` is not empty
    # final value of each level at the last solution
    final_prob = base.with_terms(all_terms)
    d = final_prob.union_dose(res.x)
    out = []
    for lv_res, lv in zip(done, levels, strict=True):
        soft = [t for t in lv if not t.hard]
        f = float(
            sum(t.weight * final_prob.term_objective(t, d, res.x, smooth=smooth) for t in soft)
        )
        out.append(
            LevelResult(
                lv_res.level, lv_res.labels, lv_res.achieved, lv_res.bound, f, lv_res.result
            )
        )
    return LexicographicResult(
        x=res.x, levels=tuple(out), final=res, solve_time_s=time.perf_counter() - t0
    )
