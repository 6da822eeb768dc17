"""Translation of terms to CVXPY: one table from term type to canonicaliser.

A canonicaliser is a function ``canon(term, ctx) -> cvxpy expression``. For a soft term it
returns the term's unweighted objective value; for a hard term the quantity the constraint
bounds (a vector for per-voxel terms such as :class:`MaxDose`, one entry per voxel); the
formulation (:class:`optimizers.CvxpyFormulation`) adds the weight, the bound and the
constraint sense. :class:`CvxpyContext` gives it the variables, the term's dose expression,
its level and the helpers that keep the problem DPP (weights, levels and bounds are
``cvxpy.Parameter`` objects, so a re-solve with new values skips canonicalisation).
CVXPY is imported on first use (:func:`import_cvxpy`), never by ``import optimizers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ._problem import Problem, structure_of
from ._term_table import TermTable
from ._terms import (
    _DVH,
    GEUD,
    CvxpyTerm,
    MeanDose,
    Overdose,
    Smoothness,
    SquaredDeviation,
    Term,
    TotalMU,
    Underdose,
    _LevelBound,
)
from .errors import InvalidProblemError

__all__ = [
    "CVXPY_CANONICALIZERS",
    "OBJECTIVE_SCALE",
    "Canonicalizer",
    "CvxpyContext",
    "add_canonicalizer",
    "cvxpy_canonicalizer",
    "import_cvxpy",
    "weight_scale",
]

#: Largest soft weight inside the CVXPY problem (and the largest weight of a level bound's
#: terms inside its constraint). Interior-point and splitting solvers stop on absolute
#: floors (``max(1, ...)`` in their residual tests); planner weights such as ``1 / Rx**2``
#: make objectives of 1e-5 whose optimum those floors cannot resolve (Clarabel returned
#: "optimal" levels 2-150 % high, OSQP 1.6 %). Reported values are always in the caller's
#: units.
OBJECTIVE_SCALE = 100.0

#: A squared deviation's Gram matrix ``A_S' diag(p) A_S`` (a quadratic form of the fluence
#: that replaces a copy of the structure's dose, one variable and one equality row per
#: voxel) is used only when its ``n_beamlets**2`` entries are at most this many (a dense
#: block of 2,048 beamlets) and at most :data:`GRAM_MAX_RATIO` times the copy's size
#: (the rows' non-zeros plus the voxels). PortPy's lung problem: 1,470 beamlets, every
#: structure above 100 voxels.
GRAM_MAX_ENTRIES = 2048**2
#: See :data:`GRAM_MAX_ENTRIES`.
GRAM_MAX_RATIO = 16.0


class Formulation(Protocol):
    """What :class:`CvxpyContext` reads of the formulation being built
    (:class:`optimizers.CvxpyFormulation`)."""

    problem: Problem
    x: Any
    d: Any
    compressed: Any
    dose_offset: Any
    fixed: np.ndarray
    level_params: dict[int, Any]
    level_square_params: dict[int, Any]
    x_active: Any
    columns: np.ndarray
    objective_only: set[int]
    aux_constraints: list[Any]
    term_rows: dict[int, np.ndarray]

    def dose(self, structure: str, rows: np.ndarray | None = None) -> Any: ...

    def dose_positions(self, union_rows: np.ndarray) -> np.ndarray: ...


def import_cvxpy() -> ModuleType:
    """The ``cvxpy`` module, imported on first use (it takes about a second; ``import
    optimizers`` must stay light)."""
    import cvxpy

    return cvxpy


def weight_scale(weights: Iterable[float]) -> float:
    """Factor that brings the largest of ``weights`` to :data:`OBJECTIVE_SCALE`."""
    w_max = max((abs(float(w)) for w in weights), default=0.0)
    return OBJECTIVE_SCALE / w_max if w_max > 0 and np.isfinite(w_max) else 1.0


class CvxpyContext:
    """What a canonicaliser may use while it translates one term.

    Parameters
    ----------
    formulation : CvxpyFormulation
        The formulation being built (see :class:`Formulation`).
    term : Term
        The term being translated.
    index : int
        Position of ``term`` in the problem's terms (names its parameters and auxiliaries).
    parametrised : bool, optional
        ``True`` (default): the term's level is a ``cvxpy.Parameter`` and non-smooth parts go
        through auxiliary variables (DPP). ``False``: levels are constants and the helpers
        return plain expressions (terms inside a lexicographic level bound).
    objective : bool, optional
        The expression goes into the objective (a soft term; default False: into a
        constraint). Helpers may then return a form that only the objective accepts
        (:meth:`mean_square_deviation`, :meth:`fluence_square`) and add the term's index
        to the formulation's ``objective_only``: a constraint on the term (a level bound)
        canonicalises it again with ``objective=False``.

    Attributes
    ----------
    cp : module
        ``cvxpy``.
    x : cvxpy.Variable, (n_beamlets,)
        Fluence, MU (``x >= 0``).
    term : Term
    """

    def __init__(
        self,
        formulation: Formulation,
        term: Term,
        index: int,
        *,
        parametrised: bool = True,
        objective: bool = False,
    ) -> None:
        self.cp = import_cvxpy()
        self.x = formulation.x
        self.term = term
        self._form = formulation
        self._index = index
        self._parametrised = parametrised
        self._objective = objective
        #: the largest value the term's expression can take in its constraint (a level
        #: bound's share, :meth:`expression`), or None
        self.budget: float | None = None

    @property
    def rows(self) -> np.ndarray | None:
        """Positions in the term's structure the term reads when the formulation screens
        its voxels (``term_rows`` of :class:`optimizers.CvxpyFormulation`), else None."""
        return self._form.term_rows.get(self._index)

    @property
    def p(self) -> np.ndarray:
        """(n_s,) voxel weights of the term's structure, normalised over the whole
        structure (sum 1; of the :attr:`rows` read when screened)."""
        p = self._form.problem.p[structure_of(self.term)]
        return p if self.rows is None else p[self.rows]

    def dose(self, structure: str | None = None) -> Any:
        """(n_s,) dose expression in the term's structure (its :attr:`rows` when
        screened) or in ``structure``, Gy."""
        name = structure_of(self.term) if structure is None else structure
        if name not in self._form.problem.local_index:  # no dose term in the problem
            raise InvalidProblemError(f"{self.term.label}: the problem has no dose of `{name}`.")
        return self._form.dose(name, self.rows if structure is None else None)

    def level(self) -> Any:
        """The term's ``dose_gy`` (Gy): a parameter the formulation can update, or a
        constant when not parametrised."""
        level = self.term.threshold()
        if not self._parametrised:
            return level
        store = self._form.level_params
        if self._index not in store:
            store[self._index] = self.cp.Parameter(value=level, name=f"level{self._index}")
        return store[self._index]

    def level_square(self) -> Any:
        """The square of :meth:`level` (Gy**2): a parameter the formulation keeps equal to
        it (a product of two parameters is not DPP), or a constant when not parametrised."""
        level = self.term.threshold()
        if not self._parametrised:
            return level**2
        store = self._form.level_square_params
        if self._index not in store:
            store[self._index] = self.cp.Parameter(value=level**2, name=f"level_sq{self._index}")
        return store[self._index]

    def mean_square_deviation(self) -> Any:
        """``sum_i p_i (d_i - L)**2`` over the term's structure, ``L`` its :meth:`level`;
        in the objective without a copy of the dose where it can.

        In the objective: ``Q + u`` with ``Q = sum_i p_i d_i**2`` a quadratic form
        (:meth:`_mean_square_of_dose`) for which CVXPY adds no variable and no row, and
        ``u == -2 L (p @ d_S) + L**2`` (one scalar variable and one equality row). A sum
        of squares of ``d_S - L`` needs ``r == d_S - L`` (a parameter inside a square is
        not DPP), and CVXPY's sum of squares of any expression but a variable adds such a
        copy too: one variable and one equality row per structure voxel (318,000 of each
        in PortPy's lung problem, two thirds of what SCS factorised). Where no quadratic
        form fits (:meth:`_mean_square_of_dose` returns None) the copy is made.

        In a constraint (hard terms; a level bound of
        :class:`optimizers.CvxpyFormulation`, which canonicalises the term again for it):
        ``mean_square(r)`` with ``r == d_S - L``, a second-order cone. ``quad_form`` there
        would be factored by CVXPY as a dense matrix of the union's size, and ``Q + u``
        ended Clarabel in a numerical error (two terms of thousands of Gy**2 cancelling in
        a cone). Not parametrised: :meth:`mean_square` of ``d_S - L``.
        """
        quad = self._mean_square_of_dose() if self._parametrised and self._objective else None
        if quad is None:
            return self.mean_square(self.affine(self.dose() - self.level()))
        cp = self.cp
        u = cp.Variable(name=f"u{self._index}")
        self.constrain(u == (-2.0 * self.level()) * (self.p @ self.dose()) + self.level_square())
        self._form.objective_only.add(self._index)
        return quad + u

    def _mean_square_of_dose(self) -> Any:
        """``sum_i p_i d_i**2`` over the term's structure as a quadratic form, or None.

        With a dose variable: ``quad_form(d, P)`` on the whole variable (``P`` sparse
        diagonal, ``p`` at the structure's union rows). Without one (the dose is
        ``A_S x + c``, ``c`` a constant offset): ``x' G x + 2 (A_S' (p c)) @ x + p @ c**2``
        with the Gram matrix ``G = A_S' diag(p) A_S`` of the structure's rows (the
        beamlets of ``columns``), when ``G`` is small beside the copy it saves
        (:data:`GRAM_MAX_ENTRIES`, :data:`GRAM_MAX_RATIO`); None for a compressed matrix
        (its quadratic is not a form of ``x`` alone)."""
        import scipy.sparse as sp

        form = self._form
        cp = self.cp
        idx = form.problem.local_index[structure_of(self.term)]
        if form.d is not None:
            diag = np.zeros(form.d.size)
            np.add.at(diag, form.dose_positions(idx), self.p)
            return cp.quad_form(form.d, sp.diags_array(diag, format="csc"), assume_PSD=True)
        offset = form.dose_offset  # a constant here (a parameter needs the dose variable)
        if form.compressed is not None:
            return None
        m = form.problem.a_union[idx]
        if form.fixed.size:
            m = m[:, form.columns]
        n = m.shape[1]
        if n * n > min(GRAM_MAX_ENTRIES, GRAM_MAX_RATIO * (m.nnz + idx.size)):
            return None
        m = sp.csr_matrix(m, dtype=np.float64)
        gram = (m.T @ sp.diags_array(self.p) @ m).tocsc()
        quad = cp.quad_form(form.x_active, gram, assume_PSD=True)
        if offset is None:
            return quad
        c = np.asarray(offset.value, dtype=np.float64)[idx]
        pc = self.p * c
        return quad + (2.0 * (m.T @ pc)) @ form.x_active + float(pc @ c)

    def fluence_square(self, operator: Any, scale: float | None = None) -> Any:
        """``||operator @ x||**2`` (``operator`` a sparse matrix with one column per beamlet).

        In the objective (parametrised): ``quad_form(x_active, H)`` with ``H`` the sparse
        ``operator[:, columns].T @ operator[:, columns]`` (the beamlets outside ``columns``
        are held at zero), a quadratic form of the fluence variable itself: a sum of
        squares of ``operator @ x`` made CVXPY add a copy of it, one variable and one
        equality row per operator row (2,693 of each on PortPy's lung problem). Elsewhere
        the sum of squares (in a constraint its second-order cone takes the rows as they
        are), as ``scale * ||operator @ x / sqrt(scale)||**2`` when ``scale`` (MU**2, the
        size the square can reach there) is given: the cone's entries are then of order
        one instead of the MU differences' 1e3-1e4 beside doses in Gy, with which
        Clarabel ended lexicographic levels holding smoothness "InsufficientProgress"."""
        if not self._parametrised or not self._objective:
            if scale is None:
                return self.cp.sum_squares(operator @ self.x)
            return scale * self.cp.sum_squares((operator @ self.x) / np.sqrt(scale))
        import scipy.sparse as sp

        cols = sp.csc_matrix(operator)[:, self._form.columns]
        self._form.objective_only.add(self._index)
        return self.cp.quad_form(self._form.x_active, (cols.T @ cols).tocsc(), assume_PSD=True)

    def pos(self, expr: Any) -> Any:
        """``max(expr, 0)``: an auxiliary variable ``r >= expr, r >= 0`` (parametrised; a
        weight parameter may then multiply a parameter-free square, as DPP requires) or
        ``cvxpy.pos(expr)``. Use it only where the result is minimised (convex, increasing)."""
        if not self._parametrised:
            return self.cp.pos(expr)
        r = self.cp.Variable(expr.shape, nonneg=True, name=f"r{self._index}")
        self.constrain(r >= expr)
        return r

    def affine(self, expr: Any) -> Any:
        """``expr`` itself: an auxiliary variable ``r == expr`` (parametrised, see
        :meth:`pos`) or the expression."""
        if not self._parametrised:
            return expr
        r = self.cp.Variable(expr.shape, name=f"r{self._index}")
        self.constrain(r == expr)
        return r

    def mean_square(self, r: Any) -> Any:
        """``sum_i p_i r_i**2`` as a sum of squares (fast canonicalisation)."""
        p = self.p
        if np.all(p == p[0]):
            return float(p[0]) * self.cp.sum_squares(r)
        return self.cp.sum_squares(self.cp.multiply(np.sqrt(p), r))

    def mean_square_pos(self, expr: Any) -> Any:
        """``sum_i p_i max(expr_i, 0)**2`` as ``sum_squares(r)`` with ``r >= sqrt(p) expr,
        r >= 0`` (parametrised): the weights sit in the constraint, so the square is of a
        plain variable and CVXPY adds no copy of ``r`` and no equality row per voxel (a sum
        of squares of ``sqrt(p) * r`` added both: 73,000 of each in the TG-119 C-shape's
        problem). Not parametrised: :meth:`mean_square` of ``cvxpy.pos``."""
        if not self._parametrised:
            return self.mean_square(self.cp.pos(expr))
        p = self.p
        if np.all(p == p[0]):
            return float(p[0]) * self.cp.sum_squares(self.pos(expr))
        return self.cp.sum_squares(self.pos(self.cp.multiply(np.sqrt(p), expr)))

    def constrain(self, constraint: Any) -> None:
        """Add an auxiliary constraint to the problem."""
        self._form.aux_constraints.append(constraint)

    def expression(self, term: Term, budget: float | None = None) -> Any:
        """Soft expression of another term with constant levels (composite terms).
        ``budget``: the largest value the expression can take where it is used (a level
        bound's share, in the term's unweighted units), which :attr:`budget` gives its
        canonicaliser to scale cones by."""
        sub = CvxpyContext(self._form, term, -1, parametrised=False)
        sub.budget = budget if budget is not None and 0 < budget < np.inf else None
        return canonicalize(term, sub)


#: ``canon(term, ctx) -> cvxpy expression``
Canonicalizer = Callable[[Any, CvxpyContext], Any]


def _one_sided_quadratic(t: Underdose | Overdose, ctx: CvxpyContext) -> Any:
    if t.hard:  # MaxDose / MinDose: one inequality per voxel
        return ctx.dose()
    miss = ctx.level() - ctx.dose() if t._under else ctx.dose() - ctx.level()
    return ctx.mean_square_pos(miss)


def _squared_deviation(t: SquaredDeviation, ctx: CvxpyContext) -> Any:
    return ctx.mean_square_deviation()


def _mean_dose(t: MeanDose, ctx: CvxpyContext) -> Any:
    return ctx.p @ ctx.dose()


def _geud(t: GEUD, ctx: CvxpyContext) -> Any:
    ds = ctx.dose()
    p = ctx.p
    g = p @ ds if t.a == 1 else ctx.cp.pnorm(ctx.cp.multiply(p ** (1.0 / t.a), ds), t.a)
    return g if t.hard or t.a >= 1 else -g


def _cvar(t: _DVH, ctx: CvxpyContext) -> Any:
    """Exact CVaR of the dose (Romeijn et al. 2006): the mean of the hottest ``v`` (upper
    goal) or coldest ``1 - v`` (lower goal) of the volume."""
    cp = ctx.cp
    z = cp.Variable(name=f"zeta_{t.structure}")
    p = ctx.p
    ds = ctx.dose()
    if t.sense == "<=":
        v = t.volume_pct / 100.0
        return z + (1.0 / v) * (p @ cp.pos(ds - z))
    q = 1.0 - t.volume_pct / 100.0
    return z - (1.0 / q) * (p @ cp.pos(z - ds))


def _dvh(t: _DVH, ctx: CvxpyContext) -> Any:
    c = _cvar(t, ctx)
    if t.hard:
        return c
    miss = c - ctx.level() if t.sense == "<=" else ctx.level() - c
    return ctx.cp.square(ctx.pos(miss))


def _smoothness(t: Smoothness, ctx: CvxpyContext) -> Any:
    m = t.operator.shape[0]
    scale = None if ctx.budget is None else m * ctx.budget  # ||Q x||**2 within the budget
    return (1.0 / m) * ctx.fluence_square(t.operator, scale)


def _total_mu(t: TotalMU, ctx: CvxpyContext) -> Any:
    return ctx.cp.sum(ctx.x)


def _cvxpy_term(t: CvxpyTerm, ctx: CvxpyContext) -> Any:
    """The user's expression (objective), or the user's constraints added to the problem
    and the constant 0 as the quantity (the term's bound is 0: ``0 <= 0`` holds)."""
    p = ctx._form.problem.p
    out = t.build({n: ctx.dose(n) for n in t.structures}, {n: p[n] for n in t.structures}, ctx.x)
    if not t.hard:
        return out
    for c in out:
        ctx.constrain(c)
    return ctx.cp.Constant(0.0)


def _level_bound(t: _LevelBound, ctx: CvxpyContext) -> Any:
    """``sum_k c w_k f_k`` with ``c`` = :func:`weight_scale` of the ``w_k`` (the
    formulation scales the bound by the same ``c``)."""
    c = weight_scale(s.weight for s in t.terms)
    # each term's budget: the whole bound (the others at zero)
    return sum(
        (c * s.weight) * ctx.expression(s, t.bound / s.weight if s.weight > 0 else None)
        for s in t.terms
    )


#: Term type -> canonicaliser. A subclass without its own entry uses its nearest
#: registered base class (MaxDose is an Overdose, MinDose an Underdose).
CVXPY_CANONICALIZERS: dict[type[Term], Canonicalizer] = {
    Underdose: _one_sided_quadratic,
    Overdose: _one_sided_quadratic,
    SquaredDeviation: _squared_deviation,
    MeanDose: _mean_dose,
    GEUD: _geud,
    _DVH: _dvh,
    Smoothness: _smoothness,
    TotalMU: _total_mu,
    CvxpyTerm: _cvxpy_term,
    _LevelBound: _level_bound,
}


_TABLE: TermTable[Canonicalizer] = TermTable(
    CVXPY_CANONICALIZERS,
    missing=lambda term: (
        f"{term.label}: no CVXPY translation for {type(term).__name__}; register one with "
        "optimizers.register_term(..., cvxpy=...) or use method='first_order'."
    ),
)


def add_canonicalizer(term_type: type[Term], canon: Canonicalizer) -> None:
    """Set the table entry of ``term_type`` (see :func:`optimizers.register_term`)."""
    _TABLE.set(term_type, canon)


def cvxpy_canonicalizer(term: Term) -> Canonicalizer:
    """The entry of :data:`CVXPY_CANONICALIZERS` for ``term``'s type (or nearest base).

    Raises
    ------
    InvalidProblemError
        No entry: the message names the term and how to register one.
    """
    return _TABLE.for_term(term)


def canonicalize(term: Term, ctx: CvxpyContext) -> Any:
    """CVXPY expression of ``term`` (see the module docstring), refusing non-convex soft
    terms with a message naming them."""
    if not term.hard and not term.convex:
        raise InvalidProblemError(
            f"{term.label}: {type(term).__name__} is not convex and CVXPY needs convex terms; "
            "use MinDVH/MaxDVH (CVaR) or method='first_order'."
        )
    return cvxpy_canonicalizer(term)(term, ctx)
