"""First-order solver: accelerated projected gradient (FISTA with backtracking and adaptive
restart) on ``x >= 0``, with hard constraints handled by an augmented Lagrangian.

The vector code is written against the array API standard: it takes its namespace from an
:class:`ArrayBackend` (``_array_backend.py``), which also holds the two matrix products, so
numpy + scipy CSR on the CPU and CuPy + cupyx CSR on a GPU run the same code (the tests run
it with array-api-strict). Each iteration costs one forward product ``A_u @ x`` and one
transpose product ``A_u^T g`` (nearly full rows as one dense block, the rest CSR): the dose at the
extrapolated point is a linear combination of stored doses, not a new product.

References
----------
A. Beck, M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
problems", SIAM J. Imaging Sci. 2 (2009) 183, doi:10.1137/080716542.
B. O'Donoghue, E. Candès, "Adaptive restart for accelerated gradient schemes", Found. Comput.
Math. 15 (2015) 715, doi:10.1007/s10208-013-9150-3.
J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed., ch. 17 (augmented Lagrangian).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace

from ._array_backend import ArrayBackend, array_backend
from ._problem import Problem, constraint_scale, require_problem
from ._result import OptimizationResult, Status
from ._terms import Term, _LevelBound
from .errors import InfeasibleError, InvalidProblemError

__all__ = ["solve_first_order"]

logger = logging.getLogger("rtplan.optimizers")


class _Compiled:
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
        if t.acts_on == "fluence":
            f += w * t.value(x)
            if want_grad:
                gx = w * t.gradient(x)
                g_x = gx if g_x is None else g_x + gx
            return f, g_u, g_x
        ds = self.take(d, t.structure)
        p = self.p[t.structure]
        if want_grad:
            v, gs = t.fo_value_and_gradient(ds, p)
            f += w * v
            g_u = self._scatter(g_u, t, w * gs)
        else:
            f += w * t.fo_value(ds, p)
        return f, g_u, g_x


#: Penalty growth of a constraint whose relative violation did not fall below
#: ``_RHO_PROGRESS`` times its previous value in an outer round, and the cap on the total
#: growth (relative to the initial penalty) that keeps the inner problems conditioned.
_RHO_GROWTH = 10.0
_RHO_PROGRESS = 0.25
_RHO_MAX_GROWTH = 1e8


class _AL:
    """Augmented-Lagrangian penalty of the hard constraints, with per-constraint scales.

    For constraint ``k`` with residuals ``c`` (``c <= 0`` feasible; Gy for dose constraints,
    objective units for lexicographic level bounds) and multipliers ``lam``:
    ``(rho_k/2) sum_i m_i [max(0, c_i + lam_i/rho_k)**2 - (lam_i/rho_k)**2]`` with
    ``m_i = p_i`` (voxel weights) for per-voxel constraints and 1 for scalar ones.

    Each constraint has its own scale ``s_k`` (:func:`constraint_scale`: ``max(|bound|, 1 Gy)``
    for dose constraints, the bound for level bounds). Violations are measured relative,
    ``max(c) / s_k``, and ``rho_k`` starts at ``rho0 / s_k**2``, so a relative violation
    costs the same whatever the constraint's units. After each outer round the multipliers
    take the step ``lam_k = max(0, lam_k + rho_k c_k)`` and ``rho_k`` grows by
    ``_RHO_GROWTH`` (up to ``_RHO_MAX_GROWTH`` times its start) only for the constraints whose
    relative violation did not fall below ``_RHO_PROGRESS`` times its previous value
    (Nocedal & Wright, ch. 17.4; Conn, Gould, Toint, LANCELOT).

    Attributes
    ----------
    scale : list of float
        ``s_k`` per hard constraint (Gy, or objective units for level bounds).
    rho : list of float
        Penalty per hard constraint, in units of ``1 / s_k**2`` objective units.
    lam : list of (n_k,) arrays of float64
        Multipliers: one per voxel for per-voxel constraints, else one.
    """

    def __init__(self, comp: _Compiled, rho0: float) -> None:
        self.comp = comp
        xp = comp.xp
        self.scale = [constraint_scale(t) for t in comp.hard]
        self.rho = [rho0 / s**2 for s in self.scale]
        self._rho_max = [r * _RHO_MAX_GROWTH for r in self.rho]
        self._last = [math.inf] * len(comp.hard)
        self.lam = [
            xp.zeros(comp.idx[t.structure].shape[0] if t.per_voxel else 1, dtype=xp.float64)
            for t in comp.hard
        ]

    def residual(self, t: Term, d, x):
        xp = self.comp.xp
        sgn = 1.0 if t.sense == "<=" else -1.0
        if t.per_voxel:
            ds = self.comp.take(d, t.structure)
            return sgn * (ds - t.dose_gy)
        q = self._quantity(t, d, x)
        return xp.asarray([sgn * (q - t.dose_gy)], dtype=xp.float64)

    def _quantity(self, t, d, x):
        if isinstance(t, _LevelBound):
            f, _, _ = self._level(t, d, x, want_grad=False)
            return f
        ds = self.comp.take(d, t.structure)
        return t.fo_quantity(ds, self.comp.p[t.structure])

    def _level(self, t, d, x, want_grad):
        xp = self.comp.xp
        f = 0.0
        g_u = xp.zeros_like(d) if want_grad else None
        g_x = None
        return self.comp._accumulate(t, 1.0, d, x, f, g_u, g_x, want_grad)

    def value_grad(self, d, x, g_u, g_x, want_grad=True):
        xp = self.comp.xp
        total = 0.0
        for k, t in enumerate(self.comp.hard):
            rho, lam = self.rho[k], self.lam[k]
            c = self.residual(t, d, x)
            s = xp.clip(c + lam / rho, 0.0, None)
            m = self.comp.p[t.structure] if t.per_voxel else 1.0
            total += 0.5 * rho * float(xp.sum(m * (s * s - (lam / rho) ** 2)))
            if not want_grad:
                continue
            sgn = 1.0 if t.sense == "<=" else -1.0
            coef = sgn * rho * m * s  # d(penalty)/d(quantity), per voxel or scalar
            if t.per_voxel:
                g_u = self.comp._scatter(g_u, t, coef)
                continue
            cf = float(coef[0])
            if cf == 0.0:
                continue
            if isinstance(t, _LevelBound):
                _, gq_u, gq_x = self._level(t, d, x, want_grad=True)
                g_u = g_u + cf * gq_u
                if gq_x is not None:
                    g_x = cf * gq_x if g_x is None else g_x + cf * gq_x
            else:
                ds = self.comp.take(d, t.structure)
                g_u = self.comp._scatter(
                    g_u, t, cf * t.fo_quantity_gradient(ds, self.comp.p[t.structure])
                )
        return total, g_u, g_x

    def update(self, d, x, tol: float) -> float:
        """End of an outer round: multiplier step, then penalty growth where needed.

        Parameters
        ----------
        d : (n_u,) array, Gy
            Dose on the union rows at ``x``.
        x : (n_beamlets,) array, MU
            Fluence of the finished inner solve.
        tol : float
            Relative violation below which a constraint counts as met (its ``rho_k`` stays).

        Returns
        -------
        float
            The largest relative violation ``max_k max(c_k) / s_k`` (0 when all are met).
        """
        xp = self.comp.xp
        worst = 0.0
        for k, t in enumerate(self.comp.hard):
            c = self.residual(t, d, x)
            self.lam[k] = xp.clip(self.lam[k] + self.rho[k] * c, 0.0, None)
            rel = max(float(xp.max(c)), 0.0) / self.scale[k]
            if rel > tol and rel > _RHO_PROGRESS * self._last[k]:
                self.rho[k] = min(self.rho[k] * _RHO_GROWTH, self._rho_max[k])
            self._last[k] = rel
            worst = max(worst, rel)
        return worst

    def goal_violation(self) -> float:
        """The largest relative violation of the last :meth:`update` among the hard
        constraints that are not lexicographic level bounds (the goals' own)."""
        return max(
            (r for r, t in zip(self._last, self.comp.hard, strict=True) if not _is_bound(t)),
            default=0.0,
        )


def _is_bound(t: Term) -> bool:
    return isinstance(t, _LevelBound)


def _dot(xp, a, b) -> float:
    return float(xp.sum(a * b))


class _Loop:
    """What every inner solver shares: the objective ``phi``, the products, the iteration
    and dose-evaluation counters, the limits, the progress bar and the user's callback."""

    def __init__(
        self, phi, fwd, grad_x, counts, t_start, time_limit_s, bar, callback, make_result
    ) -> None:
        self.phi = phi
        self.fwd = fwd
        self.grad_x = grad_x
        self.counts = counts
        self.t_start = t_start
        self.time_limit_s = time_limit_s
        self.bar = bar
        self.callback = callback
        self.make_result = make_result

    def timed_out(self) -> bool:
        return (
            self.time_limit_s is not None and time.perf_counter() - self.t_start > self.time_limit_s
        )

    def stop_status(self, it: int, budget: int) -> Status | None:
        """``ITERATION_LIMIT`` or ``TIME_LIMIT`` when the inner loop must stop, else None."""
        if it >= budget:
            return Status.ITERATION_LIMIT
        if self.timed_out():
            return Status.TIME_LIMIT
        return None

    def count_iteration(self) -> None:
        self.counts["iter"] += 1
        if self.bar is not None:
            self.bar.update(1)

    def report(self, it: int, x) -> None:
        """Every 100 inner iterations, show the callback an intermediate result."""
        if self.callback is not None and it % 100 == 0:
            self.callback(self.make_result(Status.ITERATION_LIMIT, f"inner iteration {it}", x))


def solve_first_order(
    problem: Problem,
    *,
    x0: Any = None,
    max_iter: int = 5000,
    tol: float = 1e-8,
    constraint_tol: float = 1e-4,
    max_outer: int = 30,
    hard_extra_iter: int | None = None,
    certify: bool = True,
    time_limit_s: float | None = None,
    callback: Callable[[OptimizationResult], Any] | None = None,
    progress: bool = False,
    inner: str | None = None,
    memory: int = 10,
    backend: str | ArrayBackend = "numpy",
) -> OptimizationResult:
    """Solve ``problem`` with a bound-constrained first-order method + augmented Lagrangian.

    Parameters
    ----------
    problem : Problem
        Problem with smooth objective terms and hard constraints (max/min/mean dose, gEUD
        and lexicographic level bounds).
    x0 : (n_beamlets,) array, MU, optional
        Warm start (clipped to ``x >= 0``); its array namespace (numpy, CuPy) is used
        throughout. Default: a uniform fluence scaled to the targets' dose levels.
    max_iter : int, optional
        Total inner-iteration budget (default 5000).
    tol : float, optional
        Relative objective decrease below which an inner solve stops (three iterations
        in a row; default 1e-8).
    constraint_tol : float, optional
        Largest accepted relative constraint violation (default 1e-4): the violation over
        ``max(|bound|, 1 Gy)`` for dose constraints, over the bound for lexicographic level
        bounds (see :meth:`Problem.max_violation`).
    max_outer : int, optional
        Augmented-Lagrangian outer iterations (default 30).
    hard_extra_iter : int, optional
        Work budget for violated hard constraints: when ``max_iter`` or ``max_outer`` is
        spent while a hard constraint (other than a lexicographic level bound) is
        violated beyond ``constraint_tol`` and its violation still falls (by 10 % within
        two outer rounds), the solve continues, once, up to ``max_iter +
        hard_extra_iter`` inner iterations and ``2 * max_outer`` rounds, and stops early
        when the violation stops falling. Default ``3 * max_iter``; 0 disables it.
    certify : bool, optional
        When hard constraints are still violated at the end (and the time limit was not
        what stopped the solve), decide with
        :func:`certify_hard_constraints` (a reduced linear programme solved by CVXPY +
        Clarabel) whether they contradict each other (default True). Only a certificate
        makes the solve raise :class:`InfeasibleError`; otherwise the result has status
        ``iteration_limit`` (did not converge) and says so, with the residual. The
        certificate is also sought before the extra work budget is granted (more rounds
        cannot help against a proven contradiction).
    time_limit_s : float, optional
        Wall-time budget, s.
    callback : callable, optional
        Called after every outer iteration (and every 100 inner iterations) with an
        intermediate :class:`OptimizationResult`; raising ``StopIteration`` stops the run
        with status ``callback_stop``.
    progress : bool, optional
        Show a tqdm progress bar of inner iterations.
    inner : {"lbfgs", "lbfgsb", "fista"}, optional
        Inner solver of each augmented-Lagrangian round. ``"lbfgs"`` (default): projected
        limited-memory BFGS (two-metric projection: quasi-Newton step on the free beamlets,
        Armijo backtracking along the projection arc), written against the array API so it
        runs on numpy and CuPy; one forward and one transpose product per iteration.
        ``"lbfgsb"``: scipy's L-BFGS-B (numpy only; slow on a loaded multi-threaded BLAS).
        ``"fista"``: accelerated projected gradient with a Jacobi preconditioner,
        backtracking and adaptive restart (needs many more iterations on ill-conditioned
        fluence problems).
    memory : int, optional
        Number of correction pairs kept by ``"lbfgs"`` (default 10).
    backend : {"numpy", "cupy"} or ArrayBackend, optional
        Where the vectors live and the products run. ``"numpy"`` (default): scipy CSR
        products on the CPU. ``"cupy"``: the union matrix and its transpose are copied once
        to the GPU (cupyx.scipy.sparse CSR) and every vector lives there; ``x0`` may be a
        numpy or CuPy array. An :class:`ArrayBackend` supplies any array-API namespace with
        its own products. The result's ``x`` is always a numpy array.

    Returns
    -------
    OptimizationResult
        ``extras`` holds ``max_violation`` (relative), ``violations`` (per constraint),
        ``n_outer``, ``lipschitz``, ``n_restarts``, ``budget_iter`` (the inner-iteration
        budget in the end), ``extended`` (the hard-constraint budget was granted),
        ``stalled`` (the violation stopped falling) and, when hard constraints were left
        violated, ``certificate`` (:meth:`FeasibilityCertificate.as_dict`).

    Raises
    ------
    InvalidProblemError
        A bad ``x0`` or option.
    SolverError
        ``backend="cupy"`` without an importable CuPy.
    InfeasibleError
        The hard constraints are proven contradictory (a certificate from
        :func:`certify_hard_constraints`, in the error's ``certificate``); the message
        names them. A solve that only failed to meet them returns ``iteration_limit``.

    Notes
    -----
    DVH goals (:class:`MaxDVH`, :class:`MinDVH`) use a softplus-smoothed CVaR (smoothing
    ``tau_gy`` = 0.05 Gy) that bounds the exact CVaR from the safe side, so hard DVH
    constraints still guarantee the exact DVH goal; objective values can differ from the
    CVXPY formulation's (exact CVaR) by a fraction of ``tau_gy``.
    """
    require_problem(problem)
    t_start = time.perf_counter()
    n = problem.n_beamlets
    if inner is None:
        inner = "lbfgs"
    if inner not in ("lbfgs", "lbfgsb", "fista"):
        raise InvalidProblemError(
            f"Unknown `inner` {inner!r}; choose 'lbfgs', 'lbfgsb' or 'fista'."
        )
    backend = array_backend(problem, backend)
    if inner == "lbfgsb" and backend.name != "numpy":
        raise InvalidProblemError(
            "`inner='lbfgsb'` runs on numpy arrays only; use 'lbfgs' or 'fista' on a GPU."
        )
    xp = backend.xp
    x = backend.asarray(_default_start(problem) if x0 is None else x0)
    if x.ndim != 1 or x.shape[0] != n:
        raise InvalidProblemError(
            f"`x0` has shape {tuple(x.shape)}, expected ({n},) (one MU per beamlet)."
        )
    if not bool(xp.all(xp.isfinite(x))):
        raise InvalidProblemError("`x0` holds NaN or infinite values.")
    x = xp.clip(x, 0.0, None)
    comp = _Compiled(problem, backend)
    counts = {"dose": 0, "iter": 0, "restarts": 0}
    fwd, bwd = _counted_products(backend, counts)
    soft_w = sum(t.weight for t in comp.soft) or 1.0
    al = _AL(comp, rho0=10.0 * soft_w) if comp.hard else None

    def phi(d, v, want_grad=True):
        f, g_u, g_x = comp.soft_value_grad(d, v, want_grad)
        if al is not None:
            fa, g_u, g_x = al.value_grad(d, v, g_u, g_x, want_grad)
            f += fa
        return f, g_u, g_x

    def grad_x(g_u, g_x):
        g = bwd(g_u) if g_u is not None else xp.zeros_like(x)
        return g if g_x is None else g + g_x

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="first-order", unit="it", leave=False)

    status = Status.ITERATION_LIMIT
    precond = lip = None
    if inner == "fista":
        precond = backend.asarray(_jacobi(problem, comp, al))
        lip = _estimate_lipschitz(backend, x, fwd, bwd, phi, precond)
    d = fwd(x)
    history: list[dict] = []

    def make_result(status_, message_, x_):
        xn = np.asarray(backend.to_host(x_), dtype=np.float64)
        du = problem.union_dose(xn)
        tv = problem.evaluate(xn, d_union=du)
        viol, per = problem.max_violation(xn, d_union=du)
        return OptimizationResult(
            x=xn,
            objective=problem.objective(xn, d_union=du),
            status=status_,
            message=message_,
            n_iter=counts["iter"],
            n_dose_evals=counts["dose"],
            solve_time_s=time.perf_counter() - t_start,
            term_values=tv,
            extras={
                "solver": "first_order",
                "max_violation": viol,
                "violations": per,
                "n_outer": len(history),
                "lipschitz": lip,
                "n_restarts": counts["restarts"],
                "history": tuple(history),
            },
        )

    loop = _Loop(phi, fwd, grad_x, counts, t_start, time_limit_s, bar, callback, make_result)
    extra_iter = 3 * max_iter if hard_extra_iter is None else int(hard_extra_iter)
    budget, outer_cap, extended, stalled = max_iter, max_outer, False, False
    try:
        outer = 0
        inner_tol = max(tol, 1e-6) if al is not None else tol
        while True:
            if inner == "fista":
                x, d, lip, inner_status = _fista(
                    xp, x, d, loop, lip, precond, inner_tol, budget - counts["iter"]
                )
            elif inner == "lbfgs":
                x, d, inner_status = _lbfgs(
                    xp, x, d, loop, inner_tol, budget - counts["iter"], memory=memory
                )
            else:
                x, d, inner_status = _lbfgsb(x, loop, inner_tol, budget - counts["iter"])
            if al is None:
                status = inner_status
                break
            outer += 1
            viol = al.update(d, x, constraint_tol)
            f_now = comp.soft_value_grad(d, x, want_grad=False)[0]
            history.append(
                {
                    "outer": outer,
                    "objective": f_now,
                    "max_violation": viol,
                    "goal_violation": al.goal_violation(),
                    "iterations": counts["iter"],
                }
            )
            logger.debug("AL outer %d: objective %.6g, max rel. violation %.3g", outer, f_now, viol)
            if callback is not None:
                callback(make_result(Status.ITERATION_LIMIT, f"outer iteration {outer}", x))
            if inner_status == Status.TIME_LIMIT:
                status = inner_status
                break
            if (
                inner_status != Status.ITERATION_LIMIT
                and viol <= constraint_tol
                and inner_tol <= tol * 1.0001
            ):
                status = Status.OPTIMAL
                break
            # the extra work is for the goals' hard constraints, not for level bounds
            violated = al.goal_violation() > constraint_tol
            if extended and violated and not _improving(history):
                stalled = True
                status = Status.ITERATION_LIMIT
                break
            if inner_status == Status.ITERATION_LIMIT or outer >= outer_cap:
                if not (violated and not extended and extra_iter > 0 and _improving(history)):
                    status = Status.ITERATION_LIMIT
                    break
                if certify:  # more rounds cannot help against a proven contradiction
                    _certify_or_raise(problem, backend.to_host(x), constraint_tol)
                # the hard constraints still improve: grant the extra work budget once
                extended = True
                budget, outer_cap = max_iter + extra_iter, 2 * max_outer
                logger.info(
                    "hard constraints violated by %.3g after %d iterations and %d rounds; "
                    "continuing up to %d iterations and %d rounds",
                    viol,
                    counts["iter"],
                    outer,
                    budget,
                    outer_cap,
                )
            inner_tol = max(tol, inner_tol * 0.01)
    except StopIteration:
        status = Status.CALLBACK_STOP
    finally:
        if bar is not None:
            bar.close()

    result_status = status
    res = make_result(status, "", x)
    viol = res.extras["max_violation"]
    if al is not None and viol > constraint_tol and status == Status.OPTIMAL:
        result_status = Status.ITERATION_LIMIT
    extras = dict(res.extras, budget_iter=budget, extended=extended, stalled=stalled)
    detail = ""
    goals = {t.label for t in comp.hard if not _is_bound(t)}
    bad = [k for k, v in res.extras["violations"].items() if v > constraint_tol and k in goals]
    if bad and status != Status.CALLBACK_STOP:
        cert = None
        if certify and status != Status.TIME_LIMIT:
            cert = _certify_or_raise(problem, res.x, constraint_tol)
            extras["certificate"] = cert.as_dict()
        worst = max(res.extras["violations"][b] for b in bad)
        detail = (
            " Hard constraint(s) "
            + " and ".join(f"`{b}`" for b in bad)
            + f" still violated (largest relative violation {worst:.3g}) after "
            f"{counts['iter']} inner iterations and {len(history)} augmented-Lagrangian "
            f"rounds (work budget {budget} iterations"
            + (", the violation stopped improving" if stalled else "")
            + "); not shown infeasible: "
            + (cert.message if cert is not None else "not checked")
            + "."
        )
    messages = {
        Status.OPTIMAL: "Converged: relative objective change below tolerance"
        + (" and constraints met." if al is not None else "."),
        Status.ITERATION_LIMIT: "Did not converge: stopped at the iteration limit.",
        Status.TIME_LIMIT: "Did not converge: stopped at the time limit.",
        Status.CALLBACK_STOP: "Stopped by the callback.",
    }
    return OptimizationResult(
        x=res.x,
        objective=res.objective,
        status=result_status,
        message=messages.get(result_status, str(result_status)) + detail,
        n_iter=res.n_iter,
        n_dose_evals=res.n_dose_evals,
        solve_time_s=time.perf_counter() - t_start,
        term_values=res.term_values,
        extras=extras,
    )


