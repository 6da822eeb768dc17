"""Solver adapters for the CVXPY formulation (Clarabel, OSQP, SCS, MOSEK).

"Solver" names these; "backend" in :mod:`optimizers` means only the array library of the
first-order solver (numpy or CuPy, :mod:`optimizers._array_backend`).

Each adapter is a small class with ``name``, a lazy :meth:`import_solver`,
:meth:`is_available` and :meth:`solve`, plus ``STATUS_MAP``, the table from the native status
codes to :class:`~optimizers.Status`. A native code missing from the table maps to
``solver_error`` (the pattern of CVXPY's ``reductions/solvers/solver.py``).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from ._result import Status
from .errors import InvalidProblemError, SolverError

__all__ = [
    "SOLVERS",
    "SOLVER_SETTINGS",
    "ClarabelSolver",
    "MosekSolver",
    "OSQPSolver",
    "SCSSolver",
    "SolverAdapter",
    "available_solvers",
    "get_solver",
]


#: Options each adapter passes to its solver unless the caller overrides them, in one
#: table, chosen so that the solvers reach the same objective: Clarabel and SCS within 1e-4
#: of each other on a problem of every term family the planner uses
#: (``tests/optimizers/test_optimizers_solvers.py``); OSQP does not reach it on CVaR
#: dose-volume terms (iteration limit, reported as such) and suits quadratic and linear
#: terms only. Clarabel keeps its 1e-8: a gap of 1e-5 saved 4 of 36 iterations on the
#: TG-119 C-shape (objective the same to 6 digits), but a gap of 1e-6 already let a
#: lexicographic level bound slip by 3e-5 of itself on a small problem (the tests hold
#: level bounds to 1e-6). The operator-splitting ones (OSQP, SCS) stop at CVXPY's looser
#: defaults (1e-5, 1e-4), so they get 1e-7 and room for the iterations that needs. MOSEK
#: keeps its defaults (not licensed here: untested).
SOLVER_SETTINGS: dict[str, dict[str, Any]] = {
    "CLARABEL": {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8},
    "OSQP": {"max_iter": 200000, "eps_abs": 1e-7, "eps_rel": 1e-7, "polishing": True},
    "SCS": {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 200000},
    "MOSEK": {},
}


@dataclass
class SolveData:
    """What an adapter needs: the CVXPY problem, its solving chain and the solver's data."""

    problem: Any
    chain: Any
    inverse_data: Any
    data: dict
    options: dict
    verbose: bool = False
    #: the solver's own earlier solution of this compiled problem (a warm start), or None
    warm: Any = None
    #: a primal point of the compiled problem to start from when ``warm`` is None
    start: Any = None


@dataclass
class SolverOutput:
    status: Status
    native_status: str
    n_iter: int
    raw: Any


class SolverAdapter:
    """Base adapter of a CVXPY solver."""

    name: ClassVar[str] = ""
    module: ClassVar[str] = ""
    cvxpy_name: ClassVar[str] = ""
    STATUS_MAP: ClassVar[dict[Any, Status]] = {}
    #: Default options passed to the solver (can be overridden by the caller).
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}

    def import_solver(self) -> Any:
        """Import and return the solver's Python module (lazy)."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise SolverError(
                f"Solver `{self.name}` is not installed ({exc}); install "
                f"`{self.module}` or choose another of {', '.join(SOLVERS)}."
            ) from exc

    def is_available(self) -> bool:
        """``True`` when the solver's package imports (and, for MOSEK, is licensed)."""
        try:
            self.import_solver()
        except SolverError:
            return False
        return True

    #: The solver can start from a given point (:meth:`start_cache`); the formulation keeps
    #: its last solution for :meth:`warm_cache` (which may decline it).
    WARM_START: ClassVar[bool] = False

    def warm_cache(self, raw: Any, data: dict, options: dict) -> dict:
        """CVXPY's ``solver_cache`` that makes ``solve_via_data`` start at the solver's
        earlier solution ``raw`` of the same compiled problem ``data`` (empty: no warm
        start); ``options`` are the solver's for this solve."""
        return {}

    def start_cache(self, data: dict, x: Any, options: dict) -> dict:
        """CVXPY's ``solver_cache`` that makes ``solve_via_data`` start at the primal
        point ``x`` of the compiled problem (empty: the solver cannot start there)."""
        return {}

    def native_status(self, raw: Any) -> Any:
        raise NotImplementedError

    def iterations(self, raw: Any) -> int:
        return 0

    def solve(self, data: SolveData) -> SolverOutput:
        """Run the solver on the canonicalised data and map its status.

        Raises
        ------
        SolverError
            The solver crashed; the message names it and what to try.
        """
        self.import_solver()
        opts = {**self.DEFAULT_OPTIONS, **data.options}
        if data.warm is not None:
            cache = self.warm_cache(data.warm, data.data, opts)
        elif data.start is not None:
            cache = self.start_cache(data.data, data.start, opts)
        else:
            cache = {}
        try:
            raw = data.chain.solver.solve_via_data(
                data.data, bool(cache), data.verbose, opts, cache
            )
        except Exception as exc:  # noqa: BLE001 - a crashed solver must name itself
            raise SolverError(
                f"Solver `{self.name}` failed ({type(exc).__name__}: {exc}); try another "
                f"solver ({', '.join(b for b in SOLVERS if b != self.name)}) or "
                "solve_first_order."
            ) from exc
        inv = data.inverse_data[-1] if data.inverse_data else None
        # CVXPY 1.9 wraps the inverse data in an object whose options solver.invert reads;
        # CVXPY 1.7 (the newest on Python 3.10) keeps a plain dict and reads none
        if (
            inv is not None
            and not isinstance(inv, dict)
            and getattr(inv, "solver_options", None) is None
        ):
            inv.solver_options = opts
        native = self.native_status(raw)
        status = self.STATUS_MAP.get(native, Status.SOLVER_ERROR)
        return SolverOutput(status, str(native), self.iterations(raw), raw)


