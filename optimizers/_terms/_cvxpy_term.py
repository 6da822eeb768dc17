"""A physicist's own CVXPY objective or constraints, as a term (:class:`CvxpyTerm`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidProblemError
from ._base import Term

__all__ = ["CvxpyTerm", "StructureDoses"]

#: Longest line of CVXPY's DCP explanation quoted in a refusal (a dose expression prints
#: its voxel indices).
_QUOTE_CHARS = 200


class StructureDoses(Mapping[str, Any]):
    """What the function of a :class:`CvxpyTerm` receives: dose by structure name.

    ``doses[name]`` is the ``(n_s,)`` dose in the structure's voxels, Gy: a CVXPY
    expression of the fluence while the problem is built, a constant when the term is
    evaluated on a solution. ``doses.weights(name)`` gives the ``(n_s,)`` normalised voxel
    weights ``p`` (non-negative, sum 1; fractional occupancy where the problem has it), so
    that ``p @ doses[name]`` is the structure's mean dose.
    """

    def __init__(
        self, doses: Mapping[str, Any], weights: Mapping[str, np.ndarray], term: CvxpyTerm
    ) -> None:
        self._doses = dict(doses)
        self._weights = weights
        self._term = term

    def __getitem__(self, name: str) -> Any:
        if name not in self._doses:
            raise InvalidProblemError(
                f"{self._term.label} reads structure `{name}`, which is not among its "
                f"`structures` ({', '.join(self._doses)}); add it there."
            )
        return self._doses[name]

    def __contains__(self, name: object) -> bool:
        return name in self._doses

    def __iter__(self) -> Iterator[str]:
        return iter(self._doses)

    def __len__(self) -> int:
        return len(self._doses)

    def weights(self, name: str) -> np.ndarray:
        """``(n_s,)`` normalised voxel weights of structure ``name`` (sum 1)."""
        self[name]  # the same refusal for an undeclared name
        return self._weights[name]


class CvxpyTerm(Term):
    """A physicist's own convex objective or constraints, written in CVXPY.

    ``function(doses, x)`` receives the dose of each structure in ``structures``
    (:class:`StructureDoses`: ``doses["Rectum"]`` is an ``(n_s,)`` CVXPY expression, Gy)
    and the fluence ``x`` (``(n_beamlets,)`` CVXPY variable, MU, ``x >= 0``). It returns

    - for an objective (``hard=False``): a scalar CVXPY expression, convex by CVXPY's DCP
      rules; the problem minimises ``weight * expression``;
    - for constraints (``hard=True``): a CVXPY constraint or a list of them, DCP.

    Only the CVXPY method translates it (``method="cvxpy"``); the first-order solver
    refuses it by name (``rtplan.planning.plan_patient`` then plans with CVXPY and says
    so). The same function evaluates a solution: it is called again with the doses and
    fluence as CVXPY constants, and ``term_values`` reports the expression's value (an
    objective) or the largest violation of the constraints, in their own units (hard).

    Parameters
    ----------
    function : callable
        ``function(doses, x) -> expression`` or ``-> constraint(s)`` (see above).
    structures : str or sequence of str
        Names of the structures whose doses ``function`` reads.
    weight : float, optional
        Weight of an objective (default 1); ignored for constraints.
    hard : bool, optional
        ``True``: ``function`` returns constraints (default ``False``: an objective).
    label : str, optional
        Name in results and messages (default ``"CvxpyTerm(<function name>: <structures>)"``).

    Raises
    ------
    InvalidProblemError
        ``function`` not callable, no structure or an empty name, a name given twice.
        When the problem is built or evaluated, each with the term's label: a name the
        function reads that is not in ``structures``, a return value of the wrong type, a
        term that is not convex (CVXPY's DCP explanation quoted), an exception inside
        ``function``.

    Examples
    --------
    A generalised equivalent uniform dose limit, ``(sum_i p_i d_i^a)^(1/a) <= 18 Gy``
    with ``a = 8``, on an organ beside a target that wants 30 Gy. The target's second
    voxel reaches the organ too, so the limit costs coverage; the gEUD of the solution,
    computed by hand, sits on the limit:

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> import cvxpy as cp
    >>> import optimizers as op
    >>> D = sp.csr_array(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.8], [0.2, 0.0]]))
    >>> structures = {"PTV": np.array([0, 1]), "OAR": np.array([2, 3])}
    >>> def geud_limit(doses, x):
    ...     p, d = doses.weights("OAR"), doses["OAR"]
    ...     return [cp.pnorm(cp.multiply(p ** (1 / 8), d), 8) <= 18.0]
    >>> terms = [op.Underdose("PTV", 30.0), op.CvxpyTerm(geud_limit, "OAR", hard=True)]
    >>> res = op.solve_cvxpy(op.Problem(D, structures, terms))
    >>> d_oar = D.toarray()[2:] @ res.x
    >>> round(float(np.mean(d_oar**8) ** (1 / 8)), 2)
    18.0
    >>> op.supported_methods(terms[1])
    ('cvxpy',)
    """

    acts_on: ClassVar[str] = "structures"  # several structures' doses and the fluence
    smooth: ClassVar[bool] = False
    hard_allowed: ClassVar[bool] = True
    _needs_structure: ClassVar[bool] = False

    def __init__(
        self,
        function: Callable[..., Any],
        structures: str | Sequence[str],
        *,
        weight: float = 1.0,
        hard: bool = False,
        label: str | None = None,
    ) -> None:
        if not callable(function):
            raise InvalidProblemError(
                f"`function` must be a function (doses, x) -> CVXPY expression or "
                f"constraints, got {type(function).__name__} {repr(function)[:60]}."
            )
        names = (structures,) if isinstance(structures, str) else tuple(structures)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidProblemError(
                f"`structures` must be a structure name or a sequence of names, got {structures!r}."
            )
        if len(set(names)) != len(names):
            raise InvalidProblemError(f"`structures` names a structure twice: {structures!r}.")
        self.function = function
        self.structures: tuple[str, ...] = names
        # a hard term bounds the largest violation of its constraints by 0
        super().__init__(None, 0.0 if hard else None, weight=weight, hard=hard, label=label)

    def _describe(self) -> str:
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return f"CvxpyTerm({name}: {', '.join(self.structures)})"

    # -- building ----------------------------------------------------------------------
    def build(self, doses: Mapping[str, Any], weights: Mapping[str, np.ndarray], x: Any) -> Any:
        """The checked output of ``function``: a convex scalar expression (objective) or a
        list of DCP constraints (hard).

        Parameters
        ----------
        doses : mapping of str to (n_s,) CVXPY expression, Gy
            Dose of each of :attr:`structures`.
        weights : mapping of str to (n_s,) ndarray
            Normalised voxel weights of each structure.
        x : (n_beamlets,) CVXPY expression, MU
            Fluence.

        Raises
        ------
        InvalidProblemError
            Named after the term: the function raised, returned the wrong type, or its
            output is not DCP (CVXPY's explanation quoted).
        """
        import cvxpy as cp  # only here: ``import optimizers`` stays light

        try:
            out = self.function(StructureDoses(doses, weights, self), x)
        except InvalidProblemError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: name the term
            raise InvalidProblemError(
                f"{self.label}: its function raised {type(exc).__name__}: {exc}"
            ) from exc
        if self.hard:
            return self._constraints(out, cp)
        if isinstance(out, cp.constraints.constraint.Constraint) or (
            isinstance(out, list | tuple)
            and out
            and all(isinstance(c, cp.constraints.constraint.Constraint) for c in out)
        ):
            raise InvalidProblemError(
                f"{self.label} returned constraints but is an objective (hard=False); "
                "return a scalar CVXPY expression, or pass hard=True for constraints."
            )
        if not isinstance(out, cp.Expression) or out.size != 1:
            got = f"shape {out.shape}" if isinstance(out, cp.Expression) else _t(out)
            raise InvalidProblemError(
                f"{self.label} must return a scalar CVXPY expression (an objective), got "
                f"{got}; e.g. cp.sum(...) or cp.pnorm(...)."
            )
        out = cp.reshape(out, ()) if out.shape != () else out
        if not out.is_convex():
            raise InvalidProblemError(_dcp_refusal(self, cp.Problem(cp.Minimize(out)), cp))
        return out

    def _constraints(self, out: Any, cp: Any) -> list:
        cons = [out] if isinstance(out, cp.constraints.constraint.Constraint) else out
        if (
            not isinstance(cons, list | tuple)
            or not cons
            or not all(isinstance(c, cp.constraints.constraint.Constraint) for c in cons)
        ):
            raise InvalidProblemError(
                f"{self.label} is hard (constraints) and must return a CVXPY constraint or a "
                f"non-empty list of them, got {_t(out)}; e.g. [cp.sum(d) <= 10]."
            )
        if not all(c.is_dcp() for c in cons):
            raise InvalidProblemError(_dcp_refusal(self, cp.Problem(cp.Minimize(0), cons), cp))
        return list(cons)

    # -- evaluation on a solution ------------------------------------------------------
    def structures_value(
        self, doses: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], x: np.ndarray
    ) -> float:
        """Value of the objective (the function's expression) at numeric doses (Gy) and
        fluence (MU)."""
        out = self._numeric(doses, weights, x)
        return float(np.asarray(out.value).reshape(()))

    def structures_quantity(
        self, doses: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], x: np.ndarray
    ) -> float:
        """Largest violation of the constraints at numeric doses and fluence (0 when every
        constraint holds), in the constraints' own units."""
        cons = self._numeric(doses, weights, x)
        return max(float(np.max(np.atleast_1d(c.violation()), initial=0.0)) for c in cons)

    def _numeric(self, doses, weights, x) -> Any:
        import cvxpy as cp

        const = {n: cp.Constant(np.asarray(d, dtype=np.float64)) for n, d in doses.items()}
        return self.build(const, weights, cp.Constant(np.asarray(x, dtype=np.float64)))


def _t(value: Any) -> str:
    return f"{type(value).__name__} {repr(value)[:60]}"


def _dcp_refusal(term: CvxpyTerm, problem: Any, cp: Any) -> str:
    """The refusal of a non-DCP term: its label, then CVXPY's own explanation."""
    try:
        from cvxpy.utilities.debug_tools import build_non_disciplined_error_msg

        detail = build_non_disciplined_error_msg(problem, "DCP")
    except Exception:  # noqa: BLE001 - a CVXPY without this helper: the short form
        detail = "not DCP"
    lines = [
        ln if len(ln) <= _QUOTE_CHARS else ln[:_QUOTE_CHARS] + " ..." for ln in detail.splitlines()
    ]
    what = "constraints are" if term.hard else "objective is"
    return (
        f"{term.label}: its {what} not convex by CVXPY's DCP rules, so CVXPY cannot use "
        "it. CVXPY says: Problem does not follow DCP rules. Specifically: " + " ".join(lines)
    )