def _certify_or_raise(problem: Problem, x: Any, tol: float):
    """:func:`certify_hard_constraints` at ``x``; raise :class:`InfeasibleError` with the
    certificate when it proves the hard constraints contradictory."""
    from ._feasibility import certify_hard_constraints

    cert = certify_hard_constraints(problem, np.asarray(x, dtype=np.float64), tol=tol)
    if cert.infeasible:
        raise InfeasibleError(
            "The hard constraints contradict each other: "
            + cert.message
            + ". Relax one of them or make it a soft goal (hard=False).",
            certificate=cert,
        )
    return cert


#: During the extra work granted to violated hard constraints, the solve goes on while the
#: largest relative violation of an outer round is below this fraction of the best one
#: two or more rounds earlier (10 % progress in two rounds).
_HARD_PROGRESS = 0.9


def _improving(history: list[dict]) -> bool:
    """The goals' hard constraints' violation still falls (see :data:`_HARD_PROGRESS`)."""
    if len(history) < 3:
        return True
    earlier = min(h["goal_violation"] for h in history[:-2])
    return history[-1]["goal_violation"] < _HARD_PROGRESS * earlier


def _counted_products(backend: ArrayBackend, counts: dict) -> tuple[Callable, Callable]:
    """``fwd(x) = A_u x`` and ``bwd(g) = A_u^T g`` on float64 vectors, each call counted in
    ``counts["dose"]``; float32 matrices multiply float32 copies (bandwidth-bound products)."""
    xp, matvec, rmatvec = backend.xp, backend.matvec, backend.rmatvec

    if not backend.float32_products:

        def fwd(v):
            counts["dose"] += 1
            return matvec(v)

        def bwd(g):
            counts["dose"] += 1
            return rmatvec(g)

        return fwd, bwd

    def fwd32(v):
        counts["dose"] += 1
        return xp.astype(matvec(xp.astype(v, xp.float32)), xp.float64)

    def bwd32(g):
        counts["dose"] += 1
        return xp.astype(rmatvec(xp.astype(g, xp.float32)), xp.float64)

    return fwd32, bwd32