class ClarabelSolver(SolverAdapter):
    """Clarabel interior-point conic solver (default)."""

    name = "CLARABEL"
    module = "clarabel"
    cvxpy_name = "CLARABEL"
    DEFAULT_OPTIONS = SOLVER_SETTINGS["CLARABEL"]
    STATUS_MAP = {
        "Solved": Status.OPTIMAL,
        "AlmostSolved": Status.OPTIMAL_INACCURATE,
        "PrimalInfeasible": Status.INFEASIBLE,
        "AlmostPrimalInfeasible": Status.INFEASIBLE,
        "DualInfeasible": Status.UNBOUNDED,
        "AlmostDualInfeasible": Status.UNBOUNDED,
        "MaxIterations": Status.ITERATION_LIMIT,
        "MaxTime": Status.TIME_LIMIT,
        "CallbackTerminated": Status.CALLBACK_STOP,
        "NumericalError": Status.SOLVER_ERROR,
        "InsufficientProgress": Status.OPTIMAL_INACCURATE,
    }

    def native_status(self, raw):
        return str(raw.status)

    def iterations(self, raw):
        return int(getattr(raw, "iterations", 0))


class OSQPSolver(SolverAdapter):
    """OSQP operator-splitting QP solver (quadratic/linear terms only: no gEUD with a != 1);
    starts from a given fluence (duals zero), not from its own earlier solution.

    Measured on a slab problem (``tests/optimizers/test_cvxpy_warm_start.py``): from the
    first-order fluence 16,100 iterations against 19,600 cold; from its own solution
    (primal and dual) of the same formulation with one weight changed by 10 %, 33,475
    against 19,775 cold (by 200 %: 21,375 against 15,950; primal only: 16,250 and 21,125),
    so a re-solve starts cold (:meth:`warm_cache` is empty)."""

    name = "OSQP"
    module = "osqp"
    cvxpy_name = "OSQP"
    WARM_START = True
    DEFAULT_OPTIONS = SOLVER_SETTINGS["OSQP"]
    STATUS_MAP = {
        1: Status.OPTIMAL,
        2: Status.OPTIMAL_INACCURATE,
        3: Status.INFEASIBLE,
        4: Status.INFEASIBLE,
        5: Status.UNBOUNDED,
        6: Status.UNBOUNDED,
        7: Status.ITERATION_LIMIT,
        8: Status.TIME_LIMIT,
    }

    def start_cache(self, data, x, options):
        """CVXPY's OSQP cache ``(solver, data, results)``: an OSQP set up with ``options``
        on ``data`` as CVXPY's ``solve_via_data`` sets it up (equalities ``A``, then
        inequalities ``F``) and a stand-in for an optimal earlier result at ``x`` with
        zero duals, so that CVXPY calls ``warm_start(x, y)`` and solves without a second
        set-up. Polishing stays as ``options`` ask (CVXPY's own warm start turns it off).
        Empty (a cold start) for a problem without a quadratic objective."""
        import numpy as np
        import scipy.sparse as sp

        if data.get("P") is None:
            return {}
        osqp = self.import_solver()
        a = sp.vstack([data["A"], data["F"]]).tocsc()
        # rebuilt from its arrays as CVXPY does: 32-bit indices where they fit (OSQP's)
        a_osqp = sp.csc_matrix((a.data, a.indices, a.indptr), shape=a.shape)
        upper = np.concatenate((data["b"], data["G"]))
        lower = np.concatenate([data["b"], np.full(data["G"].shape, -np.inf)])
        p = sp.csc_matrix(
            (data["P"].data, data["P"].indices, data["P"].indptr), shape=data["P"].shape
        )
        seen = {"P": data["P"], "Ax": a, "q": data["q"], "l": lower, "u": upper}
        solver = osqp.OSQP()
        solver.setup(p, data["q"], a_osqp, lower, upper, **{**options, "verbose": False})
        y = np.zeros(a.shape[0])
        optimal = SimpleNamespace(status_val=1)  # OSQP's "solved"
        return {
            self.cvxpy_name: (
                solver,
                seen,
                SimpleNamespace(x=np.asarray(x, dtype=np.float64), y=y, info=optimal),
            )
        }

    def native_status(self, raw):
        return int(raw.info.status_val)

    def iterations(self, raw):
        return int(raw.info.iter)


