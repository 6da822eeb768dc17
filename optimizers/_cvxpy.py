"""The CVXPY formulation of a problem, built once with parameters (DPP), and its solve driver.

The formulation has an auxiliary dose variable only for the voxels that terms touch (the
union of their structures): ``d == A_u @ x``, so the big sparse matrix appears once, and
no term adds a copy of it: squared deviations and fluence smoothness enter the objective
as quadratic forms of ``d`` and ``x`` themselves (``extras["problem_size"]`` of
:func:`solve_cvxpy` counts what the solver gets). Each term's expression comes from the
canonicaliser table (:mod:`optimizers._cvxpy_canon`); this module adds weights, bounds and
constraint senses. Weights, dose levels and bounds are
``cvxpy.Parameter`` objects: changing them and solving again skips canonicalisation (the
problem is DPP). The solver adapters live in :mod:`optimizers._solvers`.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from ._compress import CompressedMatrix, Compression
from ._cvxpy_canon import CvxpyContext, canonicalize, import_cvxpy, weight_scale
from ._cvxpy_screen import (
    SCREEN_GAP_REL,
    SCREEN_MAX_ROUNDS,
    active_left_out,
    screenable,
    screened_rows,
    screening_gap,
)
from ._meterset import refuse_meterset_dose
from ._problem import Problem, require_problem, structure_of, structures_read
from ._result import SOLUTION_PRESENT, OptimizationResult, Status
from ._solvers import SolveData, get_solver
from ._terms import _DVH, Term, _LevelBound
from .errors import InfeasibleError, InvalidProblemError, OptimizerWarning, SolverError

__all__ = ["CvxpyFormulation", "solve_cvxpy"]

logger = logging.getLogger("rtplan.optimizers")

#: Solvers :func:`solve_cvxpy` gives a formulation without a dose variable
#: (``CvxpyFormulation(dose_variable=False)``). SCS on PortPy's lung problem, cold:
#: 27.7 -> 21.6 CPU s (SCS's iterations 150 -> 132 s wall at load 12). Clarabel keeps the
#: variable: without it, lexicographic level problems of the tests ended "InsufficientProgress"
#: or "AlmostSolved"; OSQP keeps it too (it reached its iteration limit from a start where
#: it had converged with it).
DOSE_FREE_SOLVERS = ("SCS",)


class CvxpyFormulation:
    """A problem translated to CVXPY once; weights, levels and bounds are parameters.

    The dose adds :attr:`dose_offset`, a parameter holding the problem's ``union_offset``
    (zero without one) when the problem has a ``dose_offset`` or the matrix is compressed
    (then the compression's dose corrections of :func:`solve_cvxpy` add to it), or with
    ``offset_parameter=False`` a constant (``constant_offset``, else the problem's; none
    when the problem has no offset).

    Parameters
    ----------
    problem : Problem
        The problem to translate.
    elastic : bool, optional
        Add a non-negative slack to every hard constraint and minimise their sum instead of
        the objective (used to name conflicting constraints of an infeasible problem).
    compressed : CompressedMatrix, optional
        The union rows of ``problem.a_union`` compressed to sparse plus low rank
        (:func:`optimizers.compress_matrix`): the dose is ``d == S x + U z, z == V x``
        instead of ``d == A_u x``.
    columns : (n_active,) array of int, optional
        Beamlets the dose may use (sorted, unique); the others are held at zero by an
        equality ``x_fixed == 0`` whose multipliers price them
        (:meth:`reduced_costs`). The solver's dense beamlet block is then
        ``n_active`` wide instead of ``n_beamlets``. ``None`` (default): every beamlet.

        .. versionadded:: 0.1.0
    levels : sequence of sequences of int, optional
        Indices (into ``problem.terms``) of the soft terms of each lexicographic priority
        level. Each level ``j`` gets the constraint ``s_j sum_k w_k f_k <= b_j`` on the
        same expressions ``f_k`` as the objective (``s_j`` and ``b_j`` parameters, set to
        ``c_j`` = :func:`weight_scale` of its weights and ``c_j`` times its bound when the
        level is held), so every level solves the one compiled problem
        (:mod:`optimizers._cvxpy_levels`). ``None`` (default): no such constraints.

        .. versionadded:: 0.1.0
    offset_parameter : bool, optional
        Hold the dose offset in a ``cvxpy.Parameter`` of ``n_union`` entries (default
        True), so that :func:`solve_cvxpy`'s ``corrections`` re-solve it without a new
        compilation; False: a constant (``constant_offset``, else the problem's), so the
        offset cannot change without a new formulation (what :func:`solve_cvxpy` builds).
        A vector parameter is costly: CVXPY 1.9 re-orders the rows of the compiled
        parameter tensor for the conic solver (``ConicSolver.format_constraints``)
        through sparse matrices with one column per
        (variable entry + 1) x (parameter entry + 1), whose index arrays take about
        48 bytes per such pair when the problem has second-order cones (a quadratic term
        in a constraint): 0.9 GB at 3,600 dose rows and 5,300 variable entries, growing
        with the square of the rows; and it densifies a quadratic objective's
        coefficients against every parameter entry (8.38 GiB asked at 33,540 rows). See
        ``docs/interfaces.md``.

        .. versionadded:: 0.1.0
    constant_offset : (n_union,) array of float, Gy, optional
        With ``offset_parameter=False``: the constant dose offset to hold instead of the
        problem's ``union_offset`` (the problem's offset plus a compression's dose
        correction, as :func:`solve_cvxpy`'s ``corrections`` build it).

        .. versionadded:: 0.1.0

    dose_variable : bool, optional
        Define a dose variable ``d == A_u x`` of the union rows that every term reads
        (default True), or give each structure's terms its rows of the matrix times the
        fluence, with no variable and no equality row per voxel (False; what
        :func:`solve_cvxpy` builds for the solvers of :data:`DOSE_FREE_SOLVERS`). False
        needs no ``columns`` (the beamlets outside them are priced through the dose
        constraints' multipliers) and no dose offset parameter (``offset_parameter`` with
        a compression or a dose offset: outside the dose constraints it would multiply
        weight parameters, which is not DPP). Without the variable a squared deviation is
        a quadratic form of the fluence (the Gram matrix of its structure's rows, where
        small enough: :data:`optimizers._cvxpy_canon.GRAM_MAX_ENTRIES`). PortPy's lung
        problem: 326,707 rows x 164,093 variables with the variable, 173,894 x 11,280
        without.

        .. versionadded:: 0.1.0
    term_rows : dict of int to array of int, optional
        By term index, for :func:`optimizers._cvxpy_screen.screenable` terms (per-voxel
        hard terms, soft one-sided quadratics and CVaR dose-volume terms): the positions in
        the term's structure that the term reads; its other voxels are left out (a
        relaxation; :func:`solve_cvxpy` screens them and checks them after the solve). The
        dose variable then holds only the union rows some term reads. ``None`` (default):
        every voxel.

        .. versionadded:: 0.1.0

    Attributes
    ----------
    cvx_problem : cvxpy.Problem
    x : cvxpy.Variable
        Fluence, MU, ``x >= 0``.
    weight_params, level_params, bound_params : dict of int to cvxpy.Parameter
        Keyed by the index of the term in ``problem.terms``. Weight parameters hold
        ``objective_scale * weight`` and a level bound's parameter holds its bound times the
        level's own scale (see Notes); dose levels and dose bounds are in Gy.
    objective_scale : float
        Factor between the CVXPY objective and the problem's objective.
    constraints : dict of int to list of cvxpy.Constraint
        The hard terms' constraints (duals available after :func:`solve_cvxpy`, in the
        problem's objective units per unit of the bound).

    Notes
    -----
    The objective is scaled so that the largest soft weight is 100, and a level bound
    ``sum_k w_k f_k <= b`` so that its largest ``w_k`` is 100: solvers' absolute tolerances
    then act on well-scaled numbers whatever the planner's weights (``1 / Rx**2`` gives
    objectives of 1e-5, which Clarabel, OSQP and SCS resolve to only a few per cent).
    Scales follow the weights, so a re-solve with new weights stays DPP.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        elastic: bool = False,
        compressed: CompressedMatrix | None = None,
        columns: Any = None,
        levels: Any = None,
        offset_parameter: bool = True,
        constant_offset: Any = None,
        dose_variable: bool = True,
        term_rows: Any = None,
    ) -> None:
        require_problem(problem)
        refuse_meterset_dose(problem, "The CVXPY formulation")
        cp = import_cvxpy()
        self.problem = problem
        #: the positions in its structure each screened term reads, by term index
        self.term_rows = _check_term_rows(problem, term_rows)
        #: union positions the dose variable holds (``None``: every union row)
        self.dose_rows = _dose_rows(problem, self.term_rows)
        self.elastic = elastic
        self.compressed = compressed
        #: (n_union,) Gy: a constant added to the dose (a ``cvxpy.Parameter``): the
        #: problem's ``union_offset`` plus the dose correction of :func:`solve_cvxpy`'s
        #: ``corrections``; None when the problem has no offset and no compression. With
        #: ``offset_parameter=False`` a ``cvxpy.Constant`` (None without an offset)
        self.dose_offset: Any = None
        self.offset_parameter = bool(offset_parameter)
        if constant_offset is not None:
            constant_offset = np.asarray(constant_offset, dtype=np.float64)
            if self.offset_parameter or constant_offset.shape != problem.union_rows.shape:
                raise InvalidProblemError(
                    "`constant_offset` needs `offset_parameter=False` and one value per union "
                    f"row ({problem.union_rows.size}), got shape {constant_offset.shape}."
                )
        self._constant_offset = constant_offset
        #: the solver's own last solution by solver name (primal and dual): a re-solve of
        #: this formulation with a solver that warm starts (SCS) starts there
        self.last_solution: dict[str, Any] = {}
        n = problem.n_beamlets
        cons: list[Any] = []
        self.columns, self.fixed = _split_columns(columns, n)
        #: ``x_fixed == 0`` (the beamlets outside ``columns``), or ``None``
        self.fixed_constraint: Any = None
        if self.fixed.size:
            x_active = cp.Variable(self.columns.size, nonneg=True, name="x")
            x_fixed = cp.Variable(self.fixed.size, name="x_fixed")
            self.fixed_constraint = x_fixed == 0
            cons.append(self.fixed_constraint)
            self.x_active = x_active
            self.x = _scatter(self.columns, n) @ x_active + _scatter(self.fixed, n) @ x_fixed
        else:
            self.x = self.x_active = cp.Variable(n, nonneg=True, name="x")
        # a dose offset parameter outside the dose constraints would multiply the weight
        # parameters of affine terms (MeanDose): not DPP
        offset_param = self.offset_parameter and (
            compressed is not None or problem.union_offset is not None
        )
        self.dose_variable = bool(dose_variable)
        if not self.dose_variable and (self.fixed.size or offset_param):
            raise InvalidProblemError(
                "`dose_variable=False` needs no `columns` (the beamlets outside them are priced "
                "through the dose constraints' multipliers) and no dose offset parameter "
                "(`offset_parameter=False`, or no compression and no `dose_offset`)."
            )
        n_dose = problem.union_rows.size if self.dose_rows is None else self.dose_rows.size
        has_dose = bool(n_dose)
        #: the dose variable of the union rows (``dose_variable``; those of ``dose_rows``),
        #: else None
        self.d = cp.Variable(n_dose, name="dose") if has_dose and self.dose_variable else None
        #: each union row's position in :attr:`d` (-1: not held)
        self._d_pos = np.full(problem.union_rows.size, -1, dtype=np.int64)
        self._d_pos[np.arange(n_dose) if self.dose_rows is None else self.dose_rows] = np.arange(
            n_dose
        )
        #: a compressed matrix's tail ``z == V x`` (``rank`` entries), else None
        self.tail: Any = None
        #: the dose constraints (``d == A x``, or ``z == V x`` and ``d == S x + U z``;
        #: without a dose variable only ``z == V x``)
        self.dose_constraints: list[Any] = []
        #: each structure's dose expression without a dose variable, by name and rows
        self._doses: dict[tuple, Any] = {}
        if has_dose:
            self.dose_constraints = self._dose_constraints(cp, compressed)
            cons += self.dose_constraints
        self.weight_params: dict[int, Any] = {}
        self.level_params: dict[int, Any] = {}
        #: the square of a level parameter (Gy**2), kept equal to it, by term index
        self.level_square_params: dict[int, Any] = {}
        #: soft terms (by index) whose objective expression CVXPY accepts only in the
        #: objective (:meth:`CvxpyContext.mean_square_deviation`, ``fluence_square``): a
        #: level bound canonicalises them again for its constraint
        self.objective_only: set[int] = set()
        self.bound_params: dict[int, Any] = {}
        #: factor applied to each level bound's constraint (both sides), by term index
        self.bound_scales: dict[int, float] = {}
        self.objective_scale = (
            1.0 if elastic else weight_scale(t.weight for t in problem.soft_terms)
        )
        self.slacks: dict[int, Any] = {}
        #: CVXPY constraints of each hard term (by term index): their ``dual_value`` holds
        #: the multipliers after a solve (Gy-scaled: objective units per Gy of bound).
        self.constraints: dict[int, list] = {}
        objective: Any = 0
        #: auxiliary constraints added by the canonicalisers (:meth:`CvxpyContext.constrain`)
        self.aux_constraints: list[Any] = []
        #: each soft term's unweighted CVXPY expression, by term index
        self.soft_expressions: dict[int, Any] = {}
        for k, t in enumerate(problem.terms):
            if t.hard:
                self.constraints[k] = self._hard(k, t)
                cons += self.constraints[k]
            elif not elastic:
                w = cp.Parameter(nonneg=True, value=self.objective_scale * t.weight, name=f"w{k}")
                self.weight_params[k] = w
                rows = self.term_rows.get(k)
                self.soft_expressions[k] = (
                    cp.Constant(0.0)  # a one-sided quadratic with every voxel left out
                    if rows is not None and not rows.size
                    else canonicalize(t, CvxpyContext(self, t, k, objective=True))
                )
                objective = objective + w * self.soft_expressions[k]
        if elastic:
            objective = cp.sum(cp.hstack(list(self.slacks.values()))) if self.slacks else 0
        #: per priority level (``levels``): its objective ``sum_k w_k f_k``, the parameters
        #: ``s_j`` and ``b_j`` of its constraint ``s_j sum_k w_k f_k <= b_j``, and ``c_j``
        self.group_values: list[Any] = []
        self.group_scale_params: list[Any] = []
        self.group_bound_params: list[Any] = []
        self.group_scales: list[float] = []
        for j, group in enumerate(levels or ()):
            cons.append(self._group_bound(cp, j, [int(k) for k in group]))
        self.cvx_problem = cp.Problem(cp.Minimize(objective), cons + self.aux_constraints)

    # -- pieces ------------------------------------------------------------------------
    def _dose_constraints(self, cp: Any, compressed: CompressedMatrix | None) -> list[Any]:
        """Set :attr:`dose_offset` and, compressed, :attr:`tail`; return ``d == A_u x``,
        or ``z == V x, d == S x + U z`` compressed (the columns of ``columns`` only; each
        ``+ dose_offset`` when there is one); without a dose variable only ``z == V x``."""
        n_u = self.problem.union_rows.size
        off = self.problem.union_offset
        if self._constant_offset is not None:
            off = self._constant_offset
        if not self.offset_parameter:
            self.dose_offset = None if off is None else cp.Constant(off)
        elif compressed is not None or off is not None:
            self.dose_offset = cp.Parameter(n_u, name="dose_offset")
            self.reset_dose_offset()
        out: list[Any] = []
        if compressed is not None:
            if compressed.sparse.shape != self.problem.a_union.shape:
                raise InvalidProblemError(
                    f"`compressed` has shape {compressed.sparse.shape} but the problem's union "
                    f"rows are {self.problem.a_union.shape}; compress `problem.a_union`."
                )
            if compressed.rank:
                right = (
                    compressed.right if not self.fixed.size else compressed.right[:, self.columns]
                )
                self.tail = cp.Variable(compressed.rank, name="tail")
                out.append(self.tail == right @ self.x_active)
        if self.d is not None:
            out.append(self.d == self._dose_of_rows(self.dose_rows))
        return out

    def _dose_of_rows(self, rows: np.ndarray | None) -> Any:
        """Dose expression of the union rows ``rows`` (all when None) in the fluence:
        ``A_u[rows] x``, compressed ``S[rows] x + U[rows] z``, plus the offset's rows."""
        m = self.problem.a_union if self.compressed is None else self.compressed.sparse
        m = m if rows is None else m[rows]
        dose = (m if not self.fixed.size else m[:, self.columns]) @ self.x_active
        if self.tail is not None:
            assert self.compressed is not None
            left = self.compressed.left
            dose = dose + (left if rows is None else left[rows]) @ self.tail
        if self.dose_offset is not None:
            dose = dose + (self.dose_offset if rows is None else self.dose_offset[rows])
        return dose

    def dose(self, structure: str, rows: np.ndarray | None = None) -> Any:
        """(n_s,) dose expression of ``structure`` (of its positions ``rows`` when given),
        Gy: entries of the dose variable, or without one the structure's rows of the
        matrix times the fluence (built once per structure and rows, shared by its
        terms)."""
        union = self.problem.local_index[structure]
        if rows is not None:
            union = union[rows]
        if self.d is not None:
            pos = self._d_pos[union]
            whole = pos.size == self.d.size and bool(np.all(pos == np.arange(pos.size)))
            return self.d if whole else self.d[pos]
        key = (structure, None if rows is None else rows.tobytes())
        if key not in self._doses:
            whole = union.size == self.problem.union_rows.size and bool(
                np.all(union == np.arange(union.size))
            )
            self._doses[key] = self._dose_of_rows(None if whole else union)
        return self._doses[key]

    def dose_positions(self, union_rows: np.ndarray) -> np.ndarray:
        """Positions in :attr:`d` of the union rows ``union_rows`` (which it must hold)."""
        return self._d_pos[union_rows]

    def fluence(self) -> np.ndarray | None:
        """(n_beamlets,) float64 MU after a solve: the solver's fluence, exactly zero
        outside ``columns`` and clipped at 0 (``None`` before a solve)."""
        v = self.x_active.value
        if v is None:
            return None
        x = np.zeros(self.problem.n_beamlets)
        x[self.columns] = np.clip(np.asarray(v, dtype=np.float64), 0.0, None)
        return x

    def reduced_costs(self) -> np.ndarray:
        """(n_fixed,) derivative of the Lagrangian along each beamlet outside ``columns``
        (CVXPY's objective units per MU), after a solve.

        A negative entry means that letting that beamlet deliver would lower the
        objective: the restricted solution is optimal for every beamlet only when none
        is negative (linear-programming pricing, e.g. Romeijn et al. 2005). With
        ``L = f + nu^T (d - A x) + eta^T (z - V x) + pi^T x_fixed`` (CVXPY's sign of an
        equality's multiplier), stationarity in ``x_fixed`` gives ``df/dx_j = -pi_j``,
        so the reduced cost is ``-pi_j - (A^T nu)_j`` (``- (S^T nu + V^T eta)_j``
        compressed).
        """
        if not self.fixed.size:
            return np.zeros(0)
        direct = -np.asarray(self.fixed_constraint.dual_value, dtype=np.float64)
        if not self.dose_constraints:
            return direct
        nu = np.asarray(self.dose_constraints[-1].dual_value, dtype=np.float64)
        rows = self.dose_rows
        if self.compressed is None:
            a = self.problem.a_union if rows is None else self.problem.a_union[rows]
            price = np.asarray(a.T @ nu.astype(a.dtype))
        else:
            s_rows = self.compressed.sparse if rows is None else self.compressed.sparse[rows]
            price = np.asarray(s_rows.T @ nu)
            if self.compressed.rank:
                eta = np.asarray(self.dose_constraints[0].dual_value, dtype=np.float64)
                price = price + self.compressed.right.T @ eta
        return direct - np.asarray(price, dtype=np.float64)[self.fixed]

    def primal_start(self, inverse_data: list, n: int, x0: Any) -> np.ndarray:
        """(n,) primal vector of the compiled problem holding the fluence ``x0`` (its
        ``columns``), its dose ``d``, compressed the tail ``z = V x0``, and the
        canonicalisers' auxiliaries that :meth:`CvxpyContext.pos` and
        :meth:`CvxpyContext.affine` define (``r = max(expr, 0)``, ``r = expr`` at ``x0``);
        every other variable at zero.

        ``inverse_data`` is CVXPY's from ``get_problem_data``: variables renamed by a
        reduction (``CvxAttr2Constr`` replaces ``x >= 0``) are followed to the offsets of
        the last stuffing."""
        x0 = np.asarray(x0, dtype=np.float64)
        values: dict[int, np.ndarray] = {self.x_active.id: x0[self.columns]}
        if self.tail is not None:
            assert self.compressed is not None
            values[self.tail.id] = self.compressed.right @ x0
        if self.d is not None:
            if self.compressed is None:
                d = np.asarray(self.problem.a_union @ x0, dtype=np.float64)
            else:
                d = self.compressed.dose(x0)
            if self.dose_offset is not None:
                d = d + np.asarray(self.dose_offset.value)
            values[self.d.id] = d if self.dose_rows is None else d[self.dose_rows]
        values.update(self._auxiliary_values(values))
        offsets: dict[int, int] = {}
        for inv in inverse_data:
            renamed = inv[0] if isinstance(inv, tuple) and inv and isinstance(inv[0], dict) else {}
            if renamed:
                values = {getattr(renamed.get(k), "id", k): v for k, v in values.items()}
            offsets = getattr(inv, "var_offsets", None) or offsets
        out = np.zeros(n)
        for k, v in values.items():
            if k in offsets:
                out[offsets[k] : offsets[k] + v.size] = v
        return out

    def _auxiliary_values(self, values: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Values of the auxiliaries ``r >= expr, r >= 0`` and ``r == expr`` of
        :attr:`aux_constraints` whose ``expr`` reads only the variables in ``values`` (by
        id): ``max(expr, 0)`` and ``expr``. The variables' values are restored to None."""
        cp = import_cvxpy()
        known = {v.id: v for v in self.cvx_problem.variables() if v.id in values}
        out: dict[int, np.ndarray] = {}
        try:
            for var in known.values():
                var.value = values[var.id]
            for c in self.aux_constraints:
                if isinstance(c, cp.constraints.Equality) and isinstance(c.args[0], cp.Variable):
                    r, expr, floor = c.args[0], c.args[1], False
                elif isinstance(c, cp.constraints.Inequality) and isinstance(
                    c.args[1], cp.Variable
                ):
                    r, expr, floor = c.args[1], c.args[0], bool(c.args[1].is_nonneg())
                else:
                    continue
                if not {v.id for v in expr.variables()} <= known.keys():
                    continue
                v = np.asarray(expr.value, dtype=np.float64).reshape(r.shape)
                out[r.id] = np.maximum(v, 0.0) if floor else v
        finally:
            for var in known.values():
                var.value = None
        return out

    def reset_dose_offset(self) -> None:
        """Set :attr:`dose_offset` to the problem's ``union_offset`` (zero without one);
        nothing for a constant offset (:meth:`update` checks that it is the problem's)."""
        if not self.offset_parameter:
            return
        off = self.problem.union_offset
        self.dose_offset.value = np.zeros(self.problem.union_rows.size) if off is None else off

    @staticmethod
    def _level_bound_scale(t: Term) -> float:
        """Factor on both sides of a level bound (1 for every other hard term)."""
        return weight_scale(s.weight for s in t.terms) if isinstance(t, _LevelBound) else 1.0

    def _hard(self, k: int, t: Term) -> list[Any]:
        cp = import_cvxpy()
        c = self._level_bound_scale(t)
        self.bound_scales[k] = c
        bound = t.threshold()
        b = cp.Parameter(value=c * bound, name=f"bound{k}")
        self.bound_params[k] = b
        b_eff: Any = b
        if self.elastic:
            s = cp.Variable(nonneg=True, name=f"slack{k}")
            self.slacks[k] = s
            scale = max(abs(c * bound), 1.0)
            b_eff = b + scale * s if t.sense == "<=" else b - scale * s
        rows = self.term_rows.get(k)
        if rows is not None and not rows.size:
            return []
        q = canonicalize(t, CvxpyContext(self, t, k))
        return [q <= b_eff] if t.sense == "<=" else [q >= b_eff]

    def _group_bound(self, cp: Any, j: int, group: list[int]) -> Any:
        """``c_j sum_k w_k f_k <= b_j`` for priority level ``j`` (see ``levels``)."""
        if self.elastic or not group or any(k not in self.soft_expressions for k in group):
            raise InvalidProblemError(
                f"Priority level {j} of `levels` must list soft terms of the problem by index "
                f"(got {group}); levels need a formulation that is not elastic."
            )
        weights = [self.problem.terms[k].weight for k in group]
        c = weight_scale(weights)
        value = sum(
            float(w) * self._constraint_expression(k) for k, w in zip(group, weights, strict=True)
        )
        scale = cp.Parameter(nonneg=True, name=f"level_scale{j}", value=c)
        b = cp.Parameter(name=f"level_bound{j}", value=0.0)
        self.group_values.append(value)
        self.group_scale_params.append(scale)
        self.group_bound_params.append(b)
        self.group_scales.append(c)
        return scale * value <= b

    def _constraint_expression(self, k: int) -> Any:
        """Soft term ``k``'s expression for a constraint: its objective expression, or a
        second canonicalisation for a constraint when that one is for the objective only
        (``objective_only``)."""
        if k not in self.objective_only:
            return self.soft_expressions[k]
        t = self.problem.terms[k]
        return canonicalize(t, CvxpyContext(self, t, k))

    # -- parameters --------------------------------------------------------------------
    def update(self, problem: Problem) -> None:
        """Copy the weights, dose levels and bounds of ``problem`` into the parameters.

        ``problem`` must have the same matrix, structures and term structure (types, order,
        structures, gEUD ``a``, DVH volumes, hard/soft) as the one this formulation was built
        for, typically ``old_problem.with_terms(new_terms)``.

        Raises
        ------
        InvalidProblemError
            The problems differ in more than weights, levels and bounds.
        """
        old = self.problem
        if problem._cache is not old._cache or len(problem.terms) != len(old.terms):
            raise InvalidProblemError(
                "`formulation` was built for another matrix or another number of terms; build a "
                "new CvxpyFormulation (only weights, dose levels and bounds can change)."
            )
        if problem.union_offset is not None and self.dose_offset is None:
            raise InvalidProblemError(
                "`formulation` was built for a problem without `dose_offset`; build a new "
                "CvxpyFormulation for a problem with one."
            )
        if not self.offset_parameter and (
            self._constant_offset is not None
            or not _same_offset(problem.union_offset, old.union_offset)
        ):
            raise InvalidProblemError(
                "`formulation` holds its dose offset as a constant (`offset_parameter=False`) "
                "and the problem's `dose_offset` differs; build a new CvxpyFormulation."
            )
        for k, (t_new, t_old) in enumerate(zip(problem.terms, old.terms, strict=True)):
            same = (
                type(t_new) is type(t_old)
                and t_new.structure == t_old.structure
                and t_new.hard == t_old.hard
                and getattr(t_new, "a", None) == getattr(t_old, "a", None)
                and getattr(t_new, "volume_pct", None) == getattr(t_old, "volume_pct", None)
                and getattr(t_new, "operator", None) is getattr(t_old, "operator", None)
                and getattr(t_new, "function", None) is getattr(t_old, "function", None)
                and getattr(t_new, "structures", None) == getattr(t_old, "structures", None)
            )
            if not same:
                raise InvalidProblemError(
                    f"Term {k} changed from {t_old.label} to {t_new.label}: only weights, dose "
                    "levels and bounds can change in a built formulation; build a new one."
                )
            if k in self.level_params:
                self.level_params[k].value = t_new.threshold()
            if k in self.level_square_params:
                self.level_square_params[k].value = t_new.threshold() ** 2
            if k in self.bound_params:
                self.bound_params[k].value = self.bound_scales[k] * t_new.threshold()
        self.problem = problem
        if self.dose_offset is not None:
            self.reset_dose_offset()
        self._set_weight_values({k: t.weight for k, t in enumerate(problem.terms)})

    def set_weights(self, weights: dict[int, float]) -> None:
        """Set soft-term weights by term index (a re-solve skips canonicalisation)."""
        current = {k: w.value / self.objective_scale for k, w in self.weight_params.items()}
        current.update({k: float(w) for k, w in weights.items()})
        self._set_weight_values(current)

    def set_bounds(self, bounds: dict[int, float]) -> None:
        """Set hard-constraint bounds by term index (a level bound in objective units)."""
        for k, b in bounds.items():
            self.bound_params[k].value = self.bound_scales[k] * float(b)

    def _set_weight_values(self, weights: dict[int, float]) -> None:
        """Choose the objective scale from ``weights`` (original units) and set every
        weight parameter (parameter values only: the problem stays DPP)."""
        if not self.weight_params:
            return
        self.objective_scale = weight_scale(weights[k] for k in self.weight_params)
        for k, w in self.weight_params.items():
            w.value = self.objective_scale * float(weights[k])

    def _unscale_duals(self) -> None:
        """Dual values of the hard constraints in the problem's objective units."""
        for k, cons in self.constraints.items():
            f = self.bound_scales.get(k, 1.0) / self.objective_scale
            for c in cons:
                if c.dual_value is not None and f != 1.0:
                    c.save_dual_value(np.asarray(c.dual_value) * f)


def solve_cvxpy(
    problem: Problem,
    *,
    solver: str = "CLARABEL",
    formulation: CvxpyFormulation | None = None,
    solver_options: dict | None = None,
    verbose: bool = False,
    explain_infeasible: bool = True,
    compression: Compression | None = None,
    corrections: int = 0,
    x0: Any = None,
    screen: bool = True,
) -> OptimizationResult:
    """Solve ``problem`` through its CVXPY formulation.

    Parameters
    ----------
    problem : Problem
        The problem.
    solver : {"CLARABEL", "OSQP", "SCS", "MOSEK"}, optional
        Solver (default Clarabel; :func:`optimizers.available_solvers` lists those installed).
    formulation : CvxpyFormulation, optional
        A formulation built earlier for this problem, or for one that differs only in
        weights, dose levels and bounds (see :meth:`CvxpyFormulation.update`); the re-solve
        skips canonicalisation. With SCS (``SCSSolver.WARM_START``) a re-solve also
        starts at the formulation's last SCS solution, primal and dual (CVXPY's warm
        start); Clarabel and MOSEK (interior point) start cold, and so does OSQP (from its
        own earlier solution it took more iterations than cold once a weight changed:
        :class:`optimizers._solvers.OSQPSolver`).
    solver_options : dict, optional
        Options passed to the solver (override the adapter's defaults).
    verbose : bool, optional
        Solver output.
    explain_infeasible : bool, optional
        On an infeasible problem, re-solve with elastic slacks to name the conflicting hard
        constraints (default True).
    compression : Compression, optional
        Solve on the sparse-plus-low-rank compression of the union rows
        (:func:`optimizers.compress_matrix`, computed once per matrix and settings and
        shared by problems from :meth:`Problem.with_terms`); ``None`` (default): the exact
        matrix. The result's objective, term values and violations are always those of the
        exact matrix; ``extras["compression"]`` records the sizes, the a-priori bound of the
        dose error at the solution and the measured error.

        .. versionadded:: 0.1.0
    corrections : int, optional
        With a compressed matrix: re-solves after the first, each seeing the compressed
        dose plus the compression's dose error at the previous solution,
        ``d = S x + U V x + (A - S - U V) x_prev``. At a fixed point the optimiser's dose is
        the exact dose (default 0). Each re-solve compiles a formulation holding the new
        offset as a constant (started at the previous solution where the solver can
        start), because a ``cvxpy.Parameter`` of one entry per union voxel costs CVXPY's
        compilation memory growing with rows times parameter entries (``offset_parameter``
        of :class:`CvxpyFormulation`); a ``formulation`` built with
        ``offset_parameter=True`` is re-solved through its parameter instead.

        .. versionadded:: 0.1.0
    x0 : (n_beamlets,) array, MU, optional
        A fluence to start from, e.g. the first-order solver's, where the solver can
        start from a given point (SCS and OSQP: the fluence, its dose and the
        auxiliaries; SCS also the slacks; duals at zero) and the formulation holds no
        earlier solution of that solver. Clarabel and MOSEK (interior point) start from
        their own point.

        .. versionadded:: 0.1.0
    screen : bool, optional
        With ``x0``, no ``formulation`` and no ``corrections`` (default True): read only
        the voxels near their hinge at ``x0`` (:mod:`optimizers._cvxpy_screen`): of
        per-voxel hard terms (:class:`MaxDose`, :class:`MinDose`) those within
        ``SCREEN_MARGIN`` of their bound, of soft one-sided quadratics and CVaR terms
        those within ``SOFT_SCREEN_MARGIN`` of their level or value at risk; then check
        the left-out hard voxels on the exact dose (any violated beyond ``SCREEN_TOL``
        enters) and the soft ones by the gap between the whole objective and the screened
        one at the solution (above ``SCREEN_GAP_REL`` of the objective, those on the
        active side enter), and solve again from the solution (at most ``SCREEN_MAX_ROUNDS`` times,
        the last one on every voxel). The screened problem is a relaxation, so a solution
        that satisfies every left-out constraint, within the gap, solves the whole
        problem (constraint generation). ``extras["screening"]`` records the rows kept
        and the rounds.

        .. versionadded:: 0.1.0

    Returns
    -------
    OptimizationResult
        ``extras`` holds ``solver``, ``native_status``, ``setup_time_s`` (canonicalisation),
        ``solver_time_s``, ``max_violation``, ``violations``, ``is_dpp`` and
        ``objective_scale`` (the factor on the objective inside CVXPY; ``objective`` and
        ``term_values`` are in the problem's own units), ``problem_size`` (the last
        solve's :func:`problem_data_size`: rows, variables and non-zeros the solver got),
        ``compression`` (``None``, or
        :meth:`CompressedMatrix.record`: ``max_dose_error_bound_gy``,
        ``max_dose_error_gy``, sizes and settings).

    Raises
    ------
    InfeasibleError
        The hard constraints contradict each other (the message names them), or the
        objective is unbounded (the message names the maximised terms).
    SolverError
        The solver is missing or crashed.

    Warns
    -----
    OptimizerWarning
        The solver returned an inaccurate solution.
    """
    refuse_meterset_dose(problem, "The CVXPY solver")
    cp = import_cvxpy()
    t0 = time.perf_counter()
    adapter = get_solver(solver)
    adapter.import_solver()
    if formulation is None and x0 is not None and screen and not corrections:
        rows = screened_rows(problem, x0)
        if rows:
            compressed = None if compression is None else problem.compressed(compression)
            res = solve_screened(
                problem,
                np.asarray(x0),
                rows,
                compressed=compressed,
                solver=solver,
                solver_options=solver_options,
                verbose=verbose,
                explain_infeasible=explain_infeasible,
            )[0]
            return replace(res, solve_time_s=time.perf_counter() - t0)
    if formulation is None:
        compressed = None if compression is None else problem.compressed(compression)
        formulation = CvxpyFormulation(
            problem,
            compressed=compressed,
            offset_parameter=False,
            dose_variable=adapter.name not in DOSE_FREE_SOLVERS,
        )
    elif formulation.problem is not problem:
        formulation.update(problem)
    prob = formulation.cvx_problem
    compressed = formulation.compressed
    if formulation.dose_offset is not None:
        formulation.reset_dose_offset()
    t_setup, t_solver = time.perf_counter() - t0, 0.0  # building the formulation counts
    n_iter = 0
    x: Any = None
    for attempt in range(1 + (max(int(corrections), 0) if compressed is not None else 0)):
        if attempt:  # the compression's dose error at the previous solution, Gy
            assert compressed is not None  # (with the problem's own dose_offset)
            offset = problem.union_dose(x) - compressed.dose(x)
            if formulation.offset_parameter:
                formulation.dose_offset.value = offset
            else:  # a constant offset: a formulation holding the corrected one, started at x
                t1 = time.perf_counter()
                formulation = CvxpyFormulation(
                    problem,
                    compressed=compressed,
                    offset_parameter=False,
                    constant_offset=offset,
                    dose_variable=formulation.dose_variable,
                )
                prob, x0 = formulation.cvx_problem, x
                t_setup += time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            data, chain, inverse = prob.get_problem_data(adapter.cvxpy_name)
        except cp.error.SolverError as exc:
            raise SolverError(
                f"Solver `{adapter.name}` cannot handle this problem ({exc}); the terms need "
                "cones it lacks (e.g. gEUD or DVH terms with OSQP). Use CLARABEL, SCS or MOSEK."
            ) from exc
        t2 = time.perf_counter()
        size = problem_data_size(data)
        warm = formulation.last_solution.get(adapter.name) if adapter.WARM_START else None
        start = None
        if warm is None and x0 is not None and adapter.WARM_START:
            start = formulation.primal_start(inverse, data["A"].shape[1], x0)
        out = adapter.solve(
            SolveData(prob, chain, inverse, data, dict(solver_options or {}), verbose, warm, start)
        )
        if out.status in SOLUTION_PRESENT and adapter.WARM_START:
            formulation.last_solution[adapter.name] = out.raw
        t_setup += t2 - t1
        t_solver += time.perf_counter() - t2
        n_iter += out.n_iter
        status = out.status
        x = None
        if status in SOLUTION_PRESENT:
            try:
                unpack(prob, out.raw, chain, inverse)
                formulation._unscale_duals()
                x = formulation.fluence()
            except Exception as exc:  # noqa: BLE001
                logger.warning(
                    "could not unpack the %s solution: %s", adapter.name, exc, exc_info=True
                )
                x = None
            if x is None:
                status = Status.SOLVER_ERROR
        if x is None:
            break
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
    if status in (Status.INFEASIBLE, Status.UNBOUNDED):
        raise _explain(
            problem,
            status,
            adapter.name,
            solver_options,
            explain_infeasible,
            formulation.compressed,
        )
    if status == Status.SOLVER_ERROR or x is None:
        raise SolverError(
            f"Solver `{adapter.name}` ended with native status {out.native_status!r} "
            "and no solution; try another solver or solve_first_order."
        )
    if status == Status.OPTIMAL_INACCURATE:
        warnings.warn(
            f"Solver `{adapter.name}` returned an inaccurate solution (native status "
            f"{out.native_status!r}); tighten its tolerances or try another solver.",
            OptimizerWarning,
            stacklevel=2,
        )
    d_exact = problem.union_dose(x)
    # the offset the solver saw (the dose corrections included; None without one)
    seen_offset = None if formulation.dose_offset is None else formulation.dose_offset.value
    viol, per = problem.max_violation(x, d_union=d_exact)
    msg = {
        Status.OPTIMAL: f"Optimal solution found by {adapter.name}.",
        Status.OPTIMAL_INACCURATE: f"Inaccurate solution returned by {adapter.name}.",
        Status.ITERATION_LIMIT: f"{adapter.name} stopped at its iteration limit.",
        Status.TIME_LIMIT: f"{adapter.name} stopped at its time limit.",
        Status.CALLBACK_STOP: f"{adapter.name} stopped by a callback.",
    }[status]
    return OptimizationResult(
        x=x,
        objective=problem.objective(x, d_union=d_exact),
        status=status,
        message=msg,
        n_iter=n_iter,
        n_dose_evals=0,
        solve_time_s=time.perf_counter() - t0,
        term_values=problem.evaluate(x, d_union=d_exact),
        extras={
            "solver": adapter.name,
            "native_status": out.native_status,
            "setup_time_s": t_setup,
            "solver_time_s": t_solver,
            "max_violation": viol,
            "violations": per,
            "is_dpp": prob.is_dpp(),
            "problem_size": size,
            "objective_scale": formulation.objective_scale,
            "compression": (
                None
                if compressed is None
                else compressed.record(x, d_exact, offset=seen_offset, corrections=corrections)
            ),
        },
    )


def solve_screened(
    problem: Problem,
    x0: np.ndarray,
    rows: dict[int, np.ndarray],
    *,
    compressed: CompressedMatrix | None = None,
    columns: np.ndarray | None = None,
    **options: Any,
) -> tuple[OptimizationResult, CvxpyFormulation, dict[int, np.ndarray]]:
    """:func:`solve_cvxpy` by constraint generation on the screened rows ``rows``
    (:mod:`optimizers._cvxpy_screen`), from ``x0``, on the beamlets ``columns`` (every one
    when None).

    Each round solves the formulation reading only ``rows`` of the screened terms
    (``term_rows``), then evaluates the left-out rows: hard ones on the exact dose (any
    violated beyond ``SCREEN_TOL`` enters), soft ones through the gap between the whole
    objective on the dose the solver saw and the relaxed one there
    (:func:`optimizers._cvxpy_screen.screening_gap`; above
    :data:`SCREEN_GAP_REL` of the objective, the left-out rows on the active side of their
    hinge enter); with rows entered (and those then near their hinge) it solves again
    from the solution; the :data:`SCREEN_MAX_ROUNDS` + 1st round keeps every row, and so
    does the round after one whose solver failed (a relaxation can be degenerate: an
    underdose left alone when every row against it is screened out).

    Returns
    -------
    result : OptimizationResult
        The last round's, judged on the whole problem; ``extras["screening"]`` records
        the rows of the screened terms, per round the rows kept, the hard rows violated,
        the soft gap (relative to the objective) and the rows entered, and ``certified``.
    formulation : CvxpyFormulation
        The last round's (its duals price the beamlets outside ``columns``).
    rows : dict of int to array of int
        The last round's screened rows (the start of a later solve).
    """
    t0 = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    x, res, setup, solver, n_iter = x0, None, 0.0, 0.0, 0
    dose_variable = columns is not None or (
        get_solver(options.get("solver", "CLARABEL")).name not in DOSE_FREE_SOLVERS
    )
    total = {k: int(problem.p[structure_of(problem.terms[k])].size) for k in rows}
    certified = final = False
    for r in range(SCREEN_MAX_ROUNDS + 1):
        final = final or r == SCREEN_MAX_ROUNDS
        form = CvxpyFormulation(
            problem,
            compressed=compressed,
            columns=columns,
            offset_parameter=False,
            dose_variable=dose_variable,
            term_rows=None if final else rows,
        )
        try:
            res = solve_cvxpy(problem, formulation=form, x0=x, screen=False, **options)
        except SolverError as exc:
            if final:
                raise
            # a relaxation can be degenerate (e.g. nothing left against an underdose but
            # rows far from their hinge): the next round keeps every row
            logger.info("screened CVXPY solve failed (%s); solving with every row", exc)
            rounds.append({"kept_rows": sum(int(v.size) for v in rows.values()), "failed": True})
            final = True
            continue
        setup += res.extras["setup_time_s"]
        solver += res.extras["solver_time_s"]
        n_iter += res.n_iter
        x = res.x
        record: dict[str, Any] = {"kept_rows": sum(int(v.size) for v in rows.values())}
        rounds.append(record)
        if final:
            record["kept_rows"] = sum(total.values())
            certified = True
            break
        d_exact = problem.union_dose(x)
        entering = active_left_out(problem, rows, d_exact, hard=True)
        record["violated_left_out"] = sum(int(v.size) for v in entering.values())
        model = d_exact if compressed is None else _model_dose(problem, compressed, x)
        whole = problem.objective(x, d_union=model)
        gap = screening_gap(problem, rows, model) / max(abs(whole), 1e-300)
        record["soft_gap_rel"] = gap
        if gap > SCREEN_GAP_REL:
            entering.update(active_left_out(problem, rows, model, hard=False))
        record["entered"] = sum(int(v.size) for v in entering.values())
        if not entering:
            certified = True
            break
        keep = {k: np.union1d(v, entering.get(k, v)) for k, v in rows.items()}
        new = screened_rows(problem, dose=d_exact, keep=keep)
        rows = {k: new.get(k, np.arange(total[k])) for k in rows}
    assert res is not None
    extras = dict(res.extras)
    extras.update(
        setup_time_s=setup,
        solver_time_s=solver,
        screening={
            "rows": sum(total.values()),
            "rounds": rounds,
            "certified": certified,
        },
    )
    out = replace(res, n_iter=n_iter, solve_time_s=time.perf_counter() - t0, extras=extras)
    return out, form, rows


def _model_dose(problem: Problem, compressed: CompressedMatrix, x: np.ndarray) -> np.ndarray:
    """(n_union,) Gy: the dose the solver sees on a compressed matrix, ``S x + U V x``
    plus the problem's offset."""
    d = compressed.dose(x)
    return d if problem.union_offset is None else d + problem.union_offset


def problem_data_size(data: dict) -> dict[str, int]:
    """Sizes of the problem CVXPY hands the solver (``data`` of
    ``cvxpy.Problem.get_problem_data``): ``rows`` and ``variables`` of the constraint
    matrix (OSQP's equality and inequality blocks together), its non-zeros ``nnz_a``, the
    quadratic objective's ``nnz_p`` (0 without one), and the ``equality_rows`` and
    ``inequality_rows`` (the zero and non-negative cones; the rest are other cones' rows)."""
    blocks = [data["A"]] + ([data["F"]] if data.get("F") is not None else [])  # OSQP: A, F
    p = data.get("P")
    dims = data.get("dims")
    return {
        "rows": sum(int(m.shape[0]) for m in blocks),
        "variables": int(blocks[0].shape[1]),
        "nnz_a": sum(int(m.nnz) for m in blocks),
        "nnz_p": 0 if p is None else int(p.nnz),
        "equality_rows": int(getattr(dims, "zero", 0)),
        "inequality_rows": int(getattr(dims, "nonneg", 0)),
    }


def _explain(problem, status, solver, options, explain, compressed=None) -> InfeasibleError:
    if status == Status.UNBOUNDED:
        names = [t.label for t in problem.soft_terms if t.maximises]
        return InfeasibleError(
            f"The objective is unbounded below (solver {solver}); the maximised terms "
            + (", ".join(f"`{n}`" for n in names) or "(none found)")
            + " can grow without limit. Add a max-dose constraint or an overdose term."
        )
    hard = problem.hard_terms
    if not explain or not hard:
        return InfeasibleError(f"The hard constraints are infeasible (solver {solver}).")
    elastic = CvxpyFormulation(problem, elastic=True, compressed=compressed, offset_parameter=False)
    adapter = get_solver(solver)
    data, chain, inverse = elastic.cvx_problem.get_problem_data(adapter.cvxpy_name)
    out = adapter.solve(SolveData(elastic.cvx_problem, chain, inverse, data, dict(options or {})))
    relaxed, binding = [], []
    if out.status in SOLUTION_PRESENT:
        unpack(elastic.cvx_problem, out.raw, chain, inverse)
        x = np.clip(np.asarray(elastic.x.value, dtype=np.float64), 0, None)
        d = problem.union_dose(x)
        for k, t in enumerate(problem.terms):
            if k not in elastic.slacks:
                continue
            sl = elastic.slacks[k].value
            c = elastic.bound_scales[k]  # slacks are in units of the scaled constraint
            scale = max(abs(c * t.threshold()), 1.0) / c
            if sl is not None and float(sl) > 1e-5:
                relaxed.append(f"`{t.label}` (misses by {float(sl) * scale:.3g})")
                continue
            # a constraint holding with equality is what the relaxed ones run into
            if t.per_voxel:
                dd = problem.term_dose(t, d)
                q = float(dd.max()) if t.sense == "<=" else float(dd.min())
            else:
                q = problem.term_quantity(t, d, x)
            if abs(q - t.threshold()) <= 1e-3 * scale:
                binding.append(f"`{t.label}`")
    if not relaxed:
        relaxed = [f"`{t.label}`" for t in hard]
    detail = " and ".join(relaxed)
    if binding:
        detail += " while " + " and ".join(binding) + " hold"
    return InfeasibleError(
        "The hard constraints contradict each other: "
        + detail
        + ". Relax one of them or turn it into a soft goal (hard=False)."
    )


def unpack(cvx_problem, raw, chain, inverse) -> None:
    """``Problem.unpack_results`` without CVXPY's own inaccuracy warning (rtplan warns with
    :class:`OptimizerWarning` instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cvx_problem.unpack_results(raw, chain, inverse)


def _check_term_rows(problem: Problem, term_rows: Any) -> dict[int, np.ndarray]:
    """``term_rows`` of :class:`CvxpyFormulation` checked: :func:`screenable` terms only,
    sorted unique positions inside each term's structure, none empty for a CVaR term."""
    out: dict[int, np.ndarray] = {}
    for k, rows in dict(term_rows or {}).items():
        t = (
            problem.terms[k]
            if isinstance(k, int | np.integer) and 0 <= k < len(problem.terms)
            else None
        )
        if t is None or not screenable(t):
            raise InvalidProblemError(
                f"`term_rows` key {k!r} is not the index of a per-voxel hard term, a one-sided "
                "quadratic or a CVaR dose-volume term of the problem."
            )
        r = np.unique(np.asarray(rows, dtype=np.int64))
        n = problem.p[structure_of(t)].size
        if r.size and (r[0] < 0 or r[-1] >= n):
            raise InvalidProblemError(
                f"`term_rows` of {t.label}: positions outside [0, {n}): {r[0]}..{r[-1]}."
            )
        if not r.size and isinstance(t, _DVH):
            raise InvalidProblemError(
                f"`term_rows` of {t.label}: a CVaR term needs at least one voxel (its "
                "hottest or coldest part)."
            )
        out[int(k)] = r
    return out


def _dose_rows(problem: Problem, term_rows: dict[int, np.ndarray]) -> np.ndarray | None:
    """Union positions some term reads when ``term_rows`` screens terms (sorted), or
    None (every union row) without screening."""
    if not term_rows:
        return None
    parts = [np.zeros(0, dtype=np.int64)]
    for k, t in enumerate(problem.terms):
        if k in term_rows:
            parts.append(problem.local_index[structure_of(t)][term_rows[k]])
            continue
        for sub in problem.flatten([t]):
            parts += [problem.local_index[n] for n in structures_read(sub)]
    return np.unique(np.concatenate(parts))


def _same_offset(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two union offsets (or their absence) are the same."""
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _split_columns(columns: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, the others)`` as sorted int64 arrays; every beamlet when ``None``."""
    if columns is None:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    cols = np.asarray(columns)
    if cols.ndim != 1 or (cols.size and cols.dtype.kind not in "iu"):
        raise InvalidProblemError(
            f"`columns` must be a 1-D array of beamlet indices, got shape {cols.shape} of "
            f"{cols.dtype}."
        )
    cols = np.unique(cols.astype(np.int64))
    if cols.size and (cols[0] < 0 or cols[-1] >= n):
        raise InvalidProblemError(
            f"`columns` holds beamlet indices outside [0, {n}): {cols[0]}..{cols[-1]}."
        )
    return cols, np.setdiff1d(np.arange(n), cols)


def _scatter(index: np.ndarray, n: int) -> Any:
    """(n, index.size) 0/1 CSC matrix placing a short vector at ``index``."""
    import scipy.sparse as sp

    return sp.csc_matrix(
        (np.ones(index.size), (index, np.arange(index.size))), shape=(n, index.size)
    )