def _default_start(problem: Problem) -> np.ndarray:
    """Uniform fluence scaled so the mean dose of the targets (the structures of terms that
    push dose up: underdose, min-dose, prescription, DVH minimum) matches their level; 1 MU
    otherwise."""
    x = np.ones(problem.n_beamlets)
    d = problem.union_dose(x)
    from ._terms import DVHUnderdose, MinDVH, Prescription, Underdose

    levels, means = [], []
    for t in Problem._flatten(problem.terms):
        if isinstance(t, (Underdose, Prescription, MinDVH, DVHUnderdose)) and t.dose_gy:
            levels.append(t.dose_gy)
            means.append(float(problem.term_dose(t, d).mean()))
    if levels and max(means) > 0:
        x *= float(np.mean(levels)) / max(float(np.mean(means)), 1e-12)
    return x


def _jacobi(problem, comp, al) -> np.ndarray:
    """Diagonal (Jacobi) preconditioner, (n_beamlets,) numpy array: ``diag(A^T H A)`` with
    ``H`` the curvature of the quadratic terms and of the augmented-Lagrangian penalties,
    normalised to its max and floored at 1e-3. Computed once on the host."""
    h = np.zeros(comp.n_u)
    for t in Problem._flatten(comp.soft + comp.hard):
        if t.acts_on != "dose":
            continue
        w = t.weight if not t.hard else 1.0
        if t.hard and al is not None:
            k = comp.hard.index(t) if t in comp.hard else None
            w = al.rho[k] if k is not None else w
        h[problem.local_index[t.structure]] += 2.0 * w * problem.p[t.structure]
    diag = np.asarray(problem.a_union.power(2).T @ h)
    if not diag.max(initial=0.0) > 0:
        return np.ones(problem.n_beamlets)
    return np.clip(diag / diag.max(), 1e-3, None)