class SCSSolver(SolverAdapter):
    """SCS first-order conic solver (warm starts from its own earlier solution, or from a
    given fluence)."""

    name = "SCS"
    module = "scs"
    cvxpy_name = "SCS"
    WARM_START = True
    DEFAULT_OPTIONS = SOLVER_SETTINGS["SCS"]
    STATUS_MAP = {
        1: Status.OPTIMAL,
        2: Status.OPTIMAL_INACCURATE,
        -1: Status.UNBOUNDED,
        -6: Status.UNBOUNDED,
        -2: Status.INFEASIBLE,
        -7: Status.INFEASIBLE,
    }

    def warm_cache(self, raw, data, options):
        return {self.cvxpy_name: {k: raw[k] for k in ("x", "y", "s")}}

    def start_cache(self, data, x, options):
        """Primal ``x``, duals zero, slacks ``b - A x`` on the zero and non-negative cones
        (zero and clipped at zero; the rest as they are: SCS projects them)."""
        import numpy as np

        slack = np.asarray(data["b"] - data["A"] @ x, dtype=np.float64)
        n_zero, n_nonneg = int(data["dims"].zero), int(data["dims"].nonneg)
        slack[:n_zero] = 0.0
        slack[n_zero : n_zero + n_nonneg] = np.clip(slack[n_zero : n_zero + n_nonneg], 0, None)
        y = np.zeros(data["A"].shape[0])
        return {self.cvxpy_name: {"x": np.asarray(x, dtype=np.float64), "y": y, "s": slack}}

    def native_status(self, raw):
        return int(raw["info"]["status_val"])

    def iterations(self, raw):
        return int(raw["info"]["iter"])


class MosekSolver(SolverAdapter):
    """MOSEK interior-point solver (needs a licence)."""

    name = "MOSEK"
    module = "mosek"
    cvxpy_name = "MOSEK"
    DEFAULT_OPTIONS = SOLVER_SETTINGS["MOSEK"]
    STATUS_MAP = {
        "optimal": Status.OPTIMAL,
        "integer_optimal": Status.OPTIMAL,
        "prim_infeas_cer": Status.INFEASIBLE,
        "dual_infeas_cer": Status.UNBOUNDED,
        "unknown": Status.OPTIMAL_INACCURATE,
    }

    def is_available(self) -> bool:
        try:
            mosek = self.import_solver()
            with mosek.Env() as env:  # licence check
                env.checkoutlicense(mosek.feature.pton)
        except Exception:  # noqa: BLE001 - missing or unlicensed
            return False
        return True

    def native_status(self, raw):
        mosek = self.import_solver()
        task = raw["task"]
        for soltype in (mosek.soltype.itr, mosek.soltype.bas):
            if task.solutiondef(soltype):
                return str(task.getsolsta(soltype)).split(".")[-1]
        return "undefined"


SOLVERS: dict[str, SolverAdapter] = {
    b.name: b for b in (ClarabelSolver(), OSQPSolver(), SCSSolver(), MosekSolver())
}


def get_solver(name: str) -> SolverAdapter:
    """The adapter called ``name`` (case-insensitive: CLARABEL, OSQP, SCS, MOSEK)."""
    key = str(name).upper()
    if key not in SOLVERS:
        raise InvalidProblemError(f"Unknown solver {name!r}; choose one of {', '.join(SOLVERS)}.")
    return SOLVERS[key]


def available_solvers() -> list[str]:
    """Names of the CVXPY solvers that are installed (and licensed) here.

    .. versionadded:: 0.1.0
       Replaces ``available_backends`` (deprecated: "backend" names the array library).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [n for n, b in SOLVERS.items() if b.is_available()]
