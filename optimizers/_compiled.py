"""The first-order solver's view of a problem's soft terms on its array backend.

:class:`CompiledTerms` holds each structure's voxel indices and weights on the solver's
device and sums the weighted soft terms, each through its first-order surrogate
(:data:`optimizers._surrogates.FIRST_ORDER_SURROGATES`), into one value and the gradients
with respect to the union dose and to the fluence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace

from ._array_backend import ArrayBackend, np_xp
from ._problem import Problem, require_problem
from ._surrogates import first_order_surrogate
from ._terms import _LevelBound
from .errors import InvalidProblemError

__all__ = ["CompiledTerms", "soft_dose_objective"]


class CompiledTerms:
    """Per-term index arrays and voxel weights on the solver's device, built once per solve.

    A structure's dose is read from the union dose with ``take`` (array API). Its gradient is
    added back in place with an integer-array index on numpy and CuPy; the array API has no
    scatter, so other namespaces gather from the structure's gradient through the inverse
    index instead (``inv``: (n_u,) position of each union voxel in the structure, ``n_s``
    for voxels outside it, which read an appended zero).
    """

    def __init__(self, problem: Problem, backend: ArrayBackend) -> None:
        self.problem = problem
        xp = self.xp = backend.xp
        n_u = self.n_u = problem.union_rows.size
        # structures covering the whole union are read and written without indexing
        self.full = {
            n: i.size == n_u and bool(np.all(i == np.arange(n_u)))
            for n, i in problem.local_index.items()
        }
        self.idx: dict[str, Any] = {n: xp.asarray(i) for n, i in problem.local_index.items()}
        self.setitem_scatter = is_numpy_namespace(xp) or is_cupy_namespace(xp)
        self.inv: dict[str, Any] = {}
        if not self.setitem_scatter:
            for n, i in problem.local_index.items():
                if not self.full[n]:
                    inv = np.full(n_u, i.size, dtype=np.int64)
                    inv[i] = np.arange(i.size)
                    self.inv[n] = xp.asarray(inv)
        self.p: dict[str, Any] = {n: backend.asarray(v) for n, v in problem.p.items()}
        self.soft = [t for t in problem.soft_terms if t.weight > 0]
        self.hard = problem.hard_terms

    def _scatter(self, g_u, term, gs):
        """``g_u`` (n_u,) plus the structure gradient ``gs`` (n_s,) at its voxels (in place
        where the namespace allows it)."""
        if self.full[term.structure]:
            g_u += gs
            return g_u
        if self.setitem_scatter:
            # indices within one structure are unique, so an integer-array add is safe
            g_u[self.idx[term.structure]] += gs
            return g_u
        xp = self.xp
        padded = xp.concat([gs, xp.zeros(1, dtype=gs.dtype)])
        return g_u + xp.take(padded, self.inv[term.structure])

    def take(self, d, structure):
        if self.full[structure]:
            return d
        # several terms read the same structure from the same dose: gather once
        if d is not getattr(self, "_taken_from", None):
            self._taken_from, self._taken = d, {}
        if structure not in self._taken:
            self._taken[structure] = self.xp.take(d, self.idx[structure])
        return self._taken[structure]

    def soft_value_grad(self, d, x, want_grad=True):
        """Weighted soft objective, its dose gradient (n_u,) and fluence gradient (n,)."""
        xp = self.xp
        f = 0.0
        g_u = xp.zeros_like(d) if want_grad else None
        g_x = None
        for t in self.soft:
            f, g_u, g_x = self._accumulate(t, t.weight, d, x, f, g_u, g_x, want_grad)
        return f, g_u, g_x

    def _accumulate(self, t, w, d, x, f, g_u, g_x, want_grad):
        if isinstance(t, _LevelBound):
            for s in t.terms:
                f, g_u, g_x = self._accumulate(s, w * s.weight, d, x, f, g_u, g_x, want_grad)
            return f, g_u, g_x
        sur = first_order_surrogate(t)
        if t.acts_on == "fluence":
            if want_grad:
                v, gx = sur.value_and_gradient(t, x, None)
                f += w * v
                gx = w * gx
                g_x = gx if g_x is None else g_x + gx
            else:
                f += w * sur.value(t, x, None)
            return f, g_u, g_x
        ds = self.take(d, t.structure)
        p = self.p[t.structure]
        if want_grad:
            v, gs = sur.value_and_gradient(t, ds, p)
            f += w * v
            g_u = self._scatter(g_u, t, w * gs)
        else:
            f += w * sur.value(t, ds, p)
        return f, g_u, g_x


def soft_dose_objective(problem: Problem, dose_gy: Any) -> tuple[float, np.ndarray]:
    """The weighted soft objective of a dose, as the first-order solver sees it, and its
    gradient with respect to that dose.

    For a dose that does not come from ``problem``'s matrix (e.g. a delivered dose of
    apertures, whose dependence on its own variables the caller differentiates): the sum
    of ``weight × value`` of every soft term through its first-order surrogate
    (:func:`~optimizers._surrogates.first_order_surrogate`, the smooth CVaR of
    dose-volume goals), exactly the objective :func:`solve_first_order` minimises.

    Parameters
    ----------
    problem : Problem
        Its soft terms must all act on the dose (no fluence terms).
    dose_gy : (n_voxels,) array of float, Gy
        Dose on every row of ``problem``'s matrix (``problem.dose_offset`` is not added).

    Returns
    -------
    value : float
    gradient : (n_voxels,) ndarray of float64
        ``∂ value / ∂ dose_gy`` (zero on rows no term reads).

    Raises
    ------
    TypeError
        ``problem`` is not a :class:`Problem`, or ``dose_gy`` is not an array of numbers.
    InvalidProblemError
        A soft term acts on the fluence, or ``dose_gy`` has the wrong shape.

    Examples
    --------
    An underdose term of 60 Gy on two voxels at 50 and 70 Gy: the mean of the squared
    shortfall is 50 Gy², its gradient -10 Gy at the cold voxel.

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> import optimizers as op
    >>> problem = op.Problem(sp.eye(2, format="csr"), {"PTV": np.array([0, 1])},
    ...                      [op.Underdose("PTV", 60.0)])
    >>> value, gradient = op.soft_dose_objective(problem, np.array([50.0, 70.0]))
    >>> float(value), gradient.tolist()
    (50.0, [-10.0, 0.0])
    """
    require_problem(problem)
    try:
        dose = np.asarray(dose_gy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"`dose_gy` must be an array of doses (Gy), one per row of the problem's matrix; "
            f"got {type(dose_gy).__name__}: {exc}"
        ) from None
    if dose.shape != (problem.n_voxels,):
        raise InvalidProblemError(
            f"`dose_gy` has shape {dose.shape}; expected ({problem.n_voxels},), one value per "
            "row of the problem's matrix."
        )
    backend = ArrayBackend("numpy", np_xp, problem.a_union.__matmul__, problem.a_union.T.__matmul__)
    comp = CompiledTerms(problem, backend)
    fluence = [t.label for t in comp.soft if t.acts_on == "fluence"]
    if fluence:
        raise InvalidProblemError(
            f"`soft_dose_objective` reads a dose only; the problem has fluence terms {fluence}."
        )
    value, g_union, _ = comp.soft_value_grad(dose[problem.union_rows], None)
    gradient = np.zeros(dose.shape)
    gradient[problem.union_rows] = np.asarray(g_union)
    return float(value), gradient