def _estimate_lipschitz(backend: ArrayBackend, x, fwd, bwd, phi, precond) -> float:
    """A few power iterations on the preconditioned curvature ``D^-1 A^T H A``."""
    xp = backend.xp
    rng = np.random.default_rng(0)
    v = backend.asarray(rng.random(x.shape[0]))
    d = fwd(x)
    _, g0, _ = phi(d, x)
    est = 1.0
    for _ in range(4):
        v = v / math.sqrt(_dot(xp, v, v))
        eps = 1e-3 * (math.sqrt(_dot(xp, x, x)) / math.sqrt(x.shape[0]) + 1e-3)
        dv = fwd(v)
        _, g1, _ = phi(d + eps * dv, x + eps * v)
        hv = bwd((g1 - g0) / eps) / precond
        est = math.sqrt(_dot(xp, hv, hv))
        v = hv if est > 0 else v
    return max(est, 1e-12)


def _lbfgs(xp, x, d, loop: _Loop, tol, budget, memory: int = 10):
    """Projected L-BFGS on ``x >= 0`` (two-metric projection, Bertsekas 1982).

    Beamlets at zero whose gradient pushes them further down are held; the L-BFGS two-loop
    recursion gives the step on the others; an Armijo backtracking search runs along the
    projection arc. ``d = A_u x`` is kept in step with ``x``.

    References
    ----------
    D. P. Bertsekas, "Projected Newton methods for optimization problems with simple
    constraints", SIAM J. Control Optim. 20 (1982) 221, doi:10.1137/0320018.
    D. C. Liu, J. Nocedal, Math. Program. 45 (1989) 503, doi:10.1007/BF01589116.
    """
    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x
    f, g_u, g_x = phi(d, x)
    g = grad_x(g_u, g_x)
    pairs: list = []
    small = 0
    it = 0
    gamma = None
    while True:
        stop = loop.stop_status(it, budget)
        if stop is not None:
            return x, d, stop
        eps = 1e-12 + 1e-9 * float(xp.max(x)) if x.shape[0] else 0.0
        free = (x > eps) | (g < 0)
        q = xp.where(free, g, 0.0)
        alphas = []
        for s_k, y_k, rho_k in reversed(pairs):
            a = rho_k * _dot(xp, s_k, q)
            alphas.append(a)
            q = q - a * y_k
        if gamma is None:
            gmax = float(xp.max(xp.abs(q))) or 1.0
            scale = max(float(xp.mean(x)), 1e-12) if x.shape[0] else 1.0
            gamma = 0.1 * scale / gmax
        r = gamma * q
        for (s_k, y_k, rho_k), a in zip(pairs, reversed(alphas), strict=True):
            b = rho_k * _dot(xp, y_k, r)
            r = r + (a - b) * s_k
        p = -xp.where(free, r, 0.0)
        if not _dot(xp, p, g) < 0:  # not a descent direction: restart memory
            pairs.clear()
            p = -gamma * xp.where(free, g, 0.0)
        step = 1.0
        while True:
            x_new = xp.clip(x + step * p, 0.0, None)
            d_new = fwd(x_new)
            # dose-space gradient computed with the value (cheap); the transpose product
            # is done only for the accepted point
            f_new, g_u, g_x = phi(d_new, x_new)
            dec = _dot(xp, g, x_new - x)
            if f_new <= f + 1e-4 * dec or step < 1e-10:
                break
            step *= 0.5 if step > 0.1 else 0.1
        if step < 1e-10 and f_new > f:
            return x, d, Status.OPTIMAL  # no descent possible at float precision
        g_new = grad_x(g_u, g_x)
        s_k = x_new - x
        y_k = g_new - g
        sy = _dot(xp, s_k, y_k)
        if sy > 1e-12 * math.sqrt(_dot(xp, s_k, s_k) * _dot(xp, y_k, y_k)) and sy > 0:
            pairs.append((s_k, y_k, 1.0 / sy))
            if len(pairs) > memory:
                pairs.pop(0)
            gamma = sy / _dot(xp, y_k, y_k)
        it += 1
        loop.count_iteration()
        rel = (f - f_new) / max(abs(f_new), 1e-30)
        x, d, f, g = x_new, d_new, f_new, g_new
        small = small + 1 if rel < tol else 0
        if small >= 3:
            return x, d, Status.OPTIMAL
        loop.report(it, x)


def _lbfgsb(x, loop: _Loop, tol, budget):
    """scipy L-BFGS-B on ``x >= 0``; one forward and one transpose product per evaluation."""
    import scipy.optimize

    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x

    if budget <= 0:
        return x, fwd(x), Status.ITERATION_LIMIT
    state = {"status": None, "it": 0}

    def fg(v):
        d = fwd(v)
        f, g_u, g_x = phi(d, v)
        return f, grad_x(g_u, g_x)

    def cb(intermediate_result):
        state["it"] += 1
        loop.count_iteration()
        if loop.timed_out():
            state["status"] = Status.TIME_LIMIT
            raise StopIteration
        try:
            loop.report(state["it"], intermediate_result.x)
        except StopIteration:
            state["status"] = Status.CALLBACK_STOP
            raise

    res = scipy.optimize.minimize(
        fg,
        x,
        jac=True,
        method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(np.zeros(x.shape[0]), np.inf),
        callback=cb,
        options={
            "maxiter": budget,
            "maxfun": 2 * budget + 20,
            "ftol": tol,
            "gtol": 0.0,
            "maxcor": 10,
        },
    )
    x_new = np.clip(res.x, 0, None)
    if state["status"] == Status.CALLBACK_STOP:
        raise StopIteration
    if state["status"] is not None:
        return x_new, fwd(x_new), state["status"]
    status = Status.OPTIMAL if res.status == 0 else Status.ITERATION_LIMIT
    if res.status == 2:  # ABNORMAL: line search could not progress, at the float limit
        status = Status.OPTIMAL
    return x_new, fwd(x_new), status


def _fista(xp, x, d, loop: _Loop, lip, precond, tol, budget):
    """FISTA with backtracking, a slowly shrinking step and gradient-based adaptive restart.

    Returns ``(x, d, lip, status)``; ``d = A_u x`` is kept in step with ``x``.
    """
    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x
    f_x, _, _ = phi(d, x, want_grad=False)
    y, dy = x, d
    t = 1.0
    small = 0
    it = 0
    while True:
        stop = loop.stop_status(it, budget)
        if stop is not None:
            return x, d, lip, stop
        f_y, g_u, g_x = phi(dy, y)
        g = grad_x(g_u, g_x)
        while True:
            x_new = xp.clip(y - g / (lip * precond), 0.0, None)
            d_new = fwd(x_new)
            f_new, _, _ = phi(d_new, x_new, want_grad=False)
            step = x_new - y
            ss = _dot(xp, step * precond, step)
            quad = f_y + _dot(xp, g, step) + 0.5 * lip * ss
            # float32 products: allow rounding noise in the sufficient-decrease test
            if f_new <= quad + 1e-10 * abs(f_y) or ss == 0.0 or not math.isfinite(lip):
                break
            lip *= 2.0
        it += 1
        loop.count_iteration()
        # adaptive restart (gradient scheme) and monotone safeguard
        if _dot(xp, (y - x_new) * precond, x_new - x) > 0 or f_new > f_x:
            t = 1.0
            loop.counts["restarts"] += 1
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        rel = abs(f_x - f_new) / max(abs(f_new), 1e-30)
        y = x_new + beta * (x_new - x)
        dy = d_new + beta * (d_new - d)
        x, d, f_x, t = x_new, d_new, f_new, t_new
        lip *= 0.98
        small = small + 1 if rel < tol else 0
        if small >= 5:
            return x, d, lip, Status.OPTIMAL
        loop.report(it, x)
